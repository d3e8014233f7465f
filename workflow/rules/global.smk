# Gather with relative_solver: global: overlapping pairs (from the footprints
# the detection jobs wrote), pair matching in batches (one job each, local or
# on the cluster), one solve over all matches (and the reference catalog);
# scatter: each image's corrected WCS.

if GLOBAL:

    rule overlap_pairs:
        input:
            sidecars=expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
            catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
        output:
            pairs=f"{WORK}/global/pairs.ecsv",
            images=f"{WORK}/global/images.json",
        params:
            n_batches=pair_batches(),
            with_refcat=ABSOLUTE,
            on_bad_input=ON_BAD_INPUT,
        log:
            f"{LOGS}/overlap_pairs.log",
        benchmark:
            f"{BENCH}/overlap_pairs.tsv"
        resources:
            mem_mb=lambda wc, attempt: attempt * (300 + len(STEMS)),
            runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 500),
        run:
            run_script("overlap_pairs.py", input, output, params, wildcards, log)

    rule match_pairs:
        input:
            pairs=f"{WORK}/global/pairs.ecsv",
            images=f"{WORK}/global/images.json",
            catalogs=expand(f"{WORK}/catalogs/{{stem}}_cat.ecsv", stem=STEMS),
            refcat=refcat_input() if ABSOLUTE else [],
        output:
            matches=f"{WORK}/global/matches/batch_{{batch}}.ecsv",
            summary=f"{WORK}/global/matches/pairs_{{batch}}.ecsv",
        wildcard_constraints:
            batch=r"\d+",
        params:
            relative=relative_params(),
            quality=quality_params(),
            absolute=absolute_params(),
        log:
            f"{LOGS}/match_pairs_{{batch}}.log",
        benchmark:
            f"{BENCH}/match_pairs_{{batch}}.tsv"
        resources:
            mem_mb=lambda wc, attempt: attempt * 600,
            runtime=lambda wc, attempt: attempt * 10,
        run:
            run_script("match_pairs.py", input, output, params, wildcards, log)

    rule global_solve:
        input:
            pairs=f"{WORK}/global/pairs.ecsv",
            images=f"{WORK}/global/images.json",
            matches=expand(f"{WORK}/global/matches/batch_{{batch}}.ecsv", batch=range(pair_batches())),
            summaries=expand(f"{WORK}/global/matches/pairs_{{batch}}.ecsv", batch=range(pair_batches())),
        output:
            solutions=f"{WORK}/global/solutions.ecsv",
            corrections=f"{WORK}/global/corrections.ecsv",
            summary=f"{WORK}/global/pair_summary.ecsv",
            matches=f"{WORK}/global/matches.ecsv",
            attempts=f"{WORK}/global/attempts.ecsv",
        params:
            relative=relative_params(),
            quality=quality_params(),
            refcat_name=lambda wc: TW["abs_refcat"],
        log:
            f"{LOGS}/global_solve.log",
        benchmark:
            f"{BENCH}/global_solve.tsv"
        resources:
            mem_mb=lambda wc, input, attempt: attempt * (400 + len(STEMS) + int(4 * input_mb(input))),
            runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 200),
        run:
            run_script("global_solve.py", input, output, params, wildcards, log)

    rule global_wcs:
        input:
            sidecar=f"{WORK}/sidecars/{{stem}}_meta.json",
            corrections=f"{WORK}/global/corrections.ecsv",
        output:
            wcs_sidecar_path(stage_wcs_folder(WORK, "global"), "{stem}"),
        params:
            on_bad_input=ON_BAD_INPUT,
        log:
            f"{LOGS}/global_wcs/{{stem}}.log",
        benchmark:
            f"{BENCH}/global_wcs/{{stem}}.tsv"
        resources:
            mem_mb=lambda wc, attempt: attempt * 500,
            runtime=lambda wc, attempt: attempt * 5,
        run:
            run_script("global_wcs.py", input, output, params, wildcards, log)
