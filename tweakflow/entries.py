"""Alignment entries: the per-image results of the fan-out as the gather steps use them.

An *entry* is one image (one chip of a plain FITS image) ready to be
aligned: ``name``, ``wcs``, ``wcsinfo``, ``group_id``, ``catalog`` (x, y,
optional weight), ``shape``, ``date``, its ``sidecar`` and the ``index`` of
its file. `load_entries` builds them from the catalogs and image sidecars
the detection jobs wrote; `write_solution_sidecars` writes the corrected
WCSs and statuses back, one sidecar per file.
"""

from __future__ import annotations

import json
import logging
import os
from itertools import groupby

import numpy as np
from astropy.table import Table

from .detection import empty_catalog
from .errors import InputError
from .geometry import footprint_world
from .io import chip_label, read_sidecar, unreadable_sidecar, write_sidecar
from .results import storable_row, table_rows

__all__ = ["load_entries", "read_sidecar_or_unreadable", "fits_chip_entries", "relative_result", "write_solution_sidecars", "stage_solutions", "sky_footprints"]

log = logging.getLogger("tweakflow")


def load_entries(catalogs, sidecars, on_bad_input="fail"):
    """Read catalogs + sidecars into the entries `tweakflow.align` works on.

    An image left out of the alignment (its sidecar is "unreadable", or,
    with ``on_bad_input="skip"``, its WCS cannot be deserialized) gives an
    entry with ``wcs=None``, an empty catalog and ``unreadable`` (the reason).
    """
    entries = []
    for index, (cpath, spath) in enumerate(zip(catalogs, sidecars)):
        sc = read_sidecar_or_unreadable(spath, on_bad_input)
        if sc["kind"] == "unreadable":
            entries.append(dict(_unreadable_entry(sc), index=index))
            continue
        cat = Table.read(cpath, format="ascii.ecsv")
        if sc["kind"] == "fits":
            entries.extend(fits_chip_entries(sc, cat, index))
            continue
        bbox = getattr(sc["wcs"], "bounding_box", None)
        if bbox is not None and len(cat):
            # sources outside the WCS's valid region cannot be placed on the sky
            (x0, x1), (y0, y1) = (tuple(float(v) for v in iv) for iv in bbox)
            inside = (cat["x"] >= x0) & (cat["x"] <= x1) & (cat["y"] >= y0) & (cat["y"] <= y1)
            if not np.all(inside):
                log.info("%s: %d sources outside the WCS bounding box dropped", sc["filename"], int(np.sum(~inside)))
                cat = cat[inside]
        entries.append(
            {
                "name": sc["filename"],
                "wcs": sc["wcs"],
                "wcsinfo": sc["wcsinfo"],
                "group_id": sc["group_id"],
                "catalog": cat,
                "shape": sc["shape"],
                "date": sc.get("date"),
                "sidecar": sc,
                "index": index,
            }
        )
    _fill_missing_weights(entries)
    return entries


def _fill_missing_weights(entries):
    """Give ``weight = 1`` to the catalogs without weights when some have them.

    A user catalog may carry a ``weight`` column into the fit; tweakwcs
    needs all the catalogs of a group to have one or none, so a catalog
    without weights weighs each of its sources 1.
    """
    if not any("weight" in e["catalog"].colnames for e in entries):
        return
    for e in entries:
        if "weight" not in e["catalog"].colnames:
            e["catalog"]["weight"] = np.ones(len(e["catalog"]))


def fits_chip_entries(sc, cat, index):
    """One alignment entry per chip of a plain FITS image, sharing its group id.

    The chip's sources are the catalog rows whose ``chip`` column is its
    number (a catalog without that column belongs to chip 1).
    """
    chips = sc["chips"]
    chipcol = np.asarray(cat["chip"]) if "chip" in cat.colnames else np.ones(len(cat), dtype=np.int64)
    out = []
    for k, (w, chip) in enumerate(zip(sc["wcs"], chips), 1):
        out.append(
            {
                "name": chip_label(sc["filename"], chip["extname"], chip["extver"], len(chips)),
                "wcs": w,
                "wcsinfo": {},
                "group_id": sc["group_id"],
                "catalog": cat[chipcol == k],
                "shape": tuple(chip["shape"]),
                "date": sc.get("date"),
                "sidecar": sc,
                "index": index,
                "chip": chip,
            }
        )
    return out


