# Input resolution, parameter blocks and input functions shared by the rules.

import os

from snakemake.exceptions import WorkflowError

from tweakflow.align import RELATIVE_PARS
from tweakflow.detection import DEFAULT_DETECTION_PARS
from tweakflow.errors import TweakflowError
from tweakflow.inputs import resolve_inputs

OUT = config["output_dir"].rstrip("/")
TW = config["tweakreg"]
WORK = f"{OUT}/work"
LOGS = f"{OUT}/logs"
BENCH = f"{OUT}/benchmarks"
DEMO_DIR = f"{OUT}/demo"

try:
    IMAGES = resolve_inputs(
        config["inputs"],
        output_dir=OUT,
        demo=config.get("demo"),
        allow_outside_asn=config.get("allow_outside_asn", False),
    )
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}")

BY_STEM = {it["stem"]: it for it in IMAGES}
STEMS = [it["stem"] for it in IMAGES]


wildcard_constraints:
    stem="[^/]+",


def detection_params():
    """Only the source-finding parameters: changing them re-runs detection."""
    return {k: TW[k] for k in DEFAULT_DETECTION_PARS}


def relative_params():
    """Only the relative-alignment parameters: changing them re-runs align."""
    return {k: TW[k] for k in RELATIVE_PARS}


def image_path(wildcards):
    return BY_STEM[wildcards.stem]["path"]


def final_wcs_sidecar(wildcards):
    return f"{WORK}/relative/{wildcards.stem}_wcs.asdf"


def solution_tables():
    return [f"{WORK}/relative/solutions.ecsv"]


def all_outputs():
    return expand(f"{OUT}/{{stem}}_tweakreg.fits", stem=STEMS) + [f"{OUT}/tweakreg_summary.ecsv"]
