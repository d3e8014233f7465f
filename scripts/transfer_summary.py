"""Rule transfer_summary: transfer/transfer_summary.ecsv."""
from tweakflow.steps import run_rule, transfer_summary_step

run_rule(transfer_summary_step, snakemake.log[0], records=list(snakemake.input), output=snakemake.output[0])
