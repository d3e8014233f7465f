"""Synthetic mosaics: the grid layout of `make_dataset` and the catalog-only `make_catalog_mosaic`."""

import base64
import json
import os

import numpy as np
import pytest
from astropy.table import Table

from tweakflow import synthetic as syn
from tweakflow.geometry import det_to_world, footprint_world, gnomonic

#: A small catalog-only mosaic: 4 columns x 3 rows of 1024 x 1024 tiles.
SMALL_GRID = {"columns": 4, "rows": 3, "seed": 11}


@pytest.fixture(scope="module")
def catalog_mosaic(tmp_path_factory):
    cfg = syn.SyntheticConfig.mosaic(**SMALL_GRID)
    out = syn.make_catalog_mosaic(str(tmp_path_factory.mktemp("catalog_mosaic")), cfg)
    return cfg, out, syn.load_catalog_mosaic_truth(out["truth"])


def _tile_polygon(wcs, shape, ra0, dec0):
    """A tile's detector edges (true WCS) in the tangent plane (arcsec) about (ra0, dec0)."""
    xi, eta = gnomonic(*footprint_world(wcs, shape, edges=True), ra0, dec0)
    return np.column_stack([xi, eta]) * 3600.0


def _overlap_fraction(poly_a, poly_b, n=120):
    """Fraction of polygon A's area inside polygon B (points on a grid over A's bounding box)."""
    from tweakflow.geometry import in_polygon

    (x0, y0), (x1, y1) = poly_a.min(axis=0), poly_a.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    in_a = in_polygon(gx.ravel(), gy.ravel(), poly_a)
    return float(np.sum(in_a & in_polygon(gx.ravel(), gy.ravel(), poly_b)) / np.sum(in_a))


def test_config_grid_fields():
    cfg = syn.SyntheticConfig.mosaic()
    assert cfg.grid == (7, 7) and cfg.n_exposures == 49 and cfg.detectors == ["nrca1"]
    assert cfg.shape == (1024, 1024) and cfg.n_stars == syn.MOSAIC_STAR_DENSITY and cfg.grid_step is None
    assert syn.grid_step(cfg) == pytest.approx((0.7 * 1024 * syn.PIXEL_SCALE,) * 2)
    assert syn.SyntheticConfig.from_dict({"grid": [3, 2], "detectors": ["nrca1"]}).n_exposures == 6
    with pytest.raises(ValueError, match="n_exposures"):
        syn.SyntheticConfig(grid=(3, 2))
    with pytest.raises(ValueError, match="positive"):
        syn.SyntheticConfig(grid=(0, 2), n_exposures=0)
    with pytest.raises(ValueError, match="grid"):
        syn.make_catalog_mosaic("unused", syn.SyntheticConfig())
    assert syn.grid_positions(syn.SyntheticConfig.mosaic(3, 2))[4] == (1, 1)
    assert syn.grid_positions(syn.SyntheticConfig()) == []


def test_grid_placement_and_overlaps(catalog_mosaic):
    """Columns along +x, rows along +y; side neighbours overlap by ~30%, diagonal ones by ~9%, others not."""
    cfg, out, truth = catalog_mosaic
    cells = {truth["errors"][n]["grid"]: truth["wcs"][n] for n in out["names"]}
    ny, nx = cfg.shape
    centre = cells[(1, 1)]
    for (dc, dr) in ((1, 0), (0, 1)):
        x, y = syn.world_to_pixel_exact(centre, *cells[(1 + dc, 1 + dr)]((nx - 1) / 2, (ny - 1) / 2))
        np.testing.assert_allclose([x - (nx - 1) / 2, y - (ny - 1) / 2], [0.7 * nx * dc, 0.7 * ny * dr], atol=3.0)
    ra0, dec0 = centre((nx - 1) / 2, (ny - 1) / 2)
    polys = {cell: _tile_polygon(w, cfg.shape, ra0, dec0) for cell, w in cells.items()}
    for (c, r), poly in polys.items():
        for (c2, r2), other in polys.items():
            if (c2, r2) == (c, r):
                continue
            frac = _overlap_fraction(poly, other)
            step = (abs(c2 - c), abs(r2 - r))
            if step in ((1, 0), (0, 1)):
                assert frac == pytest.approx(0.30, abs=0.02), ((c, r), (c2, r2))
            elif step == (1, 1):
                assert frac == pytest.approx(0.09, abs=0.02), ((c, r), (c2, r2))
            else:
                assert frac == 0.0, ((c, r), (c2, r2))


def test_grid_centred_on_the_field(catalog_mosaic):
    cfg, out, truth = catalog_mosaic
    ny, nx = cfg.shape
    centres = np.array([truth["wcs"][n]((nx - 1) / 2, (ny - 1) / 2) for n in out["names"]])
    xi, eta = gnomonic(centres[:, 0], centres[:, 1], cfg.ra, cfg.dec)
    assert abs(np.mean(xi) * 3600) < 1.0 and abs(np.mean(eta) * 3600) < 1.0


