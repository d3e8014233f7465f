"""Absolute alignment: one fit of the relatively aligned set to a reference catalog.

After the relative alignment every image agrees with the others; what is
left is one rigid (or affine) error of the whole set. It is measured by
matching a *combined* catalog of the set to the astrometric reference
catalog, fitting one linear transformation in a common tangent plane, and
applying that one transformation to every image, so the relative alignment
is kept.

The combined catalog differs from the JWST step's: there, every image's
detections are pooled, so a star seen in four overlapping exposures enters
the match and the fit four times, the 2-D histogram offset search sees
copies, and the fit weights stars by how often they were observed. Here
repeated detections of one star (sources of different images closer than
``merge_radius`` on the sky after the relative alignment) are merged into one
source at their mean position, with ``n_det`` (the number of detections)
kept as a column that can serve as a weight.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table

from .align import det_to_world, fit_row, footprint_world, inside_any, make_corrector, make_matcher, tangent_plane_scale, to_tangent_plane
from .params import check_separation
from .refcat import GAIA_CATALOGS

__all__ = ["ABSOLUTE_PARS", "GRADES", "combined_catalog", "absolute_align", "absolute_fit", "apply_absolute", "SINGLE_GROUP_REFCATS", "wcs_name", "final_status", "refine_fit", "linear_fit"]

log = logging.getLogger(__name__)

#: Absolute-alignment parameters of the tweakreg step and their defaults.
ABSOLUTE_PARS = {
    "abs_minobj": 15,
    "abs_searchrad": 6.0,
    "abs_use2dhist": True,
    "abs_separation": 1.0,
    "abs_tolerance": 0.7,
    "abs_fitgeometry": "rshift",
    "abs_nclip": 3,
    "abs_sigma": 3.0,
}

#: Reference catalogs retrieved from the astrometric catalog web service.
SINGLE_GROUP_REFCATS = GAIA_CATALOGS


def wcs_name(refcat_name):
    """WCS name recorded after an absolute fit: ``FIT-LVL3-<abs_refcat>``.

    The JWST step names the corrected WCS ``f"FIT-LVL3-{abs_refcat}"``
    with ``abs_refcat`` as given: ``FIT-LVL3-GAIADR3`` for a Gaia catalog,
    ``FIT-LVL3-data/my_ref.ecsv`` for a file (its path as given). Surrounding
    white space, which the step also ignores when reading ``abs_refcat``, is
    dropped. The one home of the name: every output takes it from here.
    """
    return f"FIT-LVL3-{str(refcat_name).strip()}"


def final_status(rel_status, rel_reason, abs_status, abs_reason):
    """Status and reason of an image after both stages.

    ``COMPLETE`` when the absolute solution was applied; otherwise the image
    keeps its relative result, and a failed absolute fit is said so.
    """
    if abs_status == "COMPLETE":
        return "COMPLETE", abs_reason
    if abs_status == "FAILED":
        return rel_status, f"absolute alignment failed ({abs_reason}); relative alignment kept"
    return rel_status, rel_reason


def combined_catalog(entries, wcs_list, ref_tpwcs, merge=True, merge_radius=0.1, tp_scale=1.0):
    """The set's catalog on the sky, with repeated detections merged.

    Parameters
    ----------
    entries : list of dict
        ``catalog`` (x, y) and ``wcsinfo`` of the participating images.
    wcs_list : list
        Their relatively aligned WCSs: GWCSs, or the `astropy.wcs.WCS` of
        plain FITS chips (through their full distortion, `det_to_world`).
    ref_tpwcs : tweakwcs.correctors.WCSCorrector
        Defines the tangent plane where sources are merged.
    merge : bool
        Merge detections of one star in different images (False: pool
        every detection, as the JWST step does).
    merge_radius : float
        Sources of *different* images closer than this (arcsec) are one star.
    tp_scale : float
        Arcsec per tangent-plane unit (`tweakflow.align.tangent_plane_scale`:
        1 for JWST, the pixel scale for FITS chips).

    Returns
    -------
    astropy.table.Table
        ``RA``, ``DEC`` (deg), ``TPx``, ``TPy`` (tangent-plane units), ``n_det``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xs, ys, img = [], [], []
    for k, (e, w) in enumerate(zip(entries, wcs_list)):
        cat = e["catalog"]
        if len(cat) == 0:
            continue
        ra, dec = det_to_world(w, np.asarray(cat["x"], float), np.asarray(cat["y"], float), with_bounding_box=False)
        tx, ty = to_tangent_plane(ref_tpwcs, (ra, dec)).T
        good = np.isfinite(tx) & np.isfinite(ty)
        xs.append(tx[good])
        ys.append(ty[good])
        img.append(np.full(good.sum(), k))
    if not xs:
        return Table({"RA": [], "DEC": [], "TPx": [], "TPy": [], "n_det": []})
    tx, ty, img = np.concatenate(xs), np.concatenate(ys), np.concatenate(img)
    if merge and len(tx) > 1:
        pairs = cKDTree(np.c_[tx, ty]).query_pairs(float(merge_radius) / tp_scale, output_type="ndarray")
        pairs = pairs[img[pairs[:, 0]] != img[pairs[:, 1]]]
        n = len(tx)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        ncomp, label = connected_components(graph, directed=False)
        # a component with two detections from one image is a blend: keep
        # the sources separate rather than averaging two stars
        comp_img = np.zeros(ncomp, dtype=bool)
        counts = np.bincount(label, minlength=ncomp)
        per_img = np.unique(np.c_[label, img], axis=0)
        comp_img = np.bincount(per_img[:, 0], minlength=ncomp) == counts
        ok = comp_img[label]
        mx = np.bincount(label[ok], weights=tx[ok], minlength=ncomp)
        my = np.bincount(label[ok], weights=ty[ok], minlength=ncomp)
        mn = np.bincount(label[ok], minlength=ncomp)
        keep = mn > 0
        mtx = np.concatenate([mx[keep] / mn[keep], tx[~ok]])
        mty = np.concatenate([my[keep] / mn[keep], ty[~ok]])
        ndet = np.concatenate([mn[keep], np.ones((~ok).sum(), dtype=int)])
    else:
        mtx, mty, ndet = tx, ty, np.ones(len(tx), dtype=int)
    ra, dec = ref_tpwcs.tanp_to_world(mtx, mty)
    return Table({"RA": np.asarray(ra, float), "DEC": np.asarray(dec, float), "TPx": mtx, "TPy": mty, "n_det": ndet.astype(int)})


