"""Source detection: accuracy against synthetic truth, every parameter family, edge cases."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tweakflow import synthetic
from tweakflow.detection import (
    DEFAULT_DETECTION_PARS,
    detect_sources,
    estimate_background,
    find_local_peaks,
    min_separation_pixels,
)
from tweakflow.errors import ConfigError
from tweakflow.io import read_image

MAS_PER_PX = synthetic.PIXEL_SCALE * 1000.0


@pytest.fixture(scope="module")
def image_and_truth(small_dataset):
    """The first SMALL image, and the true pixel positions and fluxes of the stars on it."""
    path = small_dataset["images"][0]
    im = read_image(path)
    truth, _, stars = synthetic.load_truth(small_dataset["truth"], stars=True)
    tw = truth[path.rsplit("/", 1)[1]]
    xs, ys = synthetic.world_to_pixel_exact(tw, stars["ra"], stars["dec"])
    flux = 10 ** (-0.4 * (np.asarray(stars["mag"]) - 25.0)) * 400.0
    return im, np.c_[xs, ys], flux


def star_image(shape, xs, ys, fluxes, fwhm=2.5, noise=1.0, seed=0):
    """Gaussian stars (pixel-centre sampled) on white noise."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    s = fwhm / 2.3548
    img = np.random.default_rng(seed).normal(0, noise, shape)
    for x, y, f in zip(xs, ys, fluxes):
        img += f / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def pairs_image():
    """Pairs of stars 7 px apart with flux ratios 1 ... 0.02: deblending decides their number."""
    xs, ys, fs = [], [], []
    for i, ratio in enumerate([1, 0.5, 0.2, 0.1, 0.05, 0.02]):
        for j in range(3):
            x0, y0 = 30 + i * 40, 30 + j * 40
            xs += [x0, x0 + 7.0]
            ys += [y0, y0 + 1.0]
            fs += [2000, 2000 * ratio]
    return star_image((160, 280), xs, ys, fs)


# ---------------------------------------------------------------------------
# accuracy against truth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finder,max_err_mas,min_found",
    [("iraf", 2.0, 100), ("dao", 2.5, 20), ("segmentation", 3.0, 40)],
)
def test_finders_recover_true_positions(image_and_truth, finder, max_err_mas, min_found):
    im, truexy, _ = image_and_truth
    cat, reason = detect_sources(im.data, im.dq, starfinder=finder)
    assert reason is None
    assert len(cat) >= min_found
    d, _ = cKDTree(truexy).query(np.c_[cat["x"], cat["y"]])
    assert np.mean(d < 0.5) > 0.95  # almost every source is a true star
    assert np.median(d) * MAS_PER_PX < max_err_mas


def test_iraf_finds_the_brightest_true_stars(image_and_truth):
    """brightest=200 keeps the brightest stars: every isolated bright star on the image is found."""
    im, truexy, flux = image_and_truth
    ny, nx = im.shape
    cat, _ = detect_sources(im.data, im.dq)
    inside = (truexy[:, 0] > 5) & (truexy[:, 0] < nx - 6) & (truexy[:, 1] > 5) & (truexy[:, 1] < ny - 6)
    tree = cKDTree(truexy)
    isolated = np.array([len(tree.query_ball_point(p, 6.0)) == 1 for p in truexy])
    bright = inside & isolated & (flux > 2e4) & (flux < 1e6)  # not saturating the roundness cut
    d, _ = cKDTree(np.c_[cat["x"], cat["y"]]).query(truexy[bright])
    assert bright.sum() > 10
    assert np.mean(d < 0.5) > 0.9


def test_masked_pixel_inside_a_star_is_filled(image_and_truth):
    """A DO_NOT_USE pixel on a star's core neither loses the star nor drags its centroid."""
    im, truexy, flux = image_and_truth
    ny, nx = im.shape
    ok = (truexy[:, 0] > 20) & (truexy[:, 0] < nx - 20) & (truexy[:, 1] > 20) & (truexy[:, 1] < ny - 20)
    k = np.flatnonzero(ok & (flux > 5e4) & (flux < 2e5))[0]
    x, y = truexy[k]
    data = im.data.copy()
    dq = im.dq.copy()
    iy, ix = round(y), round(x) + 1
    data[iy, ix] = 6e4  # a hot pixel next to the star's peak
    dq[iy, ix] |= 1
    cat, _ = detect_sources(data, dq, brightest=None)
    d = np.hypot(cat["x"] - x, cat["y"] - y)
    assert d.min() * MAS_PER_PX < 5.0


