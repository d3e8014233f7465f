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
    "SerializedWCS",
    "wcs_kind",
    "tangent_plane_scale",
    "make_matcher",
    "det_to_world",
    "footprint_world",
    "to_tangent_plane",
    "inside_any",
    "relative_align",
    "fit_row",
    "rows_to_table",
    "attempt_table",
    "SOLUTION_COLUMNS",
    "QUALITY_COLUMNS",
    "ATTEMPT_COLUMNS",
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


#: tweakwcs' reason for a fit not made: fewer than ``minobj`` matches.
TOO_FEW_MATCHES = "not enough matches"


class SerializedWCS:
    """A corrected WCS kept serialized in memory until it is written.

    A corrected GWCS takes ~0.45 MB as Python objects and ~70 KB pickled
    (1-2 ms each way, the same transforms after the round trip): kept this
    way, the WCSs of thousands of aligned images do not add up in the
    gather step's memory.
    """

    __slots__ = ("_blob",)

    def __init__(self, wcs):
        import pickle

        self._blob = pickle.dumps(wcs, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self):
        """The WCS object (a new one at each call)."""
        import pickle

        return pickle.loads(self._blob)


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
    """Solution rows -> `astropy.table.Table`.

    The `SOLUTION_COLUMNS`, then each of the `QUALITY_COLUMNS` that any row
    has (rows without it get its default).
    """
    cols = {}
    for name, typ in SOLUTION_COLUMNS:
        vals = [r[name] for r in rows]
        cols[name] = np.array(vals, dtype=typ if typ is not str else "U")
    for name, typ, default in QUALITY_COLUMNS:
        if any(name in r for r in rows):
            vals = [r.get(name, default) for r in rows]
            cols[name] = np.array(vals, dtype=typ if typ is not str else "U")
    return Table(cols)


# ---------------------------------------------------------------------------
# relative alignment with quality gates and recovery
# ---------------------------------------------------------------------------

#: Optional per-image columns of a solution table (added by the quality-gated
#: relative alignment; absent from tables of stages that do not set them).
QUALITY_COLUMNS = [
    ("image_n_matches", int, 0),
    ("image_n_used", int, 0),
    ("image_rms_mas", float, math.nan),
    ("match_fraction", float, math.nan),
    ("fit_error_mas", float, math.nan),
    ("chance_log10p", float, math.nan),
    ("attempt", int, 0),
    ("n_attempts", int, 0),
    ("recovery", str, ""),
    ("grade", int, 0),
]

#: Columns of the table of alignment attempts (one row per image and attempt).
ATTEMPT_COLUMNS = [
    ("image", str),
    ("group_id", str),
    ("pass_no", int),
    ("attempt", int),
    ("searchrad", float),
    ("use2dhist", bool),
    ("fitgeom", str),
    ("n_images", int),
    ("fit", str),
    ("passed", bool),
    ("chosen", bool),
    ("n_matches", int),
    ("n_used", int),
    ("rms_mas", float),
    ("match_fraction", float),
    ("fit_error_mas", float),
    ("chance_log10p", float),
    ("image_n_used", int),
    ("image_match_fraction", float),
    ("xshift", float),
    ("yshift", float),
    ("rotation", float),
    ("scale", float),
    ("reason", str),
]


def attempt_table(records):
    """Attempt rows (dicts with the `ATTEMPT_COLUMNS`) -> `astropy.table.Table`."""
    cols = {}
    for name, typ in ATTEMPT_COLUMNS:
        vals = [r[name] for r in records]
        cols[name] = np.array(vals, dtype=typ if typ is not str else "U") if vals else np.array([], dtype=typ if typ is not str else "U1")
    return Table(cols)


def _in_polygon(px, py, poly):
    """Points inside a polygon (ray casting); ``poly`` is (N, 2)."""
    px = np.asarray(px, float)
    py = np.asarray(py, float)
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for k in range(n):
        x1, y1 = poly[k]
        x2, y2 = poly[(k + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        xcross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xcross)
    return inside


def inside_any(px, py, polys):
    inside = np.zeros(np.shape(px), dtype=bool)
    for poly in polys:
        inside |= _in_polygon(px, py, poly)
    return inside & np.isfinite(px) & np.isfinite(py)


def det_to_world(wcs, x, y, with_bounding_box=True):
    """RA, DEC (deg) of 0-based detector positions through a GWCS or an astropy WCS.

    What a tweakwcs corrector's ``det_to_world`` gives for that WCS, without
    building a corrector (each deep-copies its WCS: ~30 ms for a GWCS). An
    astropy WCS goes through its full distortion (SIP and lookup tables,
    ``all_pix2world``); ``with_bounding_box`` applies to a GWCS only (an
    astropy WCS has no bounding box).
    """
    if wcs_kind(wcs) == "fits":
        ra, dec = wcs.all_pix2world(x, y, 0)
    else:
        ra, dec = wcs(x, y, with_bounding_box=with_bounding_box)
    return np.asarray(ra, float), np.asarray(dec, float)


def footprint_world(wcs, shape):
    """RA, DEC (deg) of the detector corners through ``wcs``."""
    ny, nx = (int(v) for v in shape[-2:])
    x = np.array([0.0, nx - 1.0, nx - 1.0, 0.0])
    y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0])
    return det_to_world(wcs, x, y)


