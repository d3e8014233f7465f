"""Group-aware relative alignment of image catalogs (the JWST step's sequential order).

Every image gets one tweakwcs corrector (one per chip of a plain FITS
image); images with the same group id are fitted together as one (one
correction per exposure). Groups are aligned one after the other to a
growing reference catalog, in the order of tweakwcs ``align_wcs``
(`tweakflow.ordering`); each group's fit goes through the quality gates and
the recovery chain (`tweakflow.quality`) and is refined
(`tweakflow.fitting.refine_fit`) before it is judged.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import NamedTuple

import numpy as np
from astropy.table import Table, vstack

from .fitting import entry_corrector, fit_info_of, linear_fit, make_matcher, refine_fit
from .geometry import (
    angle_between,
    det_to_world,
    enclosing_cone,
    footprint_world,
    in_polygon,
    inside_any,
    tangent_plane_scale,
    to_tangent_plane,
    unit_vectors,
)
from .ordering import alignment_order
from .params import RELATIVE_PARS, check_separation, resolve_block
from .quality import (
    attempt_label,
    check_fit,
    check_image,
    consistent_rms_limit,
    fit_significance,
    gate_limits,
    recovery_plan,
    resolve_quality,
)
from .results import (
    TOO_FEW_MATCHES,
    SerializedWCS,
    attempt_table,
    empty_match_table,
    fit_row,
    match_table,
    with_quality_columns,
)

__all__ = ["relative_align", "reference_catalog", "REFERENCE_COLUMNS"]

log = logging.getLogger(__name__)


#: Columns of the alignment's reference sources (`_Reference`).
_SOURCE_COLUMNS = {"RA": float, "DEC": float, "_img": int, "_x": float, "_y": float, "_used": int}


class _Reference:
    """The growing reference catalog of the sequential alignment.

    Holds the sources (RA, DEC, the entry they come from and how often they
    were used by an accepted fit) and the sky footprints of the images they
    come from (to count the sources two catalogs can share). A fit takes
    only the sources and footprints near its group (`near`, `refcat`), so
    that its work grows with its overlaps, not with the catalog.
    """

    def __init__(self):
        # columns as lists of arrays, joined when the table is asked for
        self._parts = {k: [np.zeros(0, t)] for k, t in _SOURCE_COLUMNS.items()}
        self._table = None
        self._vectors = None
        self.footprints = {}  # entry index -> (ra, dec)
        self._footprint_cones = {}  # entry index -> (centre unit vector, radius rad)

    def add(self, ra, dec, img, footprint=None, x=None, y=None):
        """Add sources of entry ``img`` (RA, DEC in deg; detector x, y)."""
        ra = np.asarray(ra, float)
        dec = np.asarray(dec, float)
        x = np.full(len(ra), np.nan) if x is None else np.asarray(x, float)
        y = np.full(len(ra), np.nan) if y is None else np.asarray(y, float)
        good = np.isfinite(ra) & np.isfinite(dec)
        n = int(good.sum())
        new = {"RA": ra[good], "DEC": dec[good], "_img": np.full(n, img, int), "_x": x[good], "_y": y[good], "_used": np.zeros(n, int)}
        for k, v in new.items():
            self._parts[k].append(v)
        self._table = self._vectors = None
        if footprint is not None:
            self.footprints[img] = footprint
            self._footprint_cones[img] = enclosing_cone(*footprint)

    @property
    def table(self):
        """All sources; changes to its ``_used`` column are kept."""
        if self._table is None:
            self._table = Table({k: np.concatenate(v) for k, v in self._parts.items()}, copy=False)
            self._parts = {k: [np.asarray(self._table[k])] for k in _SOURCE_COLUMNS}
        return self._table

    def near(self, cone, margin):
        """Rows of the sources, and the footprints, within ``margin`` (rad) of ``cone``
        (centre unit vector, radius rad; None: all)."""
        if cone is None:
            return np.arange(len(self.table)), list(self.footprints.values())
        if self._vectors is None:
            self._vectors = unit_vectors(self.table["RA"], self.table["DEC"])
        centre, radius = cone
        rows = np.flatnonzero(angle_between(self._vectors, centre) <= radius + margin)
        footprints = [
            fp for img, fp in self.footprints.items()
            if self._footprint_cones[img] is None
            or angle_between(self._footprint_cones[img][0], centre) <= radius + self._footprint_cones[img][1] + margin
        ]
        return rows, footprints

    def refcat(self, rows=None):
        """A tweakwcs reference catalog of the sources (``rows`` of them)."""
        from tweakwcs.wcsimage import RefCatalog

        t = self.table
        return RefCatalog(Table(t, copy=True) if rows is None else t[rows], name="reference")


def _group_cone(gcat):
    """The cone enclosing a group catalog's sources (input WCS), or None."""
    ra, dec = np.asarray(gcat.catalog["RA"], float), np.asarray(gcat.catalog["DEC"], float)
    ok = np.isfinite(ra) & np.isfinite(dec)
    return enclosing_cone(ra[ok], dec[ok]) if ok.any() else None


