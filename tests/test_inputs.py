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
