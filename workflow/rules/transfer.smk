# Transfer: the corrections of a finished run applied to other images of the
# same exposures (transfer.images), run as `snakemake --cores all transfer`.
# transfer_solutions measures each exposure group's correction from the run's
# WCS sidecars (input and final), transfer_wcs writes each image with its
# group's correction into {output_dir}/transfer/, transfer_summary lists them.
# With transfer.from unset the run is this configuration's: its final
# sidecars are the inputs, so a finished run is not run again. The block's
# resolution and input functions are in common.smk.


rule transfer_solutions:
    input:
        unpack(transfer_solution_inputs),
    output:
        f"{TRANSFER_DIR}/group_solutions.ecsv",
    params:
        wcs_sidecars=lambda wc, input: stage_wcs_files(input.wcs) if TRANSFER_THIS_RUN else [],
        # output_dirs, not path prefixes of this rule's files (functions: see --lint)
        run_dir=lambda wc: None if TRANSFER_THIS_RUN else TRANSFER_FROM,
        run=lambda wc: TRANSFER_FROM,
    log:
        f"{LOGS}/transfer_solutions.log",
    benchmark:
        f"{BENCH}/transfer_solutions.tsv"
    resources:
        # two WCSs deserialized per image of the run, one group kept at a time
        mem_mb=lambda wc, attempt: attempt * (500 + 2 * len(STEMS)),
        runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 100),
    run:
        run_script("transfer_solutions.py", input, output, params, wildcards, log)


rule transfer_wcs:
    input:
        image=lambda wc: TRANSFER_BY_STEM[wc.tstem]["path"],
        solutions=f"{TRANSFER_DIR}/group_solutions.ecsv",
    output:
        image=f"{TRANSFER_DIR}/{{tstem}}_tweakreg.fits",
        record=f"{TRANSFER_DIR}/work/{{tstem}}.json",
    wildcard_constraints:
        tstem="[^/]+",
    params:
        group_id=lambda wc: TRANSFER_BY_STEM[wc.tstem]["group_id"],
        association=lambda wc: TRANSFER_BY_STEM[wc.tstem].get("association") or {},
        fits=fits_params(),
        sip=sip_params(),
        on_skipped=TRANSFER["on_skipped"],
        run=lambda wc: TRANSFER_FROM,
    log:
        f"{LOGS}/transfer_wcs/{{tstem}}.log",
    benchmark:
        f"{BENCH}/transfer_wcs/{{tstem}}.tsv"
    resources:
        # as apply_wcs: the image is read and written once
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(2 * input_mb(input))),
        runtime=lambda wc, input, attempt: attempt * (1 + int(input_mb(input) // 50)),
    run:
        run_script("transfer_wcs.py", input, output, params, wildcards, log)


rule transfer_summary:
    input:
        expand(f"{TRANSFER_DIR}/work/{{tstem}}.json", tstem=TRANSFER_BY_STEM),
    output:
        f"{TRANSFER_DIR}/transfer_summary.ecsv",
    log:
        f"{LOGS}/transfer_summary.log",
    # one small table: on a cluster it runs on the submit host, not as a job
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    run:
        run_script("transfer_summary.py", input, output, params, wildcards, log)


rule transfer:
    input:
        transfer_outputs,
