
import numpy as np

from tweakflow import metrics, synthetic
from tweakflow.align import relative_align
from workflow_runner import detected_entries


def _entries(paths):
    return detected_entries(paths)


def test_relative_alignment_against_truth(small_dataset):
    entries = _entries(small_dataset["images"])
    truth, _ = synthetic.load_truth(small_dataset["truth"])
    tl = [truth[e["name"]] for e in entries]
    shapes = [e["shape"] for e in entries]
    before = metrics.relative_errors([e["wcs"] for e in entries], tl, shapes)
    wcs, rows = relative_align(entries)
    after = metrics.relative_errors(wcs, tl, shapes)
    assert np.all(before > 100)
    assert np.all(after < 1.0), after
    assert [r["status"] for r in rows] == ["COMPLETE"] * 4
    # detectors of one exposure share one fit
    fitted = [r for r in rows if r["reason"] != "alignment reference"]
    assert len({(r["xshift"], r["yshift"]) for r in fitted}) == 1
    for w in wcs[2:]:
        assert "v2v3corr" in w.available_frames


def test_empty_catalogs_are_skipped(small_dataset):
    entries = _entries(small_dataset["images"])
    entries[0]["catalog"] = entries[0]["catalog"][:0]
    entries[1]["catalog"] = entries[1]["catalog"][:0]
    wcs, rows = relative_align(entries)
    assert all(r["status"] == "SKIPPED" for r in rows)
    assert rows[0]["reason"] == "no sources in catalog"
    assert "only one exposure group" in rows[2]["reason"]
    assert wcs[2] is entries[2]["wcs"]