def test_catalogs_readable_by_the_workflow(catalog_mosaic):
    """load_entries reads them, one group per tile; the sidecars' sky section is what the readers resolve."""
    from tweakflow.entries import load_entries
    from tweakflow.io import read_image_sidecar, read_sidecar_sky

    cfg, out, truth = catalog_mosaic
    entries = load_entries(out["catalogs"], out["sidecars"])
    assert [e["name"] for e in entries] == out["names"]
    assert len({e["group_id"] for e in entries}) == len(entries) == cfg.n_exposures
    for path, e in zip(out["sidecars"], entries):
        sc, sky = read_image_sidecar(path), read_sidecar_sky(path)
        assert sky["group_id"] == sc["group_id"] == e["group_id"]
        assert len(sky["footprints"]) == 1
        np.testing.assert_array_equal(sky["footprints"][0], np.column_stack(footprint_world(sc["wcs"], sc["shape"], edges=True)))
        assert sc["wcsinfo"] == truth["file_wcsinfo"][e["name"]]
        assert sc["shape"] == tuple(cfg.shape) and sc["date"].startswith(cfg.date[:10])
        cat = e["catalog"]
        assert cat.colnames == ["id", "x", "y", "flux", "peak", "ra", "dec"] and cat.meta["image"] == e["name"]
        ra, dec = det_to_world(sc["wcs"], np.asarray(cat["x"]), np.asarray(cat["y"]))
        np.testing.assert_allclose(cat["ra"], ra, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cat["dec"], dec, rtol=0, atol=1e-12)
        assert np.all(np.diff(cat["flux"]) <= 0)


def test_sidecar_asdf_is_the_images_tree(catalog_mosaic):
    """The templated ASDF extension reads back as the tree a direct serialization holds."""
    from tweakflow.io import asdf_open_bytes

    cfg, out, truth = catalog_mosaic
    dcoeffs = syn._all_distortion_coeffs(cfg.seed)["nrca1"]
    for path, name in list(zip(out["sidecars"], out["names"]))[::5]:
        with open(path) as f:
            raw = base64.b64decode(json.load(f)["asdf"])
        index = raw[raw.index(b"#ASDF BLOCK INDEX") :].split(b"---\n")[1].splitlines()[:-1]
        assert all(raw[int(line[2:]) : int(line[2:]) + 4] == b"\xd3BLK" for line in index)
        info = truth["file_wcsinfo"][name]
        direct = syn.make_jwst_gwcs(cfg.shape, dcoeffs, info)
        af = asdf_open_bytes(path, raw)
        try:
            meta = af.tree["meta"]
            assert meta["filename"] == name and dict(meta["wcsinfo"]) == info
            obs = dict(meta["observation"])
            assert obs["exposure_number"] == f"{truth['errors'][name]['exposure'] + 1:05d}"
            assert all(isinstance(v, str) for v in obs.values())
            wcs = meta["wcs"]
            np.testing.assert_array_equal(wcs.forward_transform.parameters, direct.forward_transform.parameters)
            np.testing.assert_array_equal(wcs.backward_transform.parameters, direct.backward_transform.parameters)
            assert wcs.bounding_box.bounding_box() == direct.bounding_box.bounding_box()
        finally:
            af.close()


def test_truth_maps_noiseless_catalogs_to_the_stars(tmp_path):
    cfg = syn.SyntheticConfig.mosaic(2, 2, seed=5)
    out = syn.make_catalog_mosaic(str(tmp_path), cfg, centroid_noise=0.0)
    truth = syn.load_catalog_mosaic_truth(out["truth"])
    stars = truth["stars"]
    for cpath, name in zip(out["catalogs"], out["names"]):
        cat = Table.read(cpath, format="ascii.ecsv")
        idx = truth["star_index"][name]
        assert len(idx) == len(cat) > 20
        ra, dec = truth["wcs"][name](np.asarray(cat["x"]), np.asarray(cat["y"]))
        sep = np.hypot((ra - stars["ra"][idx]) * np.cos(np.deg2rad(dec)), dec - stars["dec"][idx]) * 3.6e6
        assert sep.max() < 1.0  # mas
        assert np.all(stars["mag"][idx] < truth["catalog"]["maglim"])
        # the file WCS is off by the pointing error: ~0.1-1 arcsec
        off = np.hypot((cat["ra"] - ra) * np.cos(np.deg2rad(dec)), cat["dec"] - dec) * 3600
        assert 0.05 < np.median(off) < 1.2


