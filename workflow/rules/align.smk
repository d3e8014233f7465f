# Gather: relative alignment of all catalogs, group by group.


rule align:
    input:
        catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
        sidecars=expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
    output:
        solutions=f"{WORK}/relative/solutions.ecsv",
        wcs=expand(f"{WORK}/relative/{{stem}}_wcs.asdf", stem=STEMS),
        matches=f"{WORK}/relative/matches.ecsv",
        attempts=f"{WORK}/relative/attempts.ecsv",
    params:
        relative=relative_params(),
        quality=quality_params(),
        on_bad_input=ON_BAD_INPUT,
    log:
        f"{LOGS}/align.log",
    benchmark:
        f"{BENCH}/align.tsv"
    resources:
        # catalogs + one GWCS per image; grows with the number of images
        mem_mb=lambda wc, attempt: attempt * (500 + 2 * len(STEMS)),
        runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 100),
    script:
        "../../scripts/align.py"
