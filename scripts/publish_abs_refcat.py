"""Rule publish_abs_refcat: save_abs_catalog."""
from tweakflow.steps import publish_refcat_step, run_rule

run_rule(publish_refcat_step, snakemake.log[0], refcat=snakemake.input[0], output=snakemake.output[0])
