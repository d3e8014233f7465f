
import numpy as np
import pytest

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


def test_in_memory_is_accepted_and_reaches_no_step():
    """README: ``in_memory`` is accepted for compatibility and changes nothing (no rule reads it)."""
    import glob
    import os

    import yaml

    from tweakflow.params import ABSOLUTE_PARS, DEFAULT_DETECTION_PARS, RELATIVE_PARS, SIP_PARS
    from workflow_runner import ROOT

    with open(os.path.join(ROOT, "workflow", "schemas", "config.schema.yaml")) as f:
        schema = yaml.safe_load(f)
    assert schema["properties"]["tweakreg"]["properties"]["in_memory"]["default"] is True
    for pars in (DEFAULT_DETECTION_PARS, RELATIVE_PARS, ABSOLUTE_PARS, SIP_PARS):
        assert "in_memory" not in pars
    code = glob.glob(os.path.join(ROOT, "workflow", "rules", "*.smk")) + glob.glob(os.path.join(ROOT, "scripts", "*.py"))
    code += [os.path.join(ROOT, "Snakefile")]
    assert code and not any("in_memory" in open(p).read() for p in code)


@pytest.mark.slow
def test_expanded_reference_catalog(small_dataset):
    """With expand_refcat the reference catalog the alignment ends with holds the reference group's
    sources and the unmatched ones of the aligned group, each through its image's corrected WCS,
    consistent on the sky with the truth (up to the one offset the relative alignment leaves)."""
    entries = _entries(small_dataset["images"])
    truth, _ = synthetic.load_truth(small_dataset["truth"])
    details = {}
    wcs, rows = relative_align(entries, expand_refcat=True, details=details)
    ref = details["reference"]
    names = [e["name"] for e in entries]
    ref_group = [i for i, r in enumerate(rows) if r["reason"] == "alignment reference"]
    assert set(ref["image"]) == set(names) and len(ref_group) == 2
    for i, e in enumerate(entries):
        mine = ref[ref["image"] == e["name"]]
        ra, dec = wcs[i](np.asarray(mine["x"], float), np.asarray(mine["y"], float))
        assert np.max(np.hypot((mine["RA"] - ra) * np.cos(np.deg2rad(dec)), mine["DEC"] - dec)) * 3.6e6 < 1e-3
        if i in ref_group:
            assert len(mine) == len(e["catalog"])
        else:  # only the sources that matched no reference source joined it
            assert 0 < len(mine) < len(e["catalog"])
    assert np.sum(ref["n_used"] > 0) > 20
    # on the truth: one common offset (the reference group's pointing error) and centroid noise
    d = []
    for name in names:
        mine = ref[ref["image"] == name]
        ra, dec = truth[name](np.asarray(mine["x"], float), np.asarray(mine["y"], float), with_bounding_box=False)
        d.append(3.6e6 * np.c_[(mine["RA"] - ra) * np.cos(np.deg2rad(dec)), mine["DEC"] - dec])
    d = np.vstack(d)
    assert np.percentile(np.hypot(*(d - np.median(d, axis=0)).T), 90) < 10.0  # mas
    # without expand_refcat the reference catalog is the reference group's
    details = {}
    relative_align(entries, details=details)
    assert set(details["reference"]["image"]) == {names[i] for i in ref_group}


