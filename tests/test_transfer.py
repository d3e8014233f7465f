"""tweakflow.transfer: a finished run's corrections applied to other images of the same exposures.

A run aligns filter A (SMALL: detectors nrca1, nrca3); filter B is the
same exposures (same seed: same attitudes and pointing errors) seen by
other detectors (nrca2, nrca4) through another filter (other fluxes).
Transferred B images are checked against their true WCSs, in mas.
"""

import os
import re
import shutil

import numpy as np
import pytest
from astropy.io import fits as afits
from astropy.wcs import WCS

from tweakflow import metrics, synthetic
from tweakflow.catalogs import read_table
from tweakflow.errors import InputError
from tweakflow.io import read_sidecar
from tweakflow.params import ABSOLUTE_PARS, DEFAULT_DETECTION_PARS, RELATIVE_PARS, SIP_PARS
from tweakflow.steps import absolute_step, align_step, detect_step, summary_step
from tweakflow.transfer import finished_run, group_corrections, read_target, transfer_image
from workflow_runner import SMALL, CallableWCS, fits_sci_hdus, run_workflow, sha256

#: The second filter: the same exposures, other detectors and fluxes.
FILTER_B = {**SMALL, "detectors": ["nrca2", "nrca4"], "filter": "F150W"}


def _stem(path):
    return os.path.basename(path).replace("_cal.fits", "").replace(".fits", "")


@pytest.fixture(scope="module")
def filter_b(tmp_path_factory):
    return synthetic.make_dataset(str(tmp_path_factory.mktemp("filter_b")), synthetic.SyntheticConfig.from_dict(FILTER_B))


@pytest.fixture(scope="module")
def filter_c(tmp_path_factory):
    """The same exposures and detectors as filter A through another filter (other fluxes)."""
    return synthetic.make_dataset(str(tmp_path_factory.mktemp("filter_c")), synthetic.SyntheticConfig.from_dict({**SMALL, "filter": "F150W"}))


@pytest.fixture(scope="module")
def detected(small_dataset, tmp_path_factory):
    """Catalogs and image sidecars of filter A (detected once for every run of this module)."""
    work = tmp_path_factory.mktemp("detected")
    cats, sides = [], []
    for p in small_dataset["images"]:
        cats.append(str(work / f"{_stem(p)}_cat.ecsv"))
        sides.append(str(work / f"{_stem(p)}_meta.json"))
        detect_step(p, cats[-1], sides[-1], detection=DEFAULT_DETECTION_PARS)
    return {"catalogs": cats, "sidecars": sides}


def _run(detected, out, *, relative=None, refcat=None):
    """A run in-process, laid out in ``out`` as the workflow lays it out; its last stage's WCS sidecars."""
    stems = [os.path.basename(p)[: -len("_meta.json")] for p in detected["sidecars"]]
    os.makedirs(out / "work" / "sidecars")
    sides = [shutil.copy(p, out / "work" / "sidecars") for p in detected["sidecars"]]
    rel = [str(out / "work" / "relative" / "wcs" / f"{s}_wcs.asdf") for s in stems]
    tables = [str(out / "work" / "relative" / "solutions.ecsv")]
    align_step(detected["catalogs"], sides, tables[0], rel, relative={**RELATIVE_PARS, **(relative or {})})
    final = rel
    if refcat:
        final = [str(out / "work" / "absolute" / "wcs" / f"{s}_wcs.asdf") for s in stems]
        tables.append(str(out / "work" / "absolute" / "solutions.ecsv"))
        absolute_step(detected["catalogs"], rel, refcat, tables[1], final, str(out / "combined.ecsv"), absolute=ABSOLUTE_PARS, refcat_name=refcat)
    summary_step(tables, str(out / "tweakreg_summary.ecsv"))
    return {"out": out, "final": final, "table": group_corrections(final, sides)}


@pytest.fixture(scope="module")
def relative_run(detected, tmp_path_factory):
    return _run(detected, tmp_path_factory.mktemp("relative_run"))


