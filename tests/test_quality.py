"""Quality gates and the recovery chain of the relative alignment, against synthetic truth."""


import numpy as np
import pytest

from tweakflow import metrics, synthetic
from tweakflow.align import relative_align
from tweakflow.errors import ConfigError
from tweakflow.quality import (
    QUALITY_DEFAULTS,
    chance_log10p,
    check_fit,
    check_image,
    consistent_rms_limit,
    fit_uncertainty,
    gate_limits,
    recovery_plan,
    resolve_quality,
)
from workflow_runner import detected_entries

#: Pointing errors of 1.5-3 arcsec per exposure: offsets between exposures
#: beyond the default searchrad (2 arcsec).
LARGE_ERRORS = {"n_exposures": 3, "detectors": ["nrca1", "nrca3"], "shape": (1024, 1024), "seed": 7, "n_stars": 900, "shift_error": (1.5, 3.0)}


def _entries(paths):
    return detected_entries(paths)


@pytest.fixture(scope="module")
def large_errors(tmp_path_factory):
    """Entries and true WCSs of a dataset whose pointing errors exceed searchrad."""
    out = tmp_path_factory.mktemp("large_errors")
    paths = synthetic.make_dataset(str(out), synthetic.SyntheticConfig(**LARGE_ERRORS))
    truth, _ = synthetic.load_truth(paths["truth"])
    return _entries(paths["images"]), truth


@pytest.fixture(scope="module")
def small_entries(small_dataset):
    paths = small_dataset["images"]
    truth, _ = synthetic.load_truth(small_dataset["truth"])
    return _entries(paths), truth


def _errors(entries, truth, wcs, rows):
    """Relative error (mas) of every COMPLETE image (NaN for the others)."""
    ok = [i for i, r in enumerate(rows) if r["status"] == "COMPLETE"]
    err = np.full(len(rows), np.nan)
    if len(ok) > 1:
        err[ok] = metrics.relative_errors([wcs[i] for i in ok], [truth[entries[i]["name"]] for i in ok], [entries[i]["shape"] for i in ok])
    return err


def _with_catalog(entries, bad, source):
    """A copy of ``entries`` where image ``bad`` has the catalog of image ``source``."""
    out = [dict(e) for e in entries]
    out[bad]["catalog"] = entries[source]["catalog"].copy()
    return out


# --- gates ------------------------------------------------------------------


def test_gate_limits_default_rms_from_tolerance():
    q = resolve_quality(None)
    assert q == {**QUALITY_DEFAULTS, "recovery_searchrad": [6.0, 12.0]}
    lim = gate_limits(q, tolerance=0.7)
    assert lim["max_rms_mas"] == pytest.approx(700.0 / 3)
    assert lim["max_shift_arcsec"] == np.inf
    assert gate_limits({**q, "max_rms_mas": 50}, tolerance=0.7)["max_rms_mas"] == 50.0


