"""Faults and resumption: kill and resume, --keep-going past a bad image, determinism, untouched inputs.

All runs use one small synthetic dataset (3 exposures of one 512x512
detector) whose folder and file names contain spaces and non-ASCII letters,
with ``output_use_model: false`` so that the products are named after the
files: every run here also checks that such names work end to end.
"""

import glob
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from astropy.table import Table

from workflow_runner import ROOT, run_workflow, sha256, snakemake_bin

pytestmark = pytest.mark.slow

DATA = {"n_exposures": 3, "detectors": ["nrca1"], "shape": (512, 512), "n_stars": 2000, "seed": 11}
#: inserted before ``_cal.fits`` in every input name
SUFFIX = " ü é"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The dataset, renamed; and the hashes of every input file, taken now."""
    from tweakflow.synthetic import SyntheticConfig, make_dataset

    base = tmp_path_factory.mktemp("resume")
    ds = make_dataset(str(base / "gen"), SyntheticConfig(**DATA))
    folder = base / "input data ü"
    folder.mkdir()
    images = []
    for p in ds["images"]:
        new = folder / os.path.basename(p).replace("_cal.fits", f"{SUFFIX}_cal.fits")
        os.replace(p, new)
        images.append(str(new))
    # one unreadable image for the --keep-going run: the first half of a good one
    broken = folder / f"broken{SUFFIX}_cal.fits"
    raw = open(images[0], "rb").read()
    broken.write_bytes(raw[: len(raw) // 2])
    # and one that is not FITS at all (a web server's error page, say)
    notfits = folder / f"not fits{SUFFIX}_cal.fits"
    notfits.write_text("<html><body>502 Bad Gateway</body></html>\n")
    files = images + [str(broken), str(notfits), ds["truth"], ds["refcat"]]
    return {
        "images": images, "broken": str(broken), "notfits": str(notfits), "truth": ds["truth"], "base": base,
        "hashes": {p: sha256(p) for p in files},
    }


def _stems(images):
    return [os.path.basename(p).replace("_cal.fits", "") for p in images]


def _config(images, **extra):
    return {"inputs": images, "output_dir": "out", "tweakreg": {"output_use_model": False}, **extra}


@pytest.fixture(scope="module")
def reference(inputs):
    """An uninterrupted run."""
    work = inputs["base"] / "reference"
    run_workflow(work, _config(inputs["images"]))
    return work / "out"


def _wcs_values(wcs, shape):
    y, x = np.mgrid[0 : shape[0] : 37, 0 : shape[1] : 37]
    return np.array(wcs(x.astype(float), y.astype(float), with_bounding_box=False))


def _same_alignment(a, b, stems):
    """Runs ``a`` and ``b`` found the same sources and WCS corrections:
    byte-identical catalogs, sidecars and solution table; identical corrected
    WCSs (evaluated on a pixel grid)."""
    from tweakflow.io import read_sidecar

    for s in stems:
        for rel in (f"work/catalogs/{s}_cat.ecsv", f"work/sidecars/{s}_meta.json"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        wa, wb = read_sidecar(str(a / f"work/relative/wcs/{s}_wcs.asdf")), read_sidecar(str(b / f"work/relative/wcs/{s}_wcs.asdf"))
        assert wa["extra"] == wb["extra"]
        np.testing.assert_array_equal(_wcs_values(wa["wcs"], wa["shape"]), _wcs_values(wb["wcs"], wb["shape"]))
    rel = "work/relative/solutions.ecsv"
    assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _same_outputs(a, b, stems):
    """`_same_alignment`, and the same products: identical pixels and WCSs, byte-identical summary."""
    from stdatamodels.jwst.datamodels import ImageModel

    _same_alignment(a, b, stems)
    for s in stems:
        with ImageModel(str(a / f"{s}_tweakreg.fits")) as ma, ImageModel(str(b / f"{s}_tweakreg.fits")) as mb:
            assert ma.meta.cal_step.tweakreg == mb.meta.cal_step.tweakreg == "COMPLETE"
            np.testing.assert_array_equal(ma.data, mb.data)
            np.testing.assert_array_equal(_wcs_values(ma.meta.wcs, ma.data.shape), _wcs_values(mb.meta.wcs, mb.data.shape))
    assert (a / "tweakreg_summary.ecsv").read_bytes() == (b / "tweakreg_summary.ecsv").read_bytes()


def test_names_with_spaces_and_unicode_align(inputs, reference):
    """O3: every product is written under the input's name; the result matches the truth."""
    from stdatamodels.jwst.datamodels import ImageModel

    from tweakflow import metrics, synthetic

    truth, _ = synthetic.load_truth(inputs["truth"])
    summary = Table.read(reference / "tweakreg_summary.ecsv")
    assert list(summary["status"]) == ["COMPLETE"] * 3
    outs, tl, shapes = [], [], []
    for _p, s in zip(inputs["images"], _stems(inputs["images"])):
        assert s.endswith(SUFFIX)
        with ImageModel(str(reference / f"{s}_tweakreg.fits")) as m:
            outs.append(m.meta.wcs)
            shapes.append(m.data.shape)
            tl.append(truth[s.replace(SUFFIX, "") + "_cal.fits"])
    err = metrics.relative_errors(outs, tl, shapes)
    assert np.all(err < 5.0), err