def _reach(att, p):
    """How far (rad) beyond a group's sources a fit can look: the given
    offset and the offset search about it, the matching tolerance five
    times over (the source density around the pairs,
    `tweakflow.quality.fit_significance`) and the separation, plus an
    arcsecond."""
    offset = math.hypot(float(p["xoffset"]), float(p["yoffset"]))
    return math.radians((offset + att["searchrad"] + 5.0 * p["tolerance"] + p["separation"] + 1.0) / 3600.0)


@functools.cache
def _fit_group_catalog():
    """A tweakwcs group catalog without a sky polygon.

    tweakwcs makes a group's polygon, the union of its members' footprints
    (or, beyond 50 images, their convex hull through a deep copy of a
    corrector), whenever a group catalog is made; its fit (`match2ref`,
    `fit2ref`) does not use it, and for two NIRCam images it costs more
    than the fit.
    """
    from tweakwcs.wcsimage import WCSGroupCatalog

    class FitGroupCatalog(WCSGroupCatalog):
        def update_bounding_polygon(self):
            self._polygon = None

    return FitGroupCatalog


def _fresh_group(entries, idx, polygon=True):
    """New correctors (input WCS) and a tweakwcs group catalog for entries ``idx``.

    ``polygon``: the group catalog has its sky polygon (tweakwcs' default,
    what the overlap ordering intersects); a group catalog made for a fit
    does without it (`_fit_group_catalog`).
    """
    from tweakwcs.wcsimage import WCSGroupCatalog, WCSImageCatalog

    correctors, imcats = [], []
    for i in idx:
        e = entries[i]
        c = entry_corrector(e)
        correctors.append(c)
        imcats.append(WCSImageCatalog(e["catalog"], c, name=e["name"], group_id=e["group_id"]))
    group_class = WCSGroupCatalog if polygon else _fit_group_catalog()
    gcat = group_class(imcats, name=f"GROUP ID: {entries[idx[0]]['group_id']}")
    return correctors, gcat


class _Frame(NamedTuple):
    """A group's sources and the reference's in the tangent plane of one fit.

    ``src_img`` is, per source of the group catalog, the position in the
    group of the image it comes from (tweakwcs stacks the members'
    catalogs in order; every member has sources).
    """

    cat: Table
    refcat: Table
    im_tp: np.ndarray
    ref_tp: np.ndarray
    src_img: np.ndarray
    tps: float

    @classmethod
    def of(cls, entries, idx, gcat, refcat, tps):
        cat, ref = gcat.catalog, refcat.catalog
        src_img = np.repeat(np.arange(len(idx)), [len(entries[i]["catalog"]) for i in idx])
        im_tp = np.c_[np.asarray(cat["TPx"], float), np.asarray(cat["TPy"], float)]
        ref_tp = np.c_[np.asarray(ref["TPx"], float), np.asarray(ref["TPy"], float)]
        return cls(cat, ref, im_tp, ref_tp, src_img, tps)

    def weights(self):
        """Reference and group weights (None without a ``weight`` column)."""
        wref = np.asarray(self.refcat["weight"], float) if "weight" in self.refcat.colnames else None
        wim = np.asarray(self.cat["weight"], float) if "weight" in self.cat.colnames else None
        return wref, wim