@pytest.mark.parametrize(
    "quality,needle",
    [
        ({"max_rms": 3}, "unknown"),
        ({"max_rms_mas": -1}, "quality.max_rms_mas"),
        ({"min_match_fraction": 1.5}, "quality.min_match_fraction"),
        ({"recovery_searchrad": [4, 0]}, "quality.recovery_searchrad"),
    ],
)
def test_bad_quality_settings_name_the_key(quality, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve_quality(quality)


def test_check_fit_reports_each_failed_gate():
    lim = gate_limits(resolve_quality({"max_shift_arcsec": 1.0}), tolerance=0.7)
    good = {"n_used": 150, "rms_mas": 4.0, "match_fraction": 0.75, "shift_arcsec": 0.5, "rotation_deg": 359.99}
    assert check_fit(good, lim) == []
    # a chance-coincidence fit: RMS near the tolerance, few matches
    bad = {"n_used": 8, "rms_mas": 470.0, "match_fraction": 0.05, "shift_arcsec": 1.7, "rotation_deg": 3.0}
    fails = check_fit(bad, lim)
    assert len(fails) == 5
    assert any("fit RMS 470.0 mas > max_rms_mas 233.3" in f for f in fails)
    assert any("min_matches" in f for f in fails)
    assert any("match fraction 0.05" in f for f in fails)
    assert any("max_shift_arcsec" in f for f in fails)
    assert any("max_rotation_deg" in f for f in fails)
    assert "overlap" in check_fit(dict(good, match_fraction=np.nan), lim)[0]


def test_check_fit_judges_by_the_data():
    lim = gate_limits(resolve_quality(None), tolerance=0.7)
    good = {"n_used": 25, "rms_mas": 4.0, "match_fraction": 0.3, "shift_arcsec": 0.5, "rotation_deg": 0.0,
            "fitgeom": "general", "fit_error_mas": 1.2, "chance_log10p": -80.0}
    assert check_fit(good, lim) == []
    # more matches for more degrees of freedom: 3 per parameter
    assert check_fit(dict(good, n_used=12), lim) == ["12 sources used in the fit < 18 needed for a general fit"]
    assert check_fit(dict(good, n_used=12, fitgeom="rshift"), lim) == []
    assert "poorly constrained" in check_fit(dict(good, fit_error_mas=9.0), lim)[0]
    assert "no better than chance" in check_fit(dict(good, chance_log10p=-0.3), lim)[0]
    off = gate_limits(resolve_quality({"max_fit_error_mas": None, "max_chance_log10p": None, "matches_per_parameter": 0}), 0.7)
    assert check_fit(dict(good, n_used=12, fit_error_mas=9.0, chance_log10p=-0.3), off) == []


def test_fit_uncertainty_follows_counting_and_leverage():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-100, 100, (400, 2))
    res = rng.normal(0, 1.0, (400, 2))
    corners = np.array([[-100, -100], [100, -100], [100, 100], [-100, 100]], float)
    # a shift is known to sigma/sqrt(n) per axis everywhere
    assert fit_uncertainty(xy, res, "shift", corners) == pytest.approx(np.sqrt(2 / 400), rel=0.1)
    # more parameters: larger error at the corners; matches in one corner: far larger on the far side
    assert fit_uncertainty(xy, res, "general", corners) > fit_uncertainty(xy, res, "rshift", corners)
    corner = xy[(xy[:, 0] > 60) & (xy[:, 1] > 60)]
    far = np.array([[-1000.0, -1000.0]])
    assert fit_uncertainty(corner, res[: len(corner)], "general", far) > 20 * fit_uncertainty(xy, res, "general", far)
    assert fit_uncertainty(xy[:3], res[:3], "general", corners) == np.inf  # no redundancy


def test_chance_probability_separates_real_from_chance_pairs():
    # 300 sources, reference density 0.05 per arcsec^2, searchrad 2 arcsec
    real = chance_log10p(250, 300, 0.05, 0.012, 2.0, "rshift")  # pairs within 12 mas
    chance = chance_log10p(20, 300, 0.05, 0.7, 2.0, "rshift")  # pairs over the whole 0.7 arcsec tolerance
    assert real < -100
    assert chance > -1
    assert chance_log10p(0, 300, 0.05, 0.7, 2.0, "shift") == 0.0


def test_consistent_rms_limit():
    assert consistent_rms_limit([2.0, 2.5, 3.0], 5.0) == pytest.approx(12.5)
    assert consistent_rms_limit([0.1, 0.1, 0.2], 5.0) == 5.0  # never below 5 mas
    assert consistent_rms_limit([2.0, 2.5], 5.0) == np.inf  # too few fits to judge
    assert consistent_rms_limit([2.0, 2.5, 3.0], None) == np.inf


