"""The global relative solve: every group's correction at once, from every overlap.

The JWST step aligns groups one after the other to a growing reference
catalog: each group needs ``minobj`` matches with what is already aligned,
and errors add up along the order. Here the corrections of all groups are
unknowns of one least-squares problem: each matched source pair of two
overlapping groups (`tweakflow.pairs`) asks that both corrected positions
agree, each match of a group with the reference catalog that its corrected
position be the catalog's. A group is thus held by all its neighbours
together, though no single neighbour shares enough stars with it.

The corrections are linear transformations (`tweakflow.fitting.N_PARAMS`
per geometry) in the tangent plane of one reference image, about each
group's centroid; with no reference catalog one group is held fixed (the
one with the most matches). The solve is robust: matches whose residual
exceeds ``sigma`` times the RMS are clipped (``nclip`` rounds), pairs left
with too few matches are dropped, and a group that fails its quality gates
(enough matches per parameter, RMS, predicted error over its images) is
left out and the solve repeated. A group no accepted pair connects to the
anchor is ``SKIPPED`` with that reason.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .fitting import N_PARAMS, design_matrix
from .quality import check_fit

__all__ = ["GroupSolution", "solve_groups", "correction_matrix", "match_variances"]

log = logging.getLogger(__name__)


class GroupSolution(dict):
    """A group's result: ``status``, ``reason``, ``matrix``, ``shift`` (tangent-plane
    units, ``ref = shift + matrix @ p``) and statistics (``n_matches``,
    ``n_used``, ``rms_mas``, ``fit_error_mas``, ``n_pairs``)."""


def correction_matrix(params, fitgeom, center):
    """(matrix, shift) about the plane's origin of a group's parameters about ``center``."""
    k = N_PARAMS[fitgeom]
    params = np.asarray(params, float)[:k]
    d = params[:2]
    if fitgeom == "shift":
        m = np.zeros((2, 2))
    elif fitgeom == "rshift":
        t = params[2]
        m = np.array([[math.cos(t) - 1.0, -math.sin(t)], [math.sin(t), math.cos(t) - 1.0]])
    elif fitgeom == "rscale":
        t, s = params[2], params[3]
        m = np.array([[s, -t], [t, s]])
    else:
        m = params[2:6].reshape(2, 2)
    matrix = np.eye(2) + m
    return matrix, d - m @ np.asarray(center, float)


def match_variances(flux_a, flux_b, weight_b=None):
    """Each matched pair's noise variance relative to the others of its kind, from the sources' fluxes.

    A centroid's error falls as one over the square root of the source's
    flux (photon noise), so a pair of two bright stars says more than a
    pair of two stars at the detection limit: the variance of a pair of
    groups is ``f_med / f_a + f_med / f_b``, normalised to a median of 1.
    A pair with a reference-catalog star (``flux_b`` NaN) is dominated by
    the catalog's own error: its variance is 1, or, when the catalog weighs
    its stars (``weight_b``, proportional to 1 / sigma^2, e.g. Gaia's with
    ``refcat.weights: errors``), ``w_med / w_b`` (median 1; infinite for a
    weight of 0, which leaves the row out of the solve, as tweakwcs leaves
    it out of a fit). Rows without fluxes (user catalogs without ``flux``)
    or weights have variance 1.
    """
    fa, fb = np.asarray(flux_a, float), np.asarray(flux_b, float)
    pair = np.isfinite(fb)
    ok = pair & np.isfinite(fa) & (fa > 0) & (fb > 0)
    var = np.ones(len(fa))
    if np.any(ok):
        fmed = float(np.median(np.r_[fa[ok], fb[ok]]))
        v = fmed / fa[ok] + fmed / fb[ok]
        var[ok] = v / np.median(v)
    wb = np.full(len(fa), np.nan) if weight_b is None else np.asarray(weight_b, float)
    weighed = ~pair & np.isfinite(wb) & (wb >= 0)
    if np.any(weighed & (wb > 0)):
        wmed = float(np.median(wb[weighed & (wb > 0)]))
        with np.errstate(divide="ignore"):
            var[weighed] = wmed / wb[weighed]
    return var


class _Problem:
    """Rows of the least-squares problem: one per matched source pair."""

    def __init__(self, ga, gb, pa, pb, pair, n_groups, fitgeom, var=None):
        self.ga, self.gb, self.pa, self.pb, self.pair = ga, gb, pa, pb, pair
        self.var = np.ones(len(ga)) if var is None else np.asarray(var, float)
        self.k = N_PARAMS[fitgeom]
        self.fitgeom = fitgeom
        self.n_groups = n_groups
        self.used = np.isfinite(self.var)  # a row of infinite variance (weight 0) says nothing
        self.centers = np.zeros((n_groups, 2))
        for g in range(n_groups):
            pos = np.vstack([pa[ga == g], pb[gb == g]])
            if len(pos):
                self.centers[g] = pos.mean(axis=0)

    def matrix(self, free):
        """Sparse design matrix and right-hand side of the used rows; ``free`` maps group -> column block (-1: fixed)."""
        from scipy.sparse import csr_matrix

        idx = np.flatnonzero(self.used)
        n, k = len(idx), self.k
        rows, cols, vals = [], [], []
        for sign, g, pos in ((1.0, self.ga[idx], self.pa[idx]), (-1.0, self.gb[idx], self.pb[idx])):
            ok = g >= 0
            blocks = np.where(ok, free[np.where(ok, g, 0)], -1)
            sel = blocks >= 0
            ax, ay = design_matrix(pos[sel] - self.centers[g[sel]], self.fitgeom)
            r = np.flatnonzero(sel)
            for j in range(k):
                rows += [2 * r, 2 * r + 1]
                cols += [blocks[sel] * k + j] * 2
                vals += [sign * ax[:, j], sign * ay[:, j]]
        a = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * n, k * int(free.max() + 1)))
        y = (self.pb[idx] - self.pa[idx]).ravel()
        return a, y, idx

    def kinds(self):
        """Row kinds: 0 a pair of groups, 1 a reference-catalog star (their noises differ)."""
        return (self.gb < 0).astype(int)


def _components(n_groups, ga, gb, used, anchors):
    """Groups connected to an anchor through used rows (refcat rows connect to every anchor)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = np.c_[ga[used], np.where(gb[used] >= 0, gb[used], n_groups)]
    graph = coo_matrix((np.ones(len(g)), (g[:, 0], g[:, 1])), shape=(n_groups + 1, n_groups + 1))
    _, label = connected_components(graph, directed=False)
    keep = {label[a] for a in anchors}
    return np.array([label[i] in keep for i in range(n_groups)])