def refine_matches(ref_xy, im_xy, matrix, shift, radius):
    """Mutual nearest neighbours within ``radius`` after applying a first fit.

    ``xyxymatch`` pairs sources within ``tolerance`` (0.7 arcsec by
    default) of each other. When the reference catalog holds a star that the
    image catalog lacks (it fell in a gap, off an edge, or was rejected by
    the star finder), that star can pair with a fainter neighbour a few
    tenths of an arcsecond away; a handful of such pairs, which sigma
    clipping does not fully remove, bias the fit by milliarcseconds. Once a
    first fit has put both catalogs in one frame to a few mas, pairs are
    re-made as mutual nearest neighbours within a tight ``radius``.

    Returns
    -------
    ref_idx, im_idx : numpy.ndarray
    """
    from scipy.spatial import cKDTree

    fitted = np.asarray(shift) + np.asarray(im_xy) @ np.asarray(matrix).T
    d_im, j_ref = cKDTree(ref_xy).query(fitted, distance_upper_bound=radius)
    d_ref, j_im = cKDTree(fitted).query(ref_xy, distance_upper_bound=radius)
    im_idx = np.flatnonzero(np.isfinite(d_im))
    ref_idx = j_ref[im_idx]
    mutual = j_im[ref_idx] == im_idx
    return ref_idx[mutual], im_idx[mutual]


def refine_radius(residuals, floor, ceiling):
    """Pairing radius after a first fit: five robust standard deviations.

    ``residuals`` are the (N, 2) reference - fitted positions of the pairs
    used in the fit; the radius is clipped to [``floor``, ``ceiling``].
    """
    sigma = 1.4826 * np.median(np.hypot(*np.asarray(residuals, float).T)) / 1.1774  # per-axis robust sigma
    return float(np.clip(5.0 * np.hypot(sigma, sigma), floor, ceiling))


