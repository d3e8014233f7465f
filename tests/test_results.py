"""tweakflow.results: solution rows, attempt and match tables, final statuses."""

import math

import numpy as np
import pytest

from tweakflow import results


def test_match_table_residuals_before_and_after():
    rng = np.random.default_rng(3)
    ref = rng.uniform(-30, 30, size=(50, 2))
    ang = np.deg2rad(0.01)
    matrix = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    shift = np.array([0.4, -0.2])
    im = (ref - shift) @ np.linalg.inv(matrix).T  # ref = shift + matrix @ im exactly
    order = rng.permutation(50)
    fit_info = {"matched_ref_idx": order, "matched_input_idx": order, "fitmask": np.arange(50) % 7 != 0, "matrix": matrix, "shift": shift}
    tab = results.match_table(fit_info, ref, im, image="combined", x=np.arange(50.0), stage="absolute", tp_scale=2.0, pair_columns={"k": order})
    assert len(tab) == 50 and tab.colnames[: len(results.MATCH_COLUMNS)] == [c for c, _ in results.MATCH_COLUMNS]
    assert set(tab["image"]) == {"combined"} and set(tab["stage"]) == {"absolute"}
    assert np.allclose(tab["dx_before"], 2000.0 * (im[order, 0] - ref[order, 0]))
    assert np.allclose(tab["dy_before"], 2000.0 * (im[order, 1] - ref[order, 1]))
    assert np.max(np.abs(tab["dx_after"])) < 1e-6 and np.max(np.abs(tab["dy_after"])) < 1e-6
    assert np.allclose(tab["tp_x"], 2.0 * ref[order, 0])
    assert np.array_equal(tab["x"], order.astype(float)) and np.all(np.isnan(tab["y"]))
    assert list(tab["used"]) == list(np.arange(50) % 7 != 0) and np.all(tab["accepted"])
    assert str(tab["dx_after"].unit) == "mas" and np.array_equal(tab["k"], order)
    assert len(results.empty_match_table()) == 0


def test_fit_row_reports_a_fit_in_arcsec_and_mas():
    fit_info = {
        "status": "SUCCESS", "fitgeom": "rshift", "nmatches": 40, "fitmask": np.arange(40) % 4 != 0,
        "rmse": 0.5, "mae": 0.4, "shift": [2.0, -1.0], "<rot>": 0.01, "<scale>": 1.0, "skew": 0.0,
    }
    row = results.fit_row("a.fits", 7, "relative", "COMPLETE", "", fit_info, n_sources=99, tp_scale=0.05)
    assert row["group_id"] == "7" and row["n_matches"] == 40 and row["n_used"] == 30 and row["n_sources"] == 99
    assert row["rms_mas"] == pytest.approx(25.0) and row["mae_mas"] == pytest.approx(20.0)
    assert (row["xshift"], row["yshift"]) == pytest.approx((0.1, -0.05))
    skipped = results.fit_row("b.fits", "g", "relative", "SKIPPED", "why")
    assert skipped["fitgeom"] == "" and math.isnan(skipped["rms_mas"]) and skipped["scale"] == 1.0


def test_rows_to_table_adds_only_the_quality_columns_some_row_has():
    rows = [results.fit_row("a", "g", "relative", "SKIPPED", "x"), dict(results.fit_row("b", "g", "relative", "SKIPPED", "y"), grade=3)]
    tab = results.rows_to_table(rows)
    assert tab.colnames == [c for c, _ in results.SOLUTION_COLUMNS] + ["grade"]
    assert list(tab["grade"]) == [0, 3]
    full = results.with_quality_columns([dict(rows[0])])[0]
    assert all(name in full for name, _, _ in results.QUALITY_COLUMNS)


def test_attempt_table_of_no_attempts_has_every_column():
    tab = results.attempt_table([])
    assert len(tab) == 0 and tab.colnames == [c for c, _ in results.ATTEMPT_COLUMNS]


@pytest.mark.parametrize(
    "rel, abs_, expected",
    [
        (("COMPLETE", ""), ("COMPLETE", ""), ("COMPLETE", "")),
        (("COMPLETE", ""), ("FAILED", "gate"), ("COMPLETE", "absolute alignment failed (gate); relative alignment kept")),
        (("SKIPPED", "no sources"), ("SKIPPED", "excluded"), ("SKIPPED", "no sources")),
    ],
)
def test_final_status(rel, abs_, expected):
    assert results.final_status(*rel, *abs_) == expected


def test_serialized_wcs_round_trip():
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.crval = [10.0, 20.0]
    s = results.SerializedWCS(w)
    assert s.load() is not s.load() and np.allclose(s.load().wcs.crval, [10.0, 20.0])