def _tweakwcs_fit(gcat, refcat, ref_tpwcs, att, p, tps):
    """tweakwcs' match and fit of a group catalog: (fit_info, None) or (None, reason).

    The group's correctors are left as they are: the fit may still be
    refined (`_refine_fit`), and a correction is applied once, the final
    one (`_fit_attempt`).
    """
    matcher = make_matcher(att["searchrad"] / tps, p["separation"] / tps, att["use2dhist"], p["tolerance"] / tps, p["xoffset"] / tps, p["yoffset"] / tps)
    try:
        gcat.calc_tanp_xy(tanplane_wcs=ref_tpwcs)
        refcat.calc_tanp_xy(tanplane_wcs=ref_tpwcs)
        nmatches, mref, minp = gcat.match2ref(refcat=refcat, match=matcher)
        if nmatches < int(p["minobj"]):
            return None, "not enough matches"
        fit = gcat.fit2ref(refcat=refcat, tanplane_wcs=ref_tpwcs, fitgeom=att["fitgeometry"], nclip=int(p["nclip"]), sigma=(float(p["sigma"]), "rmse"))
    except Exception as exc:  # tweakwcs raises ValueError, MatchSourceConfusionError, LinAlgError...
        return None, f"{type(exc).__name__}: {exc}"
    return fit_info_of(fit, np.asarray(mref, int), np.asarray(minp, int), att["fitgeometry"]), None


def _refine_fit(fi, frame, ref_tpwcs, att, p):
    """Re-pair a completed fit's sources as mutual nearest neighbours and fit again.

    ``xyxymatch`` pairs sources within ``tolerance``; a star of one catalog
    whose counterpart is missing from the other can pair with a neighbour a
    few tenths of an arcsecond away, and tweakwcs does not clip after its
    last fit, so one or two such pairs remain in the fit and bias it by a
    few mas. Once the first fit has put both catalogs in one frame, pairs
    are re-made as mutual nearest neighbours within five robust standard
    deviations of the residuals (20 mas to ``tolerance``), fitted again
    with the same geometry and clipping (`tweakflow.fitting.refine_fit`).

    Returns
    -------
    fit_info : dict or None
        ``fi`` with the refined pairs and fit, or None when not refined
        (fewer than ``minobj`` pairs survive or the fit fails).
    """
    tps = frame.tps
    wref, wim = frame.weights()

    def fitter(ri, ii):
        return linear_fit(
            frame.ref_tp[ri], frame.im_tp[ii], None if wref is None else wref[ri], None if wim is None else wim[ii],
            att["fitgeometry"], int(p["nclip"]), (float(p["sigma"]), "rmse"),
        )

    first = {"matrix": np.asarray(fi["matrix"], float), "shift": np.asarray(fi["shift"], float), "fitmask": np.asarray(fi["fitmask"], bool)}
    pairs = (np.asarray(fi["matched_ref_idx"], int), np.asarray(fi["matched_input_idx"], int))
    fit, r2, i2, radius = refine_fit(frame.ref_tp, frame.im_tp, first, pairs, fitter, 0.02 / tps, p["tolerance"] / tps, p["minobj"])
    if fit is first:
        return None
    return dict(fi, **fit_info_of(fit, r2, i2, fi["fitgeom"]), refined_radius=radius * tps)


def _image_stats(entries, idx, correctors, frame, fit, ref_tpwcs, ref_polys):
    """Per image of a fitted group: matches, used pairs, overlap, RMS, footprint.

    ``fit`` holds the pairs (``mref``, ``minp``, ``used``), the fitted
    group positions (``fitted``) and the residuals (``res``, mas). Also
    returns each image's corrected footprint in the tangent plane and the
    number of group sources inside the reference images' footprints.
    """
    ref_valid = np.isfinite(frame.ref_tp).all(axis=1)
    src_img, minp, used, fitted = frame.src_img, fit["minp"], fit["used"], fit["fitted"]
    image_stats, corners, n_img_in_total = [], [], 0
    for k, (i, corr) in enumerate(zip(idx, correctors)):
        mine = src_img == k
        pair_k = src_img[minp] == k
        used_k = pair_k & used
        fp = footprint_world(corr.wcs, entries[i]["shape"])
        poly = to_tangent_plane(ref_tpwcs, fp)
        n_img_in = int(np.count_nonzero(inside_any(fitted[mine, 0], fitted[mine, 1], ref_polys)))
        n_ref_in = int(np.count_nonzero(in_polygon(frame.ref_tp[ref_valid, 0], frame.ref_tp[ref_valid, 1], poly)))
        n_possible = min(n_img_in, n_ref_in)
        n_img_in_total += n_img_in
        corners.append(poly)
        n_used_k = int(np.count_nonzero(used_k))
        rk = fit["res"][used_k]
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
    return image_stats, corners, n_img_in_total


