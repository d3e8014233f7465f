"""The JWST output writer does each piece of work once, and writes the same file.

`tweakflow.wcs_update.write_jwst_output` sets ``meta.wcs`` without
stdatamodels' validation on assignment (it validated the GWCS a first time,
then ``model.save`` validated it again with the whole tree): the output is
still validated when it is written, and is byte for byte the file the
validating assignment gives.
"""

import filecmp
import os
from unittest import mock

import pytest
from astropy.time import Time

from tweakflow import callogs, wcs_update
from tweakflow.errors import InputError
from tweakflow.io import read_jwst_meta, read_sidecar, write_sidecar
from tweakflow.params import SIP_PARS
from tweakflow.synthetic import load_truth
from tweakflow.wcs_update import write_jwst_output


@pytest.fixture(scope="module")
def corrected(small_dataset, tmp_path_factory):
    """An input image and a COMPLETE WCS sidecar holding a different (the true) GWCS."""
    work = tmp_path_factory.mktemp("apply_speed")
    src = small_dataset["images"][1]
    truth, _ = load_truth(small_dataset["truth"])
    wcs_in, wcsinfo, _ = read_jwst_meta(src)
    true_wcs = truth[os.path.basename(src)]
    assert true_wcs is not wcs_in
    side = str(work / "img_wcs.asdf")
    write_sidecar(
        side, wcs=true_wcs, wcsinfo=wcsinfo, group_id="g1", filename=os.path.basename(src), shape=(1024, 1024),
        extra={"status": "COMPLETE", "reason": "", "stage": "absolute", "wcsname": "FIT-GAIADR3"},
    )
    return src, side


def _validating_set_meta_wcs(model, wcs, name, image):
    """What write_jwst_output did before: the validating attribute assignment."""
    if name:
        wcs.name = name
    model.meta.wcs = wcs


def test_output_identical_to_validating_assignment(corrected, tmp_path):
    src, side = corrected
    fixed = Time("2026-01-01T00:00:00")  # meta.date, set by stdatamodels on save
    new, ref = str(tmp_path / "new" / "x_tweakreg.fits"), str(tmp_path / "ref" / "x_tweakreg.fits")
    # and the step's log in cal_logs: its lines without their timestamps
    with mock.patch.object(Time, "now", return_value=fixed), mock.patch.object(callogs, "cal_log_line", lambda record: record.getMessage()):
        write_jwst_output(src, new, read_sidecar(side), dict(SIP_PARS))
        with mock.patch.object(wcs_update, "_set_meta_wcs", _validating_set_meta_wcs):
            write_jwst_output(src, ref, read_sidecar(side), dict(SIP_PARS))
    assert filecmp.cmp(new, ref, shallow=False)


def test_gwcs_not_validated_on_assignment(corrected, tmp_path):
    """The GWCS goes through one schema validation (asdf's, when the output is written)."""
    from gwcs import WCS
    from stdatamodels import validate

    src, side = corrected
    checked = []
    orig = validate._check_value

    def spy(value, schema, ctx):
        checked.append(type(value))
        return orig(value, schema, ctx)

    with mock.patch.object(validate, "_check_value", spy):
        write_jwst_output(src, str(tmp_path / "x_tweakreg.fits"), read_sidecar(side), dict(SIP_PARS))
    assert checked and WCS not in checked  # the scalar assignments are still validated


def test_invalid_gwcs_fails_the_write(corrected, tmp_path):
    """The write-time validation covers the GWCS: an invalid one writes nothing.

    (The validating assignment only warned and kept the input's GWCS.)
    """
    from asdf.exceptions import ValidationError

    src, side = corrected
    sc = read_sidecar(side)
    sc["wcs"].name = 123  # the GWCS schema wants a string
    sc["extra"]["wcsname"] = ""
    out = tmp_path / "bad_tweakreg.fits"
    with pytest.raises(ValidationError):
        write_jwst_output(src, str(out), sc, dict(SIP_PARS))
    assert os.listdir(tmp_path) == []


def test_meta_wcs_must_be_a_gwcs(corrected, tmp_path):
    src, side = corrected
    sc = read_sidecar(side)
    sc["wcs"] = {"not": "a gwcs"}
    out = tmp_path / "x_tweakreg.fits"
    with pytest.raises(InputError, match="not a GWCS"):
        write_jwst_output(src, str(out), sc, dict(SIP_PARS))
    assert not out.exists()
