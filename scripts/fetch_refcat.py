"""Rule fetch_refcat: Gaia reference catalog over the footprint of all images."""
from tweakflow.steps import fetch_refcat_step, run_rule

run_rule(
    fetch_refcat_step,
    snakemake.log[0],
    sidecars=list(snakemake.input.sidecars),
    output=snakemake.output[0],
    catalog=snakemake.wildcards.catalog,
    url=snakemake.params.url,
    timeout=snakemake.params.timeout,
    retries=snakemake.params.retries,
    hygiene=snakemake.params.hygiene,
)
