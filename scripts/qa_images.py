"""Rule qa_images: per-image residual plots of the relative fit (PNG)."""
from tweakflow.steps import qa_images_step, run_rule

run_rule(
    qa_images_step,
    snakemake.log[0],
    solutions=snakemake.input.solutions,
    matches=snakemake.input.matches,
    sidecars=list(snakemake.params.sidecars),
    images_dir=snakemake.output.images,
)