def to_tangent_plane(tpwcs, radec):
    """(N, 2) positions in the tangent plane of a tweakwcs corrector of ``radec`` = (RA, DEC) in deg."""
    x, y = tpwcs.world_to_tanp(*radec)
    return np.c_[np.asarray(x, float), np.asarray(y, float)]


class _Reference:
    """The growing reference catalog of the sequential alignment.

    Holds the sources (RA, DEC, the entry they come from and how often they
    were used by an accepted fit) and the sky footprints of the images they
    come from (to count the sources two catalogs can share).
    """

    def __init__(self):
        self.table = Table(
            {"RA": np.zeros(0), "DEC": np.zeros(0), "_img": np.zeros(0, int), "_x": np.zeros(0), "_y": np.zeros(0), "_used": np.zeros(0, int)}
        )
        self.footprints = {}  # entry index -> (ra, dec)

    def add(self, ra, dec, img, footprint=None, x=None, y=None):
        """Add sources of entry ``img`` (RA, DEC in deg; detector x, y)."""
        ra = np.asarray(ra, float)
        dec = np.asarray(dec, float)
        x = np.full(len(ra), np.nan) if x is None else np.asarray(x, float)
        y = np.full(len(ra), np.nan) if y is None else np.asarray(y, float)
        good = np.isfinite(ra) & np.isfinite(dec)
        add = Table(
            {"RA": ra[good], "DEC": dec[good], "_img": np.full(good.sum(), img, int), "_x": x[good], "_y": y[good], "_used": np.zeros(good.sum(), int)}
        )
        from astropy.table import vstack

        self.table = vstack([self.table, add]) if len(self.table) else add
        if footprint is not None:
            self.footprints[img] = footprint

    def refcat(self):
        from tweakwcs.wcsimage import RefCatalog

        return RefCatalog(Table(self.table, copy=True), name="reference")


def _fresh_group(entries, idx):
    """New correctors (input WCS) and a tweakwcs group catalog for entries ``idx``."""
    from tweakwcs.wcsimage import WCSGroupCatalog, WCSImageCatalog

    correctors, imcats = [], []
    for i in idx:
        e = entries[i]
        c = make_corrector(e["wcs"], e["wcsinfo"], e["catalog"], e["name"], e["group_id"])
        correctors.append(c)
        imcats.append(WCSImageCatalog(e["catalog"], c, name=e["name"], group_id=e["group_id"]))
    gcat = WCSGroupCatalog(imcats, name=f"GROUP ID: {entries[idx[0]]['group_id']}")
    return correctors, gcat


def _refine_fit(fi, cat, refcat, im_tp, ref_tp, entries, idx, correctors, ref_tpwcs, att, p, tps):
    """Re-pair a completed fit's sources as mutual nearest neighbours and fit again.

    ``xyxymatch`` pairs sources within ``tolerance``; a star of one catalog
    whose counterpart is missing from the other can pair with a neighbour a
    few tenths of an arcsecond away, and tweakwcs does not clip after its
    last fit, so one or two such pairs remain in the fit and bias it by a
    few mas. Once the first fit has put both catalogs in one frame, pairs
    are re-made as mutual nearest neighbours within five robust standard
    deviations of the residuals (20 mas to ``tolerance``), fitted again
    with the same geometry and clipping, and the correction applied to
    fresh correctors (as `tweakflow.absolute` does for the absolute fit).

    Returns
    -------
    fit_info : dict
        ``fi`` with the refined pairs and fit (unchanged when fewer than
        ``minobj`` pairs survive or the fit fails).
    correctors : list
        The correctors of entries ``idx`` with the refined correction
        (``correctors``, with tweakwcs' correction, when not refined).
    """
    from .absolute import linear_fit, refine_fit

    wim_all = np.asarray(cat["weight"], float) if "weight" in cat.colnames else None
    wref_all = np.asarray(refcat["weight"], float) if "weight" in refcat.colnames else None

    def fitter(ri, ii):
        return linear_fit(
            ref_tp[ri], im_tp[ii], None if wref_all is None else wref_all[ri], None if wim_all is None else wim_all[ii],
            att["fitgeometry"], int(p["nclip"]), (float(p["sigma"]), "rmse"),
        )

    first = {"matrix": np.asarray(fi["matrix"], float), "shift": np.asarray(fi["shift"], float), "fitmask": np.asarray(fi["fitmask"], bool)}
    pairs = (np.asarray(fi["matched_ref_idx"], int), np.asarray(fi["matched_input_idx"], int))
    fit, r2, i2, radius = refine_fit(ref_tp, im_tp, first, pairs, fitter, 0.02 / tps, p["tolerance"] / tps, p["minobj"])
    if fit is first:
        return fi, correctors
    fresh = [make_corrector(entries[i]["wcs"], entries[i]["wcsinfo"], entries[i]["catalog"], entries[i]["name"], entries[i]["group_id"]) for i in idx]
    for c in fresh:
        c.set_correction(matrix=fit["matrix"], shift=fit["shift"], ref_tpwcs=ref_tpwcs)
    out = dict(fi)
    out.update(
        matrix=fit["matrix"],
        shift=fit["shift"],
        fitmask=np.asarray(fit["fitmask"], bool),
        rmse=fit["rmse"],
        mae=fit["mae"],
        **{"<rot>": fit["<rot>"], "<scale>": fit["<scale>"]},
        rot=fit["rot"],
        scale=fit["scale"],
        skew=fit["skew"],
        proper_rot=fit["proper_rot"],
        proper=fit["proper"],
        nmatches=len(r2),
        matched_ref_idx=r2,
        matched_input_idx=i2,
        refined_radius=radius * tps,
    )
    return out, fresh