@pytest.mark.parametrize("expand_refcat", [True, False])
def test_a_fit_takes_only_the_reference_near_its_group(tmp_path, monkeypatch, expand_refcat):
    """Each fit takes the reference sources and footprints within reach of its group
    (`_Reference.near`): fewer than the whole catalog on a mosaic, and the same
    alignment as with all of them."""
    from tweakflow import align
    from tweakflow.entries import load_entries

    # the benchmark's mosaic (benchmarks/benchmarks_mosaic.py), 4 x 2 exposures of two detectors
    cfg = synthetic.SyntheticConfig.mosaic(
        4, 2, shape=(2048, 2048), seed=1, detectors=["nrca1", "nrca3"], n_stars=400, grid_step=55.0, ra=150.0, dec=2.0, pa_v3=0.0,
        refcat_maglim=22.68,
    )
    out = synthetic.make_catalog_mosaic(str(tmp_path), cfg, maglim=99.0, max_sources=200)
    entries = load_entries(out["catalogs"], out["sidecars"])
    near, taken = align._Reference.near, []

    def spy(self, cone, margin):
        rows, footprints = near(self, cone, margin)
        taken.append((len(rows), len(self.table), len(footprints), len(self.footprints)))
        return rows, footprints

    monkeypatch.setattr(align._Reference, "near", spy)
    wcs_near, rows_near = relative_align(entries, expand_refcat=expand_refcat)
    monkeypatch.setattr(align._Reference, "near", lambda self, cone, margin: near(self, None, margin))
    wcs_all, rows_all = relative_align(entries, expand_refcat=expand_refcat)

    assert taken and all(n <= total and f <= nf for n, total, f, nf in taken)
    assert any(n < total / 2 for n, total, _, _ in taken[len(taken) // 2 :])  # later fits: a fraction
    if expand_refcat:
        assert sum(r["status"] == "COMPLETE" for r in rows_near) >= len(entries) - 1
    else:  # tiles that do not overlap the reference exposure find nothing to match
        assert 0 < sum(r["status"] == "COMPLETE" for r in rows_near) < len(entries) - 2
        assert any(n == 0 for n, _, _, _ in taken)
    for a, b in zip(rows_near, rows_all):
        assert (a["status"], a["reason"], a["xshift"], a["yshift"], a["n_matches"]) == (b["status"], b["reason"], b["xshift"], b["yshift"], b["n_matches"])
        assert a["rms_mas"] == b["rms_mas"] or (np.isnan(a["rms_mas"]) and np.isnan(b["rms_mas"]))
    y, x = np.mgrid[0:2048:256, 0:2048:256]
    for wa, wb in zip(wcs_near, wcs_all):
        ra_a, dec_a = wa(x, y)
        ra_b, dec_b = wb(x, y)
        assert np.max(np.hypot((ra_a - ra_b) * np.cos(np.radians(dec_a)), dec_a - dec_b)) * 3.6e6 < 1e-6


def test_reach_of_a_fit_covers_the_given_offset_and_the_search():
    """A fit takes the reference sources within its reach (`_reach`): the
    offset the user gives (``xoffset``, ``yoffset``) and the search around it."""
    from tweakflow import align
    from tweakflow.params import RELATIVE_PARS

    p = dict(RELATIVE_PARS)
    att = {"searchrad": p["searchrad"]}
    base = np.degrees(align._reach(att, p)) * 3600.0
    assert base >= p["searchrad"] + 5 * p["tolerance"] + p["separation"]
    shifted = np.degrees(align._reach(att, dict(p, xoffset=30.0, yoffset=-40.0))) * 3600.0
    assert shifted == pytest.approx(base + 50.0)
    wider = np.degrees(align._reach({"searchrad": 12.0}, p)) * 3600.0
    assert wider == pytest.approx(base + 12.0 - p["searchrad"])


def test_a_correction_tweakwcs_cannot_apply_fails_the_fit_not_the_job(small_dataset, monkeypatch):
    """A degenerate fit (a matrix tweakwcs cannot invert) is a failed attempt with its reason."""
    from tweakflow import align

    entries = _entries(small_dataset["images"])
    monkeypatch.setattr(align, "_refine_fit", lambda fi, *a: dict(fi, matrix=np.zeros((2, 2))))
    wcs, rows = relative_align(entries)
    fitted = [r for r in rows if r["reason"] != "alignment reference"]
    assert fitted and all(r["status"] == "SKIPPED" and "LinAlgError" in r["reason"] for r in fitted), [r["reason"] for r in fitted]
    assert all(w is e["wcs"] for w, e, r in zip(wcs, entries, rows) if r in fitted)
