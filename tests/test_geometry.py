"""tweakflow.geometry: image kinds, sky positions, footprints, projections, polygons."""

import numpy as np
import pytest

from tweakflow import geometry
from tweakflow.errors import InputError
from tweakflow.synthetic import PIXEL_SCALE, make_fits_chip_wcs, make_jwst_gwcs

SHAPE = (200, 300)


@pytest.fixture(scope="module")
def gwcs_():
    wcsinfo = {"v2_ref": 120.0, "v3_ref": -527.0, "roll_ref": 30.0, "ra_ref": 53.1, "dec_ref": -27.8, "v3yangle": -0.56, "vparity": -1}
    s = PIXEL_SCALE * 1000.0
    coeffs = {"x": {"c1_0": s, "c0_1": 0.0}, "y": {"c0_1": s, "c1_0": 0.0}}
    return make_jwst_gwcs(SHAPE, coeffs, wcsinfo)


@pytest.fixture(scope="module")
def fits_wcs():
    return make_fits_chip_wcs(SHAPE, (53.1, -27.8), 30.0, 0.05)


def test_kinds_and_tangent_plane_scale(gwcs_, fits_wcs):
    assert geometry.wcs_kind(gwcs_) == "jwst" and geometry.wcs_kind(fits_wcs) == "fits"
    assert geometry.tangent_plane_scale([gwcs_, gwcs_]) == 1.0
    assert geometry.tangent_plane_scale([fits_wcs]) == pytest.approx(0.05)
    with pytest.raises(InputError, match="cannot align JWST"):
        geometry.tangent_plane_scale([gwcs_, fits_wcs])


def test_det_to_world_is_the_wcs(gwcs_, fits_wcs):
    x, y = np.array([0.0, 150.0]), np.array([0.0, 99.5])
    assert np.array_equal(np.array(geometry.det_to_world(gwcs_, x, y)), np.array(gwcs_(x, y)))
    assert np.array_equal(np.array(geometry.det_to_world(fits_wcs, x, y)), np.array(fits_wcs.all_pix2world(x, y, 0)))


@pytest.mark.parametrize("kind", ["jwst", "fits"])
def test_footprint_conventions(gwcs_, fits_wcs, kind):
    """Corner-pixel centres (the fits) vs outer edges (plots, catalog queries): half a pixel apart on each side."""
    w = gwcs_ if kind == "jwst" else fits_wcs
    ra_c, dec_c = geometry.footprint_world(w, SHAPE)
    ny, nx = SHAPE
    assert np.allclose(np.c_[ra_c, dec_c], np.c_[geometry.det_to_world(w, np.array([0, nx - 1, nx - 1, 0.0]), np.array([0, 0, ny - 1, ny - 1.0]))])
    ra_e, dec_e = geometry.footprint_world(w, SHAPE, edges=True)
    pts = np.c_[geometry.gnomonic(ra_e, dec_e, ra_c.mean(), dec_c.mean())] * 3600.0
    inner = np.c_[geometry.gnomonic(ra_c, dec_c, ra_c.mean(), dec_c.mean())] * 3600.0
    area = lambda p: 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))  # noqa: E731
    scale = 0.05 if kind == "fits" else PIXEL_SCALE
    if kind == "jwst":
        # outer edges: (nx x ny) pixels; centres: (nx-1) x (ny-1)
        assert area(pts) == pytest.approx(nx * ny * scale**2, rel=1e-3)
    assert area(inner) == pytest.approx((nx - 1) * (ny - 1) * scale**2, rel=1e-3)


def test_gnomonic_and_mean_direction():
    xi, eta = geometry.gnomonic(np.array([10.0, 10.0 + 1 / 3600.0]), np.array([0.0, 0.0]), 10.0, 0.0)
    assert xi[0] == 0.0 and eta[0] == 0.0 and xi[1] * 3600.0 == pytest.approx(1.0, rel=1e-9)
    ra, dec = geometry.mean_direction(np.array([359.0, 1.0]), np.array([10.0, 10.0]))
    assert ra == pytest.approx(0.0, abs=1e-9) or ra == pytest.approx(360.0, abs=1e-9)
    assert 10.0 < dec < 10.002  # the great circle between them bulges towards the pole


def test_inside_any_polygons():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    far = square + 5.0
    px = np.array([0.5, 5.5, 2.0, np.nan])
    py = np.array([0.5, 5.5, 2.0, 0.5])
    assert list(geometry.inside_any(px, py, [square, far])) == [True, True, False, False]
    assert list(geometry.in_polygon(px[:3], py[:3], square)) == [True, False, False]


def test_to_tangent_plane_of_a_corrector(gwcs_):
    from tweakflow.fitting import make_corrector

    info = {"v2_ref": 120.0, "v3_ref": -527.0, "roll_ref": 30.0}
    corr = make_corrector(gwcs_, info, None, "a", "g")
    ra, dec = geometry.footprint_world(gwcs_, SHAPE)
    tp = geometry.to_tangent_plane(corr, (ra, dec))
    assert tp.shape == (4, 2) and np.all(np.isfinite(tp))
    # tangent-plane units of a JWST corrector are arcsec: the sides are the detector's size
    assert np.hypot(*(tp[1] - tp[0])) == pytest.approx((SHAPE[1] - 1) * PIXEL_SCALE, rel=1e-2)


def test_unit_vectors_and_angles():
    v = geometry.unit_vectors([0.0, 90.0, 10.0], [0.0, 0.0, 90.0])
    assert np.allclose(v, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-15)
    # 1 mas apart at Dec 60: the angle is accurate at that scale
    a = geometry.unit_vectors([150.0, 150.0 + 1e-3 / 3.6e6 / np.cos(np.radians(60.0))], [60.0, 60.0])
    assert geometry.angle_between(a[:1], a[1])[0] == pytest.approx(np.radians(1e-3 / 3.6e6), rel=1e-6)
    assert geometry.angle_between(v[0], v[1]) == pytest.approx(np.pi / 2)


def test_enclosing_cone_across_ra_zero_and_for_the_whole_sky():
    centre, radius = geometry.enclosing_cone([359.9, 0.1, 0.0], [0.0, 0.0, 0.05])
    ra_c = np.degrees(np.arctan2(centre[1], centre[0])) % 360.0
    assert min(ra_c, 360.0 - ra_c) < 0.05
    assert np.degrees(radius) == pytest.approx(0.1, abs=0.02)
    assert geometry.enclosing_cone([0.0, 90.0, 180.0, 270.0], [0.0, 0.0, 0.0, 0.0]) is None