def _group_stats(fi, fit, frame, image_stats, corners, n_img_in_total, att, p):
    """The group fit's statistics for the quality gates."""
    tps, minp, used = frame.tps, fit["minp"], fit["used"]
    ref_valid = np.isfinite(frame.ref_tp).all(axis=1)
    n_pos = sum(s["n_possible"] for s in image_stats)
    return {
        "n_matches": len(minp),
        "n_used": int(np.count_nonzero(used)),
        "rms_mas": 1000.0 * tps * float(fi["rmse"]),
        "match_fraction": sum(s["n_used"] for s in image_stats) / n_pos if n_pos else math.nan,
        "shift_arcsec": tps * float(np.hypot(*fit["shift"])),
        "rotation_deg": float(fi["<rot>"]),
        "fitgeom": att["fitgeometry"],
        **fit_significance(
            frame.im_tp[minp[used]], fit["fitted"][minp[used]], fit["res"][used], frame.ref_tp[ref_valid], corners, n_img_in_total,
            att["fitgeometry"], att["searchrad"], p["tolerance"], tps,
        ),
    }


def _pairs_and_unmatched(frame, correctors, n_images, fit):
    """The matched pairs (for the matches table) and, per image, its unmatched
    sources on the corrected WCS (RA, DEC, x, y; for the reference catalog)."""
    cat, ref, src_img, minp, mref = frame.cat, frame.refcat, frame.src_img, fit["minp"], fit["mref"]
    x, y = np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    matched = np.zeros(len(cat), bool)
    matched[minp] = True
    ra, dec = np.full(len(cat), np.nan), np.full(len(cat), np.nan)
    for k, corr in enumerate(correctors):
        sel = src_img == k
        ra[sel], dec[sel] = corr.det_to_world(x[sel], y[sel])
    pairs = {
        "src_img": src_img[minp],
        "x": x[minp],
        "y": y[minp],
        "im_tp": frame.im_tp[minp],
        "ref_tp": frame.ref_tp[mref],
        "ref_row": mref,
        "ref_img": np.asarray(ref["_img"], int)[mref],
        "ref_x": np.asarray(ref["_x"], float)[mref],
        "ref_y": np.asarray(ref["_y"], float)[mref],
        "used": fit["used"],
    }
    unmatched = [(ra[sel], dec[sel], x[sel], y[sel]) for sel in ((src_img == k) & ~matched for k in range(n_images))]
    return pairs, unmatched


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
    correctors, gcat = _fresh_group(entries, idx, polygon=False)
    # the tangent plane of the group's first image, before any correction
    ref_tpwcs = entry_corrector(entries[idx[0]])
    ref_rows, ref_footprints = reference.near(_group_cone(gcat), _reach(att, p))
    out = {"ok": False, "reason": "", "idx": list(idx), "att": att}
    if len(ref_rows) == 0:  # no reference source within reach: no pair can be made
        out["reason"] = "not enough matches"
        return out
    refcat = reference.refcat(ref_rows)
    fi, why = _tweakwcs_fit(gcat, refcat, ref_tpwcs, att, p, tps)
    if fi is None:
        out["reason"] = why
        return out
    frame = _Frame.of(entries, idx, gcat, refcat, tps)
    if refine:
        fi = _refine_fit(fi, frame, ref_tpwcs, att, p) or fi
    try:
        for c in correctors:
            c.set_correction(matrix=fi["matrix"], shift=fi["shift"], ref_tpwcs=ref_tpwcs)
    except Exception as exc:  # a degenerate fit: tweakwcs cannot invert its matrix (LinAlgError, ValueError)
        out["reason"] = f"{type(exc).__name__}: {exc}"
        return out
    mref, minp = np.asarray(fi["matched_ref_idx"], int), np.asarray(fi["matched_input_idx"], int)
    shift = np.asarray(fi["shift"], float)
    fitted = shift + frame.im_tp @ np.asarray(fi["matrix"], float).T
    fit = {
        "mref": mref, "minp": minp, "used": np.asarray(fi["fitmask"], bool), "shift": shift, "fitted": fitted,
        "res": (fitted[minp] - frame.ref_tp[mref]) * tps * 1000.0,  # mas
    }
    # overlap: the group's sources inside the reference images' footprints,
    # the reference sources inside each image's (corrected) footprint
    ref_polys = [to_tangent_plane(ref_tpwcs, fp) for fp in ref_footprints]
    image_stats, corners, n_in = _image_stats(entries, idx, correctors, frame, fit, ref_tpwcs, ref_polys)
    pairs, unmatched = _pairs_and_unmatched(frame, correctors, len(idx), fit)
    pairs["ref_row"] = ref_rows[pairs["ref_row"]]  # rows of the whole reference catalog
    out.update(
        ok=True,
        fit_info=fi,
        correctors=correctors,
        stats=_group_stats(fi, fit, frame, image_stats, corners, n_in, att, p),
        image_stats=image_stats,
        pairs=pairs,
        unmatched=unmatched,
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


def _judge(res, q, limits):
    """(passed, images failing their own gate {i: reason}, reason text) of an attempt.

    Images are judged first: when some of a group's images contradict
    the fit (their sources are not used, or fit badly) and others do
    not, those are the problem, whatever the group's statistics say.
    """
    if not res["ok"]:
        return False, {}, f"tweakwcs: {res['reason']}"
    if not q["enabled"]:
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


class _Attempts:
    """The attempts made for one group: numbering, records, candidates.

    Too few matches depends on the matching settings only (``minobj`` is
    fixed), not on the fit geometry: an attempt that differs from one that
    found too few matches only in its geometry gets that attempt's result
    again instead of matching the same catalogs a second time.
    """

    def __init__(self, entries, reference, p, q, limits, tps, pass_no):
        self.entries, self.reference, self.p, self.q, self.limits, self.tps = entries, reference, p, q, limits, tps
        self.pass_no = pass_no
        self.gid = None
        self.number, self.first, self.first_reason = 0, None, ""
        self.records, self.candidates = [], []
        self.rejected_in = {}  # left-out image -> the attempt that found it inconsistent
        self.too_few = {}  # (members, searchrad, use2dhist) -> result

    def fit(self, members, att):
        key = (tuple(members), att["searchrad"], att["use2dhist"])
        if key in self.too_few:
            return dict(self.too_few[key], att=att)
        res = _fit_attempt(self.entries, members, self.reference, att, self.p, self.tps, refine=self.q["enabled"] and self.q["refine"])
        if not res["ok"] and res["reason"] == TOO_FEW_MATCHES:
            self.too_few[key] = res
        return res

    def run(self, idx, att, configured):
        """One attempt's settings on the group ``idx``; with recovery, refitted
        without the images the fit finds inconsistent until none is left out."""
        members, left_out = list(idx), {}
        while True:
            self.number += 1
            res = self.fit(members, att)
            passed, bad, why = _judge(res, self.q, self.limits)
            self.first = self.first or res
            if configured:
                self.first_reason = why or self.first_reason
            refit = bool(passed and bad and self.q["recovery"])
            if passed and bad:
                names = "; ".join(f"{self.entries[i]['name']}: {r}" for i, r in bad.items())
                why = ("refit without inconsistent image(s): " if refit else "inconsistent image(s) left out: ") + names
            self.records.extend(_attempt_records(res, self.entries, self.gid, self.pass_no, self.number, passed and not refit, why, self.tps))
            if not refit:
                break
            for i in bad:
                self.rejected_in[i] = res
            left_out.update(bad)
            members = [i for i in members if i not in bad]
        if passed:
            left_out.update(bad)
            res.update(number=self.number, left_out=left_out, n_ok=sum(1 for i in res["idx"] if i not in left_out))
            self.candidates.append(res)


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
    tries = _Attempts(entries, reference, p, q, limits, tps, pass_no)
    tries.gid = entries[idx[0]]["group_id"]
    for ntier, tier in enumerate(recovery_plan(p["searchrad"], p["use2dhist"], p["fitgeometry"], q)):
        for att in tier:
            tries.run(idx, att, configured=ntier == 0)
        if tries.candidates or not (q["enabled"] and q["recovery"]):
            break
    return _group_outcome(tries, q)


def _group_outcome(tries, q):
    """`_align_group`'s result from its attempts."""
    number, records = tries.number, tries.records
    out = {"records": records, "n_attempts": number, "first": tries.first, "best": None, "failed": {}, "reason": "", "rejected_in": tries.rejected_in}
    if not tries.candidates:
        if not q["enabled"]:
            out["reason"] = tries.first_reason.replace("tweakwcs: ", "", 1)
        elif number == 1:
            out["reason"] = f"quality gate: {tries.first_reason}"
        else:
            out["reason"] = f"no fit passed the quality gates in {number} attempts (configured fit: {tries.first_reason})"
        return out
    best = max(tries.candidates, key=lambda r: (r["n_ok"], r["stats"]["n_used"], -r["stats"]["rms_mas"]))
    out.update(best=best, number=best["number"], recovery="")
    out["failed"] = {i: f"catalog inconsistent with its group's fit: {r}" for i, r in best["left_out"].items()}
    for rec in records:
        if rec["attempt"] == best["number"]:
            rec["chosen"] = True
    if best["number"] > 1:
        out["recovery"] = f"attempt {best['number']} of {number}: {attempt_label(best['att'])}"
        if best["left_out"]:
            out["recovery"] += f", without {len(best['left_out'])} inconsistent image(s)"
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


class _Matched(NamedTuple):
    """A fit shown in the matches table: its record (`_match_record`), whether
    it was accepted, and the one entry it is shown for (None: all its images)."""

    record: dict
    accepted: bool
    only: int | None


def _entry_sources(e):
    """Detector x, y and sky RA, DEC (input WCS) of an entry's catalog."""
    x, y = np.asarray(e["catalog"]["x"], float), np.asarray(e["catalog"]["y"], float)
    ra, dec = det_to_world(e["wcs"], x, y)
    return ra, dec, x, y


def _skipped_row(e, reason, n_attempts):
    return dict(fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, n_sources=len(e["catalog"])), attempt=0, n_attempts=n_attempts)


