"""Group-aware relative alignment of image catalogs with tweakwcs.

Every image gets one `tweakwcs.correctors.JWSTWCSCorrector` (one
`~tweakwcs.correctors.FITSWCSCorrector` per chip of a plain FITS image); images with the
same group id are fitted together as one (one correction per exposure);
`tweakwcs.imalign.align_wcs` matches the catalogs in a common tangent plane
and fits the linear corrections, which it inserts into each GWCS as the
``v2v3corr`` frame.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from astropy.table import Table

__all__ = [
    "RELATIVE_PARS",
    "make_corrector",
    "wcs_kind",
    "tangent_plane_scale",
    "make_matcher",
    "relative_align",
    "fit_row",
    "SOLUTION_COLUMNS",
]

log = logging.getLogger(__name__)

#: Relative-alignment parameters of the tweakreg step and their defaults.
RELATIVE_PARS = {
    "enforce_user_order": False,
    "expand_refcat": False,
    "minobj": 15,
    "searchrad": 2.0,
    "use2dhist": True,
    "separation": 1.0,
    "tolerance": 0.7,
    "xoffset": 0.0,
    "yoffset": 0.0,
    "fitgeometry": "rshift",
    "nclip": 3,
    "sigma": 3.0,
}

#: Columns of a solution table (one row per image and alignment stage).
SOLUTION_COLUMNS = [
    ("image", str),
    ("group_id", str),
    ("stage", str),
    ("status", str),
    ("reason", str),
    ("fitgeom", str),
    ("n_sources", int),
    ("n_matches", int),
    ("n_used", int),
    ("rms_mas", float),
    ("mae_mas", float),
    ("xshift", float),
    ("yshift", float),
    ("rotation", float),
    ("scale", float),
    ("skew", float),
]


def wcs_kind(wcs):
    """``"fits"`` for an `astropy.wcs.WCS` (plain FITS image), else ``"jwst"`` (GWCS)."""
    from astropy.wcs import WCS

    return "fits" if isinstance(wcs, WCS) else "jwst"


def tangent_plane_scale(wcs_list):
    """Arcsec per unit of the tangent plane tweakwcs fits in.

    JWST correctors work in arcsec (1.0); FITS-WCS correctors in the pixels
    of the reference image: their median pixel scale is returned (exact when
    the images share a pixel scale, as the images of one dataset do).
    Matching radii are divided by it and fit results multiplied by it, so
    parameters and solution tables stay in arcsec for both kinds.

    Raises
    ------
    InputError
        If JWST and plain FITS-WCS images are mixed (their tangent planes
        have different units: tweakwcs cannot align them together).
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    from .errors import InputError

    kinds = {wcs_kind(w) for w in wcs_list}
    if len(kinds) > 1:
        raise InputError("cannot align JWST (GWCS) and plain FITS-WCS images in one run: align them separately")
    if kinds != {"fits"}:
        return 1.0
    return float(np.median([3600.0 * np.mean(proj_plane_pixel_scales(w)) for w in wcs_list]))


def make_corrector(wcs, wcsinfo, catalog, name, group_id):
    """A tweakwcs corrector carrying its catalog, name and group id in ``meta``.

    `JWSTWCSCorrector` for a GWCS, `FITSWCSCorrector` for an
    `astropy.wcs.WCS` (plain FITS image; ``wcsinfo`` is not used).
    """
    from tweakwcs.correctors import FITSWCSCorrector, JWSTWCSCorrector

    meta = {"catalog": catalog, "name": name, "group_id": group_id}
    if wcs_kind(wcs) == "fits":
        return FITSWCSCorrector(wcs, meta=meta)
    return JWSTWCSCorrector(
        wcs,
        {k: wcsinfo[k] for k in ("v2_ref", "v3_ref", "roll_ref")},
        meta=meta,
    )


def make_matcher(searchrad, separation, use2dhist, tolerance, xoffset=0.0, yoffset=0.0):
    """tweakwcs ``XYXYMatch`` with the step's matching parameters (arcsec)."""
    from tweakwcs.matchutils import XYXYMatch

    return XYXYMatch(
        searchrad=float(searchrad),
        separation=float(separation),
        use2dhist=bool(use2dhist),
        tolerance=float(tolerance),
        xoffset=float(xoffset),
        yoffset=float(yoffset),
    )