@pytest.fixture(scope="module")
def absolute_run(detected, small_dataset, tmp_path_factory):
    return _run(detected, tmp_path_factory.mktemp("absolute_run"), refcat=small_dataset["refcat"])


def _transfer(images, solutions, out, **kw):
    os.makedirs(out, exist_ok=True)
    return [transfer_image(p, os.path.join(out, f"{_stem(p)}_tweakreg.fits"), solutions, sip=SIP_PARS, **kw) for p in images]


def _products(records):
    return [r["output"] for r in records]


def _wcs_of(products):
    from stdatamodels.jwst.datamodels import ImageModel

    out = []
    for p in products:
        with ImageModel(p) as m:
            out.append((m.meta.wcs, m.data.shape, str(m.meta.cal_step.tweakreg)))
    return out


def _errors(products, datasets, extra=()):
    """Relative errors (mas) of products (and ``extra`` (name, wcs, shape)) together, and absolute ones, against the truth."""
    truths = {}
    for d in datasets:
        truths.update(synthetic.load_truth(d["truth"])[0])
    items = [(os.path.basename(p).replace("_tweakreg.fits", "_cal.fits"), w, shape) for p, (w, shape, _) in zip(products, _wcs_of(products))]
    items = list(extra) + items
    ws, true, shapes = [w for _, w, _ in items], [truths[n] for n, _, _ in items], [s for _, _, s in items]
    return metrics.relative_errors(ws, true, shapes), metrics.absolute_errors(ws, true, shapes)


def _run_images(run):
    """(name, WCS, shape) of a run's own results (its last stage's sidecars)."""
    return [(sc["filename"], sc["wcs"], sc["shape"]) for sc in map(read_sidecar, run["final"])]


def _v2v3_correction_error(products, sources, run):
    """Largest distance (mas) between each product's WCS and its input GWCS with the run's V2V3
    correction of its exposure (the ``v2v3 -> v2v3corr`` transform of the run's result for the
    same exposure) inserted: the step's "same correction", exact, independent of how it was transferred."""
    by_exposure = {}
    for sc in map(read_sidecar, run["final"]):
        by_exposure.setdefault(sc["group_id"], sc["wcs"])
    worst = 0.0
    y, x = (v.ravel() for v in np.mgrid[0:1023:9j, 0:1023:9j])
    for (w_out, _, _), src in zip(_wcs_of(products), sources):
        target = read_target(src)
        w_in, corrected = target["wcs"], by_exposure[target["group_id"]]
        v2, v3 = w_in.get_transform("detector", "v2v3")(x, y)
        if "v2v3corr" in corrected.available_frames:
            v2, v3 = corrected.get_transform("v2v3", "v2v3corr")(v2, v3)
        ra, dec = w_in.get_transform("v2v3", "world")(v2, v3)
        ra2, dec2 = w_out(x, y, with_bounding_box=False)
        worst = max(worst, 3.6e6 * float(np.max(np.hypot((ra2 - ra) * np.cos(np.deg2rad(dec)), dec2 - dec))))
    return worst


@pytest.mark.slow
def test_relative_run_transferred_to_another_filter(relative_run, small_dataset, filter_b, tmp_path):
    table = relative_run["table"]
    assert list(table["status"]) == ["COMPLETE", "COMPLETE"] and np.all(table["fit_rms_mas"] < 1e-3)
    b = _transfer(filter_b["images"], table, str(tmp_path / "b"))
    assert [r["status"] for r in b] == ["COMPLETE"] * 4 and [r["group_id"] for r in b] == [table["group_id"][k] for k in (0, 0, 1, 1)]
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(b[-1]["output"]) as m:  # the step's metadata, as the run's products have it
        assert (m.meta.group_id, m.meta.cal_step.tweakreg) == (b[-1]["group_id"], "COMPLETE")
    # every image of both filters within 1 mas of the truth, relative to the others
    rel, _ = _errors(_products(b), [small_dataset, filter_b], extra=_run_images(relative_run))
    assert np.all(rel < 1.0), rel
    # the run's V2V3 correction of each exposure, as the JWST step's transfer applies it
    assert _v2v3_correction_error(_products(b), filter_b["images"], relative_run) < 5e-3
    # without the transfer, filter B's second exposure is hundreds of mas off
    truth = synthetic.load_truth(filter_b["truth"])[0]
    inputs = [read_target(p)["wcs"] for p in filter_b["images"]]
    before = metrics.relative_errors(inputs, [truth[os.path.basename(p)] for p in filter_b["images"]], [(1024, 1024)] * 4)
    assert np.min(before) > 100, before