def _relative_pass(entries, groups, p, q, limits, tps, excluded, pass_no):
    """One sequential pass: the reference group, then every other group.

    Returns
    -------
    dict
        ``wcs`` and ``rows`` (entry index -> value), ``records`` (attempt
        rows), ``matches`` (per group: `_Matched`, the accepted or, if none,
        the configured attempt), ``ref_idx`` (reference entries),
        ``reference`` (the final `_Reference`), ``footprints`` (corrected,
        per aligned entry) and ``pass_no``.
    """
    user_order = bool(p["enforce_user_order"]) or not bool(p["expand_refcat"])
    # strict JWST-step behaviour (no quality gates) chooses each next group as
    # tweakwcs does; otherwise the overlap order is computed up front
    dynamic = not user_order and not q["enabled"]
    ref_idx, rest = _group_order(entries, groups, p, excluded, dynamic)
    result = {"rows": {}, "wcs": {}, "records": [], "matches": {}, "ref_idx": ref_idx, "reference": _Reference(), "footprints": {}, "pass_no": pass_no}
    reference = result["reference"]
    for i in ref_idx:
        e = entries[i]
        if i in excluded:
            result["rows"][i] = _skipped_row(e, excluded[i], 0)
            continue
        ra, dec, x, y = _entry_sources(e)
        reference.add(ra, dec, i, footprint_world(e["wcs"], e["shape"]), x=x, y=y)
        result["rows"][i] = dict(fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "alignment reference", n_sources=len(e["catalog"])), attempt=0, n_attempts=0)
    remaining, first, polygons = list(rest), True, {}
    while remaining:
        g = _next_group(reference, remaining, entries, dynamic, first, polygons)
        first = False
        out = _align_group(entries, g, reference, p, q, limits, tps, pass_no)
        result["records"].extend(out["records"])
        if out["best"] is None:
            _take_failed_group(result, entries, g, out, strict_expand=not q["enabled"] and p["expand_refcat"] and user_order)
        else:
            _take_aligned_group(result, entries, out, tps, expand=p["expand_refcat"])
    return result