def test_masked_pixels_are_ignored():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (200, 200)).astype(np.float32)
    data[100, 100] = 1e5  # a hot pixel flagged DO_NOT_USE
    data[150, 40] = 1e5  # a pixel flagged NON_SCIENCE
    dq = np.zeros(data.shape, np.uint32)
    dq[100, 100] = 1
    dq[150, 40] = 512
    data[50:60, 50:60] = np.nan
    cat, _reason = detect_sources(data, dq, bkg_boxsize=50)
    assert len(cat) == 0 or np.all(np.hypot(cat["x"] - 100, cat["y"] - 100) > 3)
    assert len(cat) == 0 or np.all(np.hypot(cat["x"] - 40, cat["y"] - 150) > 3)


# ---------------------------------------------------------------------------
# the fast paths give photutils' results
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_local_peaks_equal_photutils_find_peaks(radius):
    from photutils.detection import find_peaks

    rng = np.random.default_rng(radius)
    conv = rng.normal(0, 1, (120, 150)).astype(np.float32)
    conv[::17, ::23] += 8.0
    conv[40, 41] = conv[40, 43] = 9.0  # a tie
    thr = np.full(conv.shape, 1.5, np.float32)
    thr[:, 75:] = 2.5
    mask = rng.uniform(size=conv.shape) < 0.01
    ours = find_local_peaks(conv, thr, radius, mask=mask)
    ref = find_peaks(conv, thr, min_separation=radius, mask=mask)
    assert sorted(map(tuple, ours.tolist())) == sorted(zip(ref["x_peak"].tolist(), ref["y_peak"].tolist()))


@pytest.mark.parametrize("finder", ["iraf", "dao"])
def test_star_finders_equal_plain_photutils(image_and_truth, finder):
    """Peaks handed over as xycoords give exactly the star finder's own catalog."""
    from tweakflow import detection

    im, _, _ = image_and_truth
    mask = detection.bad_pixel_mask(im.data, im.dq)
    bkg, rms = estimate_background(im.data, mask, 400)
    _, data_sub = detection._smooth_and_fill(im.data - bkg, mask, 2.5, smoothed=False)
    pars = dict(DEFAULT_DETECTION_PARS, starfinder=finder, brightest=None)
    ours = detection._run_starfinder(finder, data_sub, mask, 10 * rms, pars)
    plain = detection._starfinder(finder, 10 * rms, pars)(data_sub, mask=mask)
    assert len(ours) == len(plain) > 20
    np.testing.assert_array_equal(ours["x"], plain["x_centroid"])
    np.testing.assert_array_equal(ours["flux"], plain["flux"])


