"""Rule verdict: the run's verdict (counts, one line per group, the demo's accuracy) in verdict.txt."""
from tweakflow.steps import run_rule, verdict_step

run_rule(
    verdict_step,
    snakemake.log[0],
    summary=snakemake.input.summary,
    accuracy=snakemake.input.get("accuracy"),
    output=snakemake.output[0],
)
