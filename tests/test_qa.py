"""QA tables, plots and the `snakemake --report` report, from alignment results."""

import html.parser
import os

import numpy as np
import pytest
from astropy.table import Table

from tweakflow import qa, results
from tweakflow.align import relative_align
from tweakflow.detection import detect_sources
from tweakflow.grouping import resolve_group_id
from tweakflow.io import read_image
from tweakflow.results import rows_to_table
from workflow_runner import SMALL, run_workflow


class _Rows(html.parser.HTMLParser):
    """Rows of every ``<table>`` of a page: lists of cell texts per table."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _tables(path):
    p = _Rows()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p.tables


def _png_shape(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape


@pytest.fixture(scope="module")
def aligned(small_dataset):
    """The small dataset aligned: entries, WCSs, solution table and details."""
    entries = []
    for p in small_dataset["images"]:
        im = read_image(p)
        cat, _ = detect_sources(im.data, im.dq)
        entries.append(dict(name=os.path.basename(p), wcs=im.wcs, wcsinfo=im.wcsinfo, catalog=cat, group_id=resolve_group_id(im.meta["observation"], im.meta["group_id"]), shape=im.shape))
    details = {}
    wcs, rows = relative_align(entries, details=details)
    return entries, wcs, rows_to_table(rows), details


def test_relative_matches_reproduce_the_fit(aligned):
    """The recorded pairs are those of each fit: their used residuals give the fit's RMS."""
    _entries, _, sol, details = aligned
    m = details["matches"]
    assert np.all(m["accepted"])
    for gid in set(sol["group_id"][sol["n_matches"] > 0]):
        row = sol[sol["group_id"] == gid][0]
        sel = (m["group_id"] == gid) & m["used"]
        assert sel.sum() == row["n_used"]
        rms = np.sqrt(np.mean(m["dx_after"][sel] ** 2 + m["dy_after"][sel] ** 2))
        assert rms == pytest.approx(row["rms_mas"], rel=1e-6)
        # before the fit the residuals are the pointing error between exposures
        assert np.median(np.hypot(m["dx_before"][sel], m["dy_before"][sel])) > 100.0
    # the reference's sources are named in every pair
    ref_names = set(sol["image"][sol["reason"] == "alignment reference"])
    assert set(m["ref_image"]) <= ref_names and len(ref_names) == 2


def test_plots_are_written(aligned, tmp_path):
    entries, wcs, sol, details = aligned
    m = details["matches"]
    for k in (0, 2):  # the reference and an aligned image
        e = entries[k]
        out = tmp_path / f"img{k}.png"
        qa.plot_image_residuals(str(out), e["name"], [{"name": e["name"], "shape": e["shape"], "row": sol[k]}], m)
        assert _png_shape(out)[1] > 1500
    fps = [
        {"name": e["name"], "group_id": e["group_id"], "status": s, "radec": np.asarray(w.footprint()), "reference": k < 2}
        for k, (e, w, s) in enumerate(zip(entries, wcs, ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]))
    ]
    qa.plot_footprints(str(tmp_path / "fp.png"), fps)
    qa.plot_overview(str(tmp_path / "ov.png"), sol, m)
    # the absolute fit's matches: one table for the combined catalog
    tab = results.match_table(
        {"matched_ref_idx": np.arange(20), "matched_input_idx": np.arange(20), "fitmask": np.ones(20, bool), "matrix": np.eye(2), "shift": np.array([0.1, 0.0])},
        np.random.default_rng(1).uniform(-40, 40, (20, 2)),
        np.random.default_rng(2).uniform(-40, 40, (20, 2)),
        image="combined",
        stage="absolute",
    )
    qa.plot_absolute(str(tmp_path / "abs.png"), tab, sol[2])
    qa.plot_absolute(str(tmp_path / "abs_empty.png"), results.empty_match_table())
    for name in ("fp.png", "ov.png", "abs.png", "abs_empty.png"):
        h, w = _png_shape(tmp_path / name)[:2]
        assert h > 400 and w > 800, name
    assert not list(tmp_path.glob(".tmp-*")), "atomic writes leave no temporary folders"


def _pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