def _fit_attempt(entries, idx, reference, att, p, tps, refine=False):
    """Fit the group of entries ``idx`` to the reference with one attempt's settings.

    Returns
    -------
    dict
        ``ok`` (tweakwcs completed a fit), ``reason`` (why not), and when
        ``ok``: ``fit_info``, ``correctors`` (corrected), ``stats`` (group),
        ``image_stats`` (per entry of ``idx``), ``pairs`` (matched pairs in
        the tangent plane, for the matches table) and ``unmatched`` (RA/DEC
        of the group's unmatched sources per entry).
    """
    from copy import deepcopy

    from .quality import fit_significance

    correctors, gcat = _fresh_group(entries, idx)
    ref_tpwcs = deepcopy(correctors[0])
    refcat = reference.refcat()
    matcher = make_matcher(att["searchrad"] / tps, p["separation"] / tps, att["use2dhist"], p["tolerance"] / tps, p["xoffset"] / tps, p["yoffset"] / tps)
    out = {"ok": False, "reason": "", "idx": list(idx), "att": att}
    try:
        done = gcat.align_to_ref(
            refcat,
            ref_tpwcs=ref_tpwcs,
            match=matcher,
            minobj=int(p["minobj"]),
            fitgeom=att["fitgeometry"],
            nclip=int(p["nclip"]),
            sigma=(float(p["sigma"]), "rmse"),
        )
    except Exception as exc:  # tweakwcs raises ValueError, MatchSourceConfusionError, LinAlgError...
        out["reason"] = f"{type(exc).__name__}: {exc}"
        return out
    fi = gcat[0].fit_info
    if not done or fi.get("status") != "SUCCESS":
        status = str(fi.get("status", "FAILED: no fit"))
        out["reason"] = status.split(":", 1)[1].strip() if ":" in status else status
        return out

    cat = gcat.catalog
    src_img = np.asarray(cat["_imcat_idx"], int)
    im_tp = np.c_[np.asarray(cat["TPx"], float), np.asarray(cat["TPy"], float)]
    ref_tp = np.c_[np.asarray(refcat.catalog["TPx"], float), np.asarray(refcat.catalog["TPy"], float)]
    if refine:
        fi, correctors = _refine_fit(fi, cat, refcat.catalog, im_tp, ref_tp, entries, idx, correctors, ref_tpwcs, att, p, tps)
    mref = np.asarray(fi["matched_ref_idx"], int)
    minp = np.asarray(fi["matched_input_idx"], int)
    used = np.asarray(fi["fitmask"], bool)
    matrix, shift = np.asarray(fi["matrix"], float), np.asarray(fi["shift"], float)
    fitted_all = shift + im_tp @ matrix.T
    res = (fitted_all[minp] - ref_tp[mref]) * tps * 1000.0  # mas

    # overlap: the group's sources inside the reference images' footprints,
    # the reference sources inside each image's (corrected) footprint
    ref_polys = [to_tangent_plane(ref_tpwcs, fp) for fp in reference.footprints.values()]
    ref_valid = np.isfinite(ref_tp).all(axis=1)
    image_stats, corners = [], []
    n_img_in_total = 0
    for k, (i, corr) in enumerate(zip(idx, correctors)):
        mine = src_img == k
        pair_k = src_img[minp] == k
        used_k = pair_k & used
        fp = footprint_world(corr.wcs, entries[i]["shape"])
        poly = to_tangent_plane(ref_tpwcs, fp)
        n_img_in = int(np.count_nonzero(inside_any(fitted_all[mine, 0], fitted_all[mine, 1], ref_polys)))
        n_ref_in = int(np.count_nonzero(_in_polygon(ref_tp[ref_valid, 0], ref_tp[ref_valid, 1], poly)))
        n_possible = min(n_img_in, n_ref_in)
        n_img_in_total += n_img_in
        corners.append(poly)
        n_used_k = int(np.count_nonzero(used_k))
        rk = res[used_k]
        image_stats.append(
            {
                "n_matches": int(np.count_nonzero(pair_k)),
                "n_used": n_used_k,
                "n_possible": n_possible,
                "match_fraction": n_used_k / n_possible if n_possible else math.nan,
                "rms_mas": float(np.sqrt(np.mean(np.sum(rk**2, axis=1)))) if len(rk) else math.nan,
                "footprint": fp,
            }
        )
    n_pos = sum(s["n_possible"] for s in image_stats)
    stats = {
        "n_matches": int(len(minp)),
        "n_used": int(np.count_nonzero(used)),
        "rms_mas": 1000.0 * tps * float(fi["rmse"]),
        "match_fraction": sum(s["n_used"] for s in image_stats) / n_pos if n_pos else math.nan,
        "shift_arcsec": tps * float(np.hypot(*shift)),
        "rotation_deg": float(fi["<rot>"]),
        "fitgeom": att["fitgeometry"],
        **fit_significance(
            im_tp[minp[used]], fitted_all[minp[used]], res[used], ref_tp[ref_valid], corners, n_img_in_total,
            att["fitgeometry"], att["searchrad"], p["tolerance"], tps,
        ),
    }
    matched_mask = np.zeros(len(cat), bool)
    matched_mask[minp] = True
    # sky positions of the group's sources on the corrected WCS
    ra, dec = np.full(len(cat), np.nan), np.full(len(cat), np.nan)
    for k, corr in enumerate(correctors):
        sel = src_img == k
        r, d = corr.det_to_world(np.asarray(cat["x"], float)[sel], np.asarray(cat["y"], float)[sel])
        ra[sel], dec[sel] = r, d
    out.update(
        ok=True,
        fit_info=fi,
        correctors=correctors,
        stats=stats,
        image_stats=image_stats,
        pairs={
            "src_img": src_img[minp],
            "x": np.asarray(cat["x"], float)[minp],
            "y": np.asarray(cat["y"], float)[minp],
            "im_tp": im_tp[minp],
            "ref_tp": ref_tp[mref],
            "ref_row": mref,
            "ref_img": np.asarray(refcat.catalog["_img"], int)[mref],
            "ref_x": np.asarray(refcat.catalog["_x"], float)[mref],
            "ref_y": np.asarray(refcat.catalog["_y"], float)[mref],
            "used": used,
        },
        unmatched=[
            (ra[sel], dec[sel], np.asarray(cat["x"], float)[sel], np.asarray(cat["y"], float)[sel])
            for sel in ((src_img == k) & ~matched_mask for k in range(len(idx)))
        ],
    )
    return out