def test_check_image_needs_evidence():
    lim = gate_limits(resolve_quality(None), tolerance=0.7)
    # too few sources in the overlap to judge: passes whatever its fraction
    assert check_image({"n_used": 0, "n_possible": 5, "match_fraction": 0.0, "rms_mas": np.nan}, lim) == []
    fails = check_image({"n_used": 3, "n_possible": 100, "match_fraction": 0.03, "rms_mas": 400.0}, lim)
    assert len(fails) == 2 and "3 of 100 sources" in fails[0]


def test_recovery_plan_widens_then_reduces_degrees_of_freedom():
    q = resolve_quality(None)
    tiers = recovery_plan(2.0, True, "general", q)
    assert tiers[0] == [{"searchrad": 2.0, "use2dhist": True, "fitgeometry": "general"}]
    assert [a["searchrad"] for a in tiers[1]] == [6.0, 12.0] and {a["fitgeometry"] for a in tiers[1]} == {"general"}
    assert [t[0]["fitgeometry"] for t in tiers[2:]] == ["rscale", "rshift", "shift"]
    assert all(a["use2dhist"] for t in tiers[1:] for a in t)
    assert recovery_plan(2.0, True, "shift", q)[-1][0]["fitgeometry"] == "shift"
    assert len(recovery_plan(2.0, False, "rshift", dict(q, recovery=False))) == 1
    assert len(recovery_plan(2.0, False, "rshift", dict(q, enabled=False))) == 1
    # a search radius already wider than the recovery radii: no wider attempt
    assert [len(t) for t in recovery_plan(20.0, True, "rshift", q)] == [1, 1]


# --- the measured problem: offsets beyond searchrad ---------------------------


def test_jwst_behaviour_accepts_wrong_fits(large_errors):
    """Without gates (the JWST step's behaviour) chance-coincidence fits are COMPLETE with arcsecond errors."""
    entries, truth = large_errors
    wcs, rows = relative_align(entries, quality={"enabled": False})
    assert all(r["status"] == "COMPLETE" for r in rows)
    err = _errors(entries, truth, wcs, rows)
    assert np.nanmax(err) > 500.0, err


@pytest.mark.slow
def test_default_parameters_never_silently_wrong(large_errors):
    """DEFAULT parameters: every image within 1 mas of the truth or SKIPPED, never COMPLETE above 10 mas."""
    entries, truth = large_errors
    details = {}
    wcs, rows = relative_align(entries, details=details)
    err = _errors(entries, truth, wcs, rows)
    complete = np.array([r["status"] == "COMPLETE" for r in rows])
    assert not np.any(err[complete] > 10.0), err
    assert np.all(err[complete] < 1.0), err
    assert np.all(complete | np.array([r["status"] == "SKIPPED" and bool(r["reason"]) for r in rows]))
    # here the recovery chain finds every offset: all images aligned
    assert complete.all(), [r["reason"] for r in rows]
    recovered = [r for r in rows if r["recovery"]]
    assert recovered and all("searchrad" in r["recovery"] and r["attempt"] > 1 for r in recovered)
    # every attempt is recorded: the configured one failed its gates
    att = details["attempts"]
    first = att[(att["attempt"] == 1) & (att["image"] == recovered[0]["image"])]
    assert not first["passed"][0] and "max_rms_mas" in first["reason"][0]
    assert set(att["image"][att["chosen"]]) == {r["image"] for r in rows if r["reason"] != "alignment reference"}
    assert recovered[0]["n_attempts"] == int(np.max(att["attempt"][att["group_id"] == recovered[0]["group_id"]]))


def test_gates_without_recovery_skip_instead(large_errors):
    """recovery: false: a gated fit is SKIPPED with the failed gate, the input WCS kept."""
    entries, truth = large_errors
    wcs, rows = relative_align(entries, quality={"recovery": False})
    assert rows[0]["status"] == rows[1]["status"] == "COMPLETE"  # the reference
    skipped = [i for i, r in enumerate(rows) if r["status"] == "SKIPPED"]
    assert skipped
    for i in skipped:
        assert rows[i]["reason"].startswith("quality gate: fit RMS")
        assert wcs[i] is entries[i]["wcs"]
        assert rows[i]["n_attempts"] == 1
    err = _errors(entries, truth, wcs, rows)
    assert np.nanmax(err) < 1.0


