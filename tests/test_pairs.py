"""tweakflow.pairs: overlapping pairs of a mosaic, and each pair's matching with its gates."""

import numpy as np
import pytest

from tweakflow.pairs import match_pair, overlapping_pairs, pair_min_matches
from tweakflow.params import RELATIVE_PARS
from tweakflow.quality import gate_limits, resolve_quality

DEG = 1.0 / 3600.0


def _square(ra0, dec0, size_arcsec=31.7):
    h = 0.5 * size_arcsec * DEG
    return np.array([[ra0 - h, dec0 - h], [ra0 + h, dec0 - h], [ra0 + h, dec0 + h], [ra0 - h, dec0 + h]])


def test_grid_neighbours_overlap_and_others_do_not():
    step = 22.0 * DEG
    groups = {f"g{i}{j}": [_square(10.0 + i * step, j * step)] for j in range(3) for i in range(3)}
    pairs = overlapping_pairs(groups)
    # 3 x 3 grid: 12 edge neighbours and 8 diagonal ones (their corners overlap by ~10")
    assert len(pairs) == 20
    assert ("g00", "g10") in pairs and ("g00", "g11") in pairs and ("g00", "g20") not in pairs
    assert all(list(groups).index(a) < list(groups).index(b) for a, b in pairs)
    assert overlapping_pairs({"a": [_square(10.0, 0.0)]}) == []


def _sides(rng, n_common, offset_arcsec, n_own=30, noise_arcsec=0.001):
    """Two overlapping tiles sharing ``n_common`` stars; side b's positions offset by ``offset_arcsec``."""
    fa, fb = _square(10.0, 0.0), _square(10.0 + 22.0 * DEG, 0.0)
    common = np.c_[rng.uniform(10.0 + 6.5 * DEG, 10.0 + 15.5 * DEG, n_common), rng.uniform(-15 * DEG, 15 * DEG, n_common)]
    own_a = np.c_[rng.uniform(10.0 - 15 * DEG, 10.0 + 5 * DEG, n_own), rng.uniform(-15 * DEG, 15 * DEG, n_own)]
    own_b = np.c_[rng.uniform(10.0 + 17 * DEG, 10.0 + 37 * DEG, n_own), rng.uniform(-15 * DEG, 15 * DEG, n_own)]
    a = np.vstack([common, own_a]) + rng.normal(0, noise_arcsec * DEG, (n_common + n_own, 2))
    b = np.vstack([common, own_b]) + np.array(offset_arcsec) * DEG + rng.normal(0, noise_arcsec * DEG, (n_common + n_own, 2))
    side = lambda xy, fp: {"ra": xy[:, 0], "dec": xy[:, 1], "footprints": [fp], "pixel_scale": 0.031}  # noqa: E731
    return side(a, fa), side(b, fb)


@pytest.fixture
def pars():
    q = resolve_quality(None)
    return dict(RELATIVE_PARS), q, gate_limits(q, RELATIVE_PARS["tolerance"])


def test_a_pair_sharing_few_stars_is_matched(pars):
    p, q, limits = pars
    a, b = _sides(np.random.default_rng(1), 9, (0.6, -0.4))
    res = match_pair(a, b, p, q, limits)
    assert res["accepted"], res["reason"]
    assert len(res["idx_a"]) == 9 and set(res["idx_a"]) == set(range(9)) and np.array_equal(res["idx_a"], res["idx_b"])
    assert res["stats"]["dx_mas"] == pytest.approx(600.0, abs=3.0) and res["stats"]["dy_mas"] == pytest.approx(-400.0, abs=3.0)
    assert res["stats"]["chance_log10p"] < -6


def test_an_offset_beyond_searchrad_is_found_with_the_wider_radius(pars):
    p, q, limits = pars
    a, b = _sides(np.random.default_rng(2), 12, (3.5, 1.0))
    res = match_pair(a, b, p, q, limits)
    assert res["accepted"] and res["stats"]["attempts"] == 2 and res["stats"]["searchrad"] == 6.0


def test_unrelated_catalogs_are_rejected(pars):
    p, q, limits = pars
    rng = np.random.default_rng(3)
    a, _ = _sides(rng, 40, (0.0, 0.0))
    _, b = _sides(np.random.default_rng(4), 40, (0.0, 0.0))  # other stars in the same place
    res = match_pair(a, b, p, q, limits)
    assert not res["accepted"] and res["reason"]


def test_too_few_sources_in_the_overlap(pars):
    p, q, limits = pars
    a, b = _sides(np.random.default_rng(5), 2, (0.1, 0.1))
    res = match_pair(a, b, p, q, limits)
    assert not res["accepted"] and ("sources in the overlap" in res["reason"] or "matches" in res["reason"])
    assert pair_min_matches(q) == 6
