"""Transfer steps: a finished run's corrections applied to other images of the same exposures."""

from __future__ import annotations

import logging

from ..catalogs import write_catalog
from ..errors import InputError
from ..transfer import finished_run, group_corrections, records_table, transfer_image, write_record

__all__ = ["transfer_solutions_step", "transfer_wcs_step", "transfer_summary_step"]

log = logging.getLogger("tweakflow")


def transfer_solutions_step(output, *, wcs_sidecars=None, image_sidecars=None, run_dir=None, run=""):
    """Write the correction of every exposure group of a finished run (``transfer_solutions`` rule).

    Parameters
    ----------
    output : str
        The table of group corrections (`tweakflow.transfer.GROUP_COLUMNS`, ECSV).
    wcs_sidecars, image_sidecars : list of str or None
        This configuration's run: its final WCS sidecars and its image sidecars.
    run_dir : str or None
        Instead, the output_dir of a finished run of another configuration
        (`tweakflow.transfer.finished_run` finds its sidecars).
    run : str
        The run's output_dir, recorded in the table (for messages).
    """
    images = None
    if run_dir is not None:
        found = finished_run(run_dir)
        wcs_sidecars, image_sidecars, images = found["wcs_sidecars"], found["image_sidecars"], found["images"]
        log.info("%s: a finished run, last stage %s, %d images", run_dir, found["stage"], len(images))
    table = group_corrections(list(wcs_sidecars), list(image_sidecars), images=images)
    if not len(table):
        raise InputError(f"{run or run_dir}: the run has no image to take corrections from")
    table.meta["run"] = str(run or run_dir)
    write_catalog(table, output)


def transfer_wcs_step(image, solutions, output, record, *, group_id=None, association=None, fits=None, sip=None, on_skipped="skip", run=""):
    """Write one image with its exposure group's correction, and its record (``transfer_wcs`` rule).

    See `tweakflow.transfer.transfer_image`; ``record`` receives the image's
    row of the transfer summary (JSON).
    """
    rec = transfer_image(
        image, output, solutions, group_id=group_id, association=association, fits=fits, sip=sip, on_skipped=on_skipped, run=run
    )
    write_record(rec, record)


def transfer_summary_step(records, output):
    """``transfer/transfer_summary.ecsv``: one row per corrected image (``transfer_summary`` rule)."""
    table = records_table(records)
    write_catalog(table, output)
    n_done = int((table["status"] == "COMPLETE").sum()) if len(table) else 0
    log.info("%d of %d images corrected with the run's solutions", n_done, len(table))
