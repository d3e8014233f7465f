"""Rule global_wcs: one image's corrected WCS sidecar from the global solve."""

from tweakflow.steps import global_wcs_step, run_rule

run_rule(
    global_wcs_step,
    snakemake.log[0],
    sidecar=snakemake.input.sidecar,
    corrections=snakemake.input.corrections,
    output=snakemake.output[0],
    on_bad_input=snakemake.params.on_bad_input,
)