def linear_fit(refxy, imxy, wref, wim, fitgeom, nclip, sigma):
    """tweakwcs ``iter_linear_fit`` of ``ref = shift + matrix @ im``, shift for the origin."""
    from tweakwcs.linearfit import iter_linear_fit

    fit = iter_linear_fit(refxy, imxy, wref, wim, fitgeom=fitgeom, nclip=nclip, sigma=sigma, center=None)
    # shift for rotations about the tangent-plane origin (as tweakwcs does)
    shift = fit["shift_ld"] + fit["center_ld"] - np.dot(fit["center_ld"], fit["matrix_ld"].T)
    fit["shift"] = np.asarray(shift, dtype=np.double)
    return fit


def refine_fit(ref_xy, im_xy, fit, pairs, fitter, floor, ceiling, minobj, max_iter=5):
    """Re-pair and refit until the pairs no longer change (see `refine_matches`).

    Each round computes the pairing radius from the residuals of the pairs
    the current fit used (`refine_radius`), re-pairs all sources as mutual
    nearest neighbours within it on that fit, and fits again. One round is
    not enough: a false pair far from the others (high leverage, most of all
    with ``general``) pulls the first fit towards itself, which spreads the
    residuals of the true pairs and widens the radius enough to keep it;
    once a round drops it, the next fit is unbiased and the radius shrinks
    to the true noise.

    Parameters
    ----------
    ref_xy, im_xy : numpy.ndarray
        (N, 2) and (M, 2) positions of every source of both catalogs in the
        fit's frame (NaN rows are ignored).
    fit : dict
        First fit (`linear_fit` keys ``matrix``, ``shift``, ``fitmask``).
    pairs : tuple of numpy.ndarray
        ``(ref_idx, im_idx)`` of the first fit's pairs.
    fitter : callable
        ``fitter(ref_idx, im_idx)`` -> fit dict (`linear_fit` of those pairs).
    floor, ceiling : float
        Bounds of the pairing radius (frame units).
    minobj : int
        Fewer pairs than this end the refinement with the last fit.

    Returns
    -------
    fit, ref_idx, im_idx, radius
        The refined fit and its pairs, and the last pairing radius (the
        first fit, its pairs and ``nan`` when no round succeeded).
    """
    ref_xy, im_xy = np.asarray(ref_xy, float), np.asarray(im_xy, float)
    ok_ref = np.flatnonzero(np.isfinite(ref_xy).all(axis=1))
    ok_im = np.flatnonzero(np.isfinite(im_xy).all(axis=1))
    ri, ii = (np.asarray(a, int) for a in pairs)
    radius = float("nan")
    for _ in range(max_iter):
        used = np.asarray(fit["fitmask"], bool)
        res = ref_xy[ri[used]] - (fit["shift"] + im_xy[ii[used]] @ np.asarray(fit["matrix"]).T)
        rad = refine_radius(res, floor, ceiling)
        r2, i2 = refine_matches(ref_xy[ok_ref], im_xy[ok_im], fit["matrix"], fit["shift"], rad)
        r2, i2 = ok_ref[r2], ok_im[i2]
        if len(r2) < int(minobj):
            break
        if len(r2) == len(ri) and np.array_equal(r2, ri) and np.array_equal(i2, ii):
            radius = rad
            break
        try:
            new = fitter(r2, i2)
        except Exception as exc:  # a degenerate refit: keep the last good one
            log.info("refined fit failed (%s: %s); keeping the previous fit", type(exc).__name__, exc)
            break
        fit, ri, ii, radius = new, r2, i2, rad
    return fit, ri, ii, radius


def absolute_align(entries, wcs_list, statuses, refcat, **kwargs):
    """Fit the relatively aligned set to a reference catalog; apply the solutions.

    `absolute_fit`, then `apply_absolute` to each image of each solution.
    Parameters are those of `absolute_fit`.

    Returns
    -------
    wcs : list
        Per image, the absolutely aligned WCS (or the input one).
    rows, combined :
        As `absolute_fit`.
    """
    solutions, rows, combined = absolute_fit(entries, wcs_list, statuses, refcat, **kwargs)
    out_wcs = list(wcs_list)
    for sol in solutions:
        for i in sol["members"]:
            out_wcs[i] = apply_absolute(entries[i], wcs_list[i], sol)
    return out_wcs, rows, combined


