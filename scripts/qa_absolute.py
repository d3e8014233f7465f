"""Rule qa_absolute: plot of the absolute fit (PNG)."""
from tweakflow.steps import qa_absolute_step, run_rule

run_rule(
    qa_absolute_step,
    snakemake.log[0],
    solutions=snakemake.input.solutions,
    matches=snakemake.input.matches or None,
    output=snakemake.output[0],
)