# --- bad catalogs -------------------------------------------------------------


def test_wrong_catalog_of_one_image_is_skipped_with_reason(small_entries):
    """An image given another detector's catalog is SKIPPED by its gate; the rest align."""
    entries, truth = small_entries
    bad = _with_catalog(entries, 2, 3)  # exposure 2 nrca1 gets exposure 2 nrca3's catalog
    wcs, rows = relative_align(bad)
    assert rows[2]["status"] == "SKIPPED"
    assert rows[2]["reason"].startswith("catalog inconsistent with its group's fit") and "match fraction" in rows[2]["reason"]
    assert wcs[2] is bad[2]["wcs"]
    assert [r["status"] for k, r in enumerate(rows) if k != 2] == ["COMPLETE"] * 3
    err = _errors(bad, truth, wcs, rows)
    assert np.nanmax(err) < 1.0, err
    # its group mate was refit without it
    assert "without 1 inconsistent image" in rows[3]["recovery"]


def test_wrong_catalog_of_a_single_image_group(small_entries):
    """A group of one image with a wrong catalog: no attempt passes, SKIPPED, input WCS kept."""
    entries, _truth = small_entries
    bad = _with_catalog(entries, 2, 3)
    sub = [bad[0], bad[2]]
    wcs, rows = relative_align(sub)
    assert rows[0]["status"] == "COMPLETE" and rows[0]["reason"] == "alignment reference"
    assert rows[1]["status"] == "SKIPPED"
    assert rows[1]["reason"].startswith("no fit passed the quality gates in")
    assert rows[1]["n_attempts"] == 6
    assert wcs[1] is sub[1]["wcs"]


def test_too_few_matches_is_not_matched_again_per_geometry(small_entries, monkeypatch):
    """Attempts that differ only in fit geometry from one that found too few
    matches are not matched again: same attempts table, half the matching."""
    import tweakflow.align as align_mod

    entries, _ = small_entries
    few = [entries[0], dict(entries[2])]
    few[1]["catalog"] = entries[2]["catalog"][:10].copy()  # fewer sources than minobj (15)
    calls = []
    real = align_mod._fit_attempt

    def counting(entries_, idx, reference, att, *args, **kwargs):
        calls.append((att["fitgeometry"], att["searchrad"]))
        return real(entries_, idx, reference, att, *args, **kwargs)

    monkeypatch.setattr(align_mod, "_fit_attempt", counting)
    _wcs, rows = relative_align(few)
    assert rows[1]["status"] == "SKIPPED" and rows[1]["n_attempts"] == 6
    assert "not enough matches" in rows[1]["reason"]
    # rshift at 2, 6 and 12 arcsec are matched; shift at the same radii reuse them
    assert sorted(calls) == [("rshift", 2.0), ("rshift", 6.0), ("rshift", 12.0)], calls


@pytest.mark.slow
def test_wrong_catalog_of_the_reference_image(large_errors):
    """A reference image whose catalog the others contradict is dropped from the reference."""
    entries, truth = large_errors
    bad = _with_catalog(entries, 0, 1)  # the reference exposure's nrca1 gets nrca3's catalog
    details = {}
    wcs, rows = relative_align(bad, details=details)
    assert rows[0]["status"] == "SKIPPED"
    assert rows[0]["reason"].startswith("alignment reference that 2 overlapping image(s)")
    assert [r["status"] for r in rows[1:]] == ["COMPLETE"] * 5
    err = _errors(bad, truth, wcs, rows)
    assert np.nanmax(err) < 1.0, err
    assert set(details["attempts"]["pass_no"]) == {1, 2}
    assert set(details["attempts"]["pass_no"][details["attempts"]["chosen"]]) == {2}


