"""Transferring a finished run's corrections to other images of the same exposures.

What the JWST step's ``transfer_wcs_correction`` does (and drizzlepac's
tweakback for HST): the exposures of a run were aligned with the images of
one filter; other images of the same exposures (the long-wave detector of a
NIRCam exposure, detectors left out of the run, the same exposures
calibrated again) get the same corrections without being aligned again.

The correction of an exposure group
    A run corrects all images of an exposure group with one linear
    transformation of a tangent plane: the group's relative fit, then the
    absolute fit, in the planes of the fits' references (for JWST images a
    correction of V2V3, the ``v2v3corr`` frame of the GWCS; for plain FITS
    images a new CRVAL and CD). The images of one exposure share the
    telescope's attitude, so that correction is one map of the sky for every
    detector of the exposure, whatever filter it saw. `group_corrections`
    measures it from the run's own results: for the group's aligned images,
    the sky positions of a pixel grid through the WCS the run was given (the
    image sidecars) and through the WCS it wrote (the last stage's WCS
    sidecars), fitted with one affine transformation in the tangent plane at
    the group's centre (arcsec). For tweakwcs corrections the fit is exact to
    micro-arcseconds; its residual (``fit_rms_mas``) is recorded, and a group
    whose images disagree by more than `MAX_FIT_RMS_MAS` is not transferred.
    This needs nothing of how the run aligned (stage, solver, fit geometry).
Applying it
    `transfer_image` reads an image as the run reads its inputs (its group
    id by the run's rules: association ``group_id``, ``meta.group_id``, the
    exposure's observation numbers, `tweakflow.grouping`; plain FITS
    images: ``fits.group_keyword``), takes its group's correction and sets
    it on the image's tweakwcs corrector with the correction's tangent plane
    as reference, as the step's transfer does (tweakwcs states it in the
    image's own plane: for JWST the V2V3 plane of the detector's reference
    point). The product is written as the run writes its products
    (`tweakflow.wcs_update`). The correction is the one the run made, from
    its inputs' WCSs to its products' WCSs; an image that already has a
    correction gets this one on top of it.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import numpy as np

from .atomic import atomic_output
from .catalogs import read_table
from .errors import ConfigError, InputError
from .fitting import make_corrector
from .geometry import det_to_world, mean_direction
from .io import (
    chip_label,
    image_sidecar_doc,
    image_sidecar_from_doc,
    read_image,
    read_sidecar,
    stage_wcs_folder,
    wcs_sidecar_path,
    wcs_sidecar_stem,
)
from .params import TRANSFER_DEFAULTS
from .results import columns_table
from .wcs_update import write_fits_output, write_jwst_output

__all__ = [
    "GROUP_COLUMNS",
    "RECORD_COLUMNS",
    "MAX_FIT_RMS_MAS",
    "tangent_plane",
    "group_corrections",
    "finished_run",
    "read_target",
    "corrected_wcs",
    "transfer_image",
    "write_record",
    "records_table",
]

log = logging.getLogger(__name__)

#: Columns of the table of group corrections (one row per exposure group of
#: the run): the correction maps a sky position's tangent-plane coordinates
#: (arcsec, x towards +RA, y towards +Dec, about ``ra0``, ``dec0``) through
#: the run's input WCS to ``[[m00, m01], [m10, m11]] @ (x, y) + (shift_x,
#: shift_y)``, through its output WCS.
GROUP_COLUMNS = [
    ("group_id", str),
    ("status", str),
    ("reason", str),
    ("kind", str),
    ("wcsname", str),
    ("n_images", int),
    ("images", str),
    ("ra0", float),
    ("dec0", float),
    ("m00", float),
    ("m01", float),
    ("m10", float),
    ("m11", float),
    ("shift_x", float),
    ("shift_y", float),
    ("fit_rms_mas", float),
]

#: Columns of the transfer summary (one row per corrected image).
RECORD_COLUMNS = [("image", str), ("output", str), ("group_id", str), ("status", str), ("reason", str), ("wcsname", str), ("from_images", str)]

#: Largest RMS (mas) of the one-affine fit to a group's corrections: the
#: corrections tweakwcs makes give ~1e-5 mas; above this the images of the
#: group were not corrected as one exposure and the group is not transferred.
MAX_FIT_RMS_MAS = 0.1

#: Pixels per axis of the grid each aligned image contributes to the fit.
GRID = 8


def tangent_plane(ra0, dec0):
    """The tangent plane the corrections are stated in, as a tweakwcs corrector.

    A `tweakwcs.correctors.FITSWCSCorrector` of a gnomonic (TAN) WCS at
    (``ra0``, ``dec0``) with 1 arcsec "pixels", x towards +RA and y towards
    +Dec, the origin (pixel 0, 0) at the tangent point: its
    ``world_to_tanp`` gives the plane's coordinates in arcsec, and it serves
    as the ``ref_tpwcs`` of a correction (`corrected_wcs`).
    """
    from astropy.wcs import WCS
    from tweakwcs.correctors import FITSWCSCorrector

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra0), float(dec0)]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cd = np.diag([1.0, 1.0]) / 3600.0
    w.pixel_shape = (1, 1)
    w.wcs.set()
    return FITSWCSCorrector(w)


def _grid(shape, n=GRID):
    ny, nx = (int(v) for v in shape[-2:])
    y, x = np.mgrid[0 : ny - 1 : complex(n), 0 : nx - 1 : complex(n)]
    return x.ravel(), y.ravel()


def _aligned_parts(before, after):
    """(input WCS, output WCS, shape, name) of each aligned image (chip) of one image sidecar."""
    status = after["extra"].get("status", "SKIPPED")
    if after["kind"] == "fits":
        parts = []
        for k, chip in enumerate(after["chips"]):
            if chip.get("status", status) == "COMPLETE":
                label = chip_label(after["filename"], chip["extname"], chip["extver"], len(after["chips"]))
                parts.append((before["wcs"][k], after["wcs"][k], tuple(chip["shape"]), label))
        return parts
    return [(before["wcs"], after["wcs"], tuple(after["shape"]), after["filename"])] if status == "COMPLETE" else []


def _fit_correction(parts):
    """One affine transformation of the tangent plane at the parts' centre: input -> output sky positions.

    Returns
    -------
    dict
        ``ra0``, ``dec0`` (deg), ``matrix`` (2, 2), ``shift`` (arcsec) and
        ``fit_rms_mas``, the RMS of the fit's residuals.
    """
    ra0, dec0, ra1, dec1 = [], [], [], []
    for w_in, w_out, shape, _ in parts:
        x, y = _grid(shape)
        r, d = det_to_world(w_in, x, y, with_bounding_box=False)
        ra0.append(r)
        dec0.append(d)
        r, d = det_to_world(w_out, x, y, with_bounding_box=False)
        ra1.append(r)
        dec1.append(d)
    ra0, dec0, ra1, dec1 = (np.concatenate(v) for v in (ra0, dec0, ra1, dec1))
    ok = np.isfinite(ra0) & np.isfinite(dec0) & np.isfinite(ra1) & np.isfinite(dec1)
    if ok.sum() < 3:
        raise InputError(f"{parts[0][3]}: too few sky positions through its WCSs to measure its correction")
    centre = mean_direction(ra0[ok], dec0[ok])
    tp = tangent_plane(*centre)
    p0 = np.column_stack(tp.world_to_tanp(ra0[ok], dec0[ok]))
    p1 = np.column_stack(tp.world_to_tanp(ra1[ok], dec1[ok]))
    design = np.column_stack([p0, np.ones(len(p0))])
    coef = np.linalg.lstsq(design, p1, rcond=None)[0]
    resid = p1 - design @ coef
    rms = 1000.0 * float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    return {"ra0": centre[0], "dec0": centre[1], "matrix": coef[:2].T, "shift": coef[2], "fit_rms_mas": rms}


def _group_row(gid, members):
    """The correction of one exposure group from its images' (input, output) sidecars."""
    parts = [p for before, after in members for p in _aligned_parts(before, after)]
    after = [a for _, a in members]
    row = {"group_id": str(gid), "kind": after[0]["kind"], "n_images": len(parts), "images": ";".join(p[3] for p in parts),
           "ra0": np.nan, "dec0": np.nan, "m00": 1.0, "m01": 0.0, "m10": 0.0, "m11": 1.0, "shift_x": 0.0, "shift_y": 0.0, "fit_rms_mas": np.nan}
    if not parts:
        statuses = sorted({a["extra"].get("status", "SKIPPED") for a in after})
        reasons = list(dict.fromkeys(str(a["extra"].get("reason", "")) for a in after if a["extra"].get("reason")))
        return dict(row, status="FAILED" if statuses == ["FAILED"] else "SKIPPED", reason="; ".join(reasons) or "not aligned", wcsname="")
    done = [a for a in after if a["extra"].get("status") == "COMPLETE"]
    fit = _fit_correction(parts)
    (m00, m01), (m10, m11) = fit["matrix"]
    row.update(ra0=fit["ra0"], dec0=fit["dec0"], m00=m00, m01=m01, m10=m10, m11=m11, shift_x=fit["shift"][0], shift_y=fit["shift"][1],
               fit_rms_mas=fit["fit_rms_mas"], status="COMPLETE", reason="", wcsname=str(done[0]["extra"].get("wcsname") or ""))
    if fit["fit_rms_mas"] > MAX_FIT_RMS_MAS:
        row.update(status="SKIPPED", reason=(f"its images' corrections are not one correction of the exposure (one affine fit to them leaves "
                                             f"{fit['fit_rms_mas']:.3g} mas RMS > {MAX_FIT_RMS_MAS:g})"))
    return row


