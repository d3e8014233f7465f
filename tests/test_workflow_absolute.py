"""End-to-end absolute alignment: a user reference catalog and Gaia from a local catalog service."""

import os
import socket

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from refcat_server import CatalogServer, stars_from_dataset
from tweakflow import metrics, synthetic
from workflow_runner import run_workflow

pytestmark = pytest.mark.slow


def _errors(outdir, dataset, wcs_name=None):
    from stdatamodels.jwst.datamodels import ImageModel

    truth, _ = synthetic.load_truth(dataset["truth"])
    ws, tl, shapes, names = [], [], [], []
    for p in dataset["images"]:
        n = os.path.basename(p)
        with ImageModel(os.path.join(outdir, n.replace("_cal.fits", "_tweakreg.fits"))) as m:
            assert m.meta.cal_step.tweakreg == "COMPLETE"
            assert wcs_name is None or m.meta.wcs.name == wcs_name
            ws.append(m.meta.wcs)
            shapes.append(m.data.shape)
        tl.append(truth[n])
        names.append(n)
    return metrics.absolute_errors(ws, tl, shapes), metrics.relative_errors(ws, tl, shapes)


def test_user_refcat(tmp_path, small_dataset):
    config = {"inputs": small_dataset["images"], "output_dir": "out",
              "tweakreg": {"abs_refcat": small_dataset["refcat"], "save_abs_catalog": True}}
    run_workflow(tmp_path, config)
    # the JWST step's name: FIT-LVL3-<abs_refcat as given>
    ab, rel = _errors(str(tmp_path / "out"), small_dataset, wcs_name=f"FIT-LVL3-{small_dataset['refcat']}")
    assert np.all(ab < 5.0), ab
    assert np.all(rel < 1.0), rel
    summary = Table.read(tmp_path / "out" / "tweakreg_summary.ecsv")
    assert set(summary["abs_status"]) == {"COMPLETE"}
    assert np.all(summary["abs_n_matches"] >= 15)
    assert (tmp_path / "out" / "fit_refcat_ref.ecsv").exists()
    # an abs_* change re-runs the absolute fit and the outputs, never detection nor the relative fit
    changed = {**config, "tweakreg": {**config["tweakreg"], "abs_sigma": 2.5}}
    out = run_workflow(tmp_path, changed, "-n").stdout
    assert "absolute_align" in out and "apply_wcs" in out
    assert "detect_sources" not in out and "rule align:" not in out
    # the QA: the footprints are redrawn, the per-image plots of the relative fit are not
    assert "rule qa_plots:" in out and "qa_images" not in out


def test_gaia_from_local_service(tmp_path, small_dataset):
    with CatalogServer(stars=stars_from_dataset(small_dataset)) as server:
        config = {"inputs": small_dataset["images"], "output_dir": "out",
                  "tweakreg": {"abs_refcat": "GAIADR3"}, "refcat": {"url": server.url, "retries": 1}}
        run_workflow(tmp_path, config)
        assert len(server.requests) == 1
        q = server.requests[0]
        assert q["CAT"] == "GAIADR3" and abs(float(q["EPOCH"]) - 2026.2) < 0.1
        assert (tmp_path / "out" / "work" / "refcat" / "GAIADR3.ecsv").exists()
        ab, _rel = _errors(str(tmp_path / "out"), small_dataset, wcs_name="FIT-LVL3-GAIADR3")
        assert np.all(ab < 5.0), ab
        # re-running with another abs_* value re-uses the cached catalog
        run_workflow(tmp_path, {**config, "tweakreg": {"abs_refcat": "GAIADR3", "abs_nclip": 2}})
        assert len(server.requests) == 1


def test_unreachable_service(tmp_path, small_dataset):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/CatalogSearch.aspx"
    config = {"inputs": small_dataset["images"], "output_dir": "out",
              "tweakreg": {"abs_refcat": "GAIADR2"}, "refcat": {"url": url, "retries": 1, "timeout": 2}}
    proc = run_workflow(tmp_path, config, check=False)
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stdout
    assert "Traceback" not in open(tmp_path / "out" / "logs" / "fetch_refcat_GAIADR2.log").read()


