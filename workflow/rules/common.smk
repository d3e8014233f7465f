# Input resolution, parameter blocks and input functions shared by the rules.

import os
import re
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from tweakflow.errors import TweakflowError
from tweakflow.inputs import resolve_inputs
from tweakflow.jobhost import run_job
from tweakflow.io import check_fits_signature, stage_wcs_folder, wcs_sidecar_path
from tweakflow.params import (
    ABSOLUTE_PARS,
    DEFAULT_DETECTION_PARS,
    FITS_DEFAULTS,
    QUALITY_DEFAULTS,
    RELATIVE_PARS,
    SIP_PARS,
    TRANSFER_DEFAULTS,
    check_separation,
    resolve_block,
)
from tweakflow.refcat import GAIA_CATALOGS
from tweakflow.verdict import read_verdict, transfer_line, written_since

SCRIPTS = os.path.join(ROOT, "scripts")


def run_script(name, input, output, params, wildcards, log):
    """Run the rule script ``scripts/<name>`` as this job.

    Every rule's body is a thin script that reads ``snakemake.input``,
    ``.output``, ``.params``, ``.wildcards`` and ``.log`` and calls the
    library. Run through ``script:``, each job would start a Python process
    and import astropy, photutils, gwcs, stdatamodels... again: 1-2 s per
    job, more than most jobs compute. Run here, from one of Snakemake's job
    threads (``force-use-threads`` in profiles/default), it goes to one of
    the run's worker processes, which import once and run one job after
    another (`tweakflow.jobhost.run_job`; with one core, in the job thread).
    A `~tweakflow.errors.TweakflowError` fails the job with its one-line
    message (`tweakflow.steps.run_rule`).
    """
    job = SimpleNamespace(input=input, output=output, params=params, wildcards=wildcards, log=log)
    run_job(os.path.join(SCRIPTS, name), job)


def input_mb(files):
    """The size in MB of a job's input files (a folder: of the files in it).

    What a job's ``mem_mb`` and ``runtime`` grow with. Snakemake's
    ``input.size_mb`` gives the same for files (a folder counts as its
    directory entry only), but starts an event loop on every call (~0.3 ms):
    resources are evaluated for every job that is scheduled or listed (a dry
    run without ``--quiet``), and a listing dry run of 2,000 images took
    9.0 s with ``input.size_mb``, 6.6 s with this. A file not made yet raises
    FileNotFoundError, which Snakemake turns into ``<TBD>`` until the job is
    ready, as for ``input.size_mb``.

    Parameters
    ----------
    files : str or list of str
        The job's ``input``, or one of its named inputs.
    """
    total = 0
    for f in [files] if isinstance(files, str) else files:
        if os.path.isdir(f):
            total += sum(e.stat().st_size for e in os.scandir(f) if e.is_file())
        else:
            total += os.path.getsize(f)
    return total / 2**20


OUT = config["output_dir"].rstrip("/")
TW = config["tweakreg"]
WORK = f"{OUT}/work"
LOGS = f"{OUT}/logs"
BENCH = f"{OUT}/benchmarks"
DEMO_DIR = f"{OUT}/demo"
VERDICT = f"{OUT}/verdict.txt"

try:
    IMAGES = resolve_inputs(
        config["inputs"],
        output_dir=OUT,
        demo=config.get("demo"),
        allow_outside_asn=config.get("allow_outside_asn", False),
        output_use_model=TW.get("output_use_model", True),
    )
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}")

# Input images that are not FITS at all: found here, before any job runs
# (reads a few bytes per file). on_bad_input: skip leaves them to their jobs,
# which mark them FAILED; truncated or corrupt FITS files are found by the jobs.
ON_BAD_INPUT = config.get("on_bad_input", "fail")
NOT_FITS = {}  # path -> problem, for the inputs that are not FITS files
if config["inputs"] != "demo":
    NOT_FITS = {it["path"]: _p for it in IMAGES if (_p := check_fits_signature(it["path"]))}
    _bad = list(NOT_FITS.values())
    if _bad and ON_BAD_INPUT == "fail":
        raise WorkflowError(
            f"tweakflow: {len(_bad)} input image(s) are not FITS files "
            "(on_bad_input: skip aligns the others):\n  " + "\n  ".join(_bad)
        )
    for _p in _bad:
        logger.warning(f"tweakflow: {_p}; on_bad_input: skip leaves it out of the alignment")