def apply_absolute(entry, wcs, solution):
    """The WCS of one image with the absolute solution applied.

    Parameters
    ----------
    entry : dict
        ``wcsinfo``, ``catalog``, ``name``, ``group_id`` of the image.
    wcs :
        Its relatively aligned WCS.
    solution : dict
        From `absolute_fit`: ``matrix`` and ``shift`` in the tangent plane
        of ``ref_tpwcs``.
    """
    corr = make_corrector(wcs, entry["wcsinfo"], entry["catalog"], entry["name"], entry["group_id"])
    corr.set_correction(matrix=solution["matrix"], shift=solution["shift"], ref_tpwcs=solution["ref_tpwcs"])
    return corr.wcs


#: Grades of an absolute fit (summary column ``abs_grade``).
GRADES = {
    1: "the configured fit passed every quality gate",
    2: "a recovery attempt passed every quality gate",
    3: "not aligned relatively: aligned to the reference catalog on its own",
    4: "every fit was rejected by the quality gates: relative alignment kept",
    5: "no fit could be made: relative alignment kept",
}


def absolute_fit(entries, wcs_list, statuses, refcat, *, quality=None, merge=True, merge_radius=0.1, weight_by_count=False, refine=True, details=None, **pars):
    """Fit the relatively aligned set to a reference catalog, with quality gates.

    The set's combined catalog is matched and fitted to the reference
    catalog through the recovery chain of `tweakflow.quality` (wider
    ``abs_searchrad`` with the 2-D histogram, then fewer degrees of
    freedom), and a fit is accepted only if it passes the quality gates
    with ``abs_tolerance``; otherwise the relative alignment is kept and
    the reason given. Groups that could not be aligned relatively are then
    fitted to the reference catalog one by one, with the same gates.

    The solutions are applied to each image by `apply_absolute` (one at a
    time, so that a caller writing each result keeps one corrected WCS in
    memory, not one per image).

    Parameters
    ----------
    entries : list of dict
        ``name``, ``wcsinfo``, ``catalog``, ``group_id``, ``shape`` per image.
    wcs_list : list
        The relatively aligned WCS of each image: a GWCS, or the
        `astropy.wcs.WCS` of a plain FITS chip (all of one kind).
    statuses : list of str
        Relative-alignment status per image. The ``COMPLETE`` ones form the
        set; each group of the others (with sources) is fitted on its own.
        When no image could be aligned relatively because there was a single
        group, every image with sources is fitted as one set.
    refcat : astropy.table.Table
        ``RA``, ``DEC`` (deg), optional ``weight``.
    quality : dict or None
        The ``quality`` block (`tweakflow.quality.resolve_quality`);
        ``{"enabled": False}``: every fit is accepted, as the JWST step does.
    merge, merge_radius :
        See `combined_catalog`.
    weight_by_count : bool
        Weight merged sources by their number of detections.
    refine : bool
        Re-pair and refit until the pairs are stable (`refine_fit`).
    details : dict or None
        If given, receives ``matches``: the matched pairs of the set's
        chosen (or configured) fit with their residuals before and after
        (`tweakflow.qa.match_table`), or None when no fit was made, and
        ``attempts``: one dict per attempt.
    **pars
        ``abs_*`` parameters (`ABSOLUTE_PARS`).

    Returns
    -------
    solutions : list of dict
        ``matrix``, ``shift``, ``ref_tpwcs`` (the tangent plane they are
        in) and ``members`` (indices of the images it applies to); the set's
        solution first, then one per group aligned on its own.
    rows : list of dict
        Per image, a solution row with ``stage="absolute"``: ``COMPLETE``
        when a solution was applied, ``FAILED`` (with reason) when the fit
        was rejected or failed, ``SKIPPED`` when the image did not take part;
        ``grade`` (`GRADES`), ``attempt``, ``n_attempts``, ``recovery``,
        ``fit_error_mas`` and ``chance_log10p``.
    combined : astropy.table.Table
        The set's combined catalog.

    Raises
    ------
    ConfigError
        If ``abs_separation`` < sqrt(2) x ``abs_tolerance`` (`tweakflow.params.check_separation`).
    """
    from .quality import gate_limits, resolve_quality

    p = dict(ABSOLUTE_PARS)
    unknown = set(pars) - set(p)
    if unknown:
        raise TypeError(f"unknown absolute-alignment parameters: {sorted(unknown)}")
    p.update(pars)
    check_separation(p, "abs_")
    q = resolve_quality(quality)
    limits = gate_limits(q, p["abs_tolerance"])
    opts = {"merge": merge, "merge_radius": merge_radius, "weight_by_count": weight_by_count, "refine": refine and (q["refine"] or not q["enabled"])}
    if details is not None:
        details.update(matches=None, attempts=[])

    with_sources = [i for i, e in enumerate(entries) if len(e["catalog"]) > 0]
    members = [i for i in with_sources if statuses[i] == "COMPLETE"]
    loners = {}
    for i in with_sources:
        if statuses[i] != "COMPLETE":
            loners.setdefault(entries[i]["group_id"], []).append(i)
    if not members and len(loners) == 1:
        members, loners = with_sources, {}
    rows = []
    for i, e in enumerate(entries):
        why = "no sources in catalog" if i not in with_sources else "not aligned relatively: excluded from the absolute fit"
        rows.append(dict(fit_row(e["name"], e["group_id"], "absolute", "SKIPPED", why, n_sources=len(e["catalog"])), grade=0))

    solutions, combined = [], Table()
    if members:
        sol, combined = _fit_members(entries, wcs_list, members, refcat, p, q, limits, opts, rows, details, grade_ok=None)
        solutions += [sol] if sol else []
    if q["enabled"] and q["recovery"]:
        for gid, idx in loners.items():
            sol, _ = _fit_members(entries, wcs_list, idx, refcat, p, q, limits, opts, rows, details, grade_ok=3)
            if sol:
                log.info("group %s, not aligned relatively, aligned to the reference catalog on its own", gid)
                solutions.append(sol)
            else:
                for i in idx:  # the relative reason stays the one reported
                    rows[i] = dict(rows[i], status="SKIPPED", reason=f"not aligned relatively; on its own: {rows[i]['reason']}")
    return solutions, rows, combined


