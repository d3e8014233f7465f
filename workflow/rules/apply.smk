# Scatter: one corrected image per input, and the summary table.


rule apply_wcs:
    input:
        image=image_path,
        wcs=final_wcs_sidecar,
    output:
        f"{OUT}/{{stem}}_tweakreg.fits",
    params:
        sip=sip_params(),
        association=image_association,
    log:
        f"{LOGS}/apply_wcs/{{stem}}.log",
    benchmark:
        f"{BENCH}/apply_wcs/{{stem}}.tsv"
    group:
        "apply"
    resources:
        # measured peak RSS: ~130 MB + 1.4x the file (240 MB for an 80 MB
        # 2048x2048 file); ~10 s per 2048x2048 image as a cluster job, start-up included
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(2 * input.size_mb)),
        runtime=lambda wc, input, attempt: attempt * (1 + int(input.size_mb // 50)),
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