def _attempt_records(res, entries, gid, pass_no, number, passed, reason, tps):
    """Rows of the attempts table for one attempt (one per image fitted)."""
    att = res["att"]
    st = res.get("stats", {})
    fi = res.get("fit_info", {})
    recs = []
    for k, i in enumerate(res["idx"]):
        ist = res["image_stats"][k] if res["ok"] else {}
        recs.append(
            {
                "image": entries[i]["name"],
                "group_id": str(gid),
                "pass_no": pass_no,
                "attempt": number,
                "searchrad": float(att["searchrad"]),
                "use2dhist": bool(att["use2dhist"]),
                "fitgeom": att["fitgeometry"],
                "n_images": len(res["idx"]),
                "fit": "SUCCESS" if res["ok"] else "FAILED",
                "passed": bool(passed),
                "chosen": False,
                "n_matches": int(st.get("n_matches", 0)),
                "n_used": int(st.get("n_used", 0)),
                "rms_mas": float(st.get("rms_mas", math.nan)),
                "match_fraction": float(st.get("match_fraction", math.nan)),
                "fit_error_mas": float(st.get("fit_error_mas", math.nan)),
                "chance_log10p": float(st.get("chance_log10p", math.nan)),
                "image_n_used": int(ist.get("n_used", 0)),
                "image_match_fraction": float(ist.get("match_fraction", math.nan)),
                "xshift": tps * float(fi["shift"][0]) if res["ok"] else 0.0,
                "yshift": tps * float(fi["shift"][1]) if res["ok"] else 0.0,
                "rotation": float(fi.get("<rot>", 0.0)) if res["ok"] else 0.0,
                "scale": float(fi.get("<scale>", 1.0)) if res["ok"] else 1.0,
                "reason": reason,
            }
        )
    return recs


