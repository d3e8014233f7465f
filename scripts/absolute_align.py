"""Rule absolute_align: one fit of the aligned set to the reference catalog."""
from tweakflow.steps import absolute_step, run_rule

run_rule(
    absolute_step,
    snakemake.log[0],
    catalogs=list(snakemake.input.catalogs),
    sidecars=list(snakemake.params.sidecar_files),
    refcat=snakemake.input.refcat,
    solutions_out=snakemake.output.solutions,
    wcs_out=list(snakemake.params.wcs_files),
    combined_out=snakemake.output.combined,
    matches_out=snakemake.output.matches,
    absolute=dict(snakemake.params.absolute),
    quality=dict(snakemake.params.quality),
    refcat_name=snakemake.params.refcat_name,
)
