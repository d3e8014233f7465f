# Scatter: one corrected image per input, and the summary table.

if not GLOBAL:

    # The final stage's WCS sidecars, hard-linked into a folder that only this
    # one-input job makes: the per-image jobs then depend on it rather than on
    # the gather job (two inputs per image), which keeps building the DAG linear
    # in the number of images (common.smk, "the WCS sidecars of the alignment stages").
    rule final_wcs:
        input:
            stage_wcs_folder(WORK, final_stage()),
        output:
            directory(FINAL_WCS),
        log:
            f"{LOGS}/final_wcs.log",
        # hard links: on a cluster it runs on the submit host, not as a job
        localrule: True
        resources:
            mem_mb=200,
            runtime=5,
        run:
            run_script("final_wcs.py", input, output, params, wildcards, log)


rule apply_wcs:
    input:
        image=image_path,
        wcs=image_final_wcs("{stem}"),
    output:
        f"{OUT}/{{stem}}_tweakreg.fits",
    params:
        wcs_sidecar=image_wcs_sidecar,
        sip=sip_params(),
        association=per_image(image_association),
    log:
        f"{LOGS}/apply_wcs/{{stem}}.log",
    benchmark:
        f"{BENCH}/apply_wcs/{{stem}}.tsv"
    resources:
        # measured peak RSS: ~130 MB + 1.4x the file (240 MB for an 80 MB
        # 2048x2048 file); ~10 s per 2048x2048 image as a cluster job, start-up
        # included. From the image's size only: the wcs input is the folder of
        # every image's sidecar (but with the global solve)
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(2 * input_mb(input.image))),
        runtime=lambda wc, input, attempt: attempt * (1 + int(input_mb(input.image) // 50)),
    run:
        run_script("apply_wcs.py", input, output, params, wildcards, log)


rule summary:
    input:
        solution_tables(),
    output:
        f"{OUT}/tweakreg_summary.ecsv",
    log:
        f"{LOGS}/summary.log",
    # one small table: on a cluster it runs on the submit host, not as a job
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    run:
        run_script("summary.py", input, output, params, wildcards, log)


rule verdict:
    input:
        unpack(verdict_inputs),
    output:
        VERDICT,
    log:
        f"{LOGS}/verdict.log",
    # a few lines: on a cluster it runs on the submit host, not as a job
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    run:
        run_script("verdict.py", input, output, params, wildcards, log)