def _alive_in(folder):
    """Processes whose working directory is ``folder`` (the jobs of a run there)."""
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if os.readlink(os.path.join(d, "cwd")) == str(folder):
                pids.append(int(os.path.basename(d)))
        except OSError:
            pass
    return pids


def test_kill_during_fanout_then_resume(inputs, reference):
    """O2: SIGKILL the whole run as soon as the first image's job has finished;
    nothing half-written looks finished; --rerun-incomplete completes the run
    with outputs identical to the uninterrupted run."""
    stems = _stems(inputs["images"])
    work = inputs["base"] / "killed"
    work.mkdir()
    cfg = work / "test_config.yaml"
    cfg.write_text(yaml.safe_dump(_config(inputs["images"])))
    cmd = [snakemake_bin(), "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", str(work), "--configfile", str(cfg), "--cores", "2"]
    catalogs = work / "out" / "work" / "catalogs"
    with open(work / "run.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not glob.glob(str(catalogs / "*_cat.ecsv")):
                assert proc.poll() is None, (work / "run.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no image job finished in time"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and all its jobs
            proc.wait()
    time.sleep(0.5)
    assert _alive_in(work) == [], "a job survived the kill"
    done = glob.glob(str(catalogs / "*_cat.ecsv"))
    assert 1 <= len(done) < len(stems), "the kill did not land in the fan-out"
    assert not glob.glob(str(work / "out" / "*_tweakreg.fits"))
    # every file under a final name is complete: the same bytes as in the uninterrupted run
    for path in glob.glob(str(work / "out" / "work" / "**" / "*.*"), recursive=True):
        rel = os.path.relpath(path, work / "out")
        if "/.tmp-" not in path and not rel.startswith("work/.tmp-"):
            assert open(path, "rb").read() == (reference / rel).read_bytes(), f"{rel} looks finished but is not"

    run_workflow(work, _config(inputs["images"]), "--unlock")
    proc = run_workflow(work, _config(inputs["images"]), "--rerun-incomplete")
    assert "Nothing to be done" not in proc.stdout
    _same_outputs(reference, work / "out", stems)


def test_two_runs_are_identical(inputs, reference):
    """Determinism: a second run (up to the alignment) gives byte-identical
    catalogs and identical WCS corrections."""
    work = inputs["base"] / "again"
    run_workflow(work, _config(inputs["images"]), "out/work/relative/solutions.ecsv")
    _same_alignment(reference, work / "out", _stems(inputs["images"]))


def test_keep_going_past_unreadable_images(inputs):
    """M8: on_bad_input: skip + --keep-going: a file that is not FITS (warned
    about at parse time) and a truncated one (found by its job) are left out:
    their apply_wcs jobs fail and are reported, the others are aligned, the
    summary lists the failures."""
    bad = [inputs["broken"], inputs["notfits"]]
    images = inputs["images"][:2] + bad
    work = inputs["base"] / "keep going"
    proc = run_workflow(work, _config(images, on_bad_input="skip"), "--keep-going", check=False)
    out = work / "out"
    assert proc.returncode != 0
    assert f"tweakflow: {inputs['notfits']}: not a FITS file" in proc.stdout.split("Building DAG")[0]
    for p in bad:
        assert f"{p}: no output written: unreadable input: {p}: " in proc.stdout
    assert proc.stdout.count("error: apply_wcs: ") == 2 and "Traceback" not in proc.stdout
    assert proc.stdout.count("error: ") == 3, "only the bad images' apply_wcs jobs fail (+ Snakemake's last line)"
    summary = Table.read(out / "tweakreg_summary.ecsv")
    assert list(summary["status"]) == ["COMPLETE", "COMPLETE", "FAILED", "FAILED"]
    for row, p in zip(summary[2:], bad):
        assert row["image"] == os.path.basename(p)
        assert row["reason"].startswith(f"unreadable input: {p}: ")
    stems = _stems(images)
    assert all((out / f"{s}_tweakreg.fits").exists() for s in stems[:2])
    for s, p in zip(stems[2:], bad):
        assert not (out / f"{s}_tweakreg.fits").exists()
        assert p in (out / "logs" / "apply_wcs" / f"{s}.log").read_text()


def test_inputs_untouched(inputs):
    """Every input file has the hash it had before the runs above (including the failing ones)."""
    assert {p: sha256(p) for p in inputs["hashes"]} == inputs["hashes"]