def group_corrections(wcs_sidecars, image_sidecars, images=None):
    """The correction of every exposure group of a finished run.

    Parameters
    ----------
    wcs_sidecars : list of str
        The run's final WCS sidecars (the last alignment stage's).
    image_sidecars : list of str
        The run's image sidecars (its input WCSs), in the same order.
    images : set of str or None
        Only the images (chips) of these names, as the run's summary names
        them (leaves out the sidecars of images that are no longer the run's).

    Returns
    -------
    astropy.table.Table
        `GROUP_COLUMNS`, one row per group in the order of their first image:
        ``COMPLETE`` with the correction, or the group's status and reason
        when none of its images was aligned.
    """
    if len(wcs_sidecars) != len(image_sidecars):
        raise InputError(f"{len(wcs_sidecars)} WCS sidecars but {len(image_sidecars)} image sidecars")
    groups = {}
    for wpath, ipath in zip(wcs_sidecars, image_sidecars):
        after = read_sidecar(wpath)
        if images is not None and not _names(after) & set(images):
            log.info("%s: not an image of the run's summary: left out", wpath)
            continue
        before = read_sidecar(ipath) if after["extra"].get("status") == "COMPLETE" else None
        groups.setdefault(str(after["group_id"]), []).append((before, after))
    rows = [_group_row(gid, members) for gid, members in groups.items()]
    for r in rows:
        log.info("group %s: %s%s (%d aligned images, one-affine fit RMS %.2g mas)", r["group_id"], r["status"],
                 f": {r['reason']}" if r["reason"] else "", r["n_images"], r["fit_rms_mas"])
    return columns_table(GROUP_COLUMNS, rows)


