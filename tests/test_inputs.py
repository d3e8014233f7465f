import json
import os

import pytest

from tweakflow.errors import ConfigError, InputError
from tweakflow.inputs import read_association, resolve_inputs


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_demo_names():
    items = resolve_inputs("demo", "out", {"n_exposures": 2, "detectors": ["nrca1"]})
    assert [it["stem"] for it in items] == ["jw04242001001_02101_00001_nrca1", "jw04242001001_02101_00002_nrca1"]
    assert items[0]["path"].startswith(os.path.join("out", "demo"))


def test_association(tmp_path):
    _touch(tmp_path / "a_cal.fits")
    _touch(tmp_path / "sub" / "b_cal.fits")
    asn = {"products": [{"members": [
        {"expname": "a_cal.fits", "exptype": "science", "group_id": "g1", "tweakreg_catalog": "a.ecsv"},
        {"expname": "sub/b_cal.fits", "exptype": "science"},
        {"expname": "bg_cal.fits", "exptype": "background"},
    ]}]}
    p = tmp_path / "asn.json"
    p.write_text(json.dumps(asn))
    items = resolve_inputs(str(p))
    assert [it["stem"] for it in items] == ["a", "b"]
    assert items[0]["group_id"] == "g1"
    assert items[0]["tweakreg_catalog"] == str(tmp_path / "a.ecsv")


@pytest.mark.parametrize(
    "content,msg",
    [
        ("not json", "not valid JSON"),
        (json.dumps({"asn_type": "image3"}), "no 'products'"),
        (json.dumps({"products": [{"members": [{"expname": "missing_cal.fits"}]}]}), "does not exist"),
        (json.dumps({"products": [{"members": [{"expname": "../x_cal.fits"}]}]}), "outside the association"),
    ],
)
def test_bad_association(tmp_path, content, msg):
    p = tmp_path / "asn.json"
    p.write_text(content)
    with pytest.raises(InputError, match=msg) as exc:
        read_association(str(p))
    assert str(p) in str(exc.value)


def test_globs_and_duplicates(tmp_path):
    _touch(tmp_path / "a" / "x_cal.fits")
    _touch(tmp_path / "b" / "x_cal.fits")
    _touch(tmp_path / "a" / "y_cal.fits")
    items = resolve_inputs([str(tmp_path / "a" / "*_cal.fits")])
    assert [it["stem"] for it in items] == ["x", "y"]
    with pytest.raises(ConfigError, match="would both be written"):
        resolve_inputs([str(tmp_path / "*" / "x_cal.fits")])
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_inputs([str(tmp_path / "nothing*.fits")])


def test_directory_stands_for_its_cal_files(tmp_path):
    """A folder: its *_cal.fits files, sorted; its other products are not images to align."""
    d = tmp_path / "visit"
    for name in ("b_cal.fits", "a_cal.fits", "a_i2d.fits", "a_crf.fits", "notes.txt"):
        _touch(d / name)
    _touch(d / "sub" / "c_cal.fits")  # not recursive
    items = resolve_inputs(str(d))
    assert [it["path"] for it in items] == [str(d / "a_cal.fits"), str(d / "b_cal.fits")]
    assert [it["stem"] for it in items] == ["a", "b"]


def test_directory_without_cal_files_gives_its_fits_files(tmp_path):
    """No *_cal.fits: every *.fits file, sorted, but tweakflow's own *_tweakreg.fits products."""
    d = tmp_path / "hst"
    for name in ("j2_flt.fits", "j1_flt.fits", "j1_flt_tweakreg.fits", "j1_flt.txt"):
        _touch(d / name)
    assert [os.path.basename(it["path"]) for it in resolve_inputs([str(d)])] == ["j1_flt.fits", "j2_flt.fits"]


def test_directory_among_files_and_globs(tmp_path):
    """A folder in a list, and a glob that matches folders, expand in place, in order."""
    _touch(tmp_path / "one" / "a_cal.fits")
    _touch(tmp_path / "two" / "b_cal.fits")
    _touch(tmp_path / "z_cal.fits")
    items = resolve_inputs([str(tmp_path / "z_cal.fits"), str(tmp_path / "two"), str(tmp_path / "one")])
    assert [it["stem"] for it in items] == ["z", "b", "a"]
    items = resolve_inputs([str(tmp_path / "t*")])
    assert [it["stem"] for it in items] == ["b"]


def test_directory_without_images_is_one_clear_line(tmp_path):
    d = tmp_path / "empty dir"
    _touch(d / "readme.txt")
    with pytest.raises(InputError) as exc:
        resolve_inputs([str(d)])
    assert str(exc.value) == f"{d}: a directory with no *_cal.fits or *.fits files"