def _align_group(entries, idx, reference, p, q, limits, tps, pass_no):
    """Fit one group through the recovery chain; keep the best fit that passes.

    Returns
    -------
    dict
        ``best`` (the chosen attempt's result, or None), ``failed``
        (entry index -> reason, for members the chosen fit leaves out),
        ``records`` (attempt rows), ``n_attempts``, ``number`` (the chosen
        attempt's number), ``first`` (the configured attempt's result) and
        ``reason`` (why nothing passed).
    """
    from .quality import attempt_label, check_fit, check_image, recovery_plan

    gid = entries[idx[0]]["group_id"]
    gates = q["enabled"]
    plan = recovery_plan(p["searchrad"], p["use2dhist"], p["fitgeometry"], q)
    records, candidates = [], []
    rejected_in = {}  # left-out image -> the attempt that found it inconsistent
    number = 0
    first = None
    first_reason = ""

    def evaluate(res):
        """(passed, images failing their own gate {i: reason}, reason text) of an attempt.

        Images are judged first: when some of a group's images contradict
        the fit (their sources are not used, or fit badly) and others do
        not, those are the problem, whatever the group's statistics say.
        """
        if not res["ok"]:
            return False, {}, f"tweakwcs: {res['reason']}"
        if not gates:
            return True, {}, ""
        bad = {}
        for i, ist in zip(res["idx"], res["image_stats"]):
            f = check_image(ist, limits)
            if f:
                bad[i] = "; ".join(f)
        fails = check_fit(res["stats"], limits)
        if bad and len(bad) < len(res["idx"]):
            return not fails or q["recovery"], bad, "; ".join(fails)
        if fails:
            return False, bad, "; ".join(fails)
        if bad:
            return False, bad, "every image fails: " + " | ".join(bad.values())
        return True, {}, ""

    # Too few matches depends on the matching settings only (minobj is fixed),
    # not on the fit geometry: an attempt that differs from one that found
    # too few matches only in its geometry gets that attempt's result again
    # instead of matching the same catalogs a second time.
    too_few = {}  # (members, searchrad, use2dhist) -> result
    for ntier, tier in enumerate(plan):
        for att in tier:
            members, left_out = list(idx), {}
            while True:
                number += 1
                key = (tuple(members), att["searchrad"], att["use2dhist"])
                if key in too_few:
                    res = dict(too_few[key], att=att)
                else:
                    res = _fit_attempt(entries, members, reference, att, p, tps, refine=gates and q["refine"])
                    if not res["ok"] and res["reason"] == TOO_FEW_MATCHES:
                        too_few[key] = res
                passed, bad, why = evaluate(res)
                if first is None:
                    first = res
                if ntier == 0:
                    first_reason = why or first_reason
                refit = bool(passed and bad and q["recovery"])
                if passed and bad:
                    names = "; ".join(f"{entries[i]['name']}: {r}" for i, r in bad.items())
                    why = ("refit without inconsistent image(s): " if refit else "inconsistent image(s) left out: ") + names
                records.extend(_attempt_records(res, entries, gid, pass_no, number, passed and not refit, why, tps))
                if not refit:
                    break
                for i in bad:
                    rejected_in[i] = res
                left_out.update(bad)
                members = [i for i in members if i not in bad]
            if passed:
                left_out.update(bad)
                res["number"] = number
                res["left_out"] = left_out
                res["n_ok"] = sum(1 for i in res["idx"] if i not in left_out)
                candidates.append(res)
        if candidates or not (gates and q["recovery"]):
            break

    out = {"records": records, "n_attempts": number, "first": first, "best": None, "failed": {}, "reason": "", "rejected_in": rejected_in}
    if candidates:
        best = max(
            candidates,
            key=lambda r: (r["n_ok"], r["stats"]["n_used"], -r["stats"]["rms_mas"]),
        )
        out["best"] = best
        out["number"] = best["number"]
        out["failed"] = {i: f"catalog inconsistent with its group's fit: {r}" for i, r in best["left_out"].items()}
        for rec in records:
            if rec["attempt"] == best["number"]:
                rec["chosen"] = True
        out["recovery"] = ""
        if best["number"] > 1:
            out["recovery"] = f"attempt {best['number']} of {number}: {attempt_label(best['att'])}"
            if best["left_out"]:
                out["recovery"] += f", without {len(best['left_out'])} inconsistent image(s)"
        return out
    if not gates:
        out["reason"] = first_reason.replace("tweakwcs: ", "", 1)
    elif number == 1:
        out["reason"] = f"quality gate: {first_reason}"
    else:
        out["reason"] = f"no fit passed the quality gates in {number} attempts (configured fit: {first_reason})"
    return out


def _group_order(entries, groups, p, excluded, dynamic):
    """Reference group and the alignment order of the others.

    User order when ``enforce_user_order`` or when the reference catalog is
    not expanded (as tweakwcs ``align_wcs``). Otherwise the pair of groups
    with the largest overlap starts and each next group is the one with the
    largest overlap with those placed before it: with ``dynamic`` (strict
    JWST-step behaviour) that choice is made during the alignment from the
    growing reference catalog's sky polygon, exactly as tweakwcs does (see
    `_next_group`); otherwise the whole order is found here, up front, from
    the sources of each group that fall inside the others' footprints
    (`tweakflow.ordering.alignment_order`: milliseconds where the polygon
    intersections take seconds for eight images and grow as the cube of the
    number of groups). Groups whose images are all ``excluded`` from the
    reference role are not chosen as reference.

    Returns
    -------
    ref : list of int
        Entry indices of the reference group.
    rest : list of list of int
        The other groups, in order (with ``dynamic``, only the first matters).
    """
    keys = list(groups)
    user_order = bool(p["enforce_user_order"]) or not bool(p["expand_refcat"])
    if not user_order and len(keys) > 2:
        if dynamic:
            from tweakwcs.imalign import overlap_matrix

            gcats = [_fresh_group(entries, groups[k])[1] for k in keys]
            m = overlap_matrix(gcats)
            i, j = np.unravel_index(m.argmax(), m.shape)
            if np.sum(m[i]) < np.sum(m[:, j]):
                i, j = j, i
            keys = [keys[i], keys[j]] + [k for n, k in enumerate(keys) if n not in (i, j)]
        else:
            from .ordering import alignment_order

            footprints, sources = [], []
            for k in keys:
                fps, src = [], []
                for i in groups[k]:
                    e = entries[i]
                    fps.append(np.column_stack(footprint_world(e["wcs"], e["shape"])))
                    if len(e["catalog"]):
                        ra, dec = det_to_world(e["wcs"], np.asarray(e["catalog"]["x"], float), np.asarray(e["catalog"]["y"], float))
                        src.append(np.column_stack([ra, dec]))
                footprints.append(fps)
                sources.append(np.vstack(src) if src else np.zeros((0, 2)))
            keys = [keys[n] for n in alignment_order(footprints, sources)]
    for n, k in enumerate(keys):
        if any(i not in excluded for i in groups[k]):
            ref = keys[n]
            break
    else:
        ref = keys[0]
    return groups[ref], [groups[k] for k in keys if k != ref]


def _next_group(reference, remaining, entries, dynamic, first, polygons):
    """Pop the next group to align: in order, or by overlap with the reference.

    With ``dynamic``, ``polygons`` caches the tweakwcs group catalogs (input
    WCS) whose sky polygons are intersected with the reference catalog's.
    """
    if not dynamic or first or len(remaining) == 1:
        return remaining.pop(0)
    refcat = reference.refcat()
    areas = []
    for g in remaining:
        key = tuple(g)
        if key not in polygons:
            polygons[key] = _fresh_group(entries, g)[1]
        try:
            areas.append(float(refcat.intersection_area(polygons[key])))
        except Exception:  # spherical_geometry MalformedPolygonError: no preference
            areas.append(0.0)
    return remaining.pop(int(np.argmax(areas)))


