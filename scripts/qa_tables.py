"""Rule qa_tables: HTML pages of the report (summary, attempts, configuration, logs and benchmarks)."""
from tweakflow.steps import qa_tables_step, run_rule

run_rule(
    qa_tables_step,
    snakemake.log[0],
    summary=snakemake.input.summary,
    attempts=snakemake.input.attempts,
    verdict=snakemake.input.verdict,
    front_page=snakemake.input.front_page,
    summary_out=snakemake.output.summary,
    attempts_out=snakemake.output.attempts,
    config_out=snakemake.output.config,
    record_out=snakemake.output.record,
    front_page_out=snakemake.output.front_page,
    config=dict(snakemake.params.config),
    logs_dir=snakemake.params.logs_dir,
    bench_dir=snakemake.params.bench_dir,
)
