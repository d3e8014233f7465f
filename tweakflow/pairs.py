"""The overlapping pairs of groups of a mosaic, and the matching of each pair's catalogs.

The global relative solve (`tweakflow.globalsolve`) needs, for every two
exposure groups whose footprints overlap, the sources both catalogs hold.
Each pair is matched on its own, in a plane tangent to the sky at the
pair's overlap (sky positions from the input WCSs, which the detection
jobs put in the catalogs): tweakwcs ``xyxymatch`` (with the 2-D histogram
offset search), a shift fit refined as the alignment fits are
(`tweakflow.fitting.refine_fit`), and gates judged by the data: enough
pairs, a residual RMS far below the matching tolerance, and a chance
probability (`tweakflow.quality.chance_log10p`) no chance coincidence
reaches. A pair that fails with ``searchrad`` is tried again with the wider
``recovery_searchrad`` radii. The reference catalog is matched the same way
to every group it overlaps (its ``group_b`` is `REFCAT`).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from .fitting import linear_fit, make_matcher, refine_fit
from .geometry import gnomonic, inside_any, mean_direction
from .quality import fit_significance

__all__ = ["REFCAT", "PAIR_COLUMNS", "MATCH_PAIR_COLUMNS", "overlapping_pairs", "match_pair", "pair_min_matches"]

#: ``group_b`` of a pair between a group and the reference catalog.
REFCAT = "<refcat>"

#: One row per pair tried (the pair jobs' summary table).
PAIR_COLUMNS = [
    ("pair", int), ("group_a", str), ("group_b", str), ("n_a", int), ("n_b", int), ("n_matches", int), ("n_used", int),
    ("rms_mas", float), ("dx_mas", float), ("dy_mas", float), ("chance_log10p", float), ("searchrad", float),
    ("attempts", int), ("accepted", bool), ("reason", str),
]

#: One row per matched source pair of an accepted pair (the solve's input).
MATCH_PAIR_COLUMNS = [
    ("pair", int), ("image_a", int), ("row_a", int), ("image_b", int), ("row_b", int),
    ("ra_a", float), ("dec_a", float), ("ra_b", float), ("dec_b", float),
]


def _plane(ra, dec, center):
    """Gnomonic (arcsec) of RA, DEC about ``center``."""
    xi, eta = gnomonic(ra, dec, *center)
    return np.c_[3600.0 * xi, 3600.0 * eta]


def _separated(p, q, margin):
    """Convex polygons ``p`` and ``q`` (N, 2) farther apart than ``margin`` along an edge normal."""
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        for nx_, ny_ in np.c_[edges[:, 1], -edges[:, 0]]:
            norm = math.hypot(nx_, ny_)
            if norm == 0:
                continue
            axis = np.array([nx_, ny_]) / norm
            a, b = p @ axis, q @ axis
            if a.min() > b.max() + margin or b.min() > a.max() + margin:
                return True
    return False


def overlapping_pairs(groups, margin_arcsec=0.0):
    """Pairs of groups whose footprints overlap (or come within ``margin_arcsec``).

    Parameters
    ----------
    groups : dict
        Group id -> list of (4, 2) footprints (RA, Dec in deg) of its images
        (chips), in the order the groups are to be listed.
    margin_arcsec : float

    Returns
    -------
    list of tuple
        ``(group_a, group_b)``, ``group_a`` before ``group_b`` in ``groups``.
    """
    from scipy.spatial import cKDTree

    keys = list(groups)
    if len(keys) < 2:
        return []
    allc = np.vstack([np.vstack(groups[k]) for k in keys])
    center = mean_direction(allc[:, 0], allc[:, 1])
    polys = {k: [_plane(f[:, 0], f[:, 1], center) for f in groups[k]] for k in keys}
    cents = np.array([np.vstack(polys[k]).mean(axis=0) for k in keys])
    radii = np.array([np.max(np.hypot(*(np.vstack(polys[k]) - c).T)) for k, c in zip(keys, cents)])
    out = []
    for a, b in sorted(cKDTree(cents).query_pairs(2.0 * radii.max() + margin_arcsec)):
        if np.hypot(*(cents[a] - cents[b])) > radii[a] + radii[b] + margin_arcsec:
            continue
        if any(not _separated(p, q, margin_arcsec) for p in polys[keys[a]] for q in polys[keys[b]]):
            out.append((keys[a], keys[b]))
    return out


def pair_min_matches(quality, refcat=False):
    """Used matches a pair needs.

    Two groups: ``matches_per_parameter`` for each of a shift's two
    parameters (never fewer than 4). A group and the reference catalog:
    ``matches_per_parameter`` (never fewer than 3): such a pair does not
    fix its group on its own (the overlaps do), it ties the mosaic to the
    catalog, and every star helps; the chance gate still guards it.
    """
    if refcat:
        return max(3, math.ceil(float(quality["matches_per_parameter"])))
    return max(4, math.ceil(2 * float(quality["matches_per_parameter"])))


def _grown(poly, margin):
    """A convex polygon grown by ``margin`` (about its centroid)."""
    c = poly.mean(axis=0)
    r = np.hypot(*(poly - c).T)
    return c + (poly - c) * ((r + margin) / np.where(r > 0, r, 1.0))[:, None]


def _in_overlap(xy, other_polys, margin):
    return inside_any(xy[:, 0], xy[:, 1], [_grown(p, margin) for p in other_polys])


def match_pair(side_a, side_b, p, q, limits):
    """Match the sources of two groups (or a group and the reference catalog) where they overlap.

    Parameters
    ----------
    side_a, side_b : dict
        ``ra``, ``dec`` (deg) of every source, ``footprints`` (list of
        (4, 2) RA, Dec corners) and ``pixel_scale`` (arcsec; None for a
        reference catalog) of each side: the 2-D histogram of the offset
        search has bins of one pixel, as tweakwcs makes them.
    p : dict
        Relative-alignment parameters (``searchrad``, ``separation``,
        ``tolerance``, ``use2dhist``, ``nclip``, ``sigma``).
    q : dict
        Resolved ``quality`` block (`tweakflow.quality.resolve_quality`).
    limits : dict
        `tweakflow.quality.gate_limits` of ``q`` with ``tolerance``.

    Returns
    -------
    dict
        ``accepted``, ``reason``, ``idx_a``, ``idx_b`` (indices of the
        matched sources in each side), ``stats`` (`PAIR_COLUMNS` values).
    """
    corners = np.vstack(side_a["footprints"] + side_b["footprints"])
    center = mean_direction(corners[:, 0], corners[:, 1])
    xy_a, xy_b = _plane(side_a["ra"], side_a["dec"], center), _plane(side_b["ra"], side_b["dec"], center)
    radii = [float(p["searchrad"])] + ([r for r in q["recovery_searchrad"] if r > float(p["searchrad"])] if q["enabled"] and q["recovery"] else [])
    margin = max(radii) + float(p["tolerance"])
    sel_a = np.flatnonzero(np.isfinite(xy_a).all(axis=1) & _in_overlap(xy_a, [_plane(f[:, 0], f[:, 1], center) for f in side_b["footprints"]], margin))
    sel_b = np.flatnonzero(np.isfinite(xy_b).all(axis=1) & _in_overlap(xy_b, [_plane(f[:, 0], f[:, 1], center) for f in side_a["footprints"]], margin))
    out = {"accepted": False, "reason": "", "idx_a": np.zeros(0, int), "idx_b": np.zeros(0, int)}
    stats = {"n_a": len(sel_a), "n_b": len(sel_b), "n_matches": 0, "n_used": 0, "rms_mas": math.nan, "dx_mas": math.nan, "dy_mas": math.nan,
             "chance_log10p": math.nan, "searchrad": math.nan, "attempts": 0}
    n_min = pair_min_matches(q, refcat=side_b.get("pixel_scale") is None)
    # sources inside the other side's footprint (give or take the configured
    # search radius): fewer than a pair needs, and no radius can match it
    near = float(p["searchrad"]) + float(p["tolerance"])
    n_in = min(int(np.count_nonzero(_in_overlap(xy_a[sel_a], [_plane(f[:, 0], f[:, 1], center) for f in side_b["footprints"]], near))),
               int(np.count_nonzero(_in_overlap(xy_b[sel_b], [_plane(f[:, 0], f[:, 1], center) for f in side_a["footprints"]], near))))
    if n_in < n_min:
        out.update(reason=f"{n_in} sources in the overlap < {n_min}", stats=stats)
        return out
    pscale = min(s["pixel_scale"] for s in (side_a, side_b) if s.get("pixel_scale")) if any(s.get("pixel_scale") for s in (side_a, side_b)) else 1.0
    for k, radius in enumerate(radii):
        res = _match_attempt(xy_a[sel_a], xy_b[sel_b], radius, p["use2dhist"] if k == 0 else True, p, q, limits, n_min, pscale)
        stats.update(res["stats"], attempts=k + 1, searchrad=radius)
        out.update(reason=res["reason"], stats=stats)
        if res["accepted"]:
            out.update(accepted=True, reason="", idx_a=sel_a[res["ia"]], idx_b=sel_b[res["ib"]])
            break
    return out


def _match_attempt(xy_a, xy_b, searchrad, use2dhist, p, q, limits, n_min, pscale):
    """One matching radius: xyxymatch, refined shift fit, gates."""
    matcher = make_matcher(searchrad, p["separation"], use2dhist, p["tolerance"])
    ta, tb = Table({"TPx": xy_a[:, 0], "TPy": xy_a[:, 1]}), Table({"TPx": xy_b[:, 0], "TPy": xy_b[:, 1]})
    try:
        ib, ia = matcher(tb, ta, tp_pscale=pscale, tp_units="arcsec")
    except Exception as exc:  # tweakwcs: MatchSourceConfusionError, ValueError...
        return {"accepted": False, "reason": f"matching failed: {type(exc).__name__}: {exc}", "stats": {}}
    if len(ia) < n_min:
        return {"accepted": False, "reason": f"{len(ia)} matches < {n_min}", "stats": {"n_matches": len(ia)}}

    def fitter(rb, ra_):
        return linear_fit(xy_b[rb], xy_a[ra_], None, None, "shift", int(p["nclip"]), (float(p["sigma"]), "rmse"))

    try:
        fit = fitter(np.asarray(ib, int), np.asarray(ia, int))
        fit, ib, ia, _ = refine_fit(xy_b, xy_a, fit, (np.asarray(ib, int), np.asarray(ia, int)), fitter, 0.02, float(p["tolerance"]), n_min)
    except Exception as exc:
        return {"accepted": False, "reason": f"fit failed: {type(exc).__name__}: {exc}", "stats": {"n_matches": len(ia)}}
    used = np.asarray(fit["fitmask"], bool)
    fitted = fit["shift"] + xy_a @ np.asarray(fit["matrix"]).T
    res_mas = 1000.0 * (fitted[ia] - xy_b[ib])
    sig = fit_significance(xy_a[ia[used]], fitted[ia[used]], res_mas[used], xy_b, [np.vstack([xy_a, xy_b])], len(xy_a), "shift",
                           searchrad, p["tolerance"], 1.0)
    stats = {"n_matches": len(ia), "n_used": int(used.sum()), "rms_mas": 1000.0 * float(fit["rmse"]),
             "dx_mas": 1000.0 * float(fit["shift"][0]), "dy_mas": 1000.0 * float(fit["shift"][1]), "chance_log10p": sig["chance_log10p"]}
    fails = _pair_gates(stats, limits, n_min)
    return {"accepted": not fails, "reason": "; ".join(fails), "stats": stats, "ia": ia[used], "ib": ib[used]}


def _pair_gates(stats, limits, n_min):
    fails = []
    if stats["n_used"] < n_min:
        fails.append(f"{stats['n_used']} matches used < {n_min}")
    if not stats["rms_mas"] <= limits["max_rms_mas"]:
        fails.append(f"RMS {stats['rms_mas']:.1f} mas > max_rms_mas {limits['max_rms_mas']:.1f}")
    if not stats["chance_log10p"] <= limits["max_chance_log10p"]:
        fails.append(f"matches no better than chance: probability 10^{stats['chance_log10p']:.1f} > 10^{limits['max_chance_log10p']:g}")
    if math.hypot(stats["dx_mas"], stats["dy_mas"]) / 1000.0 > limits["max_shift_arcsec"]:
        fails.append(f"shift > max_shift_arcsec {limits['max_shift_arcsec']:g}")
    return fails
