# Fan out: one source catalog and one WCS sidecar per image (and, with
# save_catalogs, the published copy of the catalog).


rule detect_sources:
    input:
        unpack(detect_inputs),
    output:
        catalog=f"{WORK}/catalogs/{{stem}}_cat.ecsv",
        sidecar=f"{WORK}/sidecars/{{stem}}_meta.json",
    params:
        detection=image_detection_params,
        group_id=lambda wc: BY_STEM[wc.stem]["group_id"],
        on_bad_input=ON_BAD_INPUT,
        fits=fits_params(),
    log:
        f"{LOGS}/detect_sources/{{stem}}.log",
    benchmark:
        f"{BENCH}/detect_sources/{{stem}}.tsv"
    group:
        "detect"
    resources:
        # SCI + DQ + background maps, float32: ~6 copies of the image
        mem_mb=lambda wc, input, attempt: attempt * (400 + int(6 * input.size_mb)),
        runtime=lambda wc, attempt: 5 * attempt,
    script:
        "../../scripts/detect_sources.py"


rule publish_catalog:
    input:
        catalog=f"{WORK}/catalogs/{{stem}}_cat.ecsv",
    output:
        f"{OUT}/{{stem}}_cat.{CATALOG_EXT}",
    params:
        catalog_format=TW["catalog_format"],
    log:
        f"{LOGS}/publish_catalog/{{stem}}.log",
    group:
        "detect"
    resources:
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(4 * input.size_mb)),
        runtime=lambda wc, attempt: 2 * attempt,
    script:
        "../../scripts/publish_catalog.py"
