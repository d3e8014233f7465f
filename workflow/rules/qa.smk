# Quality assessment for `snakemake --report report.html`: plots from the
# alignment results (matched pairs, solution tables, WCS sidecars; never pixel
# data) and HTML pages (summary, attempts, configuration, logs and benchmarks).


rule qa_images:
    input:
        solutions=relative_tables()["solutions"],
        matches=relative_tables()["matches"],
        # the relative stage's WCS sidecars (one folder), not the final
        # ones: the plots show the relative fit, and a retune of the
        # absolute fit leaves them as they are
        sidecars=stage_wcs_inputs(stage_wcs_folder(WORK, "relative")),
    output:
        images=report(
            directory(f"{QA}/images"),
            patterns=["{stem}.png"],
            caption="../report/qa_image.rst",
            category="2. Alignment quality",
            subcategory="per image",
            labels={"image": "{stem}", "figure": "residuals before/after"},
        ),
    params:
        sidecars=lambda wc, input: stage_wcs_files(input.sidecars),
    log:
        f"{LOGS}/qa_images.log",
    benchmark:
        f"{BENCH}/qa_images.tsv"
    resources:
        # one figure at a time: measured ~200 MB peak and ~0.2 s per image
        mem_mb=lambda wc, attempt: attempt * (400 + len(STEMS)),
        runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 60),
    run:
        run_script("qa_images.py", input, output, params, wildcards, log)


rule qa_plots:
    input:
        solutions=relative_tables()["solutions"],
        matches=relative_tables()["matches"],
        sidecars=final_wcs_inputs(),
    output:
        footprints=report(
            f"{QA}/footprints.png",
            caption="../report/qa_footprints.rst",
            category="2. Alignment quality",
            subcategory="all images",
            labels={"figure": "footprints on the sky"},
        ),
        overview=report(
            f"{QA}/residuals_overview.png",
            caption="../report/qa_overview.rst",
            category="2. Alignment quality",
            subcategory="all images",
            labels={"figure": "residuals and fit statistics"},
        ),
    params:
        sidecars=lambda wc, input: stage_wcs_files(input.sidecars),
    log:
        f"{LOGS}/qa_plots.log",
    benchmark:
        f"{BENCH}/qa_plots.tsv"
    resources:
        # two figures from every final WCS: measured ~200 MB peak
        mem_mb=lambda wc, attempt: attempt * (400 + len(STEMS)),
        runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 200),
    run:
        run_script("qa_plots.py", input, output, params, wildcards, log)


if ABSOLUTE and not GLOBAL:

    rule qa_absolute:
        input:
            solutions=f"{WORK}/absolute/solutions.ecsv",
            matches=absolute_matches_input(),
        output:
            report(
                f"{QA}/absolute_fit.png",
                caption="../report/qa_absolute.rst",
                category="2. Alignment quality",
                subcategory="all images",
                labels={"figure": "absolute fit"},
            ),
        log:
            f"{LOGS}/qa_absolute.log",
        # one small plot: on a cluster it runs on the submit host, not as a job
        localrule: True
        resources:
            mem_mb=800,
            runtime=5,
        run:
            run_script("qa_absolute.py", input, output, params, wildcards, log)


if GLOBAL:

    rule qa_overlaps:
        input:
            images=f"{WORK}/global/images.json",
            pairs=f"{WORK}/global/pair_summary.ecsv",
            solutions=f"{WORK}/global/solutions.ecsv",
        output:
            report(
                f"{QA}/overlaps.png",
                caption="../report/qa_overlaps.rst",
                category="2. Alignment quality",
                subcategory="all images",
                labels={"figure": "overlap graph"},
            ),
        log:
            f"{LOGS}/qa_overlaps.log",
        resources:
            mem_mb=lambda wc, attempt: attempt * (400 + len(STEMS)),
            runtime=lambda wc, attempt: attempt * (5 + len(STEMS) // 500),
        run:
            run_script("qa_overlaps.py", input, output, params, wildcards, log)


rule qa_tables:
    input:
        summary=f"{OUT}/tweakreg_summary.ecsv",
        attempts=relative_tables()["attempts"],
        verdict=VERDICT,
        front_page=os.path.join(ROOT, "workflow", "report", "workflow.rst"),
        after=after_everything_else,
    output:
        summary=report(
            f"{QA}/summary.html",
            caption="../report/summary.rst",
            category="1. Summary",
            labels={"page": "per image and per group"},
        ),
        attempts=report(
            f"{QA}/attempts.html",
            caption="../report/attempts.rst",
            category="1. Summary",
            labels={"page": "alignment attempts"},
        ),
        config=report(
            f"{QA}/config.html",
            caption="../report/config.rst",
            category="1. Summary",
            labels={"page": "configuration"},
        ),
        record=report(
            f"{QA}/run_record.html",
            caption="../report/run_record.rst",
            category="3. Logs and benchmarks",
            labels={"page": "every job"},
        ),
        front_page=FRONT_PAGE,
    params:
        config=config,
        logs_dir=LOGS,
        bench_dir=BENCH,
    log:
        f"{LOGS}/qa_tables.log",
    # small HTML pages: on a cluster it runs on the submit host, not as a job
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    run:
        run_script("qa_tables.py", input, output, params, wildcards, log)