def _solve_once(prob, free, weights):
    """Weighted least squares: parameters per group (zeros for fixed ones), residuals of the used rows, normal matrix."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import spsolve

    a, y, idx = prob.matrix(free)
    w = diags(np.repeat(weights[idx], 2))
    normal = (a.T @ w @ a).tocsc()
    x = np.atleast_1d(spsolve(normal, a.T @ (w @ y)))
    params = np.zeros((prob.n_groups, prob.k))
    for g in np.flatnonzero(free >= 0):
        params[g] = x[free[g] * prob.k : (free[g] + 1) * prob.k]
    res = (a @ x - y).reshape(-1, 2)
    return params, res, idx, normal


def _clip(prob, free, nclip, sigma):
    """Solve, weighting each kind of row by its noise and clipping rows beyond
    ``sigma`` x their kind's RMS, at most ``nclip`` times.

    Pairs of groups and reference-catalog stars have different noises (a
    catalog of 5 mas against detections of 1 mas): each kind's rows weigh
    1 / RMS^2 of their residuals, re-estimated at each round, so that the
    catalog ties the mosaic as a whole and the overlaps hold the tiles
    together.
    """
    kinds = prob.kinds()
    weights = 1.0 / prob.var
    for i in range(int(nclip) + 2):
        params, res, idx, normal = _solve_once(prob, free, weights)
        r = np.hypot(*res.T) / np.sqrt(prob.var[idx])  # in units of each row's expected noise
        rms = {kd: math.sqrt(float(np.mean(r[kinds[idx] == kd] ** 2))) for kd in (0, 1) if np.any(kinds[idx] == kd)}
        new_w = np.array([1.0 / max(rms.get(kd, 1.0), 1e-9) ** 2 for kd in (0, 1)])[kinds] / prob.var
        bad = r > sigma * np.array([rms[kd] for kd in kinds[idx]])
        if i == int(nclip) + 1 or (not np.any(bad) and np.allclose(new_w, weights, rtol=0.05)):
            return params, res, idx, normal
        prob.used[idx[bad]] = False
        weights = new_w
    raise AssertionError("unreachable")


def _covariance_blocks(normal, k):
    """The inverse of each free group's diagonal k x k block of the (noise-weighted) normal matrix.

    The covariance of a group's correction with its neighbours held where
    the solve put them: how well its own overlaps tie it to the mosaic.
    (The full inverse adds the mosaic's collective freedom, which grows
    with the distance from the group held fixed and says nothing about the
    group itself.)
    """
    dense = normal.tocsr()
    n = normal.shape[0]
    blocks = np.zeros((n // k, k, k))
    for g in range(n // k):
        block = dense[g * k : (g + 1) * k, g * k : (g + 1) * k].toarray()
        blocks[g] = np.linalg.inv(block) if np.linalg.cond(block) < 1e12 else np.full((k, k), np.inf)
    return blocks


def _predicted_error(cov, corners, center, fitgeom):
    """Largest 1-sigma error of a group's correction at its footprint corners."""
    jx, jy = design_matrix(np.asarray(corners, float) - center, fitgeom)
    var = np.einsum("ij,jk,ik->i", jx, cov, jx) + np.einsum("ij,jk,ik->i", jy, cov, jy)
    return float(np.sqrt(np.max(var)))


