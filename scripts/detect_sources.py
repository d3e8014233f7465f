"""Rule detect_sources: catalog + WCS sidecar of one image."""
from tweakflow.steps import detect_step, run_rule

run_rule(
    detect_step,
    snakemake.log[0],
    image=snakemake.input.image,
    catalog_out=snakemake.output.catalog,
    sidecar_out=snakemake.output.sidecar,
    detection=dict(snakemake.params.detection),
    group_id=snakemake.params.group_id,
    custom_catalog=snakemake.input.get("custom_catalog"),
    on_bad_input=snakemake.params.on_bad_input,
    fits=dict(snakemake.params.fits),
)