# Absolute alignment: on when abs_refcat names a Gaia release or a file.
ABS_REFCAT = (TW.get("abs_refcat") or "").strip()
ABSOLUTE = ABS_REFCAT != ""
# relative_solver: global solves every group at once from all overlaps
# (workflow/rules/global.smk), with the reference catalog in the same solve
GLOBAL = config.get("relative_solver", "sequential") == "global"

# separation >= sqrt(2) x tolerance (and the abs_ pair when absolute alignment
# is on, as the step checks it): refused here rather than by the align jobs
try:
    check_separation(TW)
    if ABSOLUTE:
        check_separation(TW, "abs_")
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}")
DEMO_REFCAT = f"{DEMO_DIR}/refcat.ecsv"
if (
    ABSOLUTE
    and ABS_REFCAT.upper() not in GAIA_CATALOGS
    and not (config["inputs"] == "demo" and os.path.normpath(ABS_REFCAT) == os.path.normpath(DEMO_REFCAT))
):
    # a user catalog: check it before any job runs (the demo's is made by make_demo)
    from tweakflow.refcat import read_reference_catalog

    try:
        read_reference_catalog(ABS_REFCAT)
    except TweakflowError as exc:
        raise WorkflowError(f"tweakflow: tweakreg.abs_refcat: {exc}")

BY_STEM = {it["stem"]: it for it in IMAGES}
STEMS = [it["stem"] for it in IMAGES]

# --- custom source catalogs and published catalogs --------------------------
# use_custom_catalogs: each image's catalog is chosen here, before any job
# runs (catfile > association member tweakreg_catalog > meta.tweakreg_catalog,
# the last read from the primary headers only when the option is on), so
# that a catalog file is an input of its image's detect_sources job and
# editing it re-runs that image onwards.
CUSTOM_CATALOGS = {}  # stem -> user catalog, for the images that take one
if TW.get("use_custom_catalogs"):
    from tweakflow.catalogs import resolve_custom_catalogs

    try:
        # (an input that is not FITS has no header to read: with
        # on_bad_input: skip, its job marks it FAILED)
        _cats, _notes = resolve_custom_catalogs(
            [it for it in IMAGES if it["path"] not in NOT_FITS], catfile=TW.get("catfile")
        )
    except TweakflowError as exc:
        raise WorkflowError(f"tweakflow: tweakreg.use_custom_catalogs: {exc}")
    for _n in _notes:
        logger.warning(f"tweakflow: {_n}")
    CUSTOM_CATALOGS = {stem: cat for stem, cat in _cats.items() if cat}

# save_catalogs: {output_dir}/<meta.filename without .fits>_cat.{ext} in
# catalog_format, as the step names them (X_cal.fits -> X_cal_cat.ecsv), written
# by publish_catalog from the cached catalog (a format change re-runs only that).
from tweakflow.catalogs import catalog_extension, published_catalog_names, read_table, writer_format

CATALOG_EXT = catalog_extension(TW["catalog_format"])
PUBLISHED = {}  # published catalog file name -> stem, for the images that detect sources
if TW.get("save_catalogs"):
    try:
        writer_format(TW["catalog_format"])
        PUBLISHED = published_catalog_names(
            [it for it in IMAGES if it["stem"] not in CUSTOM_CATALOGS], TW["catalog_format"]
        )
    except TweakflowError as exc:
        raise WorkflowError(f"tweakflow: {exc}")


def detect_inputs(wildcards):
    """detect_sources' inputs: the image, and its custom catalog if it takes one."""
    inputs = {"image": image_path(wildcards)}
    if wildcards.stem in CUSTOM_CATALOGS:
        inputs["custom_catalog"] = CUSTOM_CATALOGS[wildcards.stem]
    return inputs


