import numpy as np
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
