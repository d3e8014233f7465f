"""Rule qa_overlaps: the global solve's overlap graph."""

from tweakflow.steps import qa_overlaps_step, run_rule

run_rule(
    qa_overlaps_step,
    snakemake.log[0],
    images=snakemake.input.images,
    pairs=snakemake.input.pairs,
    solutions=snakemake.input.solutions,
    output=snakemake.output[0],
)