def _names(sc):
    """The names the solution tables give an image sidecar's image (its chips' for a plain FITS file)."""
    if sc["kind"] == "fits":
        chips = sc.get("chips") or []
        return {chip_label(sc["filename"], c["extname"], c["extver"], len(chips)) for c in chips}
    return {sc["filename"]}


# ---------------------------------------------------------------------------
# A finished run of another configuration
# ---------------------------------------------------------------------------


def _summarizes(summary, path, prefix):
    """Whether a stage's solution table is the one ``summary`` (``prefix``: its columns' prefix) was made from."""
    if not os.path.isfile(path):
        return False
    tab = read_table(path)
    if len(tab) != len(summary) or list(tab["image"]) != list(summary["image"]):
        return False
    for col in ("status", "n_matches", "rms_mas", "xshift", "yshift"):
        a, b = np.asarray(summary[prefix + col]), np.asarray(tab[col])
        same = np.array_equal(a, b) if a.dtype.kind in "US" else np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True)
        if not same:
            return False
    return True


def finished_run(output_dir):
    """The final WCS sidecars, image sidecars and image names of a finished run in ``output_dir``.

    The run's last alignment stage is the one whose solution table its
    ``tweakreg_summary.ecsv`` was made from (the absolute stage's when the
    summary has ``abs_`` columns; else the global solve's or the relative
    stage's, whichever the summary's statuses and fit values are). Sidecars
    of images that are not in the summary are left out by
    `group_corrections` (``images``).

    Raises
    ------
    InputError
        ``output_dir`` is not a finished run (no summary, or its solution
        tables and summary do not agree), or a sidecar is missing.
    """
    summary_path = os.path.join(output_dir, "tweakreg_summary.ecsv")
    if not os.path.isfile(summary_path):
        raise InputError(f"transfer.from: {output_dir}: no tweakreg_summary.ecsv: not the output_dir of a finished tweakflow run")
    summary = read_table(summary_path)
    work = os.path.join(output_dir, "work")
    candidates = [("absolute", "abs_")] if "abs_status" in summary.colnames else [("global", ""), ("relative", "")]
    found = [stage for stage, prefix in candidates if _summarizes(summary, os.path.join(work, stage, "solutions.ecsv"), prefix)]
    if len(found) != 1:
        raise InputError(
            f"transfer.from: {summary_path} is not made from the solution tables in {work} (is the run finished? run it again to finish it)"
        )
    wcs = sorted(glob.glob(wcs_sidecar_path(glob.escape(stage_wcs_folder(work, found[0])), "*")))
    stems = [wcs_sidecar_stem(p) for p in wcs]
    sidecars = [os.path.join(work, "sidecars", f"{s}_meta.json") for s in stems]
    for w, p in zip(wcs, sidecars):
        if not os.path.isfile(p):
            raise InputError(f"transfer.from: {p}: missing (the image sidecar of {w})")
    return {"stage": found[0], "wcs_sidecars": wcs, "image_sidecars": sidecars, "images": {str(v) for v in summary["image"]}}