def _relative_pass(entries, groups, p, q, limits, tps, excluded, pass_no):
    """One sequential pass: the reference group, then every other group.

    Returns
    -------
    dict
        ``wcs`` and ``rows`` (entry index -> value), ``records`` (attempt
        rows), ``matches`` (per entry: the accepted or, if none, the
        configured attempt's matched pairs), ``ref_idx`` (reference entries),
        ``reference`` (the final `_Reference`).
    """
    user_order = bool(p["enforce_user_order"]) or not bool(p["expand_refcat"])
    # strict JWST-step behaviour (no quality gates) chooses each next group as
    # tweakwcs does; otherwise the overlap order is computed up front
    dynamic = not user_order and not q["enabled"]
    ref_idx, rest = _group_order(entries, groups, p, excluded, dynamic)
    reference = _Reference()
    rows, wcs, matches, footprints = {}, {}, {}, {}
    ref_members = [i for i in ref_idx if i not in excluded]
    for i in ref_members:
        e = entries[i]
        x, y = np.asarray(e["catalog"]["x"], float), np.asarray(e["catalog"]["y"], float)
        ra, dec = det_to_world(e["wcs"], x, y)
        reference.add(ra, dec, i, footprint_world(e["wcs"], e["shape"]), x=x, y=y)
    for i in ref_idx:
        e = entries[i]
        if i in excluded:
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", excluded[i], n_sources=len(e["catalog"]))
        else:
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "alignment reference", n_sources=len(e["catalog"]))
        rows[i].update(attempt=0, n_attempts=0)
    records = []
    remaining = list(rest)
    first = True
    polygons = {}
    while remaining:
        g = _next_group(reference, remaining, entries, dynamic, first, polygons)
        first = False
        out = _align_group(entries, g, reference, p, q, limits, tps, pass_no)
        records.extend(out["records"])
        best = out["best"]
        if best is None:
            for i in g:
                e = entries[i]
                rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", out["reason"], n_sources=len(e["catalog"]))
                rows[i].update(attempt=0, n_attempts=out["n_attempts"])
            res = out["first"]
            if res is not None and res["ok"]:
                matches[tuple(res["idx"])] = (_match_record(res), False, None)
            if not q["enabled"] and p["expand_refcat"] and user_order and res is not None:
                # tweakwcs adds a failed image's sources when overlaps are
                # not computed (strict JWST-step behaviour)
                for k, i in enumerate(g):
                    e = entries[i]
                    x, y = np.asarray(e["catalog"]["x"], float), np.asarray(e["catalog"]["y"], float)
                    ra, dec = det_to_world(e["wcs"], x, y)
                    reference.add(ra, dec, i, footprint_world(e["wcs"], e["shape"]), x=x, y=y)
            continue
        matches[tuple(best["idx"])] = (_match_record(best), True, None)
        for i in out["failed"]:
            rej = out["rejected_in"].get(i, best)
            matches[(i,)] = (_match_record(rej), False, i)
        fi = best["fit_info"]
        # sources of the reference used by the accepted fit
        pr = best["pairs"]
        np.add.at(reference.table["_used"], pr["ref_row"][pr["used"]], 1)
        for k, i in enumerate(best["idx"]):
            if i in out["failed"]:
                continue
            e = entries[i]
            ist = best["image_stats"][k]
            wcs[i] = SerializedWCS(best["correctors"][k].wcs)
            footprints[i] = ist["footprint"]
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "", fi, len(e["catalog"]), tp_scale=tps)
            rows[i].update(
                image_n_matches=ist["n_matches"],
                image_n_used=ist["n_used"],
                image_rms_mas=ist["rms_mas"],
                match_fraction=ist["match_fraction"],
                fit_error_mas=best["stats"]["fit_error_mas"],
                chance_log10p=best["stats"]["chance_log10p"],
                attempt=out["number"],
                n_attempts=out["n_attempts"],
                recovery=out.get("recovery", ""),
            )
            if p["expand_refcat"]:
                ra, dec, x, y = best["unmatched"][k]
                reference.add(ra, dec, i, ist["footprint"], x=x, y=y)
        for i, why in out["failed"].items():
            e = entries[i]
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", why, n_sources=len(e["catalog"]))
            rows[i].update(attempt=0, n_attempts=out["n_attempts"])
    return {
        "rows": rows,
        "wcs": wcs,
        "records": records,
        "matches": matches,
        "ref_idx": ref_idx,
        "reference": reference,
        "footprints": footprints,
        "pass_no": pass_no,
    }