def _fit_members(entries, wcs_list, members, refcat, p, q, limits, opts, rows, details, grade_ok):
    """Gated fit of the images ``members`` as one set; fills their ``rows``.

    Returns
    -------
    solution : dict or None
    combined : astropy.table.Table
    """
    from .quality import attempt_label, check_fit, recovery_plan

    ref_e = entries[members[0]]
    ref_tpwcs = make_corrector(wcs_list[members[0]], ref_e["wcsinfo"], ref_e["catalog"], ref_e["name"], ref_e["group_id"])
    # arcsec per unit of that plane: radii in, statistics out stay in arcsec
    tps = tangent_plane_scale([wcs_list[i] for i in members])
    combined = combined_catalog(
        [entries[i] for i in members], [wcs_list[i] for i in members], ref_tpwcs,
        merge=opts["merge"], merge_radius=opts["merge_radius"], tp_scale=tps,
    )
    log.info(
        "combined catalog: %d sources from %d detections in %d images",
        len(combined), int(np.sum(combined["n_det"])) if len(combined) else 0, len(members),
    )
    ref = Table(refcat, copy=True)
    rtx, rty = to_tangent_plane(ref_tpwcs, (np.asarray(ref["RA"], float), np.asarray(ref["DEC"], float))).T
    ref["TPx"], ref["TPy"] = rtx, rty
    ref = ref[np.isfinite(rtx) & np.isfinite(rty)]
    polygons = [to_tangent_plane(ref_tpwcs, footprint_world(wcs_list[i], entries[i]["shape"])) for i in members]
    setup = {
        "ref": ref, "combined": combined, "polygons": polygons, "p": p, "opts": opts, "tps": tps,
        "tp_pscale": ref_tpwcs.tanp_center_pixel_scale, "tp_units": ref_tpwcs.units,
    }

    plan = recovery_plan(p["abs_searchrad"], p["abs_use2dhist"], p["abs_fitgeometry"], q)
    first, chosen, number, attempts = None, None, 0, []
    for tier in plan:
        passing = []
        for att in tier:
            number += 1
            res = _absolute_attempt(setup, att)
            fails = [] if not res["ok"] or not q["enabled"] else check_fit(res["stats"], limits)
            res.update(number=number, passed=res["ok"] and not fails, why=res["reason"] if not res["ok"] else "; ".join(fails))
            first = first or res
            attempts.append(res)
            if res["passed"]:
                passing.append(res)
        if passing:
            chosen = max(passing, key=lambda r: (r["stats"]["n_used"], -r["stats"]["rms_mas"]))
            break
        if not (q["enabled"] and q["recovery"]):
            break
    if details is not None:
        details["attempts"].extend({"members": list(members), "number": r["number"], "label": attempt_label(r["att"]), "passed": r["passed"], "reason": r["why"], **r.get("stats", {})} for r in attempts)
        shown = chosen or first
        if grade_ok is None and shown["ok"]:
            from .qa import match_table

            details["matches"] = match_table(
                shown["fit_info"], shown["ref_xy"], shown["im_xy"], image="combined", stage="absolute", tp_scale=tps, accepted=chosen is not None
            )

    if chosen is None:
        made = any(r["ok"] for r in attempts)
        if not q["enabled"] or number == 1:
            reason = first["why"] if made else first["reason"]
        else:
            reason = f"no fit passed the quality gates in {number} attempts (configured fit: {first['why']})"
        reason = ("quality gate: " + reason) if made and q["enabled"] and number == 1 else reason
        log.warning("absolute alignment of %d image(s) failed: %s", len(members), reason)
        for i in members:
            rows[i] = dict(
                fit_row(entries[i]["name"], entries[i]["group_id"], "absolute", "FAILED", reason, n_sources=len(entries[i]["catalog"])),
                grade=4 if made else 5, attempt=0, n_attempts=number,
            )
        return None, combined

    fit, st = chosen["fit"], chosen["stats"]
    log.info(
        "absolute fit (%s, attempt %d of %d): %d matches, %d used, shift (%.4f, %.4f) arcsec, rot %.3g deg, scale %.8f, rms %.2f mas, "
        "predicted error %.2f mas, chance 10^%.0f",
        chosen["att"]["fitgeometry"], chosen["number"], number, st["n_matches"], st["n_used"], tps * fit["shift"][0], tps * fit["shift"][1],
        fit["<rot>"], fit["<scale>"], st["rms_mas"], st["fit_error_mas"], max(st["chance_log10p"], -999),
    )
    grade = grade_ok or (1 if chosen["number"] == 1 else 2)
    recovery = f"attempt {chosen['number']} of {number}: {attempt_label(chosen['att'])}" if chosen["number"] > 1 else ""
    for i in members:
        e = entries[i]
        rows[i] = dict(
            fit_row(e["name"], e["group_id"], "absolute", "COMPLETE", GRADES[3] if grade_ok == 3 else "", chosen["fit_info"], len(e["catalog"]), tp_scale=tps),
            grade=grade, attempt=chosen["number"], n_attempts=number, recovery=recovery,
            match_fraction=st["match_fraction"], fit_error_mas=st["fit_error_mas"], chance_log10p=st["chance_log10p"],
        )
    if grade_ok is None:
        combined["matched"] = np.zeros(len(combined), dtype=bool)
        combined["matched"][chosen["fit_info"]["matched_input_idx"]] = True
    return {"matrix": fit["matrix"], "shift": fit["shift"], "ref_tpwcs": ref_tpwcs, "members": list(members)}, combined