# ---------------------------------------------------------------------------
# Applying a correction to an image
# ---------------------------------------------------------------------------


def read_target(image, *, group_id=None, fits=None):
    """An image to correct, read as the run reads its inputs.

    Returns
    -------
    dict
        As `tweakflow.io.read_sidecar`: ``kind``, ``wcs`` (a list for a
        plain FITS file), ``wcsinfo``, ``group_id`` (association
        ``group_id`` > ``meta.group_id`` > the exposure's numbers, or
        ``fits.group_keyword``, else the file name), ``filename``, ``chips``.
    """
    im = read_image(image, with_data=False, with_wcs=False, fits=fits)
    return image_sidecar_from_doc(image_sidecar_doc(im, group_id), image)


def _is_identity(row):
    m = np.array([[row["m00"], row["m01"]], [row["m10"], row["m11"]]])
    return bool(np.max(np.abs(m - np.eye(2))) < 1e-12 and np.hypot(row["shift_x"], row["shift_y"]) < 1e-9)


def corrected_wcs(target, row):
    """The WCS(s) of an image with a group's correction (a `GROUP_COLUMNS` row) applied.

    Returns the list of the chips' corrected WCSs for a plain FITS file, else
    the corrected GWCS. A correction that is the identity (the alignment
    reference of a relative run) leaves the WCS as it is, as the run left its
    reference.
    """
    wcs_list = target["wcs"] if target["kind"] == "fits" else [target["wcs"]]
    if _is_identity(row):
        out = list(wcs_list)
    else:
        tp = tangent_plane(row["ra0"], row["dec0"])
        matrix = np.array([[row["m00"], row["m01"]], [row["m10"], row["m11"]]], dtype=float)
        shift = np.array([row["shift_x"], row["shift_y"]], dtype=float)
        out = []
        for w in wcs_list:
            corr = make_corrector(w, target["wcsinfo"], None, target["filename"], target["group_id"])
            corr.set_correction(matrix=matrix, shift=shift, ref_tpwcs=tp)
            out.append(corr.wcs)
    return out if target["kind"] == "fits" else out[0]