def test_background_matches_full_resolution_background2d():
    """The subsampled mesh statistics agree with photutils on every pixel."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    yy, xx = np.mgrid[0:1200, 0:1000]
    rng = np.random.default_rng(3)
    data = (5.0 + 0.01 * xx + 0.005 * yy + rng.normal(0, 2.0 + yy / 1200.0, yy.shape)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    bkg, rms = estimate_background(data, mask, 400)
    ref = Background2D(data, 400, sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground(), filter_size=(3, 3))
    scale = np.median(ref.background_rms)
    assert np.max(np.abs(bkg - ref.background)) < 0.1 * scale
    assert np.max(np.abs(rms - ref.background_rms)) < 0.05 * scale


def test_min_separation_follows_the_jwst_rule():
    assert min_separation_pixels(0.0, 2.5) == 2
    assert min_separation_pixels(2.0, 2.5) == 5
    assert min_separation_pixels(1.0, 3.1) == 3


# ---------------------------------------------------------------------------
# every parameter family changes the result
# ---------------------------------------------------------------------------


def _positions(cat):
    return sorted(zip(np.round(cat["x"], 6).tolist(), np.round(cat["y"], 6).tolist()))


@pytest.mark.parametrize(
    "finder,change",
    [
        ("iraf", {"snr_threshold": 30.0}),
        ("iraf", {"kernel_fwhm": 4.0}),
        ("iraf", {"bkg_boxsize": 50}),
        ("iraf", {"minsep_fwhm": 6.0}),
        ("iraf", {"sigma_radius": 1.5}),
        ("iraf", {"sharplo": 0.8}),
        ("iraf", {"sharphi": 0.9}),
        ("iraf", {"roundlo": 0.1}),
        ("iraf", {"roundhi": 0.05}),
        ("dao", {"snr_threshold": 5.0}),
        ("dao", {"minsep_fwhm": 6.0}),
        ("dao", {"roundlo": -1.0, "roundhi": 1.0}),
        ("dao", {"sharplo": 0.8}),
        ("segmentation", {"snr_threshold": 30.0}),
        ("segmentation", {"npixels": 30}),
        ("segmentation", {"kernel_fwhm": 4.0}),
    ],
)
def test_detection_parameters_change_the_catalog(image_and_truth, finder, change):
    im, _, _ = image_and_truth
    base, _ = detect_sources(im.data, im.dq, starfinder=finder, brightest=None)
    new, _ = detect_sources(im.data, im.dq, starfinder=finder, brightest=None, **change)
    assert _positions(new) != _positions(base)


def test_brightest_and_peakmax(image_and_truth):
    im, _, _ = image_and_truth
    cat, _ = detect_sources(im.data, im.dq, brightest=25)
    assert len(cat) == 25
    full, _ = detect_sources(im.data, im.dq, brightest=None)
    assert len(full) > 25
    assert np.min(cat["flux"]) >= np.sort(full["flux"])[-25] - 1e-6
    cut = float(np.median(full["peak"]))
    capped, _ = detect_sources(im.data, im.dq, brightest=None, peakmax=cut)
    assert np.all(capped["peak"] < cut)  # peak >= peakmax is dropped
    assert len(capped) < len(full)
    # brightest and peakmax belong to the star finders, not to segmentation
    seg, _ = detect_sources(im.data, im.dq, starfinder="segmentation", brightest=None)
    seg5, _ = detect_sources(im.data, im.dq, starfinder="segmentation", brightest=5, peakmax=cut)
    assert len(seg5) == len(seg) > 5


def test_deblending_parameters(pairs_image):
    def count(**kw):
        cat, reason = detect_sources(pairs_image, None, starfinder="segmentation", bkg_boxsize=64, **kw)
        assert reason is None
        return len(cat)

    n = count()
    assert count(deblend=False) < n
    assert count(contrast=0.45) < n
    assert count(nlevels=1) < n
    assert count(nlevels=4, multithresh_mode="linear") != count(nlevels=4, multithresh_mode="exponential")
    assert count(multithresh_mode="sinh") >= count(deblend=False)


def test_connectivity():
    """Two blocks touching at a corner: one source with 8-connectivity, two with 4."""
    img = np.random.default_rng(1).normal(0, 1, (64, 64)).astype(np.float32)
    img[20:23, 20:23] += 100
    img[23:26, 23:26] += 100
    kw = dict(starfinder="segmentation", kernel_fwhm=0.3, npixels=5, deblend=False, bkg_boxsize=32)
    assert len(detect_sources(img, None, connectivity=8, **kw)[0]) == 1
    assert len(detect_sources(img, None, connectivity=4, **kw)[0]) == 2


def test_kron_parameters_shape_kron_fluxes(pairs_image):
    def kron(**kw):
        cat, _ = detect_sources(pairs_image, None, starfinder="segmentation", bkg_boxsize=64, **kw)
        return np.asarray(cat["kron_flux"])

    base = kron()
    assert np.allclose(base, kron(kron_params=[2.5, 1.4, 0.0]), equal_nan=True)  # None means the spec's default
    for change in ({"kron_params": [1.5, 1.0, 0.0]}, {"localbkg_width": 5}, {"apermask_method": "none"}, {"apermask_method": "mask"}):
        assert not np.allclose(base, kron(**change), equal_nan=True), change


# ---------------------------------------------------------------------------
# edge cases and errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("finder", ["iraf", "dao", "segmentation"])
@pytest.mark.parametrize(
    "data,dq,expect",
    [
        (np.full((100, 100), 3.0, np.float32), None, "constant"),
        (np.full((100, 100), np.nan, np.float32), None, "masked"),
        (np.zeros((2, 2), np.float32), None, "smaller"),
        (np.random.default_rng(1).normal(0, 1, (100, 100)).astype(np.float32), None, "no sources"),
        (np.ones((50, 50), np.float32), np.ones((50, 50), np.uint32), "masked"),
        (np.ones((50, 50), np.float32), np.full((50, 50), 512, np.uint32), "masked"),
        (np.random.default_rng(2).normal(0, 1, (3, 40)).astype(np.float32), None, "smaller"),
    ],
)
def test_edge_cases_give_empty_catalog_and_reason(data, dq, expect, finder):
    cat, reason = detect_sources(data, dq, bkg_boxsize=400, starfinder=finder)
    assert len(cat) == 0
    assert set(cat.colnames) >= {"id", "x", "y", "flux"}
    assert expect in reason


def _random_stars(n=60, size=400, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(10, size - 10, n), rng.uniform(10, size - 10, n), rng.uniform(500, 5000, n)


@pytest.mark.parametrize("finder", ["iraf", "segmentation"])
def test_noise_free_image_finds_its_stars(finder):
    """Zero background RMS everywhere: threshold zero, every star found (as the JWST step finds them)."""
    xs, ys, fs = _random_stars()
    img = star_image((400, 400), xs, ys, fs, noise=0.0) + 10.0
    cat, reason = detect_sources(img, starfinder=finder)
    assert reason is None
    d, _ = cKDTree(np.c_[xs, ys]).query(np.c_[cat["x"], cat["y"]])
    assert np.sum(d < 0.5) >= 58 and np.mean(d < 0.5) > 0.95


@pytest.mark.parametrize("finder", ["iraf", "segmentation"])
def test_constant_unflagged_region_keeps_the_other_sources(finder):
    """Mesh boxes of zero RMS in a noisy image: the stars elsewhere are found, none in the region."""
    xs, ys, fs = _random_stars()
    img = star_image((400, 400), xs, ys, fs, noise=1.0)
    img[:250, :250] = 3.0  # constant, not flagged in any DQ
    cat, reason = detect_sources(img, starfinder=finder, bkg_boxsize=50)
    assert reason is None
    outside = ~((xs < 250) & (ys < 250))
    d, _ = cKDTree(np.c_[cat["x"], cat["y"]]).query(np.c_[xs, ys][outside])
    assert np.mean(d < 0.5) > 0.95
    assert not np.any((cat["x"] < 245) & (cat["y"] < 245))


def test_mostly_masked_image_uses_one_background_box(caplog):
    """No mesh box has enough good pixels: the whole image is one box (as the JWST step does)."""
    img = star_image((300, 300), [145.0, 75.0], [155.0, 225.0], [5000.0, 5000.0], seed=2)
    yy, xx = np.mgrid[0:300, 0:300]
    dq = ((yy // 10 + xx // 10) % 2 == 0).astype(np.uint32)  # 10-px checkerboard: every box 50% masked
    with caplog.at_level("INFO", logger="tweakflow.detection"):
        cat, reason = detect_sources(img, dq, bkg_boxsize=100)
    assert "whole image" in caplog.text
    assert reason is None
    assert len(cat) == 2
    assert np.allclose(sorted(cat["x"]), [75.0, 145.0], atol=0.1)


def test_bounding_box_drops_outside_sources():
    img = star_image((100, 100), [20.0, 80.0], [50.0, 50.0], [3000.0, 3000.0])
    cat, _ = detect_sources(img, None, bkg_boxsize=50, bounding_box=((0, 50), (0, 99)))
    assert len(cat) == 1 and abs(cat["x"][0] - 20) < 0.2
    cat, reason = detect_sources(img, None, bkg_boxsize=50, bounding_box=((90, 99), (0, 99)))
    assert len(cat) == 0 and "bounding box" in reason


def test_unknown_parameter_and_finder():
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ConfigError, match=r"unknown key\(s\)"):
        detect_sources(img, no_such=1)
    with pytest.raises(ValueError, match="starfinder"):
        detect_sources(img, starfinder="magic")
