"""Plain FITS files with lookup-table distortions, aligned relatively and absolutely, end to end.

The dataset (``fits_lut_dataset``, tests/conftest.py): single- and two-chip
files whose chips carry SIP, D2IM and NPOL tables (HST-like), plus one plain
TAN image; each output is checked against the synthetic truth on a pixel
grid, through ``astropy.wcs.WCS(header, fobj=hdul)``.
"""

import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from refcat_server import CatalogServer, stars_from_dataset
from tweakflow import metrics, synthetic
from tweakflow.absolute import wcs_name
from tweakflow.io import read_image, read_sidecar
from workflow_runner import (
    CallableWCS,
    check_fits_product_is_input_copy,
    fits_sci_hdus,
    max_sky_distance_mas,
    run_workflow,
    sha256,
    without_lookup_tables,
)

pytestmark = pytest.mark.slow


def _outputs(dataset, out):
    """Per chip: name, shape, input WCS, output WCS, true WCS (all with their tables)."""
    truth, _ = synthetic.load_truth(dataset["truth"])
    rows = []
    for src in sorted(dataset["images"], key=os.path.basename):
        name = os.path.basename(src)
        prod = os.path.join(out, name[: -len(".fits")] + "_tweakreg.fits")
        with fits.open(src) as a, fits.open(prod) as b:
            for k, (i, tw) in enumerate(zip(fits_sci_hdus(a), truth[name])):
                rows.append((f"{name}[{k + 1}]", a[i].data.shape, WCS(a[i].header, fobj=a), WCS(b[i].header, fobj=b), tw, b[i].header))
    return rows


def test_tables_relative_and_to_reference_file(tmp_path, fits_lut_dataset):
    """Relative + absolute (file) with non-default fit geometries: every chip < 10 mas from the truth."""
    ds = fits_lut_dataset
    before = {p: sha256(p) for p in ds["images"]}
    folder = os.path.dirname(ds["images"][0])
    config = {
        "inputs": [os.path.join(folder, "*.fits")],
        "output_dir": "out",
        "fits": {"dq_ext": "DQ"},
        "tweakreg": {"abs_refcat": ds["refcat"], "fitgeometry": "general", "abs_fitgeometry": "rscale"},
    }
    run_workflow(tmp_path, config)
    assert {p: sha256(p) for p in ds["images"]} == before
    out = str(tmp_path / "out")
    rows = _outputs(ds, out)
    assert len(rows) == 6 and sum(r[3].cpdis1 is not None for r in rows) == 5  # sc1 is plain TAN

    # the relative stage (its WCS sidecars): relative errors (common rigid motion removed)
    rel_wcs = []
    for name in sorted({r[0].split("[")[0] for r in rows}):
        rel_wcs.extend(read_sidecar(os.path.join(out, "work", "relative", "wcs", name[: -len(".fits")] + "_wcs.asdf"))["wcs"])
    shapes = [r[1] for r in rows]
    rel = metrics.relative_errors([CallableWCS(w) for w in rel_wcs], [CallableWCS(r[4]) for r in rows], shapes)
    rel_in = metrics.relative_errors([CallableWCS(r[2]) for r in rows], [CallableWCS(r[4]) for r in rows], shapes)
    assert np.all(rel_in > 100), rel_in
    assert np.all(rel < 5.0), rel

    # the outputs (absolute): every chip, largest error over the chip, through its tables
    ab = np.array([max_sky_distance_mas(r[3], r[4], r[1]) for r in rows])
    assert np.all(ab < 10.0), dict(zip([r[0] for r in rows], ab))
    # control: the same outputs read without their tables are far off
    lut = [r for r in rows if r[4].cpdis1 is not None]
    assert min(max_sky_distance_mas(without_lookup_tables(r[3]), r[4], r[1]) for r in lut) > 20.0
    # the output WCS (tables included) is the corrected solution of the absolute stage
    for name in sorted({r[0].split("[")[0] for r in rows}):
        sc = read_sidecar(os.path.join(out, "work", "absolute", "wcs", name[: -len(".fits")] + "_wcs.asdf"))
        for w, r in zip(sc["wcs"], [r for r in rows if r[0].startswith(name + "[")]):
            assert (w.cpdis1 is None) == (r[3].cpdis1 is None)
            assert max_sky_distance_mas(r[3], w, r[1]) < 1e-3
    for p in ds["images"]:
        stem = os.path.basename(p)[: -len(".fits")]
        check_fits_product_is_input_copy(p, os.path.join(out, stem + "_tweakreg.fits"), wcs_name(ds["refcat"]))
    summary = Table.read(tmp_path / "out" / "tweakreg_summary.ecsv")
    assert len(summary) == 6 and set(summary["status"]) == {"COMPLETE"} and set(summary["abs_status"]) == {"COMPLETE"}
    # the reference group has no relative fit of its own
    assert set(np.ma.filled(summary["fitgeom"], "")) == {"general", ""} and set(summary["abs_fitgeom"]) == {"rscale"}
    print("relative RMS mas:", np.round(rel, 2), "absolute max mas:", np.round(ab, 2))


