"""tweakflow.verdict: the lines that end a run's console and open its report."""

import numpy as np
from astropy.table import Table

from tweakflow.verdict import MAX_GROUP_LINES, read_verdict, transfer_line, verdict_lines


def _summary(groups, absolute=False, bad=()):
    rows = []
    for g in range(groups):
        for det in ("nrca1", "nrca3"):
            gid = f"jw01_{g:05d}"
            status = "SKIPPED" if gid in bad else "COMPLETE"
            reason = "no fit passed the quality gates" if gid in bad else ("alignment reference" if g == 0 else "")
            rows.append(
                dict(image=f"{gid}_{det}_cal.fits", group_id=gid, status=status, reason=reason, n_used=100 + g,
                     rms_mas=2.0 if g else np.nan, xshift=0.1 * g, yshift=-0.2, rotation=0.001, abs_rms_mas=3.5)
            )
    t = Table(rows=rows)
    if absolute:
        t["abs_status"] = t["status"]
    else:
        t.remove_column("abs_rms_mas")
    return t


def _accuracy(rel, rel_in, abs_out, abs_in):
    return Table(dict(output_relative_mas=rel, input_relative_mas=rel_in, output_absolute_mas=abs_out, input_absolute_mas=abs_in))


def test_counts_groups_and_the_reference():
    lines = verdict_lines(_summary(3))
    assert lines[0] == "tweakflow verdict: 6 images in 3 groups: 6 COMPLETE (relative alignment only: no abs_refcat)"
    assert lines[1] == "  jw01_00000 (2 images): COMPLETE, the relative alignment's reference"
    assert lines[2].startswith("  jw01_00001 (2 images): COMPLETE, 101 matches, RMS 2.00 mas, shift (+0.100, -0.200) arcsec")
    assert len(lines) == 4


def test_a_skipped_group_says_why_and_absolute_fits_are_shown():
    lines = verdict_lines(_summary(3, absolute=True, bad=("jw01_00002",)))
    assert lines[0].endswith("4 COMPLETE, 2 SKIPPED (relative + absolute alignment)")
    assert lines[3] == "  jw01_00002 (2 images): SKIPPED: no fit passed the quality gates"
    assert lines[2].endswith("; absolute RMS 3.50 mas")


def test_large_runs_list_only_troubled_groups():
    n = MAX_GROUP_LINES + 30
    lines = verdict_lines(_summary(n, bad=("jw01_00007",)))
    assert len(lines) == 3
    assert "jw01_00007" in lines[1] and "SKIPPED" in lines[1]
    assert lines[2] == f"  ... {n - 1} more group(s) all COMPLETE: see tweakreg_summary.ecsv"


def test_demo_accuracy_is_said_plainly():
    acc = _accuracy([0.1, 0.14], [200.0, 822.0], [396.0, 395.0], [500.0, 600.0])
    relative_only = verdict_lines(_summary(2), acc)[-1]
    assert relative_only.startswith("demo accuracy against the synthetic truth: images aligned to each other within 0.14 mas")
    assert "(inputs up to 822 mas)" in relative_only
    assert "no absolute fit in this run (abs_refcat off)" in relative_only and "396 mas from the truth" in relative_only
    acc["output_absolute_mas"] = [0.5, 0.8]
    absolute = verdict_lines(_summary(2, absolute=True), acc)[-1]
    assert absolute.endswith("; on the sky within 0.80 mas of the truth (inputs up to 600 mas)")


def test_read_verdict_only_when_written_since(tmp_path):
    path = tmp_path / "verdict.txt"
    assert read_verdict(str(path)) == []
    path.write_text("a\nb\n")
    assert read_verdict(str(path)) == ["a", "b"]
    assert read_verdict(str(path), since=path.stat().st_mtime + 10) == []


def test_transfer_line():
    table = Table(dict(image=["a", "b", "c"], status=["COMPLETE", "COMPLETE", "SKIPPED"]))
    assert transfer_line(table, "out/transfer") == (
        "tweakflow transfer: 3 images with the run's solutions (2 COMPLETE, 1 SKIPPED) in out/transfer/"
    )
