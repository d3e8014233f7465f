"""The products' metadata against what jwst 3.0's TweakRegStep writes on the same inputs.

``tests/data/jwst3_tweakreg_meta.json`` holds what the step wrote, recorded
once with jwst by ``benchmarks/record_jwst_meta.py`` (jwst is no dependency
of tweakflow) on the SMALL dataset, which the ``small_dataset`` fixture
regenerates: the step on the dataset's association (relative alignment),
with ``abs_refcat`` set to its reference catalog, with ``sip_approx`` false,
and on the list of its files. tweakflow's steps (without Snakemake; one
workflow run checks the rules' part) write their products from the same
inputs, and every field the step changes is compared: values that
legitimately differ (the date, the file name, the software version, the
``S_REGION`` of a different fit) for their form or within the fits'
agreement, every other one for equality, ``S_REGION`` itself to < 1e-7 deg
on the same WCS.
"""

import json
import math
import os
import re

import numpy as np
import pytest
from astropy.io import fits

import tweakflow
from product_meta import flat_meta, header_changes, meta_changes
from tweakflow import synthetic
from tweakflow.callogs import CAL_LOGS_KEY, LINE_PATTERN, scrub
from tweakflow.catalogs import read_table
from tweakflow.inputs import read_association
from tweakflow.io import read_jwst_meta, read_sidecar, write_sidecar
from tweakflow.params import ABSOLUTE_PARS, SIP_PARS
from tweakflow.results import table_rows
from tweakflow.steps import absolute_step, apply_step, summary_step
from tweakflow.wcs_update import SOFTWARE_NAME, s_region
from workflow_runner import SMALL, run_workflow

FIXTURE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "jwst3_tweakreg_meta.json")
with open(FIXTURE_PATH, encoding="utf-8") as _f:
    FIXTURE = json.load(_f)
RUNS = FIXTURE["runs"]
MAS = 1.0 / 3.6e6  # deg
ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")


def _polygon(region):
    """The (4, 2) vertices (deg) of a ``POLYGON ICRS`` S_REGION."""
    words = region.split()
    assert words[:2] == ["POLYGON", "ICRS"] and region.startswith("POLYGON ICRS  "), region
    return np.array(words[2:], dtype=float).reshape(4, 2)


def _distance_deg(a, b):
    """Largest distance (deg) between the vertices of two S_REGIONs."""
    pa, pb = _polygon(a), _polygon(b)
    return float(np.max(np.hypot((pa[:, 0] - pb[:, 0]) * np.cos(np.deg2rad(pa[:, 1])), pa[:, 1] - pb[:, 1])))


def _same(a, b):
    """Equal values, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _jwst_wcs(input_path, parameters):
    """The GWCS the step wrote: the input's with its ``v2v3 -> v2v3corr`` correction (recorded parameters)."""
    from tweakwcs.correctors import JWSTWCSCorrector

    wcs, wcsinfo, _ = read_jwst_meta(input_path)
    corr = JWSTWCSCorrector(wcs, {k: wcsinfo[k] for k in ("v2_ref", "v3_ref", "roll_ref")})
    corr.set_correction(np.identity(2), np.zeros(2))  # a correction of the step's form...
    transform = corr.wcs.get_transform("v2v3", "v2v3corr")
    assert len(transform.parameters) == len(parameters)
    transform.parameters = np.asarray(parameters, dtype=float)  # ...with the step's values
    return corr.wcs


def test_fixture_records_the_test_dataset(small_dataset):
    """The recorded inputs are the regenerated ones (same pointing), from the same association."""
    assert FIXTURE["dataset"] == SMALL
    assert {os.path.basename(p) for p in small_dataset["images"]} == set(FIXTURE["inputs"])
    for path in small_dataset["images"]:
        _, wcsinfo, _ = read_jwst_meta(path)
        for key, value in FIXTURE["inputs"][os.path.basename(path)]["wcsinfo"].items():
            assert np.isclose(wcsinfo[key], value, rtol=1e-14, atol=0), key
    with open(small_dataset["asn"], encoding="utf-8") as f:
        assert json.load(f)["asn_pool"] == FIXTURE["association"]["asn_pool"]