def test_tables_to_gaia_from_local_service(tmp_path, fits_lut_dataset):
    """abs_refcat: GAIADR3 through the loopback catalog service: every chip < 10 mas from the truth."""
    ds = fits_lut_dataset
    two_chip = [p for p in ds["images"] if "_flt" in p]
    before = {p: sha256(p) for p in two_chip}
    with CatalogServer(stars=stars_from_dataset(ds)) as server:
        config = {"inputs": two_chip, "output_dir": "out", "fits": {"dq_ext": "DQ"},
                  "tweakreg": {"abs_refcat": "GAIADR3"}, "refcat": {"url": server.url, "retries": 1}}
        run_workflow(tmp_path, config)
        assert len(server.requests) == 1
        assert server.requests[0]["CAT"] == "GAIADR3" and abs(float(server.requests[0]["EPOCH"]) - 2025.03) < 0.01
    assert {p: sha256(p) for p in two_chip} == before
    rows = [r for r in _outputs({**ds, "images": two_chip}, str(tmp_path / "out")) if "_flt" in r[0]]
    assert len(rows) == 4
    ab = np.array([max_sky_distance_mas(r[3], r[4], r[1]) for r in rows])
    assert np.all(ab < 10.0), ab
    for r in rows:
        assert r[5]["WCSNAME"] == "FIT-LVL3-GAIADR3" and r[3].det2im1 is not None and r[3].cpdis2 is not None
    summary = Table.read(tmp_path / "out" / "tweakreg_summary.ecsv")
    assert list(summary["image"]) == [f"mc{i}_flt.fits[SCI,{k}]" for i in (1, 2) for k in (1, 2)]
    assert set(summary["abs_status"]) == {"COMPLETE"}
    print("absolute max mas:", np.round(ab, 2))


def test_ignoring_the_tables_would_be_worse(fits_lut_dataset):
    """Control: the same catalogs aligned through WCSs stripped of their tables end far worse."""
    from tweakflow.align import relative_align
    from tweakflow.detection import detect_sources

    truth, _ = synthetic.load_truth(fits_lut_dataset["truth"])
    entries, true_wcs = [], []
    for path in sorted(fits_lut_dataset["images"]):
        name = os.path.basename(path)
        im = read_image(path)
        for chip, tw in zip(im.chips, truth[name]):
            cat, _ = detect_sources(chip.data, chip.dq)
            entries.append({"name": f"{name}[{chip.extver}]", "wcs": chip.wcs, "wcsinfo": {}, "catalog": cat, "group_id": name, "shape": chip.shape})
            true_wcs.append(CallableWCS(tw))
    shapes = [e["shape"] for e in entries]
    errors = {}
    for label, strip in (("tables", False), ("ignored", True)):
        run = [dict(e, wcs=without_lookup_tables(e["wcs"]) if strip else e["wcs"]) for e in entries]
        wcs, rows = relative_align(run)
        assert {r["status"] for r in rows} == {"COMPLETE"}, [(r["image"], r["status"], r["reason"]) for r in rows]
        errors[label] = metrics.relative_errors([CallableWCS(w) for w in wcs], true_wcs, shapes)
    print("relative RMS mas with tables:", np.round(errors["tables"], 2), "tables ignored:", np.round(errors["ignored"], 2))
    lut = [e["wcs"].cpdis1 is not None for e in entries]
    assert np.all(errors["tables"] < 2.0)
    assert np.all(errors["ignored"][lut] > 5.0) and np.all(errors["ignored"][lut] > 4 * errors["tables"][lut])