def _bad_reference_images(entries, result, limits, groups):
    """Reference images whose catalogs the other images contradict.

    Two tests, each needing enough sources to judge (``min_matches``):

    * a vote of the images of other groups that overlap the reference image
      (at least ``min_matches`` of their sources in its footprint): those
      left ``SKIPPED`` disagree with it, those aligned agree; the reference
      image is suspect when at least two disagree and they outnumber those
      that agree (two groups that do not match give no evidence which of
      them is wrong);
    * of its sources inside the footprints of the aligned images, fewer
      than ``min_match_fraction`` were used by any accepted fit.

    Returns
    -------
    dict
        Entry index -> reason.
    """
    rows = result["rows"]
    ref = result["reference"]
    tab = ref.table
    ref_idx = set(result["ref_idx"])
    others = [i for g in groups.values() for i in g if i not in ref_idx]
    aligned = [i for i in others if rows[i]["status"] == "COMPLETE"]
    nmin = max(limits["min_matches"], 1)
    radec = {}
    for j in others:
        ej = entries[j]
        radec[j] = det_to_world(ej["wcs"], np.asarray(ej["catalog"]["x"], float), np.asarray(ej["catalog"]["y"], float))
    out = {}
    for i in result["ref_idx"]:
        if rows[i]["status"] != "COMPLETE" or i not in ref.footprints:
            continue
        e = entries[i]
        tp = make_corrector(e["wcs"], e["wcsinfo"], e["catalog"], e["name"], e["group_id"])
        poly = to_tangent_plane(tp, ref.footprints[i])
        agree = disagree = 0
        for j in others:
            pts = to_tangent_plane(tp, radec[j])
            if np.count_nonzero(inside_any(pts[:, 0], pts[:, 1], [poly])) < nmin:
                continue
            if rows[j]["status"] == "COMPLETE":
                agree += 1
            else:
                disagree += 1
        if disagree >= 2 and disagree > agree:
            out[i] = f"alignment reference that {disagree} overlapping image(s) of other groups could not be aligned to ({agree} could)"
            continue
        if not aligned:
            continue
        mine = np.asarray(tab["_img"]) == i
        pts = to_tangent_plane(tp, (np.asarray(tab["RA"])[mine], np.asarray(tab["DEC"])[mine]))
        polys = [to_tangent_plane(tp, result["footprints"][j]) for j in aligned]
        inside = inside_any(pts[:, 0], pts[:, 1], polys)
        n_in = int(np.count_nonzero(inside))
        n_used = int(np.count_nonzero(inside & (np.asarray(tab["_used"])[mine] > 0)))
        if n_in >= nmin and n_used / n_in < limits["min_match_fraction"]:
            out[i] = (
                f"alignment reference whose catalog the aligned images do not match: {n_used} of {n_in} "
                f"sources in their footprints used (match fraction {n_used / n_in:.2f} < {limits['min_match_fraction']:.2f})"
            )
    return out


def relative_align(entries, *, quality=None, details=None, serialized=False, **pars):
    """Align image catalogs to each other, group by group, with quality gates.

    Groups are aligned one after the other to a reference catalog (the
    first group's sources, and, with ``expand_refcat``, the unmatched
    sources of every group accepted so far), in the order of tweakwcs
    ``align_wcs``; each group's fit goes through `tweakflow.quality`: a
    fit that fails a gate is retried by the recovery chain and the best
    attempt that passes is kept. A group that nothing passes keeps its
    input WCS, is ``SKIPPED`` with the reason, and never enters the
    reference catalog, so a wrong fit cannot mislead later groups. An image
    whose catalog contradicts its group's fit is left out and ``SKIPPED``;
    a reference image that the other images contradict
    (`_bad_reference_images`) is dropped from the reference and the
    alignment run again, and the second run is kept if it aligns more
    images.

    Parameters
    ----------
    entries : list of dict
        One per image, in user order, with ``name``, ``wcs`` (GWCS, or
        `astropy.wcs.WCS` of a FITS chip), ``wcsinfo`` (dict), ``catalog``
        (Table with ``x``, ``y``, optional ``weight``), ``group_id`` and
        ``shape``.
    quality : dict or None
        The ``quality`` block (`tweakflow.quality.resolve_quality`;
        ``None``: defaults, gates and recovery on). ``{"enabled": False}``
        gives the JWST step's behaviour: every fit tweakwcs completes is
        accepted.
    details : dict or None
        If given, filled with ``attempts`` (`astropy.table.Table`, one row
        per image and attempt, see `ATTEMPT_COLUMNS`) and ``matches``
        (`tweakflow.qa.match_table` rows of every fitted group).
    serialized : bool
        Return the corrected WCSs as `SerializedWCS` (``.load()`` gives the
        WCS), for a caller that writes them one at a time.
    **pars
        Relative-alignment parameters (`RELATIVE_PARS`).

    Returns
    -------
    wcs : list
        Per entry, the corrected WCS (the input WCS when not aligned).
    rows : list of dict
        Per entry, a solution row (`fit_row`, plus the `QUALITY_COLUMNS`);
        ``status`` is ``COMPLETE`` for an aligned image or the alignment
        reference, and ``SKIPPED`` (with ``reason``) otherwise.

    Raises
    ------
    ConfigError
        If ``separation`` < sqrt(2) x ``tolerance`` (`tweakflow.params.check_separation`).
    """
    from .params import check_separation
    from .quality import gate_limits, resolve_quality

    p = dict(RELATIVE_PARS)
    unknown = set(pars) - set(p)
    if unknown:
        raise TypeError(f"unknown relative-alignment parameters: {sorted(unknown)}")
    p.update(pars)
    check_separation(p)
    q = resolve_quality(quality)
    limits = gate_limits(q, p["tolerance"])
    if details is not None:
        details["attempts"] = attempt_table([])
        details["matches"] = None

    out_wcs = [e["wcs"] for e in entries]
    rows = [None] * len(entries)
    usable = []
    for i, e in enumerate(entries):
        if len(e["catalog"]) == 0:
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", "no sources in catalog")
        else:
            usable.append(i)

    groups = {}
    for i in usable:
        groups.setdefault(entries[i]["group_id"], []).append(i)
    if len(groups) < 2:
        reason = "only one exposure group has sources: nothing to align relatively" if groups else "no image has sources"
        for i in usable:
            e = entries[i]
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, n_sources=len(e["catalog"]))
        return out_wcs, _with_quality_columns(rows)

    tps = tangent_plane_scale([entries[i]["wcs"] for i in usable])
    excluded = {}
    records = []
    result = None
    stricter = False
    for pass_no in (1, 2):
        res = _relative_pass(entries, groups, p, q, limits, tps, excluded, pass_no)
        records.extend(res["records"])
        # a second pass without suspect reference images is kept only if it
        # aligns more images; one with the run's consistent-RMS limit always
        if result is None or stricter or _n_complete(res) > _n_complete(result):
            result = res
        if not (q["enabled"] and pass_no == 1):
            break
        rms_limit = _inconsistent_rms_limit(res, q, limits)
        bad = _bad_reference_images(entries, res, limits, groups) if q["recovery"] else {}
        if not bad and rms_limit is None:
            break
        for i, why in bad.items():
            log.warning("%s: %s; aligning again without it as reference", entries[i]["name"], why)
        excluded.update(bad)
        if rms_limit is not None:
            stricter = True
            limits = dict(limits, max_rms_mas=rms_limit)

    for i, r in result["rows"].items():
        if result["pass_no"] == 2 and i in excluded and r["status"] != "COMPLETE" and not r["reason"].startswith(excluded[i]):
            r["reason"] = f"{excluded[i]}; then: {r['reason']}"
        rows[i] = r
        if i in result["wcs"]:
            out_wcs[i] = result["wcs"][i] if serialized else result["wcs"][i].load()
    for rec in records:
        rec["chosen"] = rec["chosen"] and rec["pass_no"] == result["pass_no"]
    if details is not None:
        details["attempts"] = attempt_table(records)
        details["matches"] = _matches_of(entries, result["matches"], tps)
    for i in usable:
        if rows[i]["status"] != "COMPLETE":
            log.warning("%s [%s]: SKIPPED: %s", entries[i]["name"], entries[i]["group_id"], rows[i]["reason"])
    return out_wcs, _with_quality_columns(rows)


