"""Rule transfer_solutions: the correction of every exposure group of the finished run."""
from tweakflow.steps import run_rule, transfer_solutions_step

run_rule(
    transfer_solutions_step,
    snakemake.log[0],
    output=snakemake.output[0],
    wcs_sidecars=list(snakemake.params.wcs_sidecars),
    image_sidecars=list(snakemake.input.get("images", [])),
    run_dir=snakemake.params.run_dir,
    run=snakemake.params.run,
)