@pytest.mark.slow
def test_absolute_run_transferred(absolute_run, small_dataset, filter_b, tmp_path):
    table = absolute_run["table"]
    name = f"FIT-LVL3-{small_dataset['refcat']}"
    assert set(table["wcsname"]) == {name}
    b = _transfer(filter_b["images"], table, str(tmp_path / "b"))
    rel, ab = _errors(_products(b), [small_dataset, filter_b], extra=_run_images(absolute_run))
    assert {w.name for w, _, _ in _wcs_of(_products(b))} == {name}
    assert np.all(rel < 1.0), rel
    # the run's V2V3 correction of each exposure, to micro-arcseconds ...
    assert _v2v3_correction_error(_products(b), filter_b["images"], absolute_run) < 5e-3
    # ... so the run's own absolute accuracy (catalog noise 5 mas: filter A 0.1-0.6 mas) carried to
    # the other detectors (its small rotation error grows across the module: filter B 0.5-1.1 mas)
    assert np.all(ab < 2.0), ab


@pytest.mark.slow
def test_transfer_to_the_runs_own_inputs_reproduces_its_results(absolute_run, small_dataset, tmp_path):
    """The correction measured from a run, set on its own inputs, is the run's correction (to micro-arcseconds)."""
    records = _transfer(small_dataset["images"], absolute_run["table"], str(tmp_path / "a"))
    for (w, shape, status), (_, want, _) in zip(_wcs_of(_products(records)), _run_images(absolute_run)):
        got, exp = metrics.wcs_offsets(w, want, shape)
        assert status == "COMPLETE" and 1000.0 * np.max(np.hypot(*(got - exp).T)) < 1e-3


@pytest.mark.slow
def test_general_fit_geometry_transferred(detected, small_dataset, filter_c, tmp_path):
    """A fit with scale and skew, to the same detectors through another filter.

    (A general fit to two detectors side by side is loose across the module:
    the run's own error reaches 1.3 mas on the other detectors, nrca2/nrca4.)
    """
    run = _run(detected, tmp_path / "run", relative={"fitgeometry": "general"})
    table = run["table"]
    assert np.all(table["fit_rms_mas"] < 1e-3)
    assert abs(table["m01"][1] + table["m10"][1]) > 1e-9  # skew: not a rotation
    c = _transfer(filter_c["images"], table, str(tmp_path / "c"))
    rel, _ = _errors(_products(c), [small_dataset, filter_c], extra=_run_images(run))
    assert np.all(rel < 1.0), rel
    assert _v2v3_correction_error(_products(c), filter_c["images"], run) < 5e-3


@pytest.mark.slow
def test_exposure_not_in_the_run_is_refused(relative_run, filter_b, tmp_path):
    table = relative_run["table"]
    other = table[table["group_id"] != table["group_id"][1]]
    image = filter_b["images"][-1]
    out = tmp_path / "x_tweakreg.fits"
    msg = rf"^{re.escape(image)}: its exposure \(group {table['group_id'][1]}\) has no solution in the run r1 \(its groups: {other['group_id'][0]}\)$"
    with pytest.raises(InputError, match=msg):
        transfer_image(image, str(out), other, run="r1")
    assert not out.exists()
    # an association's group_id names the group whose correction an image takes
    rec = transfer_image(image, str(out), other, group_id=str(other["group_id"][0]))
    assert (rec["group_id"], rec["status"]) == (other["group_id"][0], "COMPLETE")


