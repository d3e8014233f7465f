"""The workflow's steps, one function per rule, callable without Snakemake.

Each function takes explicit input/output paths and parameters; the thin
scripts in ``scripts/`` only unpack ``snakemake.input/params/output`` and
call them through `run_rule`, which sends the job's log records to its log
file and turns a `~tweakflow.errors.TweakflowError` into a one-line message
and a failed job instead of a traceback. The workflow runs the scripts as
threads of the Snakemake process (``run_script`` in
``workflow/rules/common.smk``), so every function here is safe to run side
by side with the others in one process: the only global state they change
is the log handlers of the calling thread (`job_logging`) and, around
library calls whose warnings a step handles itself (no sources found, a
refitted SIP), Python's warning filters (``warnings.catch_warnings`` is
process-wide before Python 3.14: with jobs side by side, such an "ignore"
can outlast its block and silence warnings of another job on the console;
no result depends on it).

The steps by phase of the DAG: `tweakflow.steps.fanout` (per image),
`tweakflow.steps.gather` (the alignments), `tweakflow.steps.scatter` (per
output), `tweakflow.steps.transfer` (a finished run's corrections applied
to other images), `tweakflow.steps.report` and `tweakflow.qa` (summary, plots,
pages); `tweakflow.steps.jobs` runs any of them as a job.
"""

from ..qa import qa_absolute_step, qa_images_step, qa_overlaps_step, qa_plots_step, qa_tables_step
from .fanout import demo_step, detect_step, fetch_refcat_step, publish_catalog_step
from .gather import absolute_step, align_step, final_wcs_step, publish_refcat_step
from .jobs import job_logging, run_rule
from .mosaic import global_solve_step, global_wcs_step, match_pairs_step, overlap_pairs_step
from .report import demo_accuracy_step, summary_step, verdict_step
from .scatter import apply_step
from .transfer import transfer_solutions_step, transfer_summary_step, transfer_wcs_step

__all__ = [
    "run_rule",
    "job_logging",
    "demo_step",
    "detect_step",
    "publish_catalog_step",
    "fetch_refcat_step",
    "align_step",
    "absolute_step",
    "final_wcs_step",
    "publish_refcat_step",
    "overlap_pairs_step",
    "match_pairs_step",
    "global_solve_step",
    "global_wcs_step",
    "apply_step",
    "transfer_solutions_step",
    "transfer_wcs_step",
    "transfer_summary_step",
    "summary_step",
    "demo_accuracy_step",
    "verdict_step",
    "qa_images_step",
    "qa_plots_step",
    "qa_absolute_step",
    "qa_tables_step",
    "qa_overlaps_step",
]
