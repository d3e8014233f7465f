"""Rule qa_plots: footprints on the sky and the overview of the fit (PNG)."""
from tweakflow.steps import qa_plots_step, run_rule

run_rule(
    qa_plots_step,
    snakemake.log[0],
    solutions=snakemake.input.solutions,
    matches=snakemake.input.matches,
    sidecars=list(snakemake.params.sidecars),
    footprints_out=snakemake.output.footprints,
    overview_out=snakemake.output.overview,
)
