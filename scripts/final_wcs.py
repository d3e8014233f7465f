"""Rule final_wcs: the final alignment stage's WCS sidecars, for the per-image output jobs."""
from tweakflow.steps import final_wcs_step, run_rule

run_rule(final_wcs_step, snakemake.log[0], folder=snakemake.input[0], output=snakemake.output[0])