def _take_failed_group(result, entries, g, out, strict_expand):
    """Rows and matches of a group no fit passed for; with ``strict_expand``
    its sources still join the reference, as tweakwcs does when overlaps are
    not computed (strict JWST-step behaviour)."""
    for i in g:
        result["rows"][i] = _skipped_row(entries[i], out["reason"], out["n_attempts"])
    res = out["first"]
    if res is not None and res["ok"]:
        result["matches"][tuple(res["idx"])] = _Matched(_match_record(res), False, None)
    if strict_expand and res is not None:
        for i in g:
            e = entries[i]
            ra, dec, x, y = _entry_sources(e)
            result["reference"].add(ra, dec, i, footprint_world(e["wcs"], e["shape"]), x=x, y=y)


def _take_aligned_group(result, entries, out, tps, expand):
    """Rows, WCSs, matches and reference sources of a group's accepted fit."""
    best, rows, reference = out["best"], result["rows"], result["reference"]
    result["matches"][tuple(best["idx"])] = _Matched(_match_record(best), True, None)
    for i in out["failed"]:
        result["matches"][(i,)] = _Matched(_match_record(out["rejected_in"].get(i, best)), False, i)
    # sources of the reference used by the accepted fit
    pr = best["pairs"]
    np.add.at(reference.table["_used"], pr["ref_row"][pr["used"]], 1)
    for k, i in enumerate(best["idx"]):
        if i in out["failed"]:
            continue
        e, ist = entries[i], best["image_stats"][k]
        result["wcs"][i] = SerializedWCS(best["correctors"][k].wcs)
        result["footprints"][i] = ist["footprint"]
        rows[i] = fit_row(e["name"], e["group_id"], "relative", "COMPLETE", "", best["fit_info"], len(e["catalog"]), tp_scale=tps)
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
        if expand:
            ra, dec, x, y = best["unmatched"][k]
            reference.add(ra, dec, i, ist["footprint"], x=x, y=y)
    for i, why in out["failed"].items():
        rows[i] = _skipped_row(entries[i], why, out["n_attempts"])


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
        tp = entry_corrector(e)
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
        per image and attempt, see `ATTEMPT_COLUMNS`), ``matches``
        (`tweakflow.results.match_table` rows of every fitted group) and
        ``reference``: the final reference catalog (`reference_catalog`;
        None when there was nothing to align).
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
    p = resolve_block("tweakreg", RELATIVE_PARS, pars)
    check_separation(p)
    q = resolve_quality(quality)
    limits = gate_limits(q, p["tolerance"])
    if details is not None:
        details.update(attempts=attempt_table([]), matches=None, reference=None)
    out_wcs = [e["wcs"] for e in entries]
    rows, groups = _usable_groups(entries)
    if len(groups) < 2:
        return out_wcs, with_quality_columns(rows)
    usable = [i for g in groups.values() for i in g]
    tps = tangent_plane_scale([entries[i]["wcs"] for i in usable])
    result, records, excluded = _aligned_passes(entries, groups, p, q, limits, tps)
    _take_pass(result, excluded, rows, out_wcs, serialized)
    if details is not None:
        for rec in records:
            rec["chosen"] = rec["chosen"] and rec["pass_no"] == result["pass_no"]
        details["attempts"] = attempt_table(records)
        details["matches"] = _matches_of(entries, result["matches"], tps)
        details["reference"] = reference_catalog(entries, result["reference"])
    for i in sorted(usable):
        if rows[i]["status"] != "COMPLETE":
            log.warning("%s [%s]: SKIPPED: %s", entries[i]["name"], entries[i]["group_id"], rows[i]["reason"])
    return out_wcs, with_quality_columns(rows)


