# tweakflow: align astronomical images to each other and to an astrometric
# reference catalog, by the method of the JWST pipeline's tweakreg step.
#
#   snakemake --cores all                      # run with config/config.yaml
#   snakemake --cores all --config inputs=my_asn.json
#
# DAG: make_demo (demo only) -> detect_sources (per image) -> align (gather)
#      [-> fetch_refcat -> absolute_align] -> apply_wcs (per image) + summary
#   snakemake --cores all transfer             # a finished run's corrections applied to
#                                              # transfer.images (workflow/rules/transfer.smk)

import os
import time

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version, update_config

from tweakflow.config import resolve_config
from tweakflow.console import use_concise_console
from tweakflow.errors import TweakflowError
from tweakflow.jobhost import finish_jobs, prepare_for_jobs, start_zygote

min_version("9.0")
RUN_STARTED = time.time()
# this workflow's folder, also when it is used as a module of another workflow
# (workflow.basedir is then the other workflow's)
ROOT = workflow.current_basedir.get_path_or_uri(secret_free=True)
AS_MODULE = os.path.realpath(ROOT) != os.path.realpath(workflow.basedir)
# The jobs run in worker processes forked from a zygote that imports their
# libraries while Snakemake starts (tweakflow.jobhost): started first thing;
# not for a dry run, as a module, or in the Snakemake process a cluster
# runs a job with (its jobs run in its threads)
if (
    not (AS_MODULE or workflow.output_settings.dryrun)
    and workflow.exec_mode.name == "DEFAULT"
    and (workflow.resource_settings.cores or 1) > 1
):
    start_zygote()


configfile: os.path.join(ROOT, "config", "config.yaml")


# used as a module (`module tweakflow: config: ...`), the configfile above is
# not read: its values are the defaults under the configuration given
with_defaults = load_configfile(os.path.join(ROOT, "config", "config.yaml"))
update_config(with_defaults, config)
config.update(with_defaults)


# console: concise (default) shows counts, progress, warnings, one line per
# failed job and the verdict; "snakemake" keeps Snakemake's own console
# (and dry runs list every job, as Snakemake does); a host workflow that uses
# this one as a module keeps its own console
if config.get("console") != "snakemake" and not (
    AS_MODULE or workflow.output_settings.dryrun or workflow.output_settings.verbose
):
    use_concise_console(logger)


# The configuration checked against the schema (defaults filled, every
# problem in one short paragraph: tweakflow.config, not snakemake.utils.validate,
# which prints the schema and the whole configuration), then tweakreg.pars_file
# read under the user's own keys (--configfile, --config).
try:
    for _note in resolve_config(
        config,
        os.path.join(ROOT, "workflow", "schemas", "config.schema.yaml"),
        overrides=workflow.config_settings.overwrite_config,
        strict=not workflow.modifier.skip_validation,
    ):
        logger.info(f"tweakflow: {_note}")
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/absolute.smk"
include: "workflow/rules/global.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/qa.smk"
include: "workflow/rules/transfer.smk"


if not AS_MODULE:

    # the report opens with the last finished run's verdict (qa_tables writes that page)
    report: os.path.abspath(FRONT_PAGE) if os.path.exists(FRONT_PAGE) else "workflow/report/workflow.rst"

    onstart:
        # jobs in worker processes, one per core at most; a cluster run's
        # local rules (summary, report pages) in the Snakemake process
        prepare_for_jobs(cores=workflow.cores if workflow.local_exec else 1)

    onsuccess:
        closing_verdict()
        finish_jobs()

    onerror:
        finish_jobs()


rule all:
    input:
        all_outputs(),
    default_target: True