@pytest.mark.slow
def test_skipped_exposure_written_unchanged_or_refused(detected, filter_b, tmp_path):
    """A group the run could not align: SKIPPED with the run's reason (on_skipped: skip), or refused (fail)."""
    table = _run(detected, tmp_path / "run", relative={"minobj": 5000})["table"]
    assert list(table["status"]) == ["COMPLETE", "SKIPPED"], table
    reason = str(table["reason"][1])
    assert reason
    image = filter_b["images"][-1]
    (rec,) = _transfer([image], table, str(tmp_path / "b"))
    assert rec["status"] == "SKIPPED" and rec["reason"] == f"its exposure was not aligned in the run: {reason}"
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(image) as before, ImageModel(rec["output"]) as after:
        assert after.meta.cal_step.tweakreg == "SKIPPED"
        assert after.meta.wcs.available_frames == before.meta.wcs.available_frames
        np.testing.assert_array_equal(after.meta.wcs(100, 200), before.meta.wcs(100, 200))
        np.testing.assert_array_equal(after.data, before.data)
    with pytest.raises(InputError, match=r"its exposure \(group .*\) was not aligned in the run \(SKIPPED: .*transfer.on_skipped: skip"):
        transfer_image(image, str(tmp_path / "y.fits"), table, on_skipped="fail")


@pytest.mark.slow
def test_group_whose_images_disagree_is_not_transferred(relative_run, absolute_run, detected):
    """One image of each group from another run: no one correction of the exposure fits both."""
    mixed = [relative_run["final"][0], absolute_run["final"][1], relative_run["final"][2], relative_run["final"][3]]
    table = group_corrections(mixed, detected["sidecars"])
    assert list(table["status"]) == ["SKIPPED", "COMPLETE"], table
    assert table["fit_rms_mas"][0] > 10
    assert str(table["reason"][0]).startswith("its images' corrections are not one correction of the exposure (one affine fit to them leaves ")


@pytest.mark.slow
def test_finished_run_finds_the_last_stage(relative_run, absolute_run, small_dataset, tmp_path):
    assert finished_run(str(relative_run["out"]))["stage"] == "relative"
    found = finished_run(str(absolute_run["out"]))
    assert found["stage"] == "absolute" and found["wcs_sidecars"] == sorted(absolute_run["final"])
    assert found["images"] == {os.path.basename(p) for p in small_dataset["images"]}
    with pytest.raises(InputError, match=r"no tweakreg_summary.ecsv: not the output_dir of a finished tweakflow run"):
        finished_run(str(tmp_path))


# ---------------------------------------------------------------------------
# Plain FITS: images of one exposure share fits.group_keyword
# ---------------------------------------------------------------------------


def _one_chip_file(src, dst, extver):
    """A copy of a two-chip file with only chip ``extver`` (SCI, ERR, DQ of that EXTVER)."""
    with afits.open(src) as h:
        keep = [h[0]] + [x for x in h[1:] if x.header.get("EXTVER", 1) == extver]
        afits.HDUList([x.copy() for x in keep]).writeto(dst)