#: Columns of `reference_catalog`.
REFERENCE_COLUMNS = [("RA", float), ("DEC", float), ("image", str), ("x", float), ("y", float), ("n_used", int)]


def reference_catalog(entries, reference):
    """The reference catalog the sequential alignment ended with, as a table.

    The reference group's sources and, with ``expand_refcat``, the sources of
    every aligned group that did not match a reference source (tweakwcs'
    expanded reference catalog), in the order they joined it.

    Returns
    -------
    astropy.table.Table
        `REFERENCE_COLUMNS`: ``RA``, ``DEC`` (deg, through the WCS of the
        source's image once aligned; the reference group's as given), the
        ``image`` (name) and detector ``x``, ``y`` it was detected at, and
        ``n_used``: how many accepted fits used it.
    """
    t = reference.table
    out = Table({"RA": np.asarray(t["RA"], float), "DEC": np.asarray(t["DEC"], float),
                 "image": np.array([entries[int(i)]["name"] for i in t["_img"]], dtype=str),
                 "x": np.asarray(t["_x"], float), "y": np.asarray(t["_y"], float), "n_used": np.asarray(t["_used"], int)})
    out["RA"].unit = out["DEC"].unit = "deg"
    return out


def _take_pass(result, excluded, rows, out_wcs, serialized):
    """Fill ``rows`` and ``out_wcs`` from the pass kept; a reference image
    excluded in a second pass says so in its reason."""
    for i, r in result["rows"].items():
        if result["pass_no"] == 2 and i in excluded and r["status"] != "COMPLETE" and not r["reason"].startswith(excluded[i]):
            r["reason"] = f"{excluded[i]}; then: {r['reason']}"
        rows[i] = r
        if i in result["wcs"]:
            out_wcs[i] = result["wcs"][i] if serialized else result["wcs"][i].load()


