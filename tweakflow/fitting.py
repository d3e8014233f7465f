"""Fitting primitives: tweakwcs correctors and matcher, the linear fit, its refinement.

The relative and the absolute alignment fit the same way: sources are
paired by tweakwcs' ``xyxymatch`` (`make_matcher`), a linear transformation
``ref = shift + matrix @ im`` is fitted with iterative clipping
(`linear_fit`), the pairs are re-made as mutual nearest neighbours on that
fit until they no longer change (`refine_fit`), and the result is expressed
as a tweakwcs ``fit_info`` (`fit_info_of`) and applied to a corrector
(`make_corrector`).
"""

from __future__ import annotations

import logging

import numpy as np

from .geometry import wcs_kind

__all__ = [
    "N_PARAMS",
    "design_matrix",
    "make_corrector",
    "entry_corrector",
    "make_matcher",
    "linear_fit",
    "fit_info_of",
    "refine_matches",
    "refine_radius",
    "refine_fit",
]

log = logging.getLogger(__name__)

#: Free parameters of each fit geometry.
N_PARAMS = {"shift": 2, "rshift": 3, "rscale": 4, "general": 6}


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


def entry_corrector(entry, wcs=None):
    """`make_corrector` of an alignment entry (``wcs``: another WCS of that image)."""
    return make_corrector(entry["wcs"] if wcs is None else wcs, entry["wcsinfo"], entry["catalog"], entry["name"], entry["group_id"])


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


def linear_fit(refxy, imxy, wref, wim, fitgeom, nclip, sigma):
    """tweakwcs ``iter_linear_fit`` of ``ref = shift + matrix @ im``, shift for the origin."""
    from tweakwcs.linearfit import iter_linear_fit

    fit = iter_linear_fit(refxy, imxy, wref, wim, fitgeom=fitgeom, nclip=nclip, sigma=sigma, center=None)
    # shift for rotations about the tangent-plane origin (as tweakwcs does)
    shift = fit["shift_ld"] + fit["center_ld"] - np.dot(fit["center_ld"], fit["matrix_ld"].T)
    fit["shift"] = np.asarray(shift, dtype=np.double)
    return fit


def fit_info_of(fit, ref_idx, im_idx, fitgeom):
    """A `linear_fit` result and its pairs as a tweakwcs ``fit_info``.

    The keys tweakwcs' ``fit_info`` has and this package reads (solution
    rows, match tables): ``status``, ``fitgeom``, ``nmatches``,
    ``matched_ref_idx``, ``matched_input_idx``, ``fitmask`` and the fitted
    transformation (``matrix``, ``shift``, ``rmse``, ``mae``, ``<rot>``,
    ``<scale>``, ``rot``, ``scale``, ``skew``, ``proper_rot``, ``proper``).
    """
    return {
        "status": "SUCCESS",
        "fitgeom": fitgeom,
        "nmatches": len(ref_idx),
        "matched_ref_idx": ref_idx,
        "matched_input_idx": im_idx,
        "fitmask": np.asarray(fit["fitmask"], bool),
        **{k: fit[k] for k in ("matrix", "shift", "rmse", "mae", "<rot>", "<scale>", "rot", "scale", "skew", "proper_rot", "proper")},
    }


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
    _d_ref, j_im = cKDTree(fitted).query(ref_xy, distance_upper_bound=radius)
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


def design_matrix(xy, fitgeom):
    """Jacobians (X rows, Y rows) of a linear fit's prediction w.r.t. its parameters, at ``xy``.

    Parameters, per geometry (rotations linearised): ``shift`` (dx, dy);
    ``rshift`` (dx, dy, theta); ``rscale`` (dx, dy, theta, s); ``general``
    (dx, dy, a, b, c, d) for ``x' = x + dx + a x + b y``, ``y' = y + dy + c x + d y``.
    """
    x, y = np.asarray(xy, float).T
    one, zero = np.ones_like(x), np.zeros_like(x)
    cols = {
        "shift": ([one, zero], [zero, one]),
        "rshift": ([one, zero, -y], [zero, one, x]),
        "rscale": ([one, zero, -y, x], [zero, one, x, y]),
        "general": ([one, zero, x, y, zero, zero], [zero, one, zero, zero, x, y]),
    }[fitgeom]
    return np.column_stack(cols[0]), np.column_stack(cols[1])
