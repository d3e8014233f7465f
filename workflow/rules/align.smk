# Gather: relative alignment of all catalogs, group by group.


rule align:
    input:
        catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
        sidecars=expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
    output:
        solutions=f"{WORK}/relative/solutions.ecsv",
        wcs=directory(stage_wcs_folder(WORK, "relative")),
        matches=f"{WORK}/relative/matches.ecsv",
        attempts=f"{WORK}/relative/attempts.ecsv",
        # the reference catalog the alignment ended with (expanded with expand_refcat)
        reference=f"{WORK}/relative/reference.ecsv",
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
        # measured peak RSS, 1,000 images (catalogs + sidecars 28 MB): 597 MB
        # (~0.4 MB per image), 159 s; 823 MB with expand_refcat (the growing
        # reference catalog), 182 s
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


rule publish_expanded_refcat:
    input:
        f"{WORK}/relative/reference.ecsv",
    output:
        f"{OUT}/tweakreg_refcat.{CATALOG_EXT}",
    params:
        catalog_format=TW["catalog_format"],
    log:
        f"{LOGS}/publish_expanded_refcat.log",
    # a file copy: on a cluster it runs on the submit host, not as a job
    localrule: True
    resources:
        mem_mb=lambda wc, input, attempt: attempt * (300 + int(4 * input_mb(input))),
        runtime=5,
    run:
        run_script("publish_expanded_refcat.py", input, output, params, wildcards, log)