@pytest.mark.slow
def test_plots_are_thread_safe_and_reuse_a_figure(aligned, tmp_path):
    """Plots drawn by threads at once, or on one figure redrawn image after image, are those drawn alone."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    entries, wcs, sol, details = aligned
    m = details["matches"]
    n = len(entries)
    chips = [[{"name": e["name"], "shape": e["shape"], "row": sol[k]}] for k, e in enumerate(entries)]
    for name in ("alone", "reused", "threads"):
        (tmp_path / name).mkdir()

    def draw(k, folder):
        qa.plot_image_residuals(str(tmp_path / folder / f"{k}.png"), entries[k % n]["name"], chips[k % n], m)

    for k in range(n):
        draw(k, "alone")
    qa.plot_overview(str(tmp_path / "alone" / "ov.png"), sol, m)
    # qa_images_step draws every image on one figure: nothing of an image is left on the next one
    panels = qa._PanelFigure(1)
    for k in (3, 0, 2, 1, 3):  # references (as reference) and aligned images, in another order
        qa._save(qa._draw_image_residuals(panels, entries[k]["name"], chips[k], m), str(tmp_path / "reused" / f"{k}.png"))
    # Snakemake jobs run as threads of one process: plots at the same time in several threads
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(draw, k, "threads") for k in range(3 * n)]
        futures += [pool.submit(qa.plot_overview, str(tmp_path / "threads" / f"ov{k}.png"), sol, m) for k in range(3)]
        for f in futures:
            f.result()
    for k in range(n):
        alone = _pixels(tmp_path / "alone" / f"{k}.png")
        assert np.array_equal(_pixels(tmp_path / "reused" / f"{k}.png"), alone), k
        for j in (k, k + n, k + 2 * n):
            assert np.array_equal(_pixels(tmp_path / "threads" / f"{j}.png"), alone), j
    for k in range(3):
        assert np.array_equal(_pixels(tmp_path / "threads" / f"ov{k}.png"), _pixels(tmp_path / "alone" / "ov.png"))
    # the rule's step (one figure for all images, PNGs written by a helper thread): the same files
    from tweakflow.io import write_sidecar

    sidecars = []
    for k, (e, w) in enumerate(zip(entries, wcs)):
        sidecars.append(str(tmp_path / f"{k}_wcs.asdf"))
        write_sidecar(sidecars[-1], wcs=w, wcsinfo=e["wcsinfo"], group_id=e["group_id"], filename=e["name"], shape=e["shape"], extra={"status": str(sol["status"][k])})
    sol.write(tmp_path / "solutions.ecsv", format="ascii.ecsv")
    m.write(tmp_path / "matches.ecsv", format="ascii.ecsv")
    step = tmp_path / "step"
    qa.qa_images_step(str(tmp_path / "solutions.ecsv"), str(tmp_path / "matches.ecsv"), sidecars[::-1], str(step / "images"))
    qa.qa_plots_step(str(tmp_path / "solutions.ecsv"), str(tmp_path / "matches.ecsv"), sidecars[::-1], str(step / "fp.png"), str(step / "ov.png"))
    for k in range(n):
        assert (step / "images" / f"{k}.png").read_bytes() == (tmp_path / "alone" / f"{k}.png").read_bytes(), k
    assert (step / "ov.png").read_bytes() == (tmp_path / "alone" / "ov.png").read_bytes()
    assert _png_shape(step / "fp.png")[0] > 800 and not list(step.rglob(".tmp-*"))
    # no pyplot (its current figure and figure manager are global state)
    code = "import sys; from tweakflow import qa, results; qa.plot_absolute(sys.argv[1], results.empty_match_table()); assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "abs.png")], check=True)
    assert _png_shape(tmp_path / "abs.png")[1] > 1500


def test_summary_page_matches_the_summary(aligned, tmp_path):
    _, _, sol, details = aligned
    from tweakflow.steps import summary_step

    sol_path = tmp_path / "solutions.ecsv"
    sol.write(sol_path, format="ascii.ecsv")
    summary = summary_step([str(sol_path)], str(tmp_path / "tweakreg_summary.ecsv"))
    for col in ("match_fraction", "image_rms_mas", "attempt", "n_attempts", "recovery"):
        assert col in summary.colnames
    qa.summary_html(summary, str(tmp_path / "summary.html"))
    per_image, per_group = _tables(tmp_path / "summary.html")
    header = per_image[0]
    assert header[:3] == ["image", "group_id", "status"]
    assert [r[0] for r in per_image[1:]] == list(summary["image"])
    assert [r[2] for r in per_image[1:]] == list(summary["status"])
    rms = header.index("rms_mas")
    assert [r[rms] for r in per_image[1:]] == [("" if not np.isfinite(v) else f"{v:.2f}") for v in summary["rms_mas"]]
    assert len(per_group) == 1 + len(set(summary["group_id"]))
    qa.attempts_html(details["attempts"], str(tmp_path / "attempts.html"))
    (att,) = _tables(tmp_path / "attempts.html")
    assert len(att) == 1 + len(details["attempts"])


def test_config_and_run_record_pages(tmp_path):
    qa.config_html({"inputs": "demo", "quality": {"enabled": True, "recovery_searchrad": [6.0, 12.0]}}, str(tmp_path / "c.html"))
    text = (tmp_path / "c.html").read_text()
    assert "quality:" in text and "recovery_searchrad" in text
    logs, bench = tmp_path / "logs", tmp_path / "benchmarks"
    (logs / "detect_sources").mkdir(parents=True)
    bench.mkdir()
    (logs / "align.log").write_text("2026 INFO tweakflow: fine\n2026 WARNING tweakflow: a <warning> & more\n")
    (logs / "detect_sources" / "a.log").write_text("\n".join(f"line {k}" for k in range(500)))
    (bench / "align.tsv").write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n2.63\t0:00:02\t144.89\t329.04\t120.09\t125.99\t0.35\t0.24\t73.71\t2.43\n")
    qa.run_record_html(str(logs), str(bench), str(tmp_path / "r.html"), max_lines=100)
    text = (tmp_path / "r.html").read_text()
    (jobs,) = _tables(tmp_path / "r.html")
    assert [r[0] for r in jobs[1:]] == ["align", "detect_sources/a"]
    assert jobs[1][1:4] == ["2.63", "2.43", "145"] and jobs[1][4] == "1 / 0"
    assert "a &lt;warning&gt; &amp; more" in text
    assert "last 100 of 500 lines" in text and "line 499" in text and "line 10\n" not in text


@pytest.mark.slow
def test_report_after_the_demo(tmp_path):
    """The demo writes the QA plots and pages; `snakemake --report` embeds them."""
    config = {"output_dir": "results", "demo": {**SMALL, "shift_error": [1.5, 3.0]}}
    run_workflow(tmp_path, config)
    res = tmp_path / "results"
    qa_dir = res / "qa"
    stems = sorted(p.name[: -len("_tweakreg.fits")] for p in res.glob("*_tweakreg.fits"))
    assert sorted(p.stem for p in (qa_dir / "images").glob("*.png")) == stems
    for name in ("footprints.png", "residuals_overview.png", "summary.html", "attempts.html", "config.html", "run_record.html"):
        assert (qa_dir / name).stat().st_size > 1000, name
    # the page's table is the summary file
    summary = Table.read(res / "tweakreg_summary.ecsv")
    per_image = _tables(qa_dir / "summary.html")[0]
    assert [(r[0], r[2]) for r in per_image[1:]] == [(str(a), str(b)) for a, b in zip(summary["image"], summary["status"])]
    assert set(summary["status"]) == {"COMPLETE"} and summary["n_attempts"].max() > 1
    # every rule's log is in the run record, the costly ones with a benchmark
    record = (qa_dir / "run_record.html").read_text()
    for job in ("make_demo", "align", "summary", "qa_plots", f"detect_sources/{stems[0]}", f"apply_wcs/{stems[0]}"):
        assert f">{job}<" in record, job
    assert (res / "benchmarks" / "qa_plots.tsv").exists()
    assert (res / "work" / "relative" / "matches.ecsv").exists() and (res / "work" / "relative" / "attempts.ecsv").exists()
    proc = run_workflow(tmp_path, config, "--report", "report.html")
    assert "Report created" in proc.stdout
    text = (tmp_path / "report.html").read_text()
    for needle in ("1. Summary", "2. Alignment quality", "3. Logs and benchmarks", "footprints.png", f"{stems[0]}.png", "run_record.html"):
        assert needle in text, needle
    # its first page opens with the verdict (verdict.txt), the demo's accuracy included
    verdict = (res / "verdict.txt").read_text().splitlines()
    assert verdict[0].startswith("tweakflow verdict: 4 images in 2 groups: 4 COMPLETE")
    assert verdict[0] in text and "demo accuracy against the synthetic truth" in text
    # nothing to do afterwards
    assert "Nothing to be done" in run_workflow(tmp_path, config, "-n").stdout
