"""Absolute alignment against the truth: the set lands on the sky at the reference catalog's noise floor."""

import os

import numpy as np
import pytest
from astropy.table import Table

from refcat_server import CatalogServer, stars_from_refcat
from tweakflow import metrics, synthetic
from tweakflow.absolute import absolute_align, combined_catalog, wcs_name
from tweakflow.align import relative_align
from tweakflow.detection import detect_sources
from tweakflow.fitting import make_corrector
from tweakflow.grouping import resolve_group_id
from tweakflow.io import read_image
from tweakflow.refcat import fetch_gaia_catalog
from tweakflow.results import final_status

#: 4 exposures x 2 detectors, 5 mas reference-catalog noise.
ABS_SET = {"n_exposures": 4, "detectors": ["nrca1", "nrca3"], "shape": [1024, 1024], "seed": 9, "n_stars": 900}


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    out = tmp_path_factory.mktemp("abs")
    paths = synthetic.make_dataset(str(out), synthetic.SyntheticConfig.from_dict(ABS_SET))
    entries = []
    for p in paths["images"]:
        im = read_image(p)
        cat, _ = detect_sources(im.data, im.dq)
        gid = resolve_group_id(im.meta["observation"], im.meta["group_id"])
        entries.append(dict(name=os.path.basename(p), wcs=im.wcs, wcsinfo=im.wcsinfo, catalog=cat, group_id=gid, shape=im.shape))
    wcs, rows = relative_align(entries, expand_refcat=True)
    truth, _ = synthetic.load_truth(paths["truth"])
    tl = [truth[e["name"]] for e in entries]
    shapes = [e["shape"] for e in entries]
    return entries, wcs, [r["status"] for r in rows], Table.read(paths["refcat"]), tl, shapes


def test_absolute_fit_reaches_the_noise_floor(aligned):
    entries, wcs, statuses, ref, tl, shapes = aligned
    before = metrics.absolute_errors(wcs, tl, shapes)
    out, rows, combined = absolute_align(entries, wcs, statuses, ref)
    after = metrics.absolute_errors(out, tl, shapes)
    assert np.all(before > 100), before
    assert np.all(after < 5.0), after
    # the reference catalog has 5 mas noise per star and ~80 matches: ~1 mas is the floor
    assert np.sqrt(np.mean(after**2)) < 1.5, after
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert len({(r["xshift"], r["yshift"]) for r in rows}) == 1  # one solution for all
    # the relative alignment is kept
    assert np.max(metrics.relative_errors(out, tl, shapes)) < 1.0
    assert combined["matched"].sum() == rows[0]["n_matches"]


def test_beats_pooled_xyxymatch_only(aligned):
    """The JWST step's way (pool every detection, fit xyxymatch pairs) is biased by false pairs."""
    entries, wcs, statuses, ref, tl, shapes = aligned
    ours = metrics.absolute_errors(absolute_align(entries, wcs, statuses, ref)[0], tl, shapes)
    jwst_like = metrics.absolute_errors(absolute_align(entries, wcs, statuses, ref, merge=False, refine=False)[0], tl, shapes)
    assert np.sqrt(np.mean(ours**2)) < 0.5 * np.sqrt(np.mean(jwst_like**2)), (ours, jwst_like)


def test_merged_catalog_counts_repeated_detections(aligned):
    entries, wcs, *_ = aligned
    tp = make_corrector(wcs[0], entries[0]["wcsinfo"], entries[0]["catalog"], "a", "g")
    merged = combined_catalog(entries, wcs, tp)
    pooled = combined_catalog(entries, wcs, tp, merge=False)
    assert len(pooled) == sum(len(e["catalog"]) for e in entries)
    assert np.sum(merged["n_det"]) == len(pooled)
    assert len(merged) < len(pooled)
    assert merged["n_det"].max() >= 3  # stars seen in several dithers


def test_failure_keeps_relative_alignment(aligned):
    entries, wcs, statuses, ref, _tl, _shapes = aligned
    far = Table({"RA": ref["RA"] + 0.5, "DEC": ref["DEC"]})  # a catalog of another field
    out, rows, _ = absolute_align(entries, wcs, statuses, far)
    assert all(r["status"] == "FAILED" for r in rows)
    assert all(a is b for a, b in zip(out, wcs))
    status, reason = final_status("COMPLETE", "", rows[0]["status"], rows[0]["reason"])
    assert status == "COMPLETE" and "absolute alignment failed" in reason


def _random_field(ref, density_factor, seed):
    """A reference catalog of random positions over the same area, ``density_factor`` x as dense."""
    rng = np.random.default_rng(seed)
    n = int(density_factor * len(ref))
    ra = rng.uniform(ref["RA"].min(), ref["RA"].max(), n)
    dec = rng.uniform(ref["DEC"].min(), ref["DEC"].max(), n)
    return Table({"RA": ra, "DEC": dec})


@pytest.mark.parametrize("density_factor", [1.0, 4.0, 10.0])
def test_catalog_of_another_field_is_rejected(aligned, density_factor):
    """Chance pairs with an unrelated catalog never pass the gates: the relative alignment is kept."""
    entries, wcs, statuses, ref, _tl, _shapes = aligned
    out, rows, _ = absolute_align(entries, wcs, statuses, _random_field(ref, density_factor, seed=int(density_factor)))
    assert all(r["status"] == "FAILED" for r in rows), [(r["status"], r["n_used"], r["rms_mas"]) for r in rows]
    assert all(a is b for a, b in zip(out, wcs))
    assert {r["grade"] for r in rows} <= {4, 5}
    assert all("attempts" in r["reason"] or "quality gate" in r["reason"] or "matches" in r["reason"] for r in rows), rows[0]["reason"]


