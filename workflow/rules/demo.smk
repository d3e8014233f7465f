# Built-in synthetic dataset (inputs: demo).

if config["inputs"] == "demo":

    rule make_demo:
        output:
            images=[it["path"] for it in IMAGES],
            truth=f"{DEMO_DIR}/truth.asdf",
            asn=f"{DEMO_DIR}/asn.json",
            refcat=f"{DEMO_DIR}/refcat.ecsv",
        params:
            demo=config.get("demo", {}),
            # DEMO_DIR, taken from the output path (the lint's rule for path prefixes)
            outdir=lambda wc, output: os.path.dirname(output.truth),
        log:
            f"{LOGS}/make_demo.log",
        benchmark:
            f"{BENCH}/make_demo.tsv"
        resources:
            # measured: ~150 MB + 55 MB per Mpixel of one image (written one
            # at a time; 370 MB for 2048x2048), ~1 s per Mpixel
            mem_mb=lambda wc, attempt: (
                attempt * (400 + int(1e-4 * config["demo"]["shape"][0] * config["demo"]["shape"][1]))
            ),
            runtime=lambda wc, attempt: (
                attempt * (2 + int(len(STEMS) * config["demo"]["shape"][0] * config["demo"]["shape"][1] / 20e6))
            ),
        run:
            run_script("make_demo.py", input, output, params, wildcards, log)

    rule demo_accuracy:
        input:
            images=expand(f"{OUT}/{{stem}}_tweakreg.fits", stem=STEMS),
            inputs=[it["path"] for it in IMAGES],
            truth=f"{DEMO_DIR}/truth.asdf",
        output:
            f"{OUT}/demo_accuracy.ecsv",
        log:
            f"{LOGS}/demo_accuracy.log",
        resources:
            mem_mb=1000,
            runtime=5,
        run:
            run_script("demo_accuracy.py", input, output, params, wildcards, log)