def _row_of(table, target, image, run):
    """The correction of the target's exposure group, or a one-line error."""
    gid = str(target["group_id"])
    hit = np.flatnonzero(np.asarray(table["group_id"]).astype(str) == gid)
    if len(hit):
        return table[int(hit[0])]
    groups = [str(g) for g in table["group_id"]]
    shown = ", ".join(groups[:5]) + (f" and {len(groups) - 5} more" if len(groups) > 5 else "")
    hint = ""
    if target["kind"] == "fits":
        hint = " (plain FITS images: set fits.group_keyword to the header keyword that images of one exposure share)"
    raise InputError(f"{image}: its exposure (group {gid}) has no solution in the run {run} (its groups: {shown}){hint}")


def transfer_image(image, output, solutions, *, group_id=None, association=None, fits=None, sip=None, on_skipped=TRANSFER_DEFAULTS["on_skipped"], run=""):
    """Write ``output``: ``image`` with its exposure group's correction, as the run writes its products.

    Parameters
    ----------
    image : str
        The image to correct (never modified).
    output : str
        The product (written atomically).
    solutions : str or astropy.table.Table
        The run's group corrections (`group_corrections`).
    group_id : str or None
        An association's ``group_id`` for the image.
    association : dict or None
        What the image's association says of it, for a JWST product's
        ``meta.asn`` (`tweakflow.wcs_update.write_jwst_output`).
    fits : dict or None
        How plain FITS images are read (the ``fits`` block).
    sip : dict or None
        SIP-approximation parameters of JWST products.
    on_skipped : {"skip", "fail"}
        An image whose exposure the run did not align: written unchanged as
        ``SKIPPED`` with the reason, or refused.
    run : str
        The run's output_dir, for messages.

    Returns
    -------
    dict
        The image's record (`RECORD_COLUMNS`).
    """
    if on_skipped not in ("skip", "fail"):
        raise ConfigError(f"transfer.on_skipped: {on_skipped!r} is not skip or fail")
    table = read_table(solutions) if isinstance(solutions, (str, os.PathLike)) else solutions
    target = read_target(image, group_id=group_id, fits=fits)
    row = _row_of(table, target, image, run or table.meta.get("run", "?"))
    gid = str(row["group_id"])
    if row["status"] == "COMPLETE":
        wcs, status, reason, wcsname = corrected_wcs(target, row), "COMPLETE", "", str(row["wcsname"])
    elif on_skipped == "fail":
        raise InputError(f"{image}: its exposure (group {gid}) was not aligned in the run ({row['status']}: {row['reason']}); "
                         "transfer.on_skipped: skip writes it unchanged as SKIPPED")
    else:
        wcs, status, reason, wcsname = target["wcs"], "SKIPPED", f"its exposure was not aligned in the run: {row['reason']}", ""
        log.warning("%s: SKIPPED, %s", image, reason)
    # the image's sidecar as the run's last stage writes it (group id, file name, ...) for the writers
    sidecar = dict(target, wcs=wcs, extra={"status": status, "reason": reason, "stage": "transfer", "wcsname": wcsname})
    if target["kind"] == "fits":
        write_fits_output(image, output, dict(sidecar, chips=[dict(c, status=status, reason=reason) for c in target["chips"]]))
    else:
        write_jwst_output(image, output, sidecar, sip, association=association or None)
    log.info("%s -> %s (%s, correction of group %s from %s)", image, output, status, gid, row["images"] or "-")
    return {"image": os.fspath(image), "output": os.fspath(output), "group_id": gid, "status": status, "reason": reason,
            "wcsname": wcsname, "from_images": str(row["images"])}


def write_record(record, path):
    """Write an image's transfer record (JSON), atomically."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)


def records_table(paths):
    """The transfer summary: the records of every image (`RECORD_COLUMNS`)."""
    rows = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            rows.append(json.load(f))
    return columns_table(RECORD_COLUMNS, rows)