def per_image(value_of):
    """A job parameter of each image: ``value_of(image)`` for its entry of IMAGES.

    The value itself when every image has the same one (for a list of files:
    no association, hence no group id or association record; no custom
    catalog), else a function of the job's wildcards. Snakemake evaluates
    a function parameter for every job when it builds the DAG, twice (and
    inspects the function's signature each time): ~0.025 ms per job, 0.12 s
    per function in a dry run of 5,000 images (measured).
    """
    values = [value_of(it) for it in IMAGES]
    if all(v == values[0] for v in values):
        return values[0]
    return lambda wc: value_of(BY_STEM[wc.stem])


def image_detection_params(image):
    """Source-finding parameters of an image; none for an image with a custom
    catalog, so that changing them re-runs only the images that detect sources."""
    return {} if image["stem"] in CUSTOM_CATALOGS else detection_params()


def image_group_id(image):
    """The exposure group id an association gives an image (None: from its header)."""
    return image["group_id"]


def published_catalogs():
    """save_catalogs' outputs: one per image that detects sources (the step
    ignores save_catalogs for images with a user catalog) and, with
    expand_refcat and the sequential solver, the final expanded reference catalog."""
    expanded = [f"{OUT}/tweakreg_refcat.{CATALOG_EXT}"] if relative_params()["expand_refcat"] and not GLOBAL else []
    return [f"{OUT}/{name}" for name in PUBLISHED] + expanded


def catalog_to_publish(wildcards):
    """publish_catalog's input: the cached catalog of the image it is named after."""
    return f"{WORK}/catalogs/{PUBLISHED[wildcards.catalog]}_cat.ecsv"


# --- end of custom source catalogs and published catalogs -------------------

# --- transfer: a finished run's corrections applied to other images ----------
# (workflow/rules/transfer.smk; `snakemake --cores all transfer`)
try:
    TRANSFER = resolve_block("transfer", TRANSFER_DEFAULTS, config.get("transfer"))
except TweakflowError as exc:
    raise WorkflowError(f"tweakflow: {exc}")
TRANSFER_DIR = f"{OUT}/transfer"
# the finished run whose corrections are applied: this one, or another output_dir
TRANSFER_FROM = os.path.normpath(TRANSFER["from"] or OUT)
TRANSFER_THIS_RUN = os.path.abspath(TRANSFER_FROM) == os.path.abspath(OUT)


def _transfer_images():
    """The images to correct: transfer.images resolved as inputs are (files, globs, an association)."""
    given = TRANSFER["images"]
    if not given:
        return []
    if isinstance(given, str) and not given.lower().endswith(".json"):
        given = [given]  # a glob or a file (never "demo")
    try:
        return resolve_inputs(
            given,
            output_dir=OUT,
            allow_outside_asn=config.get("allow_outside_asn", False),
            output_use_model=TW.get("output_use_model", True),
        )
    except TweakflowError as exc:
        raise WorkflowError(f"tweakflow: transfer.images: {str(exc).removeprefix('inputs: ')}")


TRANSFER_IMAGES = _transfer_images()
TRANSFER_BY_STEM = {it["stem"]: it for it in TRANSFER_IMAGES}
if (
    TRANSFER_IMAGES
    and not TRANSFER_THIS_RUN
    and not os.path.isfile(os.path.join(TRANSFER_FROM, "tweakreg_summary.ecsv"))
):
    raise WorkflowError(
        f"tweakflow: transfer.from: {TRANSFER_FROM}: no tweakreg_summary.ecsv: not the output_dir of a finished tweakflow run"
    )


def transfer_solution_inputs(wildcards):
    """The run's results the corrections are measured from: this run's final and
    image sidecars, or the summary of a finished run of another configuration."""
    if TRANSFER_THIS_RUN:
        return {
            "wcs": final_wcs_inputs(),
            "images": expand(f"{WORK}/sidecars/{{stem}}_meta.json", stem=STEMS),
        }
    return {"summary": os.path.join(TRANSFER_FROM, "tweakreg_summary.ecsv")}


def transfer_outputs(wildcards):
    """The transfer target's inputs: every corrected image and the summary."""
    if not TRANSFER_IMAGES:
        raise WorkflowError(
            "tweakflow: transfer: no images to correct: list them in transfer.images (files, globs or an association)"
        )
    return expand(f"{TRANSFER_DIR}/{{tstem}}_tweakreg.fits", tstem=TRANSFER_BY_STEM) + [
        f"{TRANSFER_DIR}/transfer_summary.ecsv"
    ]


