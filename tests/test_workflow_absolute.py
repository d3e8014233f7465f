"""End-to-end absolute alignment: a user reference catalog and Gaia from a local catalog service."""

import os
import socket

import numpy as np
import pytest
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
