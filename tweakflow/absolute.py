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

from .fitting import entry_corrector, fit_info_of, linear_fit, make_matcher, refine_fit
from .geometry import det_to_world, footprint_world, inside_any, tangent_plane_scale, to_tangent_plane
from .params import ABSOLUTE_PARS, check_separation, resolve_block
from .quality import attempt_label, check_fit, fit_significance, gate_limits, recovery_plan, resolve_quality
from .results import GRADES, fit_row, match_table

__all__ = ["combined_catalog", "absolute_align", "absolute_fit", "apply_absolute", "wcs_name"]

log = logging.getLogger(__name__)


def wcs_name(refcat_name):
    """WCS name recorded after an absolute fit: ``FIT-LVL3-<abs_refcat>``.

    The JWST step names the corrected WCS ``f"FIT-LVL3-{abs_refcat}"``
    with ``abs_refcat`` as given: ``FIT-LVL3-GAIADR3`` for a Gaia catalog,
    ``FIT-LVL3-data/my_ref.ecsv`` for a file (its path as given). Surrounding
    white space, which the step also ignores when reading ``abs_refcat``, is
    dropped. The one home of the name: every output takes it from here.
    """
    return f"FIT-LVL3-{str(refcat_name).strip()}"


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
        Arcsec per tangent-plane unit (`tweakflow.geometry.tangent_plane_scale`:
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
    corr = entry_corrector(entry, wcs)
    corr.set_correction(matrix=solution["matrix"], shift=solution["shift"], ref_tpwcs=solution["ref_tpwcs"])
    return corr.wcs


def absolute_fit(entries, wcs_list, statuses, refcat, *, quality=None, merge=True, merge_radius=0.1, weight_by_count=False, refine=True, details=None, **pars):
    """Fit the relatively aligned set to a reference catalog, with quality gates.

    The set's combined catalog is matched and fitted to the reference
    catalog through the recovery chain of `tweakflow.quality` (wider
    ``abs_searchrad`` with the 2-D histogram, then fewer degrees of
    freedom), and a fit is accepted only if it passes the quality gates
    with ``abs_tolerance``; otherwise the relative alignment is kept and
    the reason given. Groups that could not be aligned relatively are then
    fitted to the reference catalog one by one, with the same gates. The
    solutions are applied to each image by `apply_absolute`.

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
        Re-pair and refit until the pairs are stable (`tweakflow.fitting.refine_fit`).
    details : dict or None
        If given, receives ``matches``: the matched pairs of the set's
        chosen (or configured) fit with their residuals before and after
        (`tweakflow.results.match_table`), or None when no fit was made,
        and ``attempts``: one dict per attempt.
    **pars
        ``abs_*`` parameters (`ABSOLUTE_PARS`).

    Returns
    -------
    solutions : list of dict
        ``matrix``, ``shift``, ``ref_tpwcs`` (their tangent plane) and
        ``members`` (indices of the images it applies to); the set's first.
    rows : list of dict
        Per image, a solution row with ``stage="absolute"``: ``COMPLETE``
        when a solution was applied, ``FAILED`` (with reason) when the fit
        was rejected or failed, ``SKIPPED`` when the image did not take part;
        ``grade`` (`tweakflow.results.GRADES`), ``attempt``, ``n_attempts``, ``recovery``,
        ``fit_error_mas`` and ``chance_log10p``.
    combined : astropy.table.Table
        The set's combined catalog.

    Raises
    ------
    ConfigError
        For an unknown parameter, or ``abs_separation`` < sqrt(2) x
        ``abs_tolerance`` (`tweakflow.params.check_separation`).
    """
    p = resolve_block("tweakreg", ABSOLUTE_PARS, pars)
    check_separation(p, "abs_")
    q = resolve_quality(quality)
    limits = gate_limits(q, p["abs_tolerance"])
    opts = {"merge": merge, "merge_radius": merge_radius, "weight_by_count": weight_by_count, "refine": refine and (q["refine"] or not q["enabled"])}
    if details is not None:
        details.update(matches=None, attempts=[])
    members, loners, rows = _partition(entries, statuses)
    solutions, combined = [], Table()
    if members:
        sol, combined = _fit_members(entries, wcs_list, members, refcat, (p, q, limits, opts), rows, details, grade_ok=None)
        solutions += [sol] if sol else []
    if q["enabled"] and q["recovery"]:
        for gid, idx in loners.items():
            sol = _fit_loner(entries, wcs_list, gid, idx, refcat, (p, q, limits, opts), rows, details)
            solutions += [sol] if sol else []
    return solutions, rows, combined


def _fit_loner(entries, wcs_list, gid, idx, refcat, config, rows, details):
    """A group not aligned relatively, fitted to the reference catalog on its own (grade 3)."""
    sol, _ = _fit_members(entries, wcs_list, idx, refcat, config, rows, details, grade_ok=3)
    if sol:
        log.info("group %s, not aligned relatively, aligned to the reference catalog on its own", gid)
        return sol
    for i in idx:  # the relative reason stays the one reported
        rows[i] = dict(rows[i], status="SKIPPED", reason=f"not aligned relatively; on its own: {rows[i]['reason']}")
    return None


def _partition(entries, statuses):
    """The set (relatively aligned images with sources), the other groups
    with sources (group id -> indices), and a ``SKIPPED`` row per image.

    When no image could be aligned relatively because there was a single
    group, every image with sources forms the set.
    """
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
    return members, loners, rows


def _fit_setup(entries, wcs_list, members, refcat, p, opts):
    """The set's combined catalog and the reference catalog in the tangent
    plane of the set's first image, with what each attempt needs."""
    ref_tpwcs = entry_corrector(entries[members[0]], wcs_list[members[0]])
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
    return {
        "ref": ref, "combined": combined, "polygons": polygons, "p": p, "opts": opts, "tps": tps, "ref_tpwcs": ref_tpwcs,
        "tp_pscale": ref_tpwcs.tanp_center_pixel_scale, "tp_units": ref_tpwcs.units,
    }


def _attempts(setup, q, limits):
    """Attempts of the recovery chain until a tier has one that passes.

    Returns
    -------
    chosen : dict or None
        The passing attempt with the most used pairs (then the lowest RMS).
    attempts : list of dict
        Every attempt made, with ``number``, ``passed`` and ``why``.
    """
    p = setup["p"]
    attempts = []
    for tier in recovery_plan(p["abs_searchrad"], p["abs_use2dhist"], p["abs_fitgeometry"], q):
        passing = []
        for att in tier:
            res = _absolute_attempt(setup, att)
            fails = [] if not res["ok"] or not q["enabled"] else check_fit(res["stats"], limits)
            res.update(number=len(attempts) + 1, passed=res["ok"] and not fails, why=res["reason"] if not res["ok"] else "; ".join(fails))
            attempts.append(res)
            if res["passed"]:
                passing.append(res)
        if passing:
            return max(passing, key=lambda r: (r["stats"]["n_used"], -r["stats"]["rms_mas"])), attempts
        if not (q["enabled"] and q["recovery"]):
            break
    return None, attempts


def _fit_members(entries, wcs_list, members, refcat, config, rows, details, grade_ok):
    """Gated fit of the images ``members`` as one set; fills their ``rows``.

    ``config`` is ``(p, q, limits, opts)``; ``grade_ok`` the grade of a
    passing fit (None: 1 for the configured fit, 2 for a recovery attempt).

    Returns
    -------
    solution : dict or None
    combined : astropy.table.Table
    """
    p, q, limits, opts = config
    setup = _fit_setup(entries, wcs_list, members, refcat, p, opts)
    chosen, attempts = _attempts(setup, q, limits)
    if details is not None:
        details["attempts"].extend({"members": list(members), "number": r["number"], "label": attempt_label(r["att"]), "passed": r["passed"], "reason": r["why"], **r.get("stats", {})} for r in attempts)
        shown = chosen or attempts[0]
        if grade_ok is None and shown["ok"]:
            details["matches"] = match_table(
                shown["fit_info"], shown["ref_xy"], shown["im_xy"], image="combined", stage="absolute", tp_scale=setup["tps"], accepted=chosen is not None
            )
    if chosen is None:
        _failed_rows(entries, members, attempts, q, rows)
        return None, setup["combined"]
    _complete_rows(entries, members, chosen, len(attempts), setup["tps"], grade_ok, rows)
    combined = setup["combined"]
    if grade_ok is None:
        combined["matched"] = np.zeros(len(combined), dtype=bool)
        combined["matched"][chosen["fit_info"]["matched_input_idx"]] = True
    fit = chosen["fit"]
    return {"matrix": fit["matrix"], "shift": fit["shift"], "ref_tpwcs": setup["ref_tpwcs"], "members": list(members)}, combined


def _failed_rows(entries, members, attempts, q, rows):
    """``FAILED`` rows of a set no attempt passed for (grade 4: rejected, 5: no fit)."""
    first, number = attempts[0], len(attempts)
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


def _complete_rows(entries, members, chosen, number, tps, grade_ok, rows):
    """``COMPLETE`` rows of a set whose fit passed, with its grade and statistics."""
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


def _match_to_reference(setup, att):
    """``xyxymatch`` of the combined catalog to the reference: (ref_idx, im_idx) or a reason."""
    ref, combined, p, tps = setup["ref"], setup["combined"], setup["p"], setup["tps"]
    minobj = int(p["abs_minobj"])
    if len(combined) < minobj:
        return f"combined catalog has {len(combined)} sources, fewer than abs_minobj={minobj}"
    if len(ref) < minobj:
        return f"reference catalog has {len(ref)} usable sources, fewer than abs_minobj={minobj}"
    matcher = make_matcher(att["searchrad"] / tps, p["abs_separation"] / tps, att["use2dhist"], p["abs_tolerance"] / tps)
    try:
        ref_idx, im_idx = matcher(ref, combined, tp_pscale=setup["tp_pscale"], tp_units=setup["tp_units"])
    except Exception as exc:
        return f"matching failed: {type(exc).__name__}: {exc}"
    if len(ref_idx) < minobj:
        return f"not enough matches ({len(ref_idx)}) with the reference catalog; abs_minobj={minobj}"
    return ref_idx, im_idx


def _absolute_attempt(setup, att):
    """Match and fit the combined catalog to the reference with one attempt's settings.

    Returns
    -------
    dict
        ``ok``, ``reason`` (why no fit), ``att``; when ``ok``: ``fit``,
        ``fit_info`` (tweakwcs-like), ``stats`` (for the quality gates),
        ``ref_xy`` and ``im_xy`` (all positions, arcsec).
    """
    ref, combined, p, opts, tps = setup["ref"], setup["combined"], setup["p"], setup["opts"], setup["tps"]
    out = {"ok": False, "reason": "", "att": att}
    matched = _match_to_reference(setup, att)
    if isinstance(matched, str):
        out["reason"] = matched
        return out
    ref_idx, im_idx = matched
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
            nmatch = len(ref_idx)
            fit, ref_idx, im_idx, radius = refine_fit(all_ref, all_im, fit, (ref_idx, im_idx), fit_pairs, 0.02 / tps, p["abs_tolerance"] / tps, int(p["abs_minobj"]))
            log.info("refined matching within %.1f mas: %d pairs (xyxymatch: %d)", 1000 * radius * tps, len(ref_idx), nmatch)
    except Exception as exc:
        out["reason"] = f"fit failed: {type(exc).__name__}: {exc}"
        return out
    stats = _fit_stats(setup, att, fit, ref_idx, im_idx, all_ref, all_im)
    out.update(ok=True, fit=fit, fit_info=fit_info_of(fit, ref_idx, im_idx, att["fitgeometry"]), stats=stats, ref_xy=all_ref, im_xy=all_im)
    return out


def _fit_stats(setup, att, fit, ref_idx, im_idx, all_ref, all_im):
    """The absolute fit's statistics for the quality gates."""
    p, tps = setup["p"], setup["tps"]
    used = np.asarray(fit["fitmask"], bool)
    fitted = fit["shift"] + all_im @ np.asarray(fit["matrix"]).T
    res_mas = 1000.0 * tps * (all_ref[ref_idx] - fitted[im_idx])
    n_used = int(np.count_nonzero(used))
    n_ref_in = int(np.count_nonzero(inside_any(all_ref[:, 0], all_ref[:, 1], setup["polygons"])))
    n_possible = min(len(setup["combined"]), n_ref_in)
    return {
        "n_matches": len(ref_idx),
        "n_used": n_used,
        "rms_mas": 1000.0 * tps * float(fit["rmse"]),
        "match_fraction": n_used / n_possible if n_possible else float("nan"),
        "shift_arcsec": tps * float(np.hypot(*fit["shift"])),
        "rotation_deg": float(fit["<rot>"]),
        "fitgeom": att["fitgeometry"],
        **fit_significance(
            all_im[im_idx[used]], fitted[im_idx[used]], res_mas[used], all_ref, setup["polygons"], len(setup["combined"]),
            att["fitgeometry"], att["searchrad"], p["abs_tolerance"], tps,
        ),
    }
