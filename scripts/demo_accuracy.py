"""Rule demo_accuracy: the demo's corrected WCSs against the synthetic truth."""
from tweakflow.steps import demo_accuracy_step, run_rule

run_rule(
    demo_accuracy_step,
    snakemake.log[0],
    outputs=list(snakemake.input.images),
    inputs=list(snakemake.input.inputs),
    truth=snakemake.input.truth,
    output=snakemake.output[0],
)
