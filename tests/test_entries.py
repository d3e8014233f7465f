"""tweakflow.entries: alignment entries from catalogs + sidecars, and sidecars written back."""

import numpy as np
import pytest
from astropy.table import Table

from tweakflow.entries import fits_chip_entries, load_entries, relative_result, sky_footprints, write_solution_sidecars
from tweakflow.errors import InputError
from tweakflow.io import read_sidecar, write_sidecar
from tweakflow.synthetic import PIXEL_SCALE, make_fits_chip_wcs, make_jwst_gwcs

SHAPE = (100, 120)
WCSINFO = {"v2_ref": 120.0, "v3_ref": -527.0, "roll_ref": 30.0, "ra_ref": 53.1, "dec_ref": -27.8, "v3yangle": -0.56, "vparity": -1}


def _gwcs():
    s = PIXEL_SCALE * 1000.0
    return make_jwst_gwcs(SHAPE, {"x": {"c1_0": s, "c0_1": 0.0}, "y": {"c0_1": s, "c1_0": 0.0}}, WCSINFO)


def _catalog(path, x, y, **cols):
    Table({"x": np.asarray(x, float), "y": np.asarray(y, float), **cols}).write(path, format="ascii.ecsv")
    return str(path)


@pytest.fixture
def jwst_pair(tmp_path):
    """Two JWST images: one catalog with a source outside the bounding box, one with weights."""
    sides, cats = [], []
    for k in range(2):
        side = str(tmp_path / f"im{k}_wcs.asdf")
        write_sidecar(side, wcs=_gwcs(), wcsinfo=WCSINFO, group_id=f"g{k}", filename=f"im{k}.fits", shape=SHAPE, date="2025-01-01T00:00:00")
        sides.append(side)
    cats.append(_catalog(tmp_path / "im0.ecsv", [10.0, 50.0, 500.0], [10.0, 50.0, 20.0]))
    cats.append(_catalog(tmp_path / "im1.ecsv", [20.0, 30.0], [20.0, 30.0], weight=[2.0, 3.0]))
    return cats, sides


def test_load_entries_drops_sources_outside_the_bounding_box_and_fills_weights(jwst_pair):
    cats, sides = jwst_pair
    entries = load_entries(cats, sides)
    assert [e["name"] for e in entries] == ["im0.fits", "im1.fits"] and [e["index"] for e in entries] == [0, 1]
    assert len(entries[0]["catalog"]) == 2  # x = 500 lies outside the 120-pixel-wide bounding box
    assert list(entries[0]["catalog"]["weight"]) == [1.0, 1.0]  # another catalog has weights: 1 each
    assert list(entries[1]["catalog"]["weight"]) == [2.0, 3.0]
    assert entries[0]["group_id"] == "g0" and entries[0]["shape"] == SHAPE and entries[0]["date"].startswith("2025")


def test_unreadable_sidecar_gives_an_entry_left_out(jwst_pair, tmp_path):
    cats, sides = jwst_pair
    bad = tmp_path / "bad_meta.json"
    bad.write_text('{"kind": "jwst", "filename": "bad.fits", "asdf": "bm90IGFzZGY="}')
    with pytest.raises(InputError, match=r"bad_meta\.json"):
        load_entries(cats[:1] + [cats[1]], sides[:1] + [str(bad)])
    entries = load_entries(cats[:1] + [cats[1]], sides[:1] + [str(bad)], on_bad_input="skip")
    assert entries[1]["wcs"] is None and entries[1]["unreadable"] and len(entries[1]["catalog"]) == 0


def test_fits_chips_are_entries_of_one_group():
    chips = [{"hdu": 1, "extname": "SCI", "extver": 1, "shape": [50, 60]}, {"hdu": 4, "extname": "SCI", "extver": 2, "shape": [50, 60]}]
    sc = {"kind": "fits", "filename": "j_flt.fits", "group_id": "j_flt.fits", "chips": chips, "wcs": ["w1", "w2"], "date": None}
    cat = Table({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0], "chip": [1, 2, 2]})
    entries = fits_chip_entries(sc, cat, 7)
    assert [len(e["catalog"]) for e in entries] == [1, 2] and {e["group_id"] for e in entries} == {"j_flt.fits"}
    assert entries[1]["name"].endswith("SCI,2]") and entries[1]["wcs"] == "w2" and entries[1]["index"] == 7


def test_solution_sidecars_round_trip(jwst_pair, tmp_path):
    cats, sides = jwst_pair
    entries = load_entries(cats, sides)
    rows = [
        {"status": "COMPLETE", "reason": "", "stage": "relative"},
        {"status": "SKIPPED", "reason": "no fit", "stage": "relative"},
    ]
    outs = [str(tmp_path / f"out{k}_wcs.asdf") for k in range(2)]
    write_solution_sidecars(entries, iter(e["wcs"] for e in entries), rows, outs)
    back = [read_sidecar(p) for p in outs]
    assert [b["extra"]["status"] for b in back] == ["COMPLETE", "SKIPPED"] and back[1]["extra"]["reason"] == "no fit"
    entry = dict(entries[1], sidecar=back[1])
    assert relative_result(entry) == {"status": "SKIPPED", "reason": "no fit", "wcsname": ""}


def test_sky_footprints_cover_the_detector_edges(tmp_path):
    w = make_fits_chip_wcs((50, 60), (10.0, 20.0), 0.0, 0.1)
    sc = {"kind": "fits", "wcs": [w, w], "chips": [{"shape": [50, 60]}, {"shape": [50, 60]}]}
    fps = sky_footprints(sc)
    assert len(fps) == 2 and fps[0].shape == (4, 2)
    jw = {"kind": "jwst", "wcs": _gwcs(), "shape": SHAPE}
    (fp,) = sky_footprints(jw)
    ra, dec = _gwcs()(-0.5, -0.5, with_bounding_box=False)
    assert np.allclose(fp[0], [ra, dec], rtol=0, atol=1e-12)
