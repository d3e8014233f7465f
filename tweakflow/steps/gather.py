"""Gather steps: the relative and the absolute alignment of all images."""

from __future__ import annotations

import functools
import logging
import os
import shutil

from ..absolute import absolute_fit, apply_absolute, wcs_name
from ..align import REFERENCE_COLUMNS, relative_align
from ..atomic import atomic_output
from ..catalogs import write_catalog
from ..entries import load_entries, relative_result, stage_solutions, write_solution_sidecars
from ..refcat import read_reference_catalog
from ..results import (
    SerializedWCS,
    attempt_table,
    columns_table,
    empty_match_table,
    final_status,
    fit_row,
    rows_to_table,
)

__all__ = ["align_readable", "align_step", "absolute_step", "final_wcs_step", "publish_refcat_step"]

log = logging.getLogger("tweakflow")


def align_readable(align_func, entries, **pars):
    """Run ``align_func(entries, **pars)`` on the readable entries only.

    Returns its ``(wcs_list, rows)`` for all entries, in order: an
    unreadable entry keeps ``wcs=None`` and gets a ``FAILED`` row whose
    reason says why it could not be read.
    """
    ok = [i for i, e in enumerate(entries) if not e.get("unreadable")]
    wcs_ok, rows_ok = align_func([entries[i] for i in ok], **pars) if ok else ([], [])
    wcs_list = [e["wcs"] for e in entries]
    rows = [fit_row(e["name"], e["group_id"], "relative", "FAILED", e.get("unreadable", "")) for e in entries]
    for i, w, r in zip(ok, wcs_ok, rows_ok):
        wcs_list[i], rows[i] = w, r
    return wcs_list, rows


def align_step(catalogs, sidecars, solutions_out, wcs_out, *, relative, on_bad_input="fail", quality=None, matches_out=None, attempts_out=None,
               reference_out=None):
    """Relative alignment of all images; writes the solution table and per-image WCS sidecars.

    Images that could not be read (``on_bad_input: skip``) are left out and
    get a ``FAILED`` row and an "unreadable" WCS sidecar.

    Parameters
    ----------
    quality : dict or None
        The ``quality`` block: gates and recovery (`tweakflow.quality`).
    matches_out : str or None
        Where to write the matched source pairs of every fit
        (`tweakflow.qa.match_table`, ECSV).
    attempts_out : str or None
        Where to write every alignment attempt (one row per image and
        attempt, `tweakflow.align.ATTEMPT_COLUMNS`, ECSV).
    reference_out : str or None
        Where to write the reference catalog the alignment ended with (with
        ``expand_refcat``, the expanded one: `tweakflow.align.reference_catalog`,
        ECSV; no rows when there was nothing to align).
    """

    entries = load_entries(catalogs, sidecars, on_bad_input=on_bad_input)
    log.info("relative alignment of %d images in %d groups", len(entries), len({e["group_id"] for e in entries}))
    details = {}
    align = functools.partial(relative_align, quality=quality, details=details, serialized=True)
    wcs_list, rows = align_readable(align, entries, **relative)
    for r in rows:
        extra = f" (recovered: {r['recovery']})" if r.get("recovery") else ""
        log.info("%s [%s]: %s %s%s", r["image"], r["group_id"], r["status"], r["reason"], extra)
    # the corrected WCSs stay serialized until each is written
    loaded = (w.load() if isinstance(w, SerializedWCS) else w for w in wcs_list)
    tab = rows_to_table(rows)
    write_solution_sidecars(entries, loaded, rows, wcs_out, solutions=stage_solutions(entries, tab))
    write_catalog(tab, solutions_out)
    if matches_out:
        matches = details.get("matches")
        write_catalog(matches if matches is not None else empty_match_table(), matches_out)
    if attempts_out:
        attempts = details.get("attempts")
        write_catalog(attempts if attempts is not None else attempt_table([]), attempts_out)
    if reference_out:
        reference = details.get("reference")
        write_catalog(reference if reference is not None else columns_table(REFERENCE_COLUMNS, []), reference_out)


def absolute_step(catalogs, sidecars, refcat, solutions_out, wcs_out, combined_out, *, absolute, refcat_name, quality=None, matches_out=None):
    """Fit the relatively aligned set to the reference catalog (``absolute_align`` rule).

    ``matches_out`` receives the matched pairs of the fit with their residuals
    (for the QA plots).
    """
    entries = load_entries(catalogs, sidecars)
    ref = read_reference_catalog(refcat)
    statuses = [relative_result(e)["status"] for e in entries]
    details = {}
    solutions, rows, combined = absolute_fit(entries, [e["wcs"] for e in entries], statuses, ref, quality=quality, details=details, **absolute)
    solution_of = {i: sol for sol in solutions for i in sol["members"]}
    name = wcs_name(refcat_name)
    final_rows = []
    for e, r in zip(entries, rows):
        rel = relative_result(e)
        status, reason = final_status(rel["status"], rel["reason"], r["status"], r["reason"])
        wname = name if r["status"] == "COMPLETE" else rel["wcsname"]
        final_rows.append(dict(r, status=status, reason=reason, wcsname=wname))
        log.info("%s: absolute %s %s", r["image"], r["status"], r["reason"])
    # one corrected WCS at a time: built, written, released
    corrected = (apply_absolute(e, e["wcs"], solution_of[i]) if i in solution_of else e["wcs"] for i, e in enumerate(entries))
    tab = rows_to_table(rows)
    write_solution_sidecars(entries, corrected, final_rows, wcs_out, solutions=stage_solutions(entries, tab))
    write_catalog(tab, solutions_out)
    write_catalog(combined, combined_out)
    if matches_out:

        matches = details.get("matches")
        write_catalog(matches if matches is not None else empty_match_table(), matches_out)


def publish_refcat_step(refcat, output):
    """``save_abs_catalog``: publish the reference catalog used by the absolute fit."""
    write_catalog(read_reference_catalog(refcat), output)


def final_wcs_step(folder, output):
    """The final alignment stage's WCS sidecars in a folder of their own (``final_wcs`` rule).

    The per-image output jobs read their sidecar from ``output``, made by
    this one-input job, rather than from the stage's folder, made by a
    gather job with two inputs per image: Snakemake compares each input of
    a job with every input of the job that makes it, so that otherwise
    building the DAG takes time in proportion to the number of images
    squared. The files are hard links to the stage's (no data copied),
    copies where the file system has no hard links; Snakemake's own
    bookkeeping files (names starting with a dot) are left out. ``output``
    appears complete or not at all.
    """
    with atomic_output(output) as tmp:
        os.mkdir(tmp)
        for name in sorted(os.listdir(folder)):
            src = os.path.join(folder, name)
            if name.startswith(".") or not os.path.isfile(src):
                continue
            try:
                os.link(src, os.path.join(tmp, name))
            except OSError:
                shutil.copy2(src, os.path.join(tmp, name))