def test_gaia_catalog_hygiene_in_the_workflow(tmp_path, small_dataset):
    """GAIADR3 from the loopback service with non-default hygiene (magnitude limits, sources without
    proper motion kept, error weights): the fetched and published catalogs hold exactly the stars
    within the limits, with weights; the run ends COMPLETE within the accuracy bound; the published
    source catalogs have RA/DEC through the corrected WCS; a hygiene change re-runs the fetch."""
    ref = Table.read(small_dataset["refcat"])
    no_pm = np.arange(0, len(ref), 10)
    errors = np.where(np.arange(len(ref)) % 7 == 0, 40.0, 5.0)
    hygiene = {"mag_min": 17.0, "mag_max": 21.0, "pm_missing": "keep", "weights": "errors"}
    stars = stars_from_dataset(small_dataset, pos_error=errors, no_pm=no_pm)
    with CatalogServer(stars=stars) as server:
        config = {"inputs": small_dataset["images"], "output_dir": "out", "refcat": {"url": server.url, "retries": 1, **hygiene},
                  "tweakreg": {"abs_refcat": "GAIADR3", "save_abs_catalog": True, "save_catalogs": True}}
        run_workflow(tmp_path, config)
        out = tmp_path / "out"
        ab, rel = _errors(str(out), small_dataset, wcs_name="FIT-LVL3-GAIADR3")
        print(f"absolute error per image (mas): {np.round(ab, 2)}; relative: {np.round(rel, 2)}")
        assert np.all(ab < 5.0), ab
        assert np.all(rel < 1.0), rel
        assert set(Table.read(out / "tweakreg_summary.ecsv")["abs_status"]) == {"COMPLETE"}
        for path in (out / "work" / "refcat" / "GAIADR3.ecsv", out / "fit_gaiadr3_ref.ecsv"):
            cat = Table.read(path)
            # the stars of the search cone (the service selects on catalog positions) within the limits
            m = cat.meta
            cone = SkyCoord(m["search_ra"], m["search_dec"], unit="deg").separation(
                SkyCoord([s.ra for s in stars], [s.dec for s in stars], unit="deg")).deg <= m["search_radius"]
            inside = cone & (ref["mag"] >= 17.0) & (ref["mag"] <= 21.0)
            assert 0.5 * np.sum(cone) < np.sum(inside) < np.sum(cone)
            assert sorted(cat["objID"]) == sorted(f"S{i}" for i in np.flatnonzero(inside)), path
            assert np.sum(np.isnan(cat["pmra"])) == np.sum(inside[no_pm])  # kept without proper motion
            by_id = dict(zip(cat["objID"], cat["weight"]))
            assert all(by_id[f"S{i}"] == pytest.approx(1 / (2 * errors[i] ** 2 + (0 if i in no_pm else 0.02 * (float(cat.meta["epoch"]) - 2016.0) ** 2)))
                       for i in np.flatnonzero(inside))
        # the published source catalogs: RA/DEC through the corrected WCS, on the truth
        truth, _ = synthetic.load_truth(small_dataset["truth"])
        for p in small_dataset["images"]:
            name = os.path.basename(p)
            pub = Table.read(out / name.replace(".fits", "_cat.ecsv"))
            ra, dec = truth[name](np.asarray(pub["x"], float), np.asarray(pub["y"], float), with_bounding_box=False)
            sep = 3.6e6 * np.hypot((pub["RA"] - ra) * np.cos(np.deg2rad(dec)), pub["DEC"] - dec)
            assert np.median(sep) < 5.0, (name, np.median(sep))
        # the expanded reference catalog of the relative alignment (expand_refcat is on with abs_refcat)
        expanded = Table.read(out / "tweakreg_refcat.ecsv")
        assert set(expanded["image"]) == {os.path.basename(p) for p in small_dataset["images"]}
        assert {"RA", "DEC", "x", "y", "n_used"} <= set(expanded.colnames)
        # a hygiene change re-runs the fetch (and what follows), never detection
        changed = {**config, "refcat": {**config["refcat"], "mag_max": 20.5}}
        planned = run_workflow(tmp_path, changed, "-n").stdout
        assert "rule fetch_refcat:" in planned and "absolute_align" in planned
        assert "detect_sources" not in planned