def test_centroid_noise(catalog_mosaic):
    _, out, truth = catalog_mosaic
    stars, res = truth["stars"], []
    for cpath, name in zip(out["catalogs"][:4], out["names"]):
        cat = Table.read(cpath, format="ascii.ecsv")
        idx = truth["star_index"][name]
        x, y = syn.world_to_pixel_exact(truth["wcs"][name], stars["ra"][idx], stars["dec"][idx])
        scale = np.sqrt(np.median(cat["flux"]) / np.asarray(cat["flux"]))  # the noise scales as 1/sqrt(flux)
        res.extend((np.asarray(cat["x"]) - x) / scale)
        res.extend((np.asarray(cat["y"]) - y) / scale)
    assert np.std(res) == pytest.approx(0.03, rel=0.15)


def test_counts_per_tile_and_shared(catalog_mosaic):
    """~40 sources per tile (the default detection's count), 6-12 shared with a side neighbour on average."""
    _, out, truth = catalog_mosaic
    sets = {truth["errors"][n]["grid"]: set(truth["star_index"][n].tolist()) for n in out["names"]}
    counts = [len(s) for s in sets.values()]
    assert 30 < np.mean(counts) < 55
    side = [len(s & sets[(c + 1, r)]) for (c, r), s in sets.items() if (c + 1, r) in sets]
    side += [len(s & sets[(c, r + 1)]) for (c, r), s in sets.items() if (c, r + 1) in sets]
    assert 6 <= np.mean(side) <= 16 and min(side) >= 3


def test_deterministic(tmp_path, catalog_mosaic):
    cfg, out, _ = catalog_mosaic
    again = syn.make_catalog_mosaic(str(tmp_path / "a"), cfg)
    for key in ("catalogs", "refcat"):
        for p, q in zip(np.atleast_1d(out[key]), np.atleast_1d(again[key])):
            assert open(p, "rb").read() == open(q, "rb").read()
    for p, q in zip(out["sidecars"], again["sidecars"]):
        a, b = (json.load(open(f)) for f in (p, q))
        assert a.pop("source") != b.pop("source") and a == b
    other = syn.make_catalog_mosaic(str(tmp_path / "b"), syn.SyntheticConfig.mosaic(**dict(SMALL_GRID, seed=12)))
    assert open(other["catalogs"][0], "rb").read() != open(out["catalogs"][0], "rb").read()


def test_refcat(catalog_mosaic):
    cfg, out, truth = catalog_mosaic
    ref = Table.read(out["refcat"], format="ascii.ecsv")
    assert len(ref) == int(np.sum(truth["stars"]["mag"] < cfg.refcat_maglim)) > 100
    assert {"RA", "DEC"} <= set(ref.colnames)


def test_pixel_and_catalog_mosaics_agree(tmp_path):
    """make_dataset and make_catalog_mosaic give the same images (names, file and true WCSs) for one config."""
    from tweakflow.io import read_image

    cfg = syn.SyntheticConfig.mosaic(2, 2, shape=(128, 128), seed=9)
    pix = syn.make_dataset(str(tmp_path / "pix"), cfg)
    cat = syn.make_catalog_mosaic(str(tmp_path / "cat"), cfg)
    truth_pix, errors = syn.load_truth(pix["truth"])
    truth_cat = syn.load_catalog_mosaic_truth(cat["truth"])
    assert [os.path.basename(p) for p in pix["images"]] == cat["names"]
    x = np.array([0.0, 60.0, 127.0])
    for path, name in zip(pix["images"], cat["names"]):
        im = read_image(path, with_data=False)
        assert im.wcsinfo == pytest.approx(truth_cat["file_wcsinfo"][name], rel=0, abs=1e-12)
        np.testing.assert_allclose(truth_pix[name](x, x), truth_cat["wcs"][name](x, x), rtol=0, atol=1e-12)
        assert tuple(errors[name]["grid"]) == truth_cat["errors"][name]["grid"]
        assert errors[name]["shift_v2"] == truth_cat["errors"][name]["shift_v2"]


@pytest.mark.slow
def test_pixel_mosaic_detection_counts(tmp_path):
    """The default detection finds ~40 sources per 1024 x 1024 tile of the pixel mosaic, as many as its catalog twin keeps."""
    from tweakflow.detection import detect_sources
    from tweakflow.io import read_image

    cfg = syn.SyntheticConfig.mosaic(2, 2, seed=3)
    pix = syn.make_dataset(str(tmp_path / "pix"), cfg)
    counts = [len(detect_sources(im.data, im.dq)[0]) for im in (read_image(p) for p in pix["images"])]
    truth = syn.load_catalog_mosaic_truth(syn.make_catalog_mosaic(str(tmp_path / "cat"), cfg)["truth"])
    kept = [len(v) for v in truth["star_index"].values()]
    assert 30 < np.mean(counts) < 55
    assert np.mean(kept) == pytest.approx(np.mean(counts), rel=0.2)