@pytest.mark.slow
def test_plain_fits_chip_transferred_by_group_keyword(tmp_path):
    ds = synthetic.make_fits_dataset(str(tmp_path / "ds"), n_single=1, n_multi=2, seed=5)
    truth, _ = synthetic.load_truth(ds["truth"])
    mc = [p for p in ds["images"] if "mc" in os.path.basename(p)]
    # the run sees chip 1 of each two-chip exposure; chip 2 is transferred
    run_images = [p for p in ds["images"] if p not in mc]
    targets = []
    for p in mc:
        run_images.append(str(tmp_path / os.path.basename(p).replace("_flt", "_chip1")))
        _one_chip_file(p, run_images[-1], 1)
        targets.append(str(tmp_path / os.path.basename(p).replace("_flt", "_chip2")))
        _one_chip_file(p, targets[-1], 2)
    fits = {"group_keyword": "EXPNAME"}
    cats, sides = [], []
    for p in run_images:
        cats.append(str(tmp_path / f"{_stem(p)}_cat.ecsv"))
        sides.append(str(tmp_path / f"{_stem(p)}_meta.json"))
        detect_step(p, cats[-1], sides[-1], detection=DEFAULT_DETECTION_PARS, fits=fits)
    final = [str(tmp_path / f"{_stem(p)}_wcs.asdf") for p in run_images]
    align_step(cats, sides, str(tmp_path / "solutions.ecsv"), final, relative=RELATIVE_PARS)
    table = group_corrections(final, sides)
    assert set(table["status"]) == {"COMPLETE"}
    records = _transfer(targets, table, str(tmp_path / "out"), fits=fits)
    assert [r["status"] for r in records] == ["COMPLETE", "COMPLETE"]
    # the exposure's correction, exactly: chip 1's input -> output map (linear parts: the
    # distortion is the same in both) applied to chip 2's input sky positions
    ws, true, shapes = [], [], []
    for side, p in zip(final, run_images):
        sc = read_sidecar(side)
        ws.append(CallableWCS(sc["wcs"][0]))
        true.append(CallableWCS(truth[os.path.basename(p).replace("_chip1", "_flt")][0]))
        shapes.append(sc["chips"][0]["shape"])
    y, x = (v.ravel() for v in np.mgrid[0:191:7j, 0:383:7j])
    for r, p, before, after, target in zip(records, mc, sides[-2:], final[-2:], targets):
        chip1_in, chip1_out = read_sidecar(before)["wcs"][0], read_sidecar(after)["wcs"][0]
        with afits.open(r["output"]) as h, afits.open(target) as t:
            i = fits_sci_hdus(h)[0]
            out = WCS(h[i].header, fobj=h)
            assert h[i].header["WCSNAME"] == "FIT-REL"
            sky_in = WCS(t[i].header, fobj=t).all_pix2world(x, y, 0)
            shapes.append(h[i].data.shape)
        want = chip1_out.wcs_pix2world(*chip1_in.wcs_world2pix(*sky_in, 0), 0)
        got = out.all_pix2world(x, y, 0)
        assert 3.6e6 * np.max(np.hypot((got[0] - want[0]) * np.cos(np.deg2rad(want[1])), got[1] - want[1])) < 1e-3
        ws.append(CallableWCS(out))
        true.append(CallableWCS(truth[os.path.basename(p)][1]))
    # so every chip, of the run and transferred, is as close to the truth as the run's
    # (2 mas on these small FITS chips of 0.1" pixels, tests/test_fits_absolute.py)
    rel = metrics.relative_errors(ws, true, shapes)
    assert np.all(rel < 2.0), rel
    before = [CallableWCS(WCS(afits.getheader(t, 1))) for t in targets]
    assert np.max(metrics.relative_errors(ws[:-2] + before, true, shapes)[-2:]) > 100


@pytest.mark.slow
def test_plain_fits_without_group_keyword_says_so(tmp_path):
    ds = synthetic.make_fits_dataset(str(tmp_path / "ds"), n_single=2, n_multi=0, seed=5)
    cats = [str(tmp_path / "a_cat.ecsv"), str(tmp_path / "b_cat.ecsv")]
    sides = [str(tmp_path / "a_meta.json"), str(tmp_path / "b_meta.json")]
    for p, c, s in zip(ds["images"], cats, sides):
        detect_step(p, c, s, detection=DEFAULT_DETECTION_PARS)
    final = [str(tmp_path / "a_wcs.asdf"), str(tmp_path / "b_wcs.asdf")]
    align_step(cats, sides, str(tmp_path / "solutions.ecsv"), final, relative=RELATIVE_PARS)
    other = str(tmp_path / "other.fits")
    with afits.open(ds["images"][1]) as h:
        h.writeto(other)
    with pytest.raises(InputError, match=r"other.fits: its exposure \(group other.fits\) has no solution .*set fits.group_keyword"):
        transfer_image(other, str(tmp_path / "o.fits"), group_corrections(final, sides))