def test_s_region_as_the_pipeline_computes_it(small_dataset):
    """`s_region` gives the pipeline's S_REGION of a WCS to < 1e-7 deg: the
    inputs' (jwst's assign_wcs value) and the step's corrected WCSs, rebuilt."""
    for path in small_dataset["images"]:
        wcs, _, _ = read_jwst_meta(path)
        recorded = FIXTURE["inputs"][os.path.basename(path)]["s_region"]
        assert _distance_deg(s_region(wcs), recorded) < 1e-7
        # the pixel centres of the corners (what gwcs' footprint(center=True) gives) are 0.5 px off
        centres = "POLYGON ICRS  " + " ".join(f"{v:.9f}" for v in np.ravel(wcs.footprint(center=True, axis_type="spatial")))
        assert _distance_deg(centres, recorded) > 10 * MAS
    n = 0
    for run in RUNS.values():
        for name, rec in run["products"].items():
            if rec["v2v3corr_parameters"] is None or "meta.wcsinfo.s_region" not in rec["changed"]:
                continue
            wcs = _jwst_wcs(os.path.join(os.path.dirname(small_dataset["asn"]), name), rec["v2v3corr_parameters"])
            assert _distance_deg(s_region(wcs), rec["changed"]["meta.wcsinfo.s_region"]) < 1e-7
            n += 1
    assert n == 10  # the aligned group of 3 runs, both groups of the absolute run


def test_cal_log_lines_are_scrubbed():
    """No absolute path (file names only), no line naming the user or the host."""
    import getpass
    import socket

    assert scrub("/home/someone/data/x_cal.fits: detected 3 sources") == "x_cal.fits: detected 3 sources"
    assert scrub("relative/path/x.fits kept") == "relative/path/x.fits kept"
    assert scrub(f"running as {getpass.getuser()}") is None
    assert scrub(f"on {socket.gethostname()}") is None


@pytest.fixture(scope="module")
def products(small_dataset, small_alignment, tmp_path_factory):
    """tweakflow's products of the four recorded runs, and each image's summary row."""
    work = tmp_path_factory.mktemp("products_meta")
    sa = small_alignment
    abs_wcs = [str(work / f"{s}_abs_wcs.asdf") for s in sa["stems"]]
    abs_solutions = str(work / "abs_solutions.ecsv")
    absolute_step(
        sa["cats"], sa["wcs"], small_dataset["refcat"], abs_solutions, abs_wcs, str(work / "combined.ecsv"),
        absolute=dict(ABSOLUTE_PARS), refcat_name=RUNS["absolute"]["parameters"]["abs_refcat"],
    )
    association = {os.path.basename(m["path"]): m["association"] for m in read_association(small_dataset["asn"])}
    runs = {
        "relative": (sa["wcs"], {}, True, [sa["solutions"]]),
        "absolute": (abs_wcs, {}, True, [sa["solutions"], abs_solutions]),
        "sip_approx_false": (sa["wcs"], {"sip_approx": False}, True, [sa["solutions"]]),
        "files": (sa["wcs"], {}, False, [sa["solutions"]]),
    }
    out = {}
    for run, (sidecars, sip, from_asn, tables) in runs.items():
        rows = {r["image"]: r for r in table_rows(summary_step(tables, str(work / f"{run}_summary.ecsv")))}
        out[run] = {}
        for path, side in zip(sa["images"], sidecars):
            base = os.path.basename(path)
            dest = str(work / run / base.replace("_cal.fits", "_tweakreg.fits"))
            apply_step(path, side, dest, sip=dict(SIP_PARS, **sip), association=association[base] if from_asn else None)
            out[run][base] = {"input": path, "output": dest, "summary": rows[base]}
    return out


