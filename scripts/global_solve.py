"""Rule global_solve: every group's correction from all matched pairs (relative_solver: global)."""

from tweakflow.steps import global_solve_step, run_rule

run_rule(
    global_solve_step,
    snakemake.log[0],
    pairs=snakemake.input.pairs,
    images=snakemake.input.images,
    batch_matches=list(snakemake.input.matches),
    batch_summaries=list(snakemake.input.summaries),
    solutions_out=snakemake.output.solutions,
    corrections_out=snakemake.output.corrections,
    summary_out=snakemake.output.summary,
    matches_out=snakemake.output.matches,
    attempts_out=snakemake.output.attempts,
    relative=dict(snakemake.params.relative),
    quality=dict(snakemake.params.quality),
    refcat_name=snakemake.params.refcat_name,
)
