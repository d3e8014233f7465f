"""Rule apply_wcs: write one corrected image."""
from tweakflow.steps import apply_step, run_rule

run_rule(
    apply_step,
    snakemake.log[0],
    image=snakemake.input.image,
    wcs_sidecar=snakemake.params.wcs_sidecar,
    output=snakemake.output[0],
    sip=dict(snakemake.params.sip),
    association=dict(snakemake.params.association),
)