def _inconsistent_rms_limit(result, q, limits):
    """The run's consistent-RMS limit when an accepted fit exceeds it, else None.

    Each accepted group fit counts once (`tweakflow.quality.consistent_rms_limit`).
    """
    from .quality import consistent_rms_limit

    fits = {r["group_id"]: r["rms_mas"] for r in result["rows"].values() if r["status"] == "COMPLETE" and r.get("attempt", 0) > 0}
    limit = consistent_rms_limit(fits.values(), q["max_rms_ratio"])
    if limit >= limits["max_rms_mas"] or all(v <= limit for v in fits.values()):
        return None
    worst = {g: v for g, v in fits.items() if v > limit}
    log.warning(
        "fit RMS of group(s) %s inconsistent with the run's other fits (limit %.1f mas); aligning again with that limit",
        ", ".join(f"{g} ({v:.1f} mas)" for g, v in worst.items()), limit,
    )
    return limit


def _with_quality_columns(rows):
    """Every row with every `QUALITY_COLUMNS` entry (its default where unset)."""
    for r in rows:
        for name, _, default in QUALITY_COLUMNS:
            r.setdefault(name, default)
    return rows


def _n_complete(result):
    return sum(1 for r in result["rows"].values() if r["status"] == "COMPLETE")


def _match_record(res):
    """What the matches table needs of a fit (`_matches_of`): its pairs and
    linear fit, without the correctors (a deep-copied GWCS each, ~1 MB)."""
    return {"idx": res["idx"], "pairs": res["pairs"], "fit_info": {k: res["fit_info"][k] for k in ("matrix", "shift")}}


def _matches_of(entries, matches, tps):
    """The matches table of a pass: accepted fits, and the rejected configured fit of failed groups."""
    from astropy.table import vstack

    from .qa import match_table

    parts = []
    for (res, accepted, only) in matches.values():
        idx = res["idx"]
        pr = res["pairs"]
        names = np.array([entries[i]["name"] for i in idx])[pr["src_img"]]
        gids = np.array([str(entries[i]["group_id"]) for i in idx])[pr["src_img"]]
        fi = res["fit_info"]
        n = len(pr["used"])
        tab = match_table(
            {"matched_ref_idx": np.arange(n), "matched_input_idx": np.arange(n), "fitmask": pr["used"], "matrix": fi["matrix"], "shift": fi["shift"]},
            pr["ref_tp"],
            pr["im_tp"],
            image=names,
            x=pr["x"],
            y=pr["y"],
            group_id=gids,
            stage="relative",
            tp_scale=tps,
            accepted=accepted,
            pair_columns={
                "ref_image": np.array([entries[j]["name"] for j in pr["ref_img"]], dtype="U"),
                "ref_x": pr["ref_x"],
                "ref_y": pr["ref_y"],
            },
        )
        if only is not None:
            tab = tab[tab["image"] == entries[only]["name"]]
        parts.append(tab)
    if not parts:
        from .qa import empty_match_table

        return empty_match_table()
    return vstack(parts, metadata_conflicts="silent")
