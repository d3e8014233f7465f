"""Rule publish_expanded_refcat: save_catalogs with expand_refcat: the final expanded reference catalog, {output_dir}/tweakreg_refcat.{ext}."""
from tweakflow.steps import publish_catalog_step, run_rule

run_rule(
    publish_catalog_step,
    snakemake.log[0],
    catalog=snakemake.input[0],
    output=snakemake.output[0],
    catalog_format=snakemake.params.catalog_format,
)
