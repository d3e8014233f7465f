import numpy as np
import pytest
from scipy.spatial import cKDTree

from tweakflow import synthetic
from tweakflow.detection import detect_sources
from tweakflow.io import read_image


@pytest.fixture(scope="module")
def image_and_truth(small_dataset):
    path = small_dataset["images"][0]
    im = read_image(path)
    truth, _, stars = synthetic.load_truth(small_dataset["truth"], stars=True)
    tw = truth[path.rsplit("/", 1)[1]]
    xs, ys = synthetic.world_to_pixel_exact(tw, stars["ra"], stars["dec"])
    return im, np.c_[xs, ys]


@pytest.mark.parametrize("finder,max_err_px,min_found", [("iraf", 0.06, 100), ("dao", 0.08, 20), ("segmentation", 0.1, 50)])
def test_finders_recover_true_positions(image_and_truth, finder, max_err_px, min_found):
    im, truexy = image_and_truth
    cat, reason = detect_sources(im.data, im.dq, starfinder=finder)
    assert reason is None
    assert len(cat) >= min_found
    d, _ = cKDTree(truexy).query(np.c_[cat["x"], cat["y"]])
    assert np.mean(d < 0.5) > 0.95
    assert np.median(d) < max_err_px


def test_brightest_and_peakmax(image_and_truth):
    im, _ = image_and_truth
    cat, _ = detect_sources(im.data, im.dq, brightest=25)
    assert len(cat) == 25
    full, _ = detect_sources(im.data, im.dq, brightest=None)
    assert len(full) > 25
    assert np.min(cat["flux"]) >= np.sort(full["flux"])[-25] - 1e-6
    cut = float(np.median(full["peak"]))
    capped, _ = detect_sources(im.data, im.dq, brightest=None, peakmax=cut)
    assert np.all(capped["peak"] < cut)
    assert len(capped) < len(full)


def test_masked_pixels_are_ignored():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (200, 200)).astype(np.float32)
    data[100, 100] = 1e5  # a hot pixel flagged DO_NOT_USE
    dq = np.zeros(data.shape, np.uint32)
    dq[100, 100] = 1
    data[50:60, 50:60] = np.nan
    cat, reason = detect_sources(data, dq, bkg_boxsize=50)
    assert len(cat) == 0 or np.all(np.hypot(cat["x"] - 100, cat["y"] - 100) > 3)


@pytest.mark.parametrize(
    "data,dq,expect",
    [
        (np.full((100, 100), 3.0, np.float32), None, "constant"),
        (np.full((100, 100), np.nan, np.float32), None, "masked"),
        (np.zeros((2, 2), np.float32), None, "smaller"),
        (np.random.default_rng(1).normal(0, 1, (100, 100)).astype(np.float32), None, "no sources"),
        (np.ones((50, 50), np.float32), np.ones((50, 50), np.uint32), "masked"),
    ],
)
def test_edge_cases_give_empty_catalog_and_reason(data, dq, expect):
    cat, reason = detect_sources(data, dq, bkg_boxsize=400)
    assert len(cat) == 0
    assert expect in reason
