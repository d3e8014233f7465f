# Fan out: one source catalog and one WCS sidecar per image.


rule detect_sources:
    input:
        image=image_path,
    output:
        catalog=f"{WORK}/catalogs/{{stem}}_cat.ecsv",
        sidecar=f"{WORK}/sidecars/{{stem}}_meta.json",
    params:
        detection=detection_params(),
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