def fit_row(name, group_id, stage, status, reason="", fit_info=None, n_sources=0, tp_scale=1.0):
    """One solution-table row from a tweakwcs ``fit_info``.

    ``tp_scale`` is the arcsec per tangent-plane unit (`tangent_plane_scale`):
    RMS, MAE and shifts are reported in arcsec (mas) for every image kind.
    """
    row = {
        "image": name,
        "group_id": str(group_id),
        "stage": stage,
        "status": status,
        "reason": reason or "",
        "fitgeom": "",
        "n_sources": int(n_sources),
        "n_matches": 0,
        "n_used": 0,
        "rms_mas": math.nan,
        "mae_mas": math.nan,
        "xshift": 0.0,
        "yshift": 0.0,
        "rotation": 0.0,
        "scale": 1.0,
        "skew": 0.0,
    }
    fi = fit_info or {}
    if fi.get("status") == "SUCCESS":
        row.update(
            fitgeom=str(fi.get("fitgeom", "")),
            n_matches=int(fi.get("nmatches", 0)),
            n_used=int(np.count_nonzero(fi.get("fitmask", []))),
            rms_mas=1000.0 * tp_scale * float(fi["rmse"]),
            mae_mas=1000.0 * tp_scale * float(fi["mae"]),
            xshift=tp_scale * float(fi["shift"][0]),
            yshift=tp_scale * float(fi["shift"][1]),
            rotation=float(fi["<rot>"]),
            scale=float(fi["<scale>"]),
            skew=float(fi["skew"]),
        )
    return row


def rows_to_table(rows):
    """Solution rows -> `astropy.table.Table` with the standard columns."""
    cols = {}
    for name, typ in SOLUTION_COLUMNS:
        vals = [r[name] for r in rows]
        cols[name] = np.array(vals, dtype=typ if typ is not str else "U")
    return Table(cols)


def relative_align(entries, **pars):
    """Align image catalogs to each other, group by group.

    Parameters
    ----------
    entries : list of dict
        One per image, in user order, with ``name``, ``wcs`` (GWCS),
        ``wcsinfo`` (dict), ``catalog`` (Table with ``x``, ``y``, optional
        ``weight``) and ``group_id``.
    **pars
        Relative-alignment parameters (`RELATIVE_PARS`).

    Returns
    -------
    wcs : list
        Per entry, the corrected GWCS (the input GWCS when not aligned).
    rows : list of dict
        Per entry, a solution row (see `fit_row`); ``status`` is
        ``COMPLETE`` for an aligned image or the alignment reference, and
        ``SKIPPED`` (with ``reason``) otherwise.
    """
    from tweakwcs.imalign import align_wcs

    p = dict(RELATIVE_PARS)
    unknown = set(pars) - set(p)
    if unknown:
        raise TypeError(f"unknown relative-alignment parameters: {sorted(unknown)}")
    p.update(pars)

    out_wcs = [e["wcs"] for e in entries]
    rows = [None] * len(entries)
    usable = []
    for i, e in enumerate(entries):
        n = len(e["catalog"])
        if n == 0:
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", "no sources in catalog")
        else:
            usable.append(i)

    groups = {entries[i]["group_id"] for i in usable}
    if len(groups) < 2:
        reason = (
            "only one exposure group has sources: nothing to align relatively"
            if groups
            else "no image has sources"
        )
        for i in usable:
            e = entries[i]
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, n_sources=len(e["catalog"]))
        return out_wcs, rows

    correctors = [
        make_corrector(entries[i]["wcs"], entries[i]["wcsinfo"], entries[i]["catalog"], entries[i]["name"], entries[i]["group_id"])
        for i in usable
    ]
    tps = tangent_plane_scale([entries[i]["wcs"] for i in usable])
    matcher = make_matcher(
        p["searchrad"] / tps, p["separation"] / tps, p["use2dhist"], p["tolerance"] / tps, p["xoffset"] / tps, p["yoffset"] / tps
    )
    try:
        align_wcs(
            correctors,
            refcat=None,
            enforce_user_order=bool(p["enforce_user_order"]),
            expand_refcat=bool(p["expand_refcat"]),
            minobj=int(p["minobj"]),
            match=matcher,
            fitgeom=p["fitgeometry"],
            nclip=int(p["nclip"]),
            sigma=(float(p["sigma"]), "rmse"),
        )
    except Exception as exc:  # tweakwcs raises ValueError/NotEnoughCatalogs
        reason = f"alignment failed: {type(exc).__name__}: {exc}"
        log.warning(reason)
        for i in usable:
            e = entries[i]
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, n_sources=len(e["catalog"]))
        return out_wcs, rows

    for i, corr in zip(usable, correctors):
        e = entries[i]
        fi = corr.meta.get("fit_info", {})
        status = str(fi.get("status", "FAILED: no fit information"))
        n = len(e["catalog"])
        if status == "SUCCESS":
            out_wcs[i] = corr.wcs
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "", fi, n, tp_scale=tps)
        elif status == "REFERENCE":
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "alignment reference", None, n)
        else:
            reason = status.split(":", 1)[1].strip() if ":" in status else status
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, None, n)
    return out_wcs, rows
