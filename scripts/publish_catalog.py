"""Rule publish_catalog: save_catalogs' {output_dir}/<meta.filename without .fits>_cat.{ext}."""
from tweakflow.steps import publish_catalog_step, run_rule

run_rule(
    publish_catalog_step,
    snakemake.log[0],
    catalog=snakemake.input.catalog,
    output=snakemake.output[0],
    catalog_format=snakemake.params.catalog_format,
)