def solve_groups(rows, n_groups, corners, *, fitgeom, nclip, sigma, pair_min, quality, limits, tps=1.0):
    """Solve for every group's correction from the matched source pairs.

    Parameters
    ----------
    rows : dict
        Arrays, one value per matched source pair: ``ga``, ``gb`` (group
        indices; ``gb = -1``: a reference-catalog star), ``pa``, ``pb``
        ((N, 2) positions in the tangent plane, through the input WCSs;
        ``pb`` of a reference star is its catalog position), ``pair`` and,
        optionally, ``var``: each row's noise variance relative to the
        others of its kind (`match_variances`: from the sources' fluxes and
        the reference catalog's weights; default 1; infinite: not used).
    n_groups : int
    corners : list of (M, 2) array
        Per group, its footprint corners in the plane (for the predicted error).
    fitgeom, nclip, sigma :
        The fit geometry, clipping rounds and clipping limit (x RMS).
    pair_min : tuple of int
        Matches a pair must keep after clipping: a pair of groups, a group
        and the reference catalog.
    quality, limits : dict
        Resolved ``quality`` block and `tweakflow.quality.gate_limits`.
    tps : float
        Arcsec per tangent-plane unit.

    Returns
    -------
    list of GroupSolution
        One per group.
    """
    prob = _Problem(rows["ga"], rows["gb"], rows["pa"], rows["pb"], rows["pair"], n_groups, fitgeom, rows.get("var"))
    base = prob.used.copy()
    excluded = {}
    for _ in range(4 * n_groups + 10):  # each round drops a pair or a group, or returns
        active = np.array([g not in excluded for g in range(n_groups)])
        prob.used = base & active[prob.ga] & ((prob.gb < 0) | active[np.maximum(prob.gb, 0)])
        fixed, connected = _anchor(prob, n_groups)
        for g in np.flatnonzero(active & ~connected):
            excluded[g] = "not connected to the rest of the mosaic by any accepted overlap" if fixed is not None else (
                "not connected to the reference catalog by any accepted overlap")
        free = np.full(n_groups, -1)
        solved = [g for g in range(n_groups) if g not in excluded and g != fixed]
        if not solved:
            break
        free[solved] = np.arange(len(solved))
        params, res, idx, normal = _clip(prob, free, nclip, sigma)
        thin = _thin_pairs(prob, pair_min)
        if len(thin):
            base &= ~np.isin(prob.pair, thin)
            continue
        stats = _group_stats(prob, res, idx, normal, free, corners, tps)
        failed = {g: "; ".join(f) for g, st in stats.items() if g != fixed and quality["enabled"] and (f := check_fit(st, limits))}
        if not failed:
            return _solutions(prob, params, stats, excluded, fixed, fitgeom)
        excluded.update(failed)
    return [GroupSolution(status="SKIPPED", reason=excluded.get(g, "no accepted overlap")) for g in range(n_groups)]


