"""tweakflow.fitting: the linear fit, its refinement, fit_info, correctors."""

import numpy as np
import pytest

from tweakflow.fitting import fit_info_of, linear_fit, refine_fit, refine_matches, refine_radius


def test_refinement_repeats_until_the_false_pairs_are_gone():
    """False pairs outside the true pairs' area bias a general fit; one round keeps some, refine_fit drops all."""
    rng = np.random.default_rng(3)
    true_shift = np.array([0.075, -0.02])
    im = rng.uniform(0, 30, (30, 2))  # 30 true pairs in one corner (arcsec), 3 mas noise
    ref = im + true_shift + rng.normal(0, 0.003, im.shape)
    far = np.array([[45.0, 40.0], [-10.0, 35.0], [40.0, -8.0]])  # 3 false pairs, 0.1-0.25 arcsec off, high leverage
    im = np.vstack([im, far])
    ref = np.vstack([ref, far + true_shift + [[0.25, 0.05], [0.15, -0.1], [0.1, 0.08]]])
    pairs = (np.arange(len(ref)), np.arange(len(im)))

    def fitter(ri, ii):
        return linear_fit(ref[ri], im[ii], None, None, "general", 3, (3.0, "rmse"))

    def far_error(fit):
        return 1000 * np.max(np.hypot(*(fit["shift"] + far @ fit["matrix"].T - far - true_shift).T))

    first = fitter(*pairs)
    one_round = refine_fit(ref, im, first, pairs, fitter, 0.02, 0.7, 15, max_iter=1)
    fit, _ri, ii, radius = refine_fit(ref, im, first, pairs, fitter, 0.02, 0.7, 15)
    assert set(one_round[2]) - set(range(30))  # a single round keeps false pairs
    assert set(ii) == set(range(30)) and radius < 0.05
    assert far_error(fit) < 0.2 * far_error(one_round[0]), (far_error(fit), far_error(one_round[0]))


def test_linear_fit_and_fit_info():
    rng = np.random.default_rng(5)
    im = rng.uniform(-50, 50, (40, 2))
    ang = np.deg2rad(0.02)
    matrix = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    ref = np.array([0.3, -0.1]) + im @ matrix.T
    fit = linear_fit(ref, im, None, None, "rshift", 3, (3.0, "rmse"))
    assert np.allclose(fit["shift"], [0.3, -0.1], atol=1e-9) and fit["<rot>"] == pytest.approx(-0.02, abs=1e-9)  # tweakwcs: rotation of the frame, not of the points
    idx = np.arange(40)
    info = fit_info_of(fit, idx, idx, "rshift")
    assert info["status"] == "SUCCESS" and info["nmatches"] == 40 and info["fitmask"].dtype == bool
    assert info["fitgeom"] == "rshift" and np.array_equal(info["matrix"], fit["matrix"])


def test_refine_matches_are_mutual_nearest_neighbours_within_the_radius():
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    im = np.array([[0.01, 0.0], [0.02, 0.0], [1.0, 0.05], [9.0, 9.0]])
    r, i = refine_matches(ref, im, np.eye(2), np.zeros(2), 0.1)
    assert sorted(zip(r.tolist(), i.tolist())) == [(0, 0), (1, 2)]
    assert refine_radius(np.zeros((5, 2)), 0.02, 0.7) == 0.02
    assert refine_radius(np.full((5, 2), 10.0), 0.02, 0.7) == 0.7