def read_sidecar_or_unreadable(path, on_bad_input):
    """`read_sidecar`; with ``on_bad_input="skip"`` an image sidecar whose
    WCS cannot be read becomes an "unreadable" one instead of an error."""
    try:
        return read_sidecar(path)
    except InputError as exc:
        if on_bad_input != "skip" or not os.fspath(path).endswith(".json"):
            raise
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        log.error("%s; on_bad_input: skip: left out of the alignment", exc)
        return unreadable_sidecar(doc, str(exc))


def _unreadable_entry(sc):
    """The alignment entry of an image left out of the alignment."""
    return {
        "name": sc["filename"],
        "wcs": None,
        "wcsinfo": {},
        "group_id": sc["group_id"],
        "catalog": empty_catalog(),
        "shape": (),
        "date": None,
        "sidecar": sc,
        "unreadable": sc["extra"]["reason"],
    }


def relative_result(entry):
    """``status``, ``reason`` and ``wcsname`` of an entry after the relative stage.

    A chip of a plain FITS file has its own status and reason (its sidecar's
    ``chips``); the WCS name is the file's.
    """
    extra = entry["sidecar"]["extra"]
    own = entry.get("chip") if "status" in (entry.get("chip") or {}) else extra
    return {"status": own.get("status", "SKIPPED"), "reason": own.get("reason", ""), "wcsname": extra.get("wcsname", "")}


def write_solution_sidecars(entries, wcs_list, rows, outputs, solutions=None):
    """Write one sidecar per image holding its (corrected) WCS and status.

    The chips of a plain FITS image (consecutive entries sharing an
    ``index``) go into one sidecar: the list of their WCSs, each chip's
    status and reason, and the file's status (``COMPLETE`` when any chip
    was aligned). ``wcs_list`` may be an iterator: each WCS is taken when
    its file is written, so a generator keeps one file's WCSs in memory at
    a time.

    ``solutions`` (one per entry, or None) are the entry's solution-table
    rows so far, ``{stage: row}`` (`tweakflow.results.table_rows`): kept
    in the sidecar's ``extra["solutions"]`` (`tweakflow.results.storable_row`),
    from which the products' ``meta.tweakflow`` is written (a file's first
    chip's for a plain FITS file).
    """

    numbered = enumerate(zip(entries, wcs_list, rows))
    files = groupby(numbered, key=lambda kv: kv[1][0].get("index", ("entry", kv[0])))
    for (_, group), out in zip(files, outputs):
        numbered_items = list(group)
        items = [item for _, item in numbered_items]
        e, w, r = items[0]
        sc = e["sidecar"]
        chips = None
        if sc["kind"] == "fits":
            chips = [dict(ce["chip"], status=cr["status"], reason=cr["reason"]) for ce, _, cr in items]
            w = [cw for _, cw, _ in items]
            done = [cr for _, _, cr in items if cr["status"] == "COMPLETE"]
            if done and len(done) < len(items):
                skipped = "; ".join(f"{ce['name']}: {cr['reason']}" for ce, _, cr in items if cr["status"] != "COMPLETE")
                r = dict(done[0], reason=f"not aligned: {skipped}")
            elif done:
                r = done[0]
        extra = {"status": r["status"], "reason": r["reason"], "stage": r["stage"], "wcsname": r.get("wcsname", "")}
        if solutions is not None:
            extra["solutions"] = {stage: storable_row(row) for stage, row in solutions[numbered_items[0][0]].items()}
        write_sidecar(
            out,
            wcs=w,
            wcsinfo=sc["wcsinfo"],
            group_id=sc["group_id"],
            filename=sc["filename"],
            shape=sc["shape"],
            kind=sc["kind"],
            date=sc.get("date"),
            source=sc.get("source"),
            extra=extra,
            chips=chips,
        )


def stage_solutions(entries, table):
    """Each entry's solution rows after a stage: its sidecar's so far, and its row of ``table`` (that stage's solution table).

    The argument ``solutions`` of `write_solution_sidecars`.
    """
    rows = table_rows(table)
    return [{**e["sidecar"]["extra"].get("solutions", {}), str(row["stage"]): row} for e, row in zip(entries, rows)]


def sky_footprints(sc):
    """The (4, 2) RA, Dec corner arrays (deg) of an image's detector edges: one per chip of a plain FITS file.

    `tweakflow.geometry.footprint_world` with ``edges=True``: what a
    catalog covering the image must cover.
    """
    if sc["kind"] == "fits":
        pairs = [(w, chip["shape"]) for w, chip in zip(sc["wcs"], sc["chips"])]
    else:
        pairs = [(sc["wcs"], sc["shape"])]
    return [np.column_stack(footprint_world(w, shape, edges=True)) for w, shape in pairs]