# --- end of transfer ------------------------------------------------------------


wildcard_constraints:
    stem="[^/]+",


def fits_params():
    """How plain FITS images are read (the ``fits`` block over its defaults)."""
    return resolve_block("fits", FITS_DEFAULTS, config.get("fits"))


def detection_params():
    """Only the source-finding parameters: changing them re-runs detection."""
    return {k: TW[k] for k in DEFAULT_DETECTION_PARS}


def relative_params():
    """Only the relative-alignment parameters: changing them re-runs align.

    With absolute alignment on, ``expand_refcat`` is forced on (as the spec says).
    """
    pars = {k: TW[k] for k in RELATIVE_PARS}
    if ABSOLUTE:
        pars["expand_refcat"] = True
    return pars


def quality_params():
    """The quality gates and recovery settings of the relative and absolute
    fits (``quality`` block without ``report``): changing them re-runs align
    and absolute_align."""
    q = resolve_block("quality", QUALITY_DEFAULTS, config.get("quality"))
    q.pop("report", None)
    return q


def absolute_params():
    """Only the abs_* fit parameters: changing them re-runs absolute_align."""
    return {k: TW[k] for k in ABSOLUTE_PARS}


def refcat_input():
    """The reference catalog file: a user file, or the fetched Gaia catalog."""
    if ABS_REFCAT.upper() in GAIA_CATALOGS:
        return f"{WORK}/refcat/{ABS_REFCAT.upper()}.ecsv"
    return ABS_REFCAT


def published_refcat():
    """``save_abs_catalog``: the published copy of the reference catalog used."""
    base = os.path.splitext(os.path.basename(ABS_REFCAT))[0]
    return f"{OUT}/fit_{base.lower()}_ref.ecsv"


def image_path(wildcards):
    return BY_STEM[wildcards.stem]["path"]


def sip_params():
    """Only the SIP-approximation parameters: changing them re-runs apply_wcs only."""
    return {k: TW[k] for k in SIP_PARS}


def image_association(image):
    """What the input association says of an image, for its product's
    ``meta.asn`` (empty for an image given in a list of files)."""
    return image.get("association") or {}


def final_stage():
    """The last alignment stage (its sidecars: ``stage_wcs_folder(WORK, final_stage())``)."""
    if GLOBAL:
        return "global"
    return "absolute" if ABSOLUTE else "relative"


# --- the WCS sidecars of the alignment stages --------------------------------
# Each stage writes one WCS sidecar per image into its folder
# work/<stage>/wcs/ (tweakflow.io.stage_wcs_folder): align and absolute_align
# as a directory() output, the global solve one image per job (global_wcs).
# The per-image output jobs (apply_wcs, publish_catalog), qa_plots and the
# transfer take the relative or absolute stage's sidecars through the
# one-input job final_wcs (its folder FINAL_WCS, workflow/rules/apply.smk);
# qa_images takes the relative stage's folder itself.
# Snakemake checks each input file of a job against every output of the rule
# that makes it, and against every input of the job that makes it: with one
# output file per image on align (whose inputs are two per image), read by one
# job per image, both checks grew with the number of images squared (README,
# "Performance").
FINAL_WCS = f"{WORK}/final_wcs"


def wcs_sidecars(folder):
    """Every image's WCS sidecar in ``folder``."""
    return [wcs_sidecar_path(folder, stem) for stem in STEMS]


def image_final_wcs(stem):
    """The input that holds an image's final WCS sidecar: the sidecar itself
    (global solve), or the folder FINAL_WCS."""
    return wcs_sidecar_path(stage_wcs_folder(WORK, "global"), stem) if GLOBAL else FINAL_WCS


def stage_wcs_inputs(folder):
    """The inputs that hold every image's WCS sidecar of a stage: its folder
    ``folder``, or with relative_solver: global the global solve's sidecars
    (one per image, the relative and the final stage alike)."""
    return wcs_sidecars(stage_wcs_folder(WORK, "global")) if GLOBAL else [folder]


def final_wcs_inputs():
    """The inputs that hold every image's final WCS sidecar (`image_final_wcs`)."""
    return stage_wcs_inputs(FINAL_WCS)


