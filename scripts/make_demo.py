"""Rule make_demo: write the built-in synthetic dataset."""
from tweakflow.steps import demo_step, run_rule

run_rule(demo_step, snakemake.log[0], outdir=snakemake.params.outdir, demo_config=snakemake.params.demo)