def _absolute_attempt(setup, att):
    """Match and fit the combined catalog to the reference with one attempt's settings.

    Returns
    -------
    dict
        ``ok``, ``reason`` (why no fit), ``att``; when ``ok``: ``fit``,
        ``fit_info`` (tweakwcs-like), ``stats`` (for the quality gates),
        ``ref_xy`` and ``im_xy`` (all positions, arcsec).
    """
    from .quality import fit_significance

    ref, combined, p, opts, tps = setup["ref"], setup["combined"], setup["p"], setup["opts"], setup["tps"]
    out = {"ok": False, "reason": "", "att": att}
    minobj = int(p["abs_minobj"])
    if len(combined) < minobj:
        out["reason"] = f"combined catalog has {len(combined)} sources, fewer than abs_minobj={minobj}"
        return out
    if len(ref) < minobj:
        out["reason"] = f"reference catalog has {len(ref)} usable sources, fewer than abs_minobj={minobj}"
        return out
    matcher = make_matcher(att["searchrad"] / tps, p["abs_separation"] / tps, att["use2dhist"], p["abs_tolerance"] / tps)
    try:
        ref_idx, im_idx = matcher(ref, combined, tp_pscale=setup["tp_pscale"], tp_units=setup["tp_units"])
    except Exception as exc:
        out["reason"] = f"matching failed: {type(exc).__name__}: {exc}"
        return out
    nmatch = len(ref_idx)
    if nmatch < minobj:
        out["reason"] = f"not enough matches ({nmatch}) with the reference catalog; abs_minobj={minobj}"
        return out

    all_ref = np.c_[ref["TPx"], ref["TPy"]]
    all_im = np.c_[combined["TPx"], combined["TPy"]]
    all_wref = np.asarray(ref["weight"], float) if "weight" in ref.colnames else None
    all_wim = np.asarray(combined["n_det"], float) if opts["weight_by_count"] else None

    def fit_pairs(ri, ii):
        return linear_fit(
            all_ref[ri], all_im[ii],
            None if all_wref is None else all_wref[ri], None if all_wim is None else all_wim[ii],
            att["fitgeometry"], int(p["abs_nclip"]), (float(p["abs_sigma"]), "rmse"),
        )

    try:
        fit = fit_pairs(ref_idx, im_idx)
        if opts["refine"]:
            fit, ref_idx, im_idx, radius = refine_fit(all_ref, all_im, fit, (ref_idx, im_idx), fit_pairs, 0.02 / tps, p["abs_tolerance"] / tps, minobj)
            log.info("refined matching within %.1f mas: %d pairs (xyxymatch: %d)", 1000 * radius * tps, len(ref_idx), nmatch)
    except Exception as exc:
        out["reason"] = f"fit failed: {type(exc).__name__}: {exc}"
        return out
    used = np.asarray(fit["fitmask"], bool)
    fitted = fit["shift"] + all_im @ np.asarray(fit["matrix"]).T
    res_mas = 1000.0 * tps * (all_ref[ref_idx] - fitted[im_idx])
    n_used = int(np.count_nonzero(used))
    n_ref_in = int(np.count_nonzero(inside_any(all_ref[:, 0], all_ref[:, 1], setup["polygons"])))
    n_possible = min(len(combined), n_ref_in)
    stats = {
        "n_matches": len(ref_idx),
        "n_used": n_used,
        "rms_mas": 1000.0 * tps * float(fit["rmse"]),
        "match_fraction": n_used / n_possible if n_possible else float("nan"),
        "shift_arcsec": tps * float(np.hypot(*fit["shift"])),
        "rotation_deg": float(fit["<rot>"]),
        "fitgeom": att["fitgeometry"],
        **fit_significance(
            all_im[im_idx[used]], fitted[im_idx[used]], res_mas[used], all_ref, setup["polygons"], len(combined),
            att["fitgeometry"], att["searchrad"], p["abs_tolerance"], tps,
        ),
    }
    fit_info = {
        "status": "SUCCESS",
        "fitgeom": att["fitgeometry"],
        "nmatches": len(ref_idx),
        "fitmask": used,
        "rmse": fit["rmse"],
        "mae": fit["mae"],
        "shift": fit["shift"],
        "<rot>": fit["<rot>"],
        "<scale>": fit["<scale>"],
        "skew": fit["skew"],
        "matrix": fit["matrix"],
        "matched_ref_idx": ref_idx,
        "matched_input_idx": im_idx,
    }
    out.update(ok=True, fit=fit, fit_info=fit_info, stats=stats, ref_xy=all_ref, im_xy=all_im)
    return out

