# Fan out: one source catalog and one WCS sidecar per image (and, with
# save_catalogs, the published copy of the catalog, with sky positions through
# the corrected WCS).


rule detect_sources:
    input:
        unpack(detect_inputs),
    output:
        catalog=f"{WORK}/catalogs/{{stem}}_cat.ecsv",
        sidecar=f"{WORK}/sidecars/{{stem}}_meta.json",
    params:
        detection=per_image(image_detection_params),
        group_id=per_image(image_group_id),
        on_bad_input=ON_BAD_INPUT,
        fits=fits_params(),
    log:
        f"{LOGS}/detect_sources/{{stem}}.log",
    benchmark:
        f"{BENCH}/detect_sources/{{stem}}.tsv"
    resources:
        # measured peak RSS: ~150 MB + 3x the file (dao, 2048x2048: 400 MB for
        # an 80 MB file); ~10 s per 2048x2048 image as a cluster job, start-up included
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(4 * input_mb(input))),
        runtime=lambda wc, input, attempt: attempt * (1 + int(input_mb(input) // 50)),
    run:
        run_script("detect_sources.py", input, output, params, wildcards, log)


rule publish_catalog:
    input:
        catalog=catalog_to_publish,
        # RA/DEC of the sources through the image's corrected WCS
        wcs=lambda wc: image_final_wcs(PUBLISHED[wc.catalog]),
    output:
        f"{OUT}/{{catalog}}",
    wildcard_constraints:
        catalog=rf"[^/]+_cat\.{re.escape(CATALOG_EXT)}",
    params:
        wcs_sidecar=published_wcs_sidecar,
        catalog_format=TW["catalog_format"],
    log:
        f"{LOGS}/publish_catalog/{{catalog}}.log",
    resources:
        # from the catalog's size only: the wcs input is the folder of every
        # image's sidecar (but with the global solve)
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(4 * input_mb(input.catalog))),
        runtime=lambda wc, attempt: attempt,
    run:
        run_script("publish_catalog.py", input, output, params, wildcards, log)
