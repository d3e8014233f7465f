"""Rule publish_catalog: save_catalogs' {output_dir}/<meta.filename without .fits>_cat.{ext}, with RA/DEC of the corrected WCS."""
from tweakflow.steps import publish_catalog_step, run_rule

run_rule(
    publish_catalog_step,
    snakemake.log[0],
    catalog=snakemake.input.catalog,
    wcs_sidecar=snakemake.params.wcs_sidecar,
    output=snakemake.output[0],
    catalog_format=snakemake.params.catalog_format,
)