def test_catalog_of_another_field_is_rejected_for_fits_inputs(tmp_path, fits_lut_dataset):
    """FITS chips (pixel tangent plane): a random catalog is rejected, the relative alignment is kept."""
    ds = fits_lut_dataset
    two_chip = [p for p in ds["images"] if "_flt" in p]
    ref = Table.read(ds["refcat"])
    rng = np.random.default_rng(8)
    n = 4 * len(ref)
    wrong = Table({"RA": rng.uniform(ref["RA"].min(), ref["RA"].max(), n), "DEC": rng.uniform(ref["DEC"].min(), ref["DEC"].max(), n)})
    wrong.write(tmp_path / "wrong.ecsv")
    config = {"inputs": two_chip, "output_dir": "out", "fits": {"dq_ext": "DQ"},
              "tweakreg": {"abs_refcat": str(tmp_path / "wrong.ecsv"), "fitgeometry": "rscale"}}
    run_workflow(tmp_path, config)
    summary = Table.read(tmp_path / "out" / "tweakreg_summary.ecsv")
    assert set(summary["abs_status"]) == {"FAILED"} and set(summary["status"]) == {"COMPLETE"}
    assert set(summary["abs_grade"]) <= {4, 5}
    rows = _outputs({**ds, "images": two_chip}, str(tmp_path / "out"))
    for r in rows:
        assert r[5]["WCSNAME"] == "FIT-REL"
    rel = metrics.relative_errors([CallableWCS(r[3]) for r in rows], [CallableWCS(r[4]) for r in rows], [r[1] for r in rows])
    assert np.all(rel < 5.0), rel


def test_five_arcsec_offset_is_recovered_for_fits_inputs(tmp_path, fits_lut_dataset):
    """FITS chips 5 arcsec (plus pointing errors) from the catalog: found through the recovery chain, tables kept."""
    ds = fits_lut_dataset
    two_chip = [p for p in ds["images"] if "_flt" in p]
    ref = Table.read(ds["refcat"])
    shifted = Table({"RA": ref["RA"] + 5.0 / 3600.0 / np.cos(np.deg2rad(ref["DEC"])), "DEC": ref["DEC"]})
    shifted.write(tmp_path / "shifted.ecsv")
    config = {"inputs": two_chip, "output_dir": "out", "fits": {"dq_ext": "DQ"},
              "tweakreg": {"abs_refcat": str(tmp_path / "shifted.ecsv"), "fitgeometry": "general"}}
    run_workflow(tmp_path, config)
    summary = Table.read(tmp_path / "out" / "tweakreg_summary.ecsv")
    assert set(summary["abs_status"]) == {"COMPLETE"} and set(summary["abs_grade"]) <= {1, 2}
    for r in _outputs({**ds, "images": two_chip}, str(tmp_path / "out")):
        got, true = metrics.wcs_offsets(CallableWCS(r[3]), CallableWCS(r[4]), r[1])
        d = got - true
        assert np.hypot(*d.mean(axis=0)) == pytest.approx(5.0, abs=0.01), r[0]
        assert 1000 * np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1))) < 10.0, r[0]


def test_global_solve_fits_chips_with_tables_and_reference_file(tmp_path, fits_lut_dataset):
    """relative_solver: global on plain FITS files (two-chip files with lookup tables), relative and
    absolute in one solve with a non-default fit geometry: every chip < 10 mas from the truth, chips
    of a file share one correction, the products copies of the inputs with the WCS name of the fit."""
    ds = fits_lut_dataset
    folder = os.path.dirname(ds["images"][0])
    config = {"inputs": [os.path.join(folder, "*.fits")], "output_dir": "out", "fits": {"dq_ext": "DQ"}, "relative_solver": "global",
              "tweakreg": {"abs_refcat": ds["refcat"], "fitgeometry": "rscale"}}
    run_workflow(tmp_path, config)
    out = str(tmp_path / "out")
    rows = _outputs(ds, out)
    ab = np.array([max_sky_distance_mas(r[3], r[4], r[1]) for r in rows])
    before = np.array([max_sky_distance_mas(r[2], r[4], r[1]) for r in rows])
    assert np.all(before > 100), before
    assert np.all(ab < 10.0), ab
    summary = Table.read(os.path.join(out, "tweakreg_summary.ecsv"))
    assert set(summary["status"]) == {"COMPLETE"} and set(summary["fitgeom"]) == {"rscale"}
    two = summary[[str(n).startswith("mc2_flt.fits[") for n in summary["image"]]]
    assert len(two) == 2 and two["xshift"][0] == two["xshift"][1]
    for p in ds["images"]:
        stem = os.path.basename(p)[: -len(".fits")]
        check_fits_product_is_input_copy(p, os.path.join(out, stem + "_tweakreg.fits"), wcs_name(ds["refcat"]))