# ---------------------------------------------------------------------------
# The workflow: `snakemake transfer` after a finished run
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_snakemake_transfer_after_a_finished_run(tmp_path, small_dataset, filter_b):
    config = {"inputs": small_dataset["images"], "output_dir": "out", "quality": {"report": False}}
    run_workflow(tmp_path, config)
    done = [tmp_path / "out" / "work" / "relative" / "solutions.ecsv", tmp_path / "out" / "tweakreg_summary.ecsv"]
    done += [tmp_path / "out" / f"{_stem(p)}_tweakreg.fits" for p in small_dataset["images"]]
    stamps = [os.stat(p).st_mtime_ns for p in done]
    hashes = {p: sha256(p) for p in filter_b["images"]}
    config["transfer"] = {"images": [os.path.join(os.path.dirname(filter_b["images"][0]), "*_cal.fits")]}
    proc = run_workflow(tmp_path, config, "transfer")
    # the finished alignment is not run again: only the transfer's jobs run
    jobs = re.search(r"tweakflow: \d+ jobs to run \(([^)]*)\)", proc.stdout)
    assert jobs and set(jobs.group(1).split(", ")) == {"transfer_wcs 4", "transfer_solutions 1", "transfer_summary 1", "transfer 1"}, proc.stdout
    assert [os.stat(p).st_mtime_ns for p in done] == stamps
    products = [str(tmp_path / "out" / "transfer" / f"{_stem(p)}_tweakreg.fits") for p in filter_b["images"]]
    a = [str(tmp_path / "out" / f"{_stem(p)}_tweakreg.fits") for p in small_dataset["images"]]
    rel, _ = _errors(a + products, [small_dataset, filter_b])
    assert np.all(rel < 1.0), rel
    assert [s for _, _, s in _wcs_of(products)] == ["COMPLETE"] * 4
    summary = read_table(tmp_path / "out" / "transfer" / "transfer_summary.ecsv")
    assert list(summary["status"]) == ["COMPLETE"] * 4
    # the console ends with what was corrected, and where (not the alignment's verdict again)
    assert proc.stdout.strip().splitlines()[-1] == "tweakflow transfer: 4 images with the run's solutions (4 COMPLETE) in out/transfer/"
    assert "tweakflow verdict" not in proc.stdout
    assert {p: sha256(p) for p in filter_b["images"]} == hashes
    # another configuration takes the finished run's corrections with transfer.from
    other = {"inputs": filter_b["images"], "output_dir": "other", "transfer": {"images": filter_b["images"], "from": "out"}}
    run_workflow(tmp_path, other, "transfer")
    for p in products:
        (w1, shape, _), (w2, _, _) = _wcs_of([p, p.replace("/out/", "/other/")])
        got, want = metrics.wcs_offsets(w2, w1, shape)
        assert np.max(np.abs(got - want)) < 1e-9
    assert not (tmp_path / "other" / "work").exists()


@pytest.mark.slow
def test_snakemake_transfer_without_images_says_so(tmp_path, small_dataset):
    config = {"inputs": small_dataset["images"], "output_dir": "out"}
    proc = run_workflow(tmp_path, config, "transfer", "-n", check=False)
    assert proc.returncode != 0
    assert "tweakflow: transfer: no images to correct: list them in transfer.images" in proc.stdout
    config["transfer"] = {"images": [str(tmp_path / "nothing*_cal.fits")]}
    proc = run_workflow(tmp_path, config, "transfer", "-n", check=False)
    assert proc.returncode != 0
    assert f"tweakflow: transfer.images: pattern '{tmp_path}/nothing*_cal.fits' matches no file" in proc.stdout
    config["transfer"] = {"images": small_dataset["images"], "from": "no_run"}
    proc = run_workflow(tmp_path, config, "transfer", "-n", check=False)
    assert proc.returncode != 0
    assert "tweakflow: transfer.from: no_run: no tweakreg_summary.ecsv: not the output_dir of a finished tweakflow run" in proc.stdout
    assert not (tmp_path / "out").exists()
