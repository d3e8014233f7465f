"""End-to-end: the Snakemake workflow on a small synthetic dataset, checked against the truth."""

import glob
import os

import numpy as np
import pytest
from astropy.table import Table

from tweakflow import metrics, synthetic
from workflow_runner import SMALL, run_workflow, sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    config = {"output_dir": "results", "demo": SMALL}
    proc = run_workflow(work, config)
    return work, config, proc.stdout


def test_outputs_match_truth(demo_run):
    from stdatamodels.jwst.datamodels import ImageModel

    work, _, _ = demo_run
    res = work / "results"
    truth, _ = synthetic.load_truth(str(res / "demo" / "truth.asdf"))
    names = sorted(truth)
    outs, ins, tl, shapes = [], [], [], []
    for n in names:
        stem = n.replace("_cal.fits", "")
        with ImageModel(str(res / f"{stem}_tweakreg.fits")) as m:
            assert m.meta.cal_step.tweakreg == "COMPLETE"
            assert "v2v3corr" in m.meta.wcs.available_frames or m.meta.wcs.available_frames == ["detector", "v2v3", "world"]
            outs.append(m.meta.wcs)
            shapes.append(m.data.shape)
        with ImageModel(str(res / "demo" / n)) as m:
            ins.append(m.meta.wcs)
        tl.append(truth[n])
    before = metrics.relative_errors(ins, tl, shapes)
    after = metrics.relative_errors(outs, tl, shapes)
    assert np.all(before > 100), before
    assert np.all(after < 1.0), after
    # the demo's own proof agrees
    acc = Table.read(res / "demo_accuracy.ecsv")
    assert np.all(acc["output_relative_mas"] < 1.0) and np.all(acc["input_relative_mas"] > 100)
    np.testing.assert_allclose(np.sort(acc["output_relative_mas"]), np.sort(after), rtol=1e-6)
    summary = Table.read(res / "tweakreg_summary.ecsv")
    assert len(summary) == 4
    assert set(summary["status"]) == {"COMPLETE"}
    for col in ("image", "group_id", "n_matches", "rms_mas", "xshift", "yshift", "rotation", "scale"):
        assert col in summary.colnames


def test_rerun_does_nothing_and_param_change_skips_detection(demo_run):
    work, config, _ = demo_run
    proc = run_workflow(work, config, "-n")
    assert "Nothing to be done" in proc.stdout
    changed = {**config, "tweakreg": {"sigma": 2.5}}
    proc = run_workflow(work, changed, "-n")
    assert "align" in proc.stdout and "apply_wcs" in proc.stdout and "qa_images" in proc.stdout
    assert "detect_sources" not in proc.stdout
    changed = {**config, "tweakreg": {"snr_threshold": 8.0}}
    proc = run_workflow(work, changed, "-n")
    assert "detect_sources" in proc.stdout


def test_console_is_concise_and_ends_with_the_verdict(demo_run):
    """The demo's console: the jobs, progress, then the verdict and the accuracy stated plainly."""
    work, _, console = demo_run
    res = work / "results"
    lines = console.strip().splitlines()
    assert len(lines) < 60, console
    for noise in ("Select jobs", "Shell command", "input:", "reason:", "Finished jobid", "Complete log"):
        assert noise not in console, noise
    assert any(ln.startswith("tweakflow: ") and "jobs to run (detect_sources 4" in ln for ln in lines), console
    assert any(ln.startswith("progress: ") for ln in lines)
    verdict = (res / "verdict.txt").read_text().strip().splitlines()
    assert lines[-len(verdict):] == verdict
    assert verdict[0].startswith("tweakflow verdict: 4 images in 2 groups: 4 COMPLETE (relative alignment only")
    acc = Table.read(res / "demo_accuracy.ecsv")
    worst = float(np.max(acc["output_relative_mas"]))
    assert worst < 1.0
    assert verdict[-1].startswith(
        f"demo accuracy against the synthetic truth: images aligned to each other within {worst:.2f} mas"
    )
    assert "no absolute fit in this run" in verdict[-1]
    # the report: its first page and its summary page open with the verdict
    assert "**Verdict of this run**" in (res / "qa" / "front_page.rst").read_text()
    assert f"images aligned to each other within {worst:.2f} mas" in (res / "qa" / "summary.html").read_text()


def test_inputs_untouched(tmp_path, small_dataset):
    before = {p: sha256(p) for p in small_dataset["images"]}
    config = {"inputs": small_dataset["images"], "output_dir": "out"}
    run_workflow(tmp_path, config)
    assert {p: sha256(p) for p in small_dataset["images"]} == before
    assert len(glob.glob(str(tmp_path / "out" / "*_tweakreg.fits"))) == 4


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"tweakreg": {"no_such_key": 1}}, "no_such_key"),
        ({"tweakreg": {"searchrad": "wide"}}, "searchrad"),
        ({"tweakreg": {"starfinder": "magic"}}, "starfinder"),
        ({"tweakreg": {"snr_threshold": -1}}, "snr_threshold"),
        ({"typo_key": 1}, "typo_key"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, override, needle):
    proc = run_workflow(tmp_path, {"output_dir": "out", **override}, "-n", check=False)
    assert proc.returncode != 0
    assert needle in proc.stdout
    assert not os.path.exists(tmp_path / "out")


def _planned_jobs(stdout):
    """The rules of a dry run's "Job stats" table."""
    lines = stdout.split("Job stats:", 1)[1].splitlines() if "Job stats:" in stdout else []
    return {ln.split()[0] for ln in lines[3:] if ln.strip() and ln.split()[0] != "total" and ln.split()[-1].isdigit()}


def test_pars_file_reaches_the_align_job_under_the_users_keys(demo_run, tmp_path):
    """tweakreg.pars_file: the file's fitgeometry and searchrad change what align
    receives (it re-runs, detection does not); the same keys set by the user to
    the run's values win over the file (align does not re-run)."""
    import yaml

    work, config, _ = demo_run
    pars = tmp_path / "tweakreg_pars.yaml"
    pars.write_text(yaml.safe_dump({"class": "jwst.tweakreg.TweakRegStep", "name": "tweakreg", "parameters": {"fitgeometry": "general", "searchrad": 1.5}}))
    proc = run_workflow(work, {**config, "tweakreg": {"pars_file": str(pars)}}, "-n")
    assert f"tweakreg.pars_file {pars} sets fitgeometry='general', searchrad=1.5" in proc.stdout
    jobs = _planned_jobs(proc.stdout)
    assert "align" in jobs and "apply_wcs" in jobs and "detect_sources" not in jobs, proc.stdout[-3000:]
    proc = run_workflow(work, {**config, "tweakreg": {"pars_file": str(pars), "fitgeometry": "rshift", "searchrad": 2.0}}, "-n")
    assert "your own fitgeometry, searchrad kept" in proc.stdout
    assert not {"align", "apply_wcs", "detect_sources"} & _planned_jobs(proc.stdout), proc.stdout[-3000:]
