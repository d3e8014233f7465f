import numpy as np
import pytest
from astropy.io import fits

from tweakflow import synthetic
from tweakflow.io import read_image


def test_filenames_and_groups(small_dataset):
    imgs = small_dataset["images"]
    assert len(imgs) == 4
    assert all(p.endswith("_cal.fits") for p in imgs)
    im = read_image(imgs[0], with_data=False)
    assert im.wcs.available_frames == ["detector", "v2v3", "world"]
    obs = im.meta["observation"]
    for key in ("program_number", "observation_number", "visit_number", "visit_group",
                "sequence_id", "activity_id", "exposure_number"):
        assert obs.get(key)


def test_pointing_error_is_in_the_attitude(small_dataset):
    """The file WCS differs from the truth only through ra/dec/roll_ref."""
    truth, errors = synthetic.load_truth(small_dataset["truth"])
    for path in small_dataset["images"]:
        im = read_image(path, with_data=False)
        name = path.rsplit("/", 1)[1]
        tw = truth[name]
        assert "v2v3corr" not in im.wcs.available_frames
        # distortion identical
        x = np.array([0.0, 500.0, 1000.0])
        np.testing.assert_allclose(
            im.wcs.get_transform("detector", "v2v3")(x, x), tw.get_transform("detector", "v2v3")(x, x), atol=1e-10
        )
        # sky position differs by the pointing error (hundreds of mas)
        r1, d1 = im.wcs(512, 512)
        r2, d2 = tw(512, 512)
        off = np.hypot((r1 - r2) * np.cos(np.deg2rad(d2)), d1 - d2) * 3.6e6
        err = errors[name]
        assert 50 < off < 3000, off
        assert abs(err["roll_arcsec"]) <= 30


def test_exact_pixel_positions(small_dataset):
    truth, _ = synthetic.load_truth(small_dataset["truth"])
    tw = next(iter(truth.values()))
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1023, 50)
    y = rng.uniform(0, 1023, 50)
    ra, dec = tw(x, y)
    xr, yr = synthetic.world_to_pixel_exact(tw, ra, dec)
    assert np.max(np.hypot(xr - x, yr - y)) < 1e-6


def test_deterministic(tmp_path):
    cfg = synthetic.SyntheticConfig(n_exposures=1, detectors=["nrca1"], shape=(256, 256), seed=3)
    a = synthetic.make_dataset(str(tmp_path / "a"), cfg)
    b = synthetic.make_dataset(str(tmp_path / "b"), cfg)
    with fits.open(a["images"][0]) as ha, fits.open(b["images"][0]) as hb:
        for ext in ("SCI", "DQ", "ERR"):
            np.testing.assert_array_equal(ha[ext].data, hb[ext].data)
    assert open(a["refcat"]).read() == open(b["refcat"]).read()


def test_without_grid_unchanged(tmp_path):
    """A dataset without a grid is what the generator gave before grids existed (same draws, same WCSs)."""
    import asdf

    cfg = synthetic.SyntheticConfig(n_exposures=2, detectors=["nrca1", "nrca3"], shape=(64, 64), seed=3)
    out = synthetic.make_dataset(str(tmp_path), cfg)
    _, errors, stars = synthetic.load_truth(out["truth"], stars=True)
    last = out["images"][-1].rsplit("/", 1)[1]
    assert errors[last] == {"exposure": 1, "roll_arcsec": 6.872867611068088, "shift_v2": -0.42792889183608623, "shift_v3": 0.7242093442391572}
    assert len(stars) == 1741 and stars["ra"][0] == 53.14543256154653 and stars["mag"][-1] == 24.886031815422097
    im = read_image(out["images"][-1])
    expected = {"dec_ref": -27.77605594269532, "ra_ref": 53.17412710609633, "roll_ref": 34.995181899380036,
                "v2_ref": 119.2, "v3_ref": -460.0, "v3yangle": 0.08, "vparity": -1}
    assert im.wcsinfo == pytest.approx(expected, rel=1e-13)
    assert float(im.data.astype(float).sum()) == pytest.approx(120853.1937476322, rel=1e-12)
    with asdf.open(out["truth"]) as af:
        assert "grid" not in af.tree["config"] and "grid_step" not in af.tree["config"]


@pytest.mark.slow
def test_another_filter_is_the_same_exposures(tmp_path):
    """SyntheticConfig.filter: the same pointing errors and WCSs, other fluxes, the filter in the metadata."""
    from stdatamodels.jwst.datamodels import ImageModel

    cfg = {"n_exposures": 2, "detectors": ["nrca1"], "shape": (128, 128), "seed": 3, "n_stars": 3000}
    a = synthetic.make_dataset(str(tmp_path / "a"), synthetic.SyntheticConfig(**cfg))
    b = synthetic.make_dataset(str(tmp_path / "b"), synthetic.SyntheticConfig(**cfg, filter="F150W"))
    assert [p.rsplit("/", 1)[1] for p in a["images"]] == [p.rsplit("/", 1)[1] for p in b["images"]]
    assert synthetic.load_truth(a["truth"])[1] == synthetic.load_truth(b["truth"])[1]
    for pa, pb in zip(a["images"], b["images"]):
        with ImageModel(pa) as ma, ImageModel(pb) as mb:
            assert (ma.meta.instrument.filter, mb.meta.instrument.filter) == ("F200W", "F150W")
            assert ma.meta.wcsinfo.instance == mb.meta.wcsinfo.instance
            assert not np.array_equal(ma.data, mb.data)
