# tweakflow: align astronomical images to each other and to an astrometric
# reference catalog, by the method of the JWST pipeline's tweakreg step.
#
#   snakemake --cores all                      # run with config/config.yaml
#   snakemake --cores all --config inputs=my_asn.json
#
# DAG: make_demo (demo only) -> detect_sources (per image) -> align (gather)
#      [-> fetch_refcat -> absolute_align] -> apply_wcs (per image) + summary

import os

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version

from tweakflow.config import resolve_config
from tweakflow.errors import TweakflowError

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# The configuration checked against the schema (defaults filled, every
# problem in one short paragraph: tweakflow.config, not snakemake.utils.validate,
# which prints the schema and the whole configuration), then tweakreg.pars_file
# read under the user's own keys (--configfile, --config).
try:
    for _note in resolve_config(
        config,
        os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"),
        overrides=workflow.config_settings.overwrite_config,
        strict=not workflow.modifier.skip_validation,
    ):
        logger.info(f"tweakflow: {_note}")
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}") from None


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/absolute.smk"
include: "workflow/rules/global.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/qa.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