# --- strict mode ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("pars", [{}, {"expand_refcat": True}, {"fitgeometry": "general"}])
def test_gates_off_reproduce_tweakwcs_align_wcs(large_errors, pars):
    """quality.enabled false gives exactly tweakwcs align_wcs (the JWST step)."""
    from tweakwcs.imalign import align_wcs

    from tweakflow.fitting import make_corrector, make_matcher
    from tweakflow.params import RELATIVE_PARS

    entries, _ = large_errors
    p = {**RELATIVE_PARS, **pars}
    corr = [make_corrector(e["wcs"], e["wcsinfo"], e["catalog"], e["name"], e["group_id"]) for e in entries]
    align_wcs(
        corr,
        enforce_user_order=p["enforce_user_order"],
        expand_refcat=p["expand_refcat"],
        minobj=p["minobj"],
        match=make_matcher(p["searchrad"], p["separation"], p["use2dhist"], p["tolerance"]),
        fitgeom=p["fitgeometry"],
        nclip=p["nclip"],
        sigma=(p["sigma"], "rmse"),
    )
    wcs, rows = relative_align(entries, quality={"enabled": False}, **pars)
    for c, w, r in zip(corr, wcs, rows):
        fi = c.meta["fit_info"]
        if fi["status"] == "SUCCESS":
            assert r["status"] == "COMPLETE"
            assert r["n_matches"] == fi["nmatches"]
            assert r["xshift"] == fi["shift"][0] and r["yshift"] == fi["shift"][1]
            assert np.allclose(w(500.0, 500.0), c.wcs(500.0, 500.0), rtol=0, atol=1e-12)
        else:
            assert fi["status"] == "REFERENCE" and r["reason"] == "alignment reference"


@pytest.fixture(scope="module")
def four_groups(tmp_path_factory):
    """4 exposures of one detector: three fits to judge each other by."""
    out = tmp_path_factory.mktemp("four_groups")
    cfg = {"n_exposures": 4, "detectors": ["nrca1"], "shape": (1024, 1024), "seed": 5, "n_stars": 900}
    paths = synthetic.make_dataset(str(out), synthetic.SyntheticConfig(**cfg))
    truth, _ = synthetic.load_truth(paths["truth"])
    return _entries(paths["images"]), truth


@pytest.mark.slow
def test_fit_inconsistent_with_the_run_is_rejected(four_groups):
    """A group whose centroids scatter 10x more than the others' fits far above the run's RMS: SKIPPED, not COMPLETE."""
    entries, truth = four_groups
    noisy = [dict(e) for e in entries]
    rng = np.random.default_rng(3)
    cat = noisy[2]["catalog"] = entries[2]["catalog"].copy()
    cat["x"] += rng.normal(0, 1.2, len(cat))  # ~40 mas per axis
    cat["y"] += rng.normal(0, 1.2, len(cat))
    # the predicted-error gate rejects it too; off here, to test the run-consistency gate alone
    q = {"max_fit_error_mas": None}
    wcs, rows = relative_align(noisy, quality=q)
    assert [r["status"] for r in rows] == ["COMPLETE", "COMPLETE", "SKIPPED", "COMPLETE"], [(r["status"], r["rms_mas"], r["reason"]) for r in rows]
    assert "max_rms_mas" in rows[2]["reason"]
    err = _errors(noisy, truth, wcs, rows)
    assert np.nanmax(err) < 1.0, err
    # control: without the run-consistency gate the noisy group passes (its RMS is far below tolerance/3)
    _, rows_off = relative_align(noisy, quality=dict(q, max_rms_ratio=None))
    assert rows_off[2]["status"] == "COMPLETE" and rows_off[2]["rms_mas"] > 30
