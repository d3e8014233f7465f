"""Rule summary: tweakreg_summary.ecsv."""
from tweakflow.steps import run_rule, summary_step

run_rule(summary_step, snakemake.log[0], solution_tables=list(snakemake.input), output=snakemake.output[0])
