"""Rule match_pairs: match the catalogs of one batch of overlapping pairs (relative_solver: global)."""

from tweakflow.steps import match_pairs_step, run_rule

run_rule(
    match_pairs_step,
    snakemake.log[0],
    pairs=snakemake.input.pairs,
    images=snakemake.input.images,
    batch=int(snakemake.wildcards.batch),
    matches_out=snakemake.output.matches,
    summary_out=snakemake.output.summary,
    relative=dict(snakemake.params.relative),
    quality=dict(snakemake.params.quality),
    refcat=snakemake.input.refcat or None,
    absolute=dict(snakemake.params.absolute),
)
