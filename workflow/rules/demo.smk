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
            outdir=DEMO_DIR,
        log:
            f"{LOGS}/make_demo.log",
        benchmark:
            f"{BENCH}/make_demo.tsv"
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=10,
        script:
            "../../scripts/make_demo.py"
