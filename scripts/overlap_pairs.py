"""Rule overlap_pairs: the overlapping pairs of groups, in batches (relative_solver: global)."""

from tweakflow.steps import overlap_pairs_step, run_rule

run_rule(
    overlap_pairs_step,
    snakemake.log[0],
    sidecars=list(snakemake.input.sidecars),
    catalogs=list(snakemake.input.catalogs),
    pairs_out=snakemake.output.pairs,
    images_out=snakemake.output.images,
    n_batches=snakemake.params.n_batches,
    with_refcat=snakemake.params.with_refcat,
    on_bad_input=snakemake.params.on_bad_input,
)
