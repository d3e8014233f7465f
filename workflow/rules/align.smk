# Gather: relative alignment of all catalogs, group by group.


rule align:
    input:
        catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
        sidecars=expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
    output:
        solutions=f"{WORK}/relative/solutions.ecsv",
        wcs=directory(f"{WORK}/relative/{WCS_DIR}"),
        matches=f"{WORK}/relative/matches.ecsv",
        attempts=f"{WORK}/relative/attempts.ecsv",
    params:
        wcs_files=lambda wc, output: wcs_sidecars(output.wcs),
        relative=relative_params(),
        quality=quality_params(),
        on_bad_input=ON_BAD_INPUT,
    log:
        f"{LOGS}/align.log",
    benchmark:
        f"{BENCH}/align.tsv"
    resources:
        # measured peak RSS, 1,000 images (catalogs + sidecars 28 MB): 564 MB
        # (~0.4 MB per image), 258 s; 740 MB with expand_refcat (the growing
        # reference catalog), 373 s
        mem_mb=lambda wc, input, attempt: (
            attempt
            * (
                300 + 2 * len(STEMS) + int(30 * input_mb(input))
                if relative_params()["expand_refcat"]
                else 300 + len(STEMS) + int(4 * input_mb(input))
            )
        ),
        runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 40),
    run:
        run_script("align.py", input, output, params, wildcards, log)