def _check_value(key, ours, theirs, output, recorded_product):
    """One changed field: its form where it legitimately differs, else equality."""
    if key in ("meta.date", "DATE"):
        assert ISO_DATE.match(ours) and ISO_DATE.match(theirs), (ours, theirs)
    elif key in ("meta.filename", "FILENAME"):
        assert ours == os.path.basename(output) and theirs == recorded_product
    elif key in ("meta.calibration_software_version", "CAL_VER"):
        assert ours == tweakflow.__version__ and re.match(r"^\d+\.\d+", theirs)
    elif key in ("meta.wcsinfo.s_region", "S_REGION"):
        _polygon(ours)  # compared by test_s_region_of_the_products
    else:
        assert ours == theirs, (key, ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_products_change_what_the_step_changes(products, run):
    """Every meta field and header keyword jwst's step changes, tweakflow's
    products change, to the same value or one of the same form; they change
    nothing else but ``meta.tweakflow`` (and, for the images of the alignment
    reference, whose WCS neither changes, tweakflow still writes their SIP
    approximation and S_REGION; jwst leaves them as they were)."""
    from stdatamodels.jwst.datamodels import ImageModel

    for base, prod in products[run].items():
        rec = RUNS[run]["products"][base]
        with ImageModel(prod["input"]) as a, ImageModel(prod["output"]) as b:
            ours = meta_changes(flat_meta(a), flat_meta(b))
            assert b.meta.wcs.name == rec["wcs_name"] and list(b.meta.wcs.available_frames) == rec["wcs_frames"]
        unchanged_wcs = rec["v2v3corr_parameters"] is None
        assert set(rec["changed"]) <= set(ours), set(rec["changed"]) - set(ours)
        extra = {k for k in set(ours) - set(rec["changed"]) if not k.startswith("meta.tweakflow.")}
        assert all(unchanged_wcs and k.startswith("meta.wcsinfo.") for k in extra), extra
        for key, theirs in rec["changed"].items():
            _check_value(key, ours[key], theirs, prod["output"], rec["product"])
        with fits.open(prod["input"]) as ha, fits.open(prod["output"]) as hb:
            for ext in ("PRIMARY", "SCI"):
                hours = header_changes(ha[ext].header, hb[ext].header)
                theirs = rec["header"][ext]
                assert set(theirs) <= set(hours) and (set(hours) == set(theirs) or (ext == "SCI" and unchanged_wcs)), (ext, hours, theirs)
                for key, value in theirs.items():
                    _check_value(key, hours[key], value, prod["output"], rec["product"])


@pytest.mark.slow
def test_s_region_of_the_products(products, small_dataset):
    """S_REGION (``meta.wcsinfo.s_region`` and the SCI keyword) is the
    product's WCS's, with or without the SIP approximation: the unchanged
    WCS of the alignment reference gives the input's (< 1e-7 deg of the
    pipeline's), a corrected one jwst's within the two fits' agreement
    (relative: < 2 mas, measured 0.5-0.7 mas); after the absolute fit,
    < 3 mas of the truth's S_REGION (measured 0.2-0.8 mas; jwst's is 13-18
    mas from it: its fit to the same catalog has a 132 mas RMS)."""
    from stdatamodels.jwst.datamodels import ImageModel

    truth, _ = synthetic.load_truth(small_dataset["truth"])
    for run, prods in products.items():
        for base, prod in prods.items():
            rec = RUNS[run]["products"][base]
            with ImageModel(prod["output"]) as m:
                ours = m.meta.wcsinfo.s_region
                assert ours == s_region(m.meta.wcs) == fits.getheader(prod["output"], "SCI")["S_REGION"]
                assert ("a_order" in m.meta.wcsinfo.instance) == (run != "sip_approx_false")
            theirs = rec["changed"].get("meta.wcsinfo.s_region")
            if run == "absolute":
                assert _distance_deg(ours, s_region(truth[base])) < 3 * MAS
                assert _distance_deg(ours, theirs) < 30 * MAS
            elif theirs is None:  # the alignment reference: jwst left it
                assert _distance_deg(ours, FIXTURE["inputs"][base]["s_region"]) < 1e-7
            else:
                assert _distance_deg(ours, theirs) < 2 * MAS


def _jwst_group_fit(lines, group_id):
    """XSH, YSH (arcsec) and ROT (deg) of a group's fit in jwst's log lines."""
    at = next(i for i, line in enumerate(lines) if f"fit for 'GROUP ID: {group_id}'" in line)
    values = re.search(r"XSH: (\S+)\s+YSH: (\S+)\s+ROT: (\S+)", lines[at + 1])
    return [float(v) for v in values.groups()]


@pytest.mark.slow
def test_cal_logs_as_the_step_structures_them(products, small_dataset):
    """``cal_logs.tweakreg``: a list of lines of the step's form, file names
    without their folders, with the image's fit (the aligned group's shift
    and rotation as jwst's fit of the same group found them) and status."""
    from stdatamodels.jwst.datamodels import ImageModel

    for run in ("relative", "absolute"):
        assert all(LINE_PATTERN.match(line) for line in RUNS[run]["cal_logs_tweakreg"])
    folder = os.path.dirname(small_dataset["images"][0])
    for run, prods in products.items():
        for base, prod in prods.items():
            rec = RUNS[run]["products"][base]
            with ImageModel(prod["output"]) as m:
                assert sorted(m.cal_logs.instance) == rec["cal_logs_keys"] == [CAL_LOGS_KEY]
                lines = list(m.cal_logs.tweakreg)
                row = dict(m.meta.tweakflow.instance)
            assert lines and all(isinstance(line, str) and LINE_PATTERN.match(line) for line in lines)
            assert not any(folder in line for line in lines)
            messages = [line.split(" - ", 3)[3] for line in lines]
            assert messages[-1] == f"{base}: tweakreg {row['status']}" + (f" ({row['reason']})" if row["reason"] else "")
            fit = next(msg for msg in messages if msg.startswith(f"{base} [{row['group_id']}]: relative"))
            if row["fitgeom"]:
                assert f"fit {row['fitgeom']}: {row['n_used']} of {row['n_matches']} matches used" in fit
                xsh, ysh, rot = _jwst_group_fit(RUNS["relative"]["cal_logs_tweakreg"], row["group_id"])
                assert math.hypot(row["xshift"] - xsh, row["yshift"] - ysh) < 1e-3 and abs(row["rotation"] - rot) < 2e-3
            if run == "absolute":
                assert any(msg.startswith(f"{base} [{row['group_id']}]: absolute: COMPLETE, fit") and "grade 1" in msg for msg in messages)


@pytest.mark.slow
def test_fit_results_in_the_product(products):
    """``meta.tweakflow``: tweakflow's name and version, and the image's row
    of the summary table; the products validate and keep it when reopened."""
    from stdatamodels.jwst.datamodels import ImageModel

    for run, prods in products.items():
        for prod in prods.values():
            with ImageModel(prod["output"]) as m:
                m.validate()
                record = dict(m.meta.tweakflow.instance)
            assert record.pop("calibration_software_name") == SOFTWARE_NAME
            assert record.pop("calibration_software_version") == tweakflow.__version__
            summary = prod["summary"]
            assert sorted(record) == sorted(summary) and all(_same(record[k], summary[k]) for k in summary), (record, summary)
            assert record["status"] == "COMPLETE" and record["n_sources"] > 100
            if run == "absolute":
                assert record["abs_status"] == "COMPLETE" and record["abs_grade"] == 1 and record["abs_n_used"] >= 15
            if record["fitgeom"]:
                assert record["n_used"] > 100 and 0 < record["rms_mas"] < 10


def test_skipped_product_keeps_the_step_metadata(small_dataset, small_alignment, tmp_path):
    """An image left ``SKIPPED``: its WCS, no S_REGION, but the step's metadata and log."""
    from stdatamodels.jwst.datamodels import ImageModel

    src, side = small_alignment["images"][2], small_alignment["wcs"][2]
    sc = read_sidecar(side)
    wcs_in, _, _ = read_jwst_meta(src)
    skipped = str(tmp_path / "skipped_wcs.asdf")
    write_sidecar(
        skipped, wcs=wcs_in, wcsinfo=sc["wcsinfo"], group_id=sc["group_id"], filename=sc["filename"], shape=sc["shape"],
        extra={"status": "SKIPPED", "reason": "no fit passed", "stage": "relative"},
    )
    association = read_association(small_dataset["asn"])[2]["association"]
    out = str(tmp_path / "skipped_tweakreg.fits")
    # a member naming its catalog: the step records it as meta.tweakreg_catalog
    apply_step(src, skipped, out, sip=dict(SIP_PARS), association=dict(association, tweakreg_catalog="cats/x_cat.ecsv"))
    with ImageModel(out) as m:
        m.validate()
        assert m.meta.cal_step.tweakreg == "SKIPPED" and m.meta.group_id == sc["group_id"]
        assert m.meta.asn.instance == {"exptype": "science", "pool_name": "synthetic_pool", "table_name": "asn.json"}
        assert m.meta.tweakreg_catalog == "cats/x_cat.ecsv"
        assert m.meta.wcsinfo.instance.get("s_region") is None
        assert m.cal_logs.tweakreg[-1].endswith(f"{sc['filename']}: tweakreg SKIPPED (no fit passed)")
        assert dict(m.meta.tweakflow.instance) == {"calibration_software_name": SOFTWARE_NAME, "calibration_software_version": tweakflow.__version__}


@pytest.mark.slow
def test_workflow_products_carry_the_association(small_dataset, tmp_path):
    """The workflow on the association (the rules pass it to apply_wcs):
    the products' metadata as the step's, their fit results the summary's."""
    from stdatamodels.jwst.datamodels import ImageModel

    run_workflow(tmp_path, {"inputs": small_dataset["asn"], "output_dir": "out", "quality": {"report": False}})
    summary = {r["image"]: r for r in table_rows(read_table(str(tmp_path / "out" / "tweakreg_summary.ecsv")))}
    for base, rec in RUNS["relative"]["products"].items():
        with ImageModel(str(tmp_path / "out" / base.replace("_cal.fits", "_tweakreg.fits"))) as m:
            m.validate()
            for key in ("meta.group_id", "meta.asn.exptype", "meta.asn.pool_name", "meta.asn.table_name", "meta.cal_step.tweakreg"):
                assert m[key] == rec["changed"][key], key
            record = dict(m.meta.tweakflow.instance)
            assert all(_same(record[k], v) for k, v in summary[base].items())
            assert m.cal_logs.tweakreg[-1].endswith(f"{base}: tweakreg COMPLETE" + (f" ({record['reason']})" if record["reason"] else ""))
            theirs = rec["changed"].get("meta.wcsinfo.s_region", FIXTURE["inputs"][base]["s_region"])
            assert _distance_deg(m.meta.wcsinfo.s_region, theirs) < 2 * MAS