def stage_wcs_files(inputs):
    """Every image's WCS sidecar, from `stage_wcs_inputs` as a job got them."""
    return list(inputs) if GLOBAL else wcs_sidecars(inputs[0])


def image_wcs_sidecar(wildcards, input):
    """apply_wcs' final WCS sidecar, from its ``wcs`` input (`image_final_wcs`)."""
    return input.wcs if GLOBAL else wcs_sidecar_path(input.wcs, wildcards.stem)


def published_wcs_sidecar(wildcards, input):
    """publish_catalog's final WCS sidecar, from its ``wcs`` input (`image_final_wcs`)."""
    return input.wcs if GLOBAL else wcs_sidecar_path(input.wcs, PUBLISHED[wildcards.catalog])


def relative_tables():
    """The relative stage's (or the global solve's) solutions, matches and attempts tables."""
    stage = "global" if GLOBAL else "relative"
    return {
        "solutions": f"{WORK}/{stage}/solutions.ecsv",
        "matches": f"{WORK}/{stage}/matches.ecsv",
        "attempts": f"{WORK}/{stage}/attempts.ecsv",
    }


def pair_batches():
    """Number of pair-matching jobs of the global solve: one per ``pair_batch_size`` images."""
    return max(1, -(-len(STEMS) // int(config.get("pair_batch_size", 200))))


QA = f"{OUT}/qa"
# the HTML pages of the report, written by qa_tables after every other output
FRONT_PAGE = f"{QA}/front_page.rst"
QA_TABLES = [f"{QA}/summary.html", f"{QA}/attempts.html", f"{QA}/config.html", f"{QA}/run_record.html", FRONT_PAGE]


def qa_outputs():
    """The quality-assessment plots and pages shown by ``snakemake --report``
    (none with ``quality.report: false``)."""
    if not config.get("quality", {}).get("report", True):
        return []
    outs = [f"{QA}/images", f"{QA}/footprints.png", f"{QA}/residuals_overview.png"]
    outs += QA_TABLES
    if ABSOLUTE and not GLOBAL:
        outs.append(f"{QA}/absolute_fit.png")
    if GLOBAL:
        outs.append(f"{QA}/overlaps.png")
    return outs


def solution_tables():
    if GLOBAL:
        return [relative_tables()["solutions"]]
    tabs = [f"{WORK}/relative/solutions.ecsv"]
    if ABSOLUTE:
        tabs.append(f"{WORK}/absolute/solutions.ecsv")
    return tabs


def all_outputs():
    outs = expand(f"{OUT}/{{stem}}_tweakreg.fits", stem=STEMS) + [f"{OUT}/tweakreg_summary.ecsv"]
    if ABSOLUTE and TW.get("save_abs_catalog"):
        outs.append(published_refcat())
    if TW.get("save_catalogs"):
        outs += published_catalogs()
    if config["inputs"] == "demo":
        outs.append(f"{OUT}/demo_accuracy.ecsv")
    return outs + [VERDICT] + qa_outputs()


def verdict_inputs(wildcards):
    """The summary, and for the demo its accuracy against the truth."""
    inputs = {"summary": f"{OUT}/tweakreg_summary.ecsv"}
    if config["inputs"] == "demo":
        inputs["accuracy"] = f"{OUT}/demo_accuracy.ecsv"
    return inputs


def closing_verdict():
    """Log the verdict written by this run (the console's last lines), and
    what `snakemake transfer` corrected when it ran."""
    for line in read_verdict(VERDICT, since=RUN_STARTED):
        logger.info(line)
    summary = f"{TRANSFER_DIR}/transfer_summary.ecsv"
    if written_since(summary, RUN_STARTED):
        logger.info(transfer_line(read_table(summary), TRANSFER_DIR))


def absolute_matches_input():
    """The absolute fit's matched pairs, when the absolute_align rule records them."""
    if ABSOLUTE and "matches" in rules.absolute_align.output.keys():
        return f"{WORK}/absolute/matches.ecsv"
    return []


def after_everything_else(wildcards):
    """Every other output of the run: the run record is written last, so
    that it finds every job's log and benchmark."""
    return [o for o in all_outputs() if o not in QA_TABLES]
