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

from .align import fit_row, make_corrector, make_matcher
from .params import check_separation
from .refcat import GAIA_CATALOGS

__all__ = ["ABSOLUTE_PARS", "combined_catalog", "absolute_align", "absolute_fit", "apply_absolute", "SINGLE_GROUP_REFCATS", "wcs_name", "final_status"]

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
        return "COMPLETE", ""
    if abs_status == "FAILED":
        return rel_status, f"absolute alignment failed ({abs_reason}); relative alignment kept"
    return rel_status, rel_reason


def _tangent_xy(tpwcs, ra, dec):
    x, y = tpwcs.world_to_tanp(np.asarray(ra, float), np.asarray(dec, float))
    return np.asarray(x, float), np.asarray(y, float)


def combined_catalog(entries, wcs_list, ref_tpwcs, merge=True, merge_radius=0.1):
    """The set's catalog on the sky, with repeated detections merged.

    Parameters
    ----------
    entries : list of dict
        ``catalog`` (x, y) and ``wcsinfo`` of the participating images.
    wcs_list : list
        Their relatively aligned GWCSs.
    ref_tpwcs : tweakwcs.correctors.WCSCorrector
        Defines the tangent plane (arcsec) where sources are merged.
    merge : bool
        Merge detections of one star in different images (False: pool
        every detection, as the JWST step does).
    merge_radius : float
        Sources of *different* images closer than this (arcsec) are one star.

    Returns
    -------
    astropy.table.Table
        ``RA``, ``DEC`` (deg), ``TPx``, ``TPy`` (arcsec), ``n_det``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xs, ys, img = [], [], []
    for k, (e, w) in enumerate(zip(entries, wcs_list)):
        cat = e["catalog"]
        if len(cat) == 0:
            continue
        ra, dec = w(np.asarray(cat["x"], float), np.asarray(cat["y"], float), with_bounding_box=False)
        tx, ty = _tangent_xy(ref_tpwcs, ra, dec)
        good = np.isfinite(tx) & np.isfinite(ty)
        xs.append(tx[good])
        ys.append(ty[good])
        img.append(np.full(good.sum(), k))
    if not xs:
        return Table({"RA": [], "DEC": [], "TPx": [], "TPy": [], "n_det": []})
    tx, ty, img = np.concatenate(xs), np.concatenate(ys), np.concatenate(img)
    if merge and len(tx) > 1:
        pairs = cKDTree(np.c_[tx, ty]).query_pairs(float(merge_radius), output_type="ndarray")
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


def absolute_align(entries, wcs_list, statuses, refcat, **kwargs):
    """Fit the relatively aligned set to a reference catalog; apply one solution to all.

    `absolute_fit`, then `apply_absolute` to each image of the fit.
    Parameters are those of `absolute_fit`.

    Returns
    -------
    wcs : list
        Per image, the absolutely aligned GWCS (or the input one).
    rows, combined :
        As `absolute_fit`.
    """
    solution, rows, combined = absolute_fit(entries, wcs_list, statuses, refcat, **kwargs)
    out_wcs = list(wcs_list)
    for i in solution["members"] if solution else ():
        out_wcs[i] = apply_absolute(entries[i], wcs_list[i], solution)
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


def absolute_fit(entries, wcs_list, statuses, refcat, *, merge=True, merge_radius=0.1, weight_by_count=False, refine=True, details=None, **pars):
    """Fit the relatively aligned set to a reference catalog (one solution for all).

    The solution is applied to each image by `apply_absolute` (one at a
    time, so that a caller writing each result can keep one corrected WCS
    in memory, not one per image).

    Parameters
    ----------
    entries : list of dict
        ``name``, ``wcsinfo``, ``catalog``, ``group_id`` per image.
    wcs_list : list
        The relatively aligned GWCS of each image.
    statuses : list of str
        Relative-alignment status per image; images ``SKIPPED`` there keep
        their WCS and status (they are not consistent with the set), unless
        no image could be aligned relatively because there was a single
        group, in which case every image with sources is fitted as one set.
    refcat : astropy.table.Table
        ``RA``, ``DEC`` (deg), optional ``weight``.
    merge, merge_radius :
        See `combined_catalog`.
    weight_by_count : bool
        Weight merged sources by their number of detections.
    refine : bool
        After the first fit, re-pair sources as mutual nearest neighbours
        within five robust standard deviations of the residuals (see
        `refine_matches`) and fit again.
    details : dict or None
        If given, receives ``matches``: the matched pairs of the fit with
        their residuals before and after (`tweakflow.qa.match_table`), or
        None when no fit was made.
    **pars
        ``abs_*`` parameters (`ABSOLUTE_PARS`).

    Returns
    -------
    solution : dict or None
        ``matrix``, ``shift``, ``ref_tpwcs`` (the tangent plane they are
        in) and ``members`` (indices of the images it applies to); None when
        no fit was made.
    rows : list of dict
        Per image, a solution row with ``stage="absolute"``: ``COMPLETE``
        when the absolute solution was applied, ``FAILED`` (with reason)
        when the fit failed, ``SKIPPED`` when the image did not take part.
    combined : astropy.table.Table
        The combined catalog that was matched.

    Raises
    ------
    ConfigError
        If ``abs_separation`` < sqrt(2) x ``abs_tolerance`` (`tweakflow.params.check_separation`).
    """
    if details is not None:
        details["matches"] = None
    p = dict(ABSOLUTE_PARS)
    unknown = set(pars) - set(p)
    if unknown:
        raise TypeError(f"unknown absolute-alignment parameters: {sorted(unknown)}")
    p.update(pars)
    check_separation(p, "abs_")

    with_sources = [i for i, e in enumerate(entries) if len(e["catalog"]) > 0]
    members = [i for i in with_sources if statuses[i] == "COMPLETE"]
    if not members:
        groups = {entries[i]["group_id"] for i in with_sources}
        if len(groups) == 1:
            members = with_sources
    rows = []
    for i, e in enumerate(entries):
        why = "no sources in catalog" if i not in with_sources else "not aligned relatively: excluded from the absolute fit"
        rows.append(fit_row(e["name"], e["group_id"], "absolute", "SKIPPED", why, n_sources=len(e["catalog"])))
    if not members:
        return None, rows, Table()

    def fail(reason):
        log.warning("absolute alignment failed: %s", reason)
        for i in members:
            rows[i] = fit_row(entries[i]["name"], entries[i]["group_id"], "absolute", "FAILED", reason, n_sources=len(entries[i]["catalog"]))
        return None, rows, combined

    ref_e = entries[members[0]]
    ref_tpwcs = make_corrector(wcs_list[members[0]], ref_e["wcsinfo"], ref_e["catalog"], ref_e["name"], ref_e["group_id"])
    combined = combined_catalog([entries[i] for i in members], [wcs_list[i] for i in members], ref_tpwcs, merge=merge, merge_radius=merge_radius)
    log.info(
        "combined catalog: %d sources from %d detections in %d images",
        len(combined), int(np.sum(combined["n_det"])) if len(combined) else 0, len(members),
    )
    ref = Table(refcat, copy=True)
    rtx, rty = _tangent_xy(ref_tpwcs, ref["RA"], ref["DEC"])
    ref["TPx"], ref["TPy"] = rtx, rty
    ref = ref[np.isfinite(rtx) & np.isfinite(rty)]
    if len(combined) < int(p["abs_minobj"]):
        return fail(f"combined catalog has {len(combined)} sources, fewer than abs_minobj={p['abs_minobj']}")
    if len(ref) < int(p["abs_minobj"]):
        return fail(f"reference catalog has {len(ref)} usable sources, fewer than abs_minobj={p['abs_minobj']}")

    matcher = make_matcher(p["abs_searchrad"], p["abs_separation"], p["abs_use2dhist"], p["abs_tolerance"])
    try:
        ref_idx, im_idx = matcher(ref, combined, tp_pscale=ref_tpwcs.tanp_center_pixel_scale, tp_units="arcsec")
    except Exception as exc:
        return fail(f"matching failed: {type(exc).__name__}: {exc}")
    nmatch = len(ref_idx)
    if nmatch < int(p["abs_minobj"]):
        return fail(f"not enough matches ({nmatch}) with the reference catalog; abs_minobj={p['abs_minobj']}")

    all_ref = np.c_[ref["TPx"], ref["TPy"]]
    all_im = np.c_[combined["TPx"], combined["TPy"]]
    all_wref = np.asarray(ref["weight"], float) if "weight" in ref.colnames else None
    all_wim = np.asarray(combined["n_det"], float) if weight_by_count else None
    sigma = (float(p["abs_sigma"]), "rmse")

    def fit_pairs(ri, ii):
        return linear_fit(
            all_ref[ri], all_im[ii],
            None if all_wref is None else all_wref[ri], None if all_wim is None else all_wim[ii],
            p["abs_fitgeometry"], int(p["abs_nclip"]), sigma,
        )

    try:
        fit = fit_pairs(ref_idx, im_idx)
        if refine:
            res = all_ref[ref_idx] - (fit["shift"] + all_im[im_idx] @ fit["matrix"].T)
            radius = refine_radius(res[fit["fitmask"]], 0.02, p["abs_tolerance"])
            r2, i2 = refine_matches(all_ref, all_im, fit["matrix"], fit["shift"], radius)
            log.info("refined matching within %.1f mas: %d pairs (xyxymatch: %d)", 1000 * radius, len(r2), nmatch)
            if len(r2) >= int(p["abs_minobj"]):
                ref_idx, im_idx, nmatch = r2, i2, len(r2)
                fit = fit_pairs(ref_idx, im_idx)
    except Exception as exc:
        return fail(f"fit failed: {type(exc).__name__}: {exc}")
    fit_info = {
        "status": "SUCCESS",
        "fitgeom": p["abs_fitgeometry"],
        "nmatches": nmatch,
        "fitmask": fit["fitmask"],
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
    if details is not None:
        from .qa import match_table

        details["matches"] = match_table(fit_info, all_ref, all_im, image="combined", stage="absolute")
    log.info(
        "absolute fit (%s): %d matches, %d used, shift (%.4f, %.4f) arcsec, rot %.3g deg, scale %.8f, rms %.2f mas",
        p["abs_fitgeometry"], nmatch, int(np.count_nonzero(fit["fitmask"])), fit["shift"][0], fit["shift"][1],
        fit["<rot>"], fit["<scale>"], 1000 * fit["rmse"],
    )
    for i in members:
        e = entries[i]
        rows[i] = fit_row(e["name"], e["group_id"], "absolute", "COMPLETE", "", fit_info, len(e["catalog"]))
    combined["matched"] = np.zeros(len(combined), dtype=bool)
    combined["matched"][im_idx] = True
    solution = {"matrix": fit["matrix"], "shift": fit["shift"], "ref_tpwcs": ref_tpwcs, "members": members}
    return solution, rows, combined