def test_catalog_of_another_field_passes_without_gates(aligned):
    """Control: the JWST step's behaviour (no gates) applies the chance fit at 4x density."""
    entries, wcs, statuses, ref, tl, shapes = aligned
    out, rows, _ = absolute_align(entries, wcs, statuses, _random_field(ref, 4.0, seed=4), quality={"enabled": False}, abs_minobj=5)
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert np.max(metrics.absolute_errors(out, tl, shapes)) > 100.0


def _shifted(ref, arcsec):
    return Table({"RA": ref["RA"] + arcsec / 3600.0 / np.cos(np.deg2rad(ref["DEC"])), "DEC": ref["DEC"]})


def test_five_arcsec_pointing_offset_is_recovered(aligned):
    """The set is 5 arcsec (plus its pointing errors) from the catalog: found, through the recovery chain if needed."""
    entries, wcs, statuses, ref, tl, shapes = aligned
    out, rows, _ = absolute_align(entries, wcs, statuses, _shifted(ref, 5.0))
    assert all(r["status"] == "COMPLETE" for r in rows), rows[0]["reason"]
    assert {r["grade"] for r in rows} <= {1, 2}
    for w, t, s in zip(out, tl, shapes):
        got, true = metrics.wcs_offsets(w, t, s)
        d = got - true
        # the whole set moved by the catalog's 5 arcsec (east: -xi... on the sky RA grows to the east)
        assert np.hypot(*(d.mean(axis=0))) == pytest.approx(5.0, abs=0.01)
        assert 1000 * np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1))) < 5.0


def test_group_not_aligned_relatively_is_aligned_to_the_catalog_alone(aligned):
    """A group the relative alignment left SKIPPED overlaps the reference catalog: aligned on its own (grade 3)."""
    entries, wcs, statuses, ref, tl, shapes = aligned
    gid = entries[-1]["group_id"]
    lone = [i for i, e in enumerate(entries) if e["group_id"] == gid]
    wcs2 = [e["wcs"] if i in lone else w for i, (e, w) in enumerate(zip(entries, wcs))]
    st2 = ["SKIPPED" if i in lone else s for i, s in enumerate(statuses)]
    out, rows, _ = absolute_align(entries, wcs2, st2, ref)
    err = metrics.absolute_errors(out, tl, shapes)
    assert all(r["status"] == "COMPLETE" for r in rows)
    assert {rows[i]["grade"] for i in lone} == {3}
    assert all("on its own" in rows[i]["reason"] for i in lone)
    assert np.all(err < 5.0), err
    # without recovery the group stays as the relative alignment left it
    _, rows_off, _ = absolute_align(entries, wcs2, st2, ref, quality={"recovery": False})
    assert {rows_off[i]["status"] for i in lone} == {"SKIPPED"}


@pytest.mark.parametrize(
    "abs_refcat,expected",
    [
        ("GAIADR3", "FIT-LVL3-GAIADR3"),
        ("GAIAREFCAT", "FIT-LVL3-GAIAREFCAT"),
        ("gaiadr2", "FIT-LVL3-gaiadr2"),
        ("data/my_ref.ecsv", "FIT-LVL3-data/my_ref.ecsv"),
        (" /abs/ref.fits ", "FIT-LVL3-/abs/ref.fits"),
    ],
)
def test_wcs_name_is_the_steps(abs_refcat, expected):
    """The JWST step names an absolutely aligned WCS f"FIT-LVL3-{abs_refcat}", abs_refcat as given."""
    assert wcs_name(abs_refcat) == expected




@pytest.mark.slow
def test_gaia_error_weights_beat_equal_weights(aligned, tmp_path):
    """Gaia from the loopback catalog service, where 40% of the stars are 50 mas off (one direction)
    and their served errors say so (35 mas per axis; the others 5 mas, the catalog's true noise):
    with ``refcat.weights: errors`` the fit ends near the truth, with equal weights (the JWST step's)
    it is pulled towards the offset stars."""
    entries, wcs, statuses, ref, tl, shapes = aligned
    epoch = 2026.0
    rng = np.random.default_rng(5)
    bad = rng.random(len(ref)) < 0.4
    moved = Table(ref, copy=True)
    moved["DEC"] = ref["DEC"] + np.where(bad, 0.050 / 3600.0, 0.0)
    moved.write(tmp_path / "refcat.ecsv")
    stars = stars_from_refcat(tmp_path / "refcat.ecsv", epoch, pos_error=np.where(bad, 35.0, 5.0))
    ra0, dec0 = float(np.mean(ref["RA"])), float(np.mean(ref["DEC"]))
    results = {}
    with CatalogServer(stars=stars) as srv:
        for mode in ("none", "errors"):
            gaia = fetch_gaia_catalog(ra0, dec0, 0.05, epoch, url=srv.url, retries=0, hygiene={"weights": mode})
            assert len(gaia) == len(ref)
            out, rows, _ = absolute_align(entries, wcs, statuses, gaia)
            assert all(r["status"] == "COMPLETE" for r in rows), rows[0]["reason"]
            results[mode] = metrics.absolute_errors(out, tl, shapes)
    unweighted, weighted = (np.sqrt(np.mean(results[m] ** 2)) for m in ("none", "errors"))
    print(f"RMS absolute error: equal weights {unweighted:.2f} mas, error weights {weighted:.2f} mas")
    assert weighted < 2.0, results["errors"]
    assert unweighted > 2.0 * weighted, (results["none"], results["errors"])
