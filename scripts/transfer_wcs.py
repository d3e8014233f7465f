"""Rule transfer_wcs: one image with its exposure group's correction, and its record."""
from tweakflow.steps import run_rule, transfer_wcs_step

run_rule(
    transfer_wcs_step,
    snakemake.log[0],
    image=snakemake.input.image,
    solutions=snakemake.input.solutions,
    output=snakemake.output.image,
    record=snakemake.output.record,
    group_id=snakemake.params.group_id,
    association=dict(snakemake.params.association),
    fits=dict(snakemake.params.fits),
    sip=dict(snakemake.params.sip),
    on_skipped=snakemake.params.on_skipped,
    run=snakemake.params.run,
)
