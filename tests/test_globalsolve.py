"""tweakflow.globalsolve: every group's correction at once, against a simulated mosaic's truth."""

import math

import numpy as np
import pytest

from tweakflow.fitting import design_matrix
from tweakflow.globalsolve import correction_matrix, match_variances, solve_groups
from tweakflow.quality import gate_limits, resolve_quality

SIZE, STEP = 31.7, 22.0  # arcsec: tile side, grid step (~30% overlap)


def _mosaic(cols, rows, seed=1, noise=0.001, per_tile=40, refcat_noise=None):
    """Matched source pairs of a grid of tiles with pointing errors (shift + roll), in arcsec."""
    rng = np.random.default_rng(seed)
    n = cols * rows
    centers = np.array([[(g % cols) * STEP, (g // cols) * STEP] for g in range(n)])
    shift, rot = rng.normal(0, 0.5, (n, 2)), rng.normal(0, 1.5e-4, n)
    lo, hi = centers.min(axis=0) - SIZE / 2, centers.max(axis=0) + SIZE / 2
    stars = rng.uniform(lo, hi, (int(per_tile * np.prod(hi - lo) / SIZE**2), 2))

    def observed(g, p):  # the input WCS: true = R (obs - c) + c + shift
        c, t = centers[g], rot[g]
        r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        return (p - c - shift[g]) @ r + c

    cats = []
    for g in range(n):
        idx = np.flatnonzero(np.all(np.abs(stars - centers[g]) < SIZE / 2, axis=1))
        cats.append((idx, observed(g, stars[idx]) + rng.normal(0, noise, (len(idx), 2))))
    out = {"ga": [], "gb": [], "pa": [], "pb": [], "pair": []}
    pair = 0
    for a in range(n):
        others = [(b, cats[b]) for b in range(a + 1, n)]
        if refcat_noise is not None:
            others.append((-1, (np.arange(len(stars)), stars + rng.normal(0, refcat_noise, stars.shape))))
        for b, (ib, ob) in others:
            common, xa, xb = np.intersect1d(cats[a][0], ib, return_indices=True)
            if len(common) < 4:
                continue
            out["ga"] += [a] * len(common)
            out["gb"] += [b] * len(common)
            out["pa"].append(cats[a][1][xa])
            out["pb"].append(ob[xb])
            out["pair"] += [pair] * len(common)
            pair += 1
    rows = {k: np.vstack(v) if k in ("pa", "pb") else np.array(v) for k, v in out.items()}
    corners = [centers[g] + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * SIZE / 2 for g in range(n)]
    return rows, corners, centers, observed


def _solve(rows, corners, n, **quality):
    q = resolve_quality(quality)
    return solve_groups(rows, n, corners, fitgeom="rshift", nclip=3, sigma=3.0, pair_min=(4, 3), quality=q, limits=gate_limits(q, 0.7))


GRID = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), -1).reshape(-1, 2) * SIZE / 2


def _corrected(sols, centers, observed):
    """Per tile, a grid of true positions and where the corrected WCS puts them."""
    true = [centers[g] + GRID for g in range(len(sols))]
    return true, [observed(g, t) @ s["matrix"].T + s["shift"] for g, (s, t) in enumerate(zip(sols, true))]


def _absolute_mas(sols, centers, observed):
    """Per tile, the RMS error (mas) over its grid."""
    true, got = _corrected(sols, centers, observed)
    return np.array([1000.0 * np.sqrt(np.mean(np.sum((g - t) ** 2, axis=1))) for t, g in zip(true, got)])


def _relative_mas(sols, centers, observed):
    """Per tile, the RMS error (mas) after removing the one rigid transformation
    common to all tiles (as `tweakflow.metrics.relative_errors`)."""
    true, got = _corrected(sols, centers, observed)
    t_all, g_all = np.vstack(true), np.vstack(got)
    gm, tm = g_all.mean(axis=0), t_all.mean(axis=0)
    u, _, vt = np.linalg.svd((g_all - gm).T @ (t_all - tm))
    r = vt.T @ np.diag([1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    return np.array([1000.0 * np.sqrt(np.mean(np.sum(((g - gm) @ r.T + tm - t) ** 2, axis=1))) for t, g in zip(true, got)])


def test_relative_mosaic_every_tile_within_the_noise():
    rows, corners, centers, observed = _mosaic(7, 7)
    sols = _solve(rows, corners, 49)
    assert [s["status"] for s in sols] == ["COMPLETE"] * 49
    assert sum("held fixed" in s["reason"] for s in sols) == 1
    err = _relative_mas(sols, centers, observed)
    assert np.max(err) < 2.0, err


def test_reference_catalog_anchors_every_tile_absolutely():
    rows, corners, centers, observed = _mosaic(5, 5, seed=2, refcat_noise=0.005)
    sols = _solve(rows, corners, 25)
    assert all(s["status"] == "COMPLETE" and "fixed" not in s["reason"] for s in sols)
    err = _absolute_mas(sols, centers, observed)
    assert np.max(err) < 2.0, err


def test_an_isolated_group_is_skipped_with_the_reason():
    rows, corners, _, _ = _mosaic(4, 4, seed=3)
    cut = (rows["ga"] == 15) | (rows["gb"] == 15)  # the far corner loses every overlap
    rows = {k: v[~cut] for k, v in rows.items()}
    sols = _solve(rows, corners, 16)
    assert sols[15]["status"] == "SKIPPED" and "not connected" in sols[15]["reason"]
    assert sum(s["status"] == "COMPLETE" for s in sols) == 15


def test_a_false_pair_is_clipped():
    rows, corners, centers, observed = _mosaic(4, 4, seed=4)
    bad = np.flatnonzero(rows["pair"] == rows["pair"][rows["ga"] == 5][0])
    rows["pb"][bad[:3]] += [0.4, -0.3]  # three false matches of 0.5 arcsec
    sols = _solve(rows, corners, 16)
    assert np.max(_relative_mas(sols, centers, observed)) < 2.0


def test_too_few_matches_for_the_geometry_fail_the_gate():
    rows, corners, _, _ = _mosaic(3, 1, seed=5, per_tile=25)
    sols = _solve(rows, corners, 3, min_matches=40)
    assert all(s["status"] == "SKIPPED" for s in sols if "fixed" not in s.get("reason", ""))
    assert any("sources used in the fit" in s["reason"] for s in sols)


@pytest.mark.parametrize(
    "fitgeom, params",
    [("shift", [0.1, -0.2]), ("rshift", [0.1, -0.2, 1e-4]), ("rscale", [0.1, -0.2, 1e-4, 2e-5]), ("general", [0.1, -0.2, 1e-5, 2e-5, -3e-5, 4e-5])],
)
def test_correction_matrix_is_the_linear_model_about_the_centre(fitgeom, params):
    """matrix @ p + shift moves p by the design matrix's prediction about the group's centre (rotations to first order)."""
    center = np.array([30.0, -20.0])
    matrix, shift = correction_matrix(params, fitgeom, center)
    p = np.array([[35.0, -25.0], [10.0, 4.0], [-60.0, 80.0]])
    ax, ay = design_matrix(p - center, fitgeom)
    assert np.allclose(p @ matrix.T + shift - p, np.c_[ax @ params, ay @ params], rtol=0, atol=1e-6)


def test_match_variances_of_weighted_reference_stars():
    """A reference star's variance is w_med / w (a catalog with weights, e.g. Gaia's errors); weight 0: infinite."""
    nan = np.nan
    var = match_variances([1.0] * 6, [1.0, nan, nan, nan, nan, nan], [nan, 1.0, 2.0, 4.0, 0.0, nan])
    assert var[0] == pytest.approx(1.0)  # a pair of groups: from the fluxes only
    np.testing.assert_allclose(var[1:4], [2.0, 1.0, 0.5])  # median weight 2
    assert np.isinf(var[4]) and var[5] == 1.0  # weight 0: not used; no weight: 1
    assert np.all(match_variances([1.0], [nan]) == 1.0)  # no weights: every reference star the same


def test_reference_star_weights_reach_the_solve():
    """40% of the reference stars are 50 mas off (one direction) and their catalog errors say so:
    weighted by those errors the solve ends near the truth, unweighted it is pulled by ~20 mas."""
    rows, corners, centers, observed = _mosaic(3, 3, seed=6, refcat_noise=0.005)
    ref = np.flatnonzero(rows["gb"] < 0)
    bad = ref[np.random.default_rng(11).random(len(ref)) < 0.4]
    rows["pb"][bad] += 0.050 / math.sqrt(2)
    sigma2 = np.where(np.isin(ref, bad), 2 * 50.0**2, 2 * 5.0**2)  # mas^2: ra_error^2 + dec_error^2
    weight_b = np.full(len(rows["ga"]), np.nan)
    weight_b[ref] = 1.0 / sigma2
    flux_b = np.where(rows["gb"] < 0, np.nan, 1.0)
    unweighted = _absolute_mas(_solve(dict(rows, var=match_variances(np.ones(len(flux_b)), flux_b)), corners, 9), centers, observed)
    weighted = _absolute_mas(_solve(dict(rows, var=match_variances(np.ones(len(flux_b)), flux_b, weight_b)), corners, 9), centers, observed)
    print(f"unweighted {unweighted.min():.1f}-{unweighted.max():.1f} mas, weighted {weighted.min():.2f}-{weighted.max():.2f} mas")
    assert np.min(unweighted) > 10.0, unweighted
    assert np.max(weighted) < 3.0, weighted