def _usable_groups(entries):
    """Rows of the entries that cannot be aligned, and the groups of the others.

    Returns
    -------
    rows : list
        ``SKIPPED`` rows of the entries without sources (and of all, when
        fewer than two groups have sources); None for the others.
    groups : dict
        Group id -> entry indices with sources, in entry order.
    """
    rows = [None] * len(entries)
    groups = {}
    for i, e in enumerate(entries):
        if len(e["catalog"]) == 0:
            rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", "no sources in catalog")
        else:
            groups.setdefault(e["group_id"], []).append(i)
    if len(groups) < 2:
        reason = "only one exposure group has sources: nothing to align relatively" if groups else "no image has sources"
        for g in groups.values():
            for i in g:
                e = entries[i]
                rows[i] = fit_row(e["name"], e["group_id"], "relative", "SKIPPED", reason, n_sources=len(e["catalog"]))
    return rows, groups


def _aligned_passes(entries, groups, p, q, limits, tps):
    """The sequential alignment, run a second time when the first pass finds
    suspect reference images or a fit RMS inconsistent with the others.

    Returns
    -------
    result : dict
        The pass kept (`_relative_pass`).
    records : list
        Attempt rows of both passes.
    excluded : dict
        Entry index -> why it was excluded from the reference.
    """
    excluded, records, result, stricter = {}, [], None, False
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
    return result, records, excluded


def _inconsistent_rms_limit(result, q, limits):
    """The run's consistent-RMS limit when an accepted fit exceeds it, else None.

    Each accepted group fit counts once (`tweakflow.quality.consistent_rms_limit`).
    """
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


def _n_complete(result):
    return sum(1 for r in result["rows"].values() if r["status"] == "COMPLETE")


def _match_record(res):
    """What the matches table needs of a fit (`_matches_of`): its pairs and
    linear fit, without the correctors (a deep-copied GWCS each, ~1 MB)."""
    return {"idx": res["idx"], "pairs": res["pairs"], "fit_info": {k: res["fit_info"][k] for k in ("matrix", "shift")}}


def _matches_of(entries, matches, tps):
    """The matches table of a pass: accepted fits, and the rejected configured fit of failed groups."""
    parts = []
    for res, accepted, only in matches.values():
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
        return empty_match_table()
    return vstack(parts, metadata_conflicts="silent")
