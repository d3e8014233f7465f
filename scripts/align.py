"""Rule align: relative alignment of all images."""
from tweakflow.steps import align_step, run_rule

run_rule(
    align_step,
    snakemake.log[0],
    catalogs=list(snakemake.input.catalogs),
    sidecars=list(snakemake.input.sidecars),
    solutions_out=snakemake.output.solutions,
    wcs_out=list(snakemake.params.wcs_files),
    relative=dict(snakemake.params.relative),
    on_bad_input=snakemake.params.on_bad_input,
    quality=dict(snakemake.params.quality),
    matches_out=snakemake.output.matches,
    attempts_out=snakemake.output.attempts,
    reference_out=snakemake.output.reference,
)