def _anchor(prob, n_groups):
    """The group held fixed (None when reference-catalog rows anchor the solve) and the groups connected to the anchor."""
    used = prob.used
    if np.any(used & (prob.gb < 0)):
        return None, _components(n_groups, prob.ga, prob.gb, used, [n_groups])
    counts = np.bincount(prob.ga[used], minlength=n_groups) + np.bincount(np.maximum(prob.gb[used], 0), weights=(prob.gb[used] >= 0), minlength=n_groups)
    fixed = int(np.argmax(counts))
    return fixed, _components(n_groups, prob.ga, prob.gb, used, [fixed])


def _thin_pairs(prob, pair_min):
    """The pairs left with fewer than their ``pair_min`` (groups, reference catalog) used matches after clipping."""
    size = int(prob.pair.max()) + 1 if len(prob.pair) else 0
    n = np.bincount(prob.pair[prob.used], minlength=size)
    with_refcat = np.zeros(size, bool)
    with_refcat[prob.pair[prob.gb < 0]] = True
    return np.flatnonzero((n > 0) & (n < np.where(with_refcat, pair_min[1], pair_min[0])))


def _group_stats(prob, res, idx, normal, free, corners, tps):
    """Per group (free or fixed, with used rows): the statistics `tweakflow.quality.check_fit` reads."""
    k = prob.k
    cov = _covariance_blocks(normal, k)  # rows weigh 1 / their noise^2: no further scale
    r_mas = 1000.0 * tps * np.hypot(*res.T)
    stats = {}
    for g in np.unique(np.r_[prob.ga[idx], prob.gb[idx][prob.gb[idx] >= 0]]):
        mine = (prob.ga[idx] == g) | (prob.gb[idx] == g)
        err = 0.0 if free[g] < 0 else 1000.0 * tps * _predicted_error(cov[free[g]], corners[g], prob.centers[g], prob.fitgeom)
        stats[int(g)] = {
            "n_used": int(mine.sum()), "n_matches": int(((prob.ga == g) | (prob.gb == g)).sum()), "fitgeom": prob.fitgeom,
            "rms_mas": float(np.sqrt(np.mean(r_mas[mine] ** 2))), "match_fraction": 1.0, "shift_arcsec": 0.0, "rotation_deg": 0.0,
            "fit_error_mas": err, "chance_log10p": -math.inf, "n_pairs": len(np.unique(prob.pair[idx][mine])),
        }
    return stats


def _solutions(prob, params, stats, excluded, fixed, fitgeom):
    out = []
    for g in range(prob.n_groups):
        if g in excluded or g not in stats:
            out.append(GroupSolution(status="SKIPPED", reason=excluded.get(g, "no accepted overlap")))
            continue
        matrix, shift = correction_matrix(params[g], fitgeom, prob.centers[g])
        st = dict(stats[g], shift_arcsec=float(np.hypot(*shift)), rotation_deg=math.degrees(math.atan2(matrix[0, 1], matrix[0, 0])))
        reason = "alignment reference (held fixed)" if g == fixed else ""
        out.append(GroupSolution(status="COMPLETE", reason=reason, matrix=matrix, shift=shift, **st))
    return out
