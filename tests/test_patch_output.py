"""Outputs written by patching the input's bytes, not by re-serializing it.

`tweakflow.wcs_update.write_jwst_output` writes a product as the headers
and ``ASDF`` extension stdatamodels builds, with the arrays' data blocks
copied from the input (`tweakflow.fitspatch`). Checked against the writer
before (``ImageModel(path)`` and ``model.save``: every array re-encoded):
the same file, byte for byte when the times are fixed; otherwise the same
metadata but for the date and the log's timestamps, the same GWCS on a
grid, the same headers, the input's data bytes, a valid model. Layouts
that do not allow patching are written in full, and say so.
"""

import contextlib
import filecmp
import hashlib
import logging
import os
import re
import shutil
from unittest import mock

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from tweakflow import callogs, fitspatch, wcs_update
from tweakflow.errors import InputError
from tweakflow.io import read_jwst_meta, read_sidecar, write_sidecar
from tweakflow.params import SIP_PARS
from tweakflow.synthetic import load_truth
from tweakflow.wcs_update import write_fits_output, write_jwst_output

PATCHED = "written by patching"
FULL = "written in full by stdatamodels"
#: the log's lines without their UTC timestamps
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} - ")


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@contextlib.contextmanager
def _read_in_full(image):
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(image) as model:
        yield model


@contextlib.contextmanager
def full_writer():
    """`write_jwst_output` as it was: ``ImageModel(path)`` (arrays read), ``model.save`` (arrays re-encoded)."""
    with (
        mock.patch.object(wcs_update, "_open_image_model", _read_in_full),
        mock.patch.object(wcs_update, "save_product", lambda model, image, path: model.save(path)),
    ):
        yield


@contextlib.contextmanager
def fixed_times():
    """``meta.date`` and the log's timestamps fixed: two writes can be compared byte for byte."""
    fixed = Time("2026-01-01T00:00:00")
    with mock.patch.object(Time, "now", return_value=fixed), mock.patch.object(callogs, "cal_log_line", lambda record: record.getMessage()):
        yield


@pytest.fixture(scope="module")
def sidecars(small_dataset, small_alignment, tmp_path_factory):
    """Per kind, an (input image, WCS sidecar): relative alignment, absolute (named), skipped."""
    work = tmp_path_factory.mktemp("patch_sidecars")
    src = small_alignment["images"][1]
    rel = small_alignment["wcs"][1]
    wcs_in, wcsinfo, _ = read_jwst_meta(src)
    truth, _ = load_truth(small_dataset["truth"])
    common = {"wcsinfo": wcsinfo, "group_id": "g1", "filename": os.path.basename(src), "shape": (1024, 1024)}
    absolute = str(work / "abs_wcs.asdf")
    write_sidecar(
        absolute, wcs=truth[os.path.basename(src)], **common,
        extra={"status": "COMPLETE", "reason": "", "stage": "absolute", "wcsname": "FIT-LVL3-GAIADR3"},
    )
    skipped = str(work / "skipped_wcs.asdf")
    write_sidecar(skipped, wcs=wcs_in, **common, extra={"status": "SKIPPED", "reason": "test", "stage": "relative"})
    return {"relative": (src, rel), "absolute": (src, absolute), "skipped": (src, skipped)}


def _tree(path):
    """An output's metadata (``meta`` without the date and the GWCS, the log without timestamps), GWCS, model."""
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(path, strict_validation=True) as m:
        m.validate()
        meta = m.meta.instance.copy()
        meta.pop("date")
        wcs = meta.pop("wcs")
        logs = {k: [_TIMESTAMP.sub("", line) for line in v] for k, v in m.cal_logs.instance.items()}
        return meta, logs, wcs, m.data.shape


def _headers(path):
    """Every header but the ``ASDF`` extension's, the primary's ``DATE`` left out."""
    with fits.open(path) as hdul:
        out = {}
        for hdu in hdul:
            if hdu.name != "ASDF":
                out[hdu.name, hdu.ver] = [(c.keyword, c.value, c.comment) for c in hdu.header.cards if c.keyword != "DATE"]
        return out


def _data_blocks(path):
    """{(name, ver): the bytes of its data area (padding included)} of every HDU but ``ASDF``."""
    out = {}
    with fits.open(path, do_not_scale_image_data=True) as hdul, open(path, "rb") as f:
        for i, hdu in enumerate(hdul):
            if hdu.name != "ASDF":
                info = hdul.fileinfo(i)
                f.seek(info["datLoc"])
                out[hdu.name, hdu.ver] = f.read(info["datSpan"])
    return out


def check_same_product(out, ref, src):
    """``out`` is ``ref`` (the full writer's): metadata, GWCS on a grid, headers; data bytes are ``src``'s."""
    meta, logs, wcs, shape = _tree(out)
    meta_r, logs_r, wcs_r, _ = _tree(ref)
    assert meta == meta_r and logs == logs_r
    assert wcs.available_frames == wcs_r.available_frames and wcs.name == wcs_r.name
    ny, nx = shape
    y, x = np.mgrid[-0.5 : ny - 0.5 : 20j, -0.5 : nx - 0.5 : 20j]
    ra, dec = wcs(x, y, with_bounding_box=False)
    ra_r, dec_r = wcs_r(x, y, with_bounding_box=False)
    assert np.max(np.abs(ra - ra_r)) < 1e-12 and np.max(np.abs(dec - dec_r)) < 1e-12
    assert _headers(out) == _headers(ref)
    blocks = _data_blocks(src)
    assert _data_blocks(out) == blocks and _data_blocks(ref) == blocks


@pytest.mark.parametrize("sip_approx", [True, False])
@pytest.mark.parametrize("kind", ["relative", "absolute", "skipped"])
def test_patched_output_is_the_full_writers(sidecars, tmp_path, caplog, kind, sip_approx):
    src, side = sidecars[kind]
    before = _sha256(src)
    sip = dict(SIP_PARS, sip_approx=sip_approx)
    out, ref = str(tmp_path / "patched" / "x_tweakreg.fits"), str(tmp_path / "full" / "x_tweakreg.fits")
    with caplog.at_level(logging.INFO, logger="tweakflow"):
        status = write_jwst_output(src, out, read_sidecar(side), sip)
    assert PATCHED in caplog.text and FULL not in caplog.text
    with full_writer():
        assert write_jwst_output(src, ref, read_sidecar(side), sip) == status
    assert status == ("SKIPPED" if kind == "skipped" else "COMPLETE")
    check_same_product(out, ref, src)
    if kind == "absolute":
        assert fits.getheader(out, "SCI").get("A_ORDER") is not None or not sip_approx
    assert _sha256(src) == before


def test_patched_output_is_byte_for_byte_the_full_writers(sidecars, tmp_path):
    """With the date and the log's timestamps fixed, the same file; the SCI header grew by SIP cards."""
    src, side = sidecars["relative"]
    out, ref = str(tmp_path / "patched" / "x_tweakreg.fits"), str(tmp_path / "full" / "x_tweakreg.fits")
    with fixed_times():
        write_jwst_output(src, out, read_sidecar(side), dict(SIP_PARS))
        with full_writer():
            write_jwst_output(src, ref, read_sidecar(side), dict(SIP_PARS))
    assert filecmp.cmp(out, ref, shallow=False)
    with fits.open(src) as a, fits.open(out) as b:
        # the header gained blocks: the HDUs after it moved, their bytes intact
        assert b.fileinfo(1)["datLoc"] - b.fileinfo(1)["hdrLoc"] > a.fileinfo(1)["datLoc"] - a.fileinfo(1)["hdrLoc"]
        assert b.fileinfo(2)["hdrLoc"] > a.fileinfo(2)["hdrLoc"]


def test_unusual_layout_is_written_in_full(sidecars, tmp_path, caplog):
    """An HDU after the ASDF extension: stdatamodels writes the file (and says so), correctly."""
    src0, side = sidecars["relative"]
    src = str(tmp_path / os.path.basename(src0))
    shutil.copyfile(src0, src)
    fits.append(src, np.arange(12, dtype=np.float32).reshape(3, 4), fits.Header([("EXTNAME", "EXTRA")]))
    before = _sha256(src)
    out, ref = str(tmp_path / "out" / "x_tweakreg.fits"), str(tmp_path / "full" / "x_tweakreg.fits")
    with caplog.at_level(logging.INFO, logger="tweakflow"):
        write_jwst_output(src, out, read_sidecar(side), dict(SIP_PARS))
    assert FULL in caplog.text and "not the one last HDU" in caplog.text and PATCHED not in caplog.text
    with full_writer():
        write_jwst_output(src, ref, read_sidecar(side), dict(SIP_PARS))
    check_same_product(out, ref, src)
    # the corrected GWCS, and the extra HDU kept
    mem = read_sidecar(side)["wcs"]
    _, _, wcs, shape = _tree(out)
    x, y = np.meshgrid(np.linspace(0, shape[1] - 1, 20), np.linspace(0, shape[0] - 1, 20))
    assert np.allclose(np.array(wcs(x, y)), np.array(mem(x, y)), rtol=0, atol=1e-12)
    assert np.array_equal(fits.getdata(out, "EXTRA"), np.arange(12, dtype=np.float32).reshape(3, 4))
    assert _sha256(src) == before


# ---------------------------------------------------------------------------
# fitspatch.plan on layouts built with astropy
# ---------------------------------------------------------------------------


def _asdf_hdu(payload=b"#ASDF 1.0.0\n"):
    data = np.frombuffer(payload, dtype=np.uint8)[None, :]
    return fits.BinTableHDU.from_columns([fits.Column(name="ASDF_METADATA", format=f"{data.shape[1]}B", array=data)], name="ASDF")


def _source(path, hdus=None, asdf_last=True):
    sci = fits.ImageHDU(np.arange(30 * 20, dtype=np.float32).reshape(30, 20), name="SCI")
    dq = fits.ImageHDU(np.arange(30 * 20, dtype=np.uint32).reshape(30, 20), name="DQ")
    hdus = hdus if hdus is not None else [sci, dq]
    hdus = [fits.PrimaryHDU(), *hdus, _asdf_hdu()] if asdf_last else [fits.PrimaryHDU(), _asdf_hdu(), *hdus]
    fits.HDUList(hdus).writeto(path)
    return str(path)


def _rebuilt(source, payload=b"#ASDF 1.0.0\n# new tree\n"):
    """An output list as stdatamodels builds it: new headers, the arrays read from ``source``, a new ASDF."""
    with fits.open(source) as src:
        hdus = [fits.PrimaryHDU(header=src[0].header.copy())]
        for h in src[1:-1]:
            new = fits.ImageHDU(np.array(h.data), name=h.name)
            new.header["NEWKEY"] = (1.5, "a keyword the output gains")
            hdus.append(new)
    return fits.HDUList([*hdus, _asdf_hdu(payload)])


def _refused(*args):
    raise OSError(18, "Invalid cross-device link")


@pytest.mark.parametrize("copy", ["in the kernel", "copy_file_range missing", "copy_file_range refused"])
def test_plan_copies_the_data_bytes(tmp_path, monkeypatch, copy):
    source = _source(tmp_path / "in.fits")
    plan, reason = fitspatch.plan(_rebuilt(source), source)
    assert reason is None
    if copy == "copy_file_range missing":
        monkeypatch.delattr(os, "copy_file_range")
    elif copy == "copy_file_range refused":
        monkeypatch.setattr(os, "copy_file_range", _refused)
    monkeypatch.setattr(fitspatch, "_CHUNK", 1000)  # several reads per array through user space
    out = str(tmp_path / "out.fits")
    fitspatch.write(plan, out)
    with fits.open(out) as b:
        assert b[1].header["NEWKEY"] == 1.5 and b["ASDF"].data.tobytes().endswith(b"# new tree\n")
        assert b["DQ"].data.dtype == np.uint32 and np.array_equal(b["DQ"].data, np.arange(600).reshape(30, 20))
    assert _data_blocks(out) == _data_blocks(source)
    ref = str(tmp_path / "ref.fits")
    _rebuilt(source).writeto(ref)
    assert filecmp.cmp(out, ref, shallow=False)  # what astropy writes for that list


@pytest.mark.filterwarnings("ignore:Unexpected extra padding")
@pytest.mark.parametrize(
    "layout, why",
    [
        ("after_asdf", "not the one last HDU"),
        ("trailing", "bytes after the last HDU"),
        ("compressed_hdu", "CompImageHDU"),
        ("gzip", "not a plain (uncompressed) FITS file"),
        ("bscale", "scaled data (BSCALE"),
        ("other_dtype", "data layout"),
        ("other_hdus", "the output's HDUs are not the input's"),
    ],
)
def test_plan_refuses_what_it_cannot_prove(tmp_path, layout, why):
    path = tmp_path / "in.fits"
    new = None
    if layout == "after_asdf":
        source = _source(path, asdf_last=False)
        new = fits.HDUList([fits.PrimaryHDU(), _asdf_hdu()])
    elif layout == "trailing":
        source = _source(path)
        with open(source, "ab") as f:
            f.write(b"\0" * 2880)
    elif layout == "compressed_hdu":
        source = _source(path, hdus=[fits.CompImageHDU(np.ones((30, 20), np.float32), name="SCI")])
        new = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((30, 20), np.float32), name="SCI"), _asdf_hdu()])
    elif layout == "gzip":
        import gzip

        plain = _source(tmp_path / "plain.fits")
        source = str(tmp_path / "in.fits.gz")
        with open(plain, "rb") as f, gzip.open(source, "wb") as g:
            g.write(f.read())
    elif layout == "bscale":
        hdu = fits.ImageHDU(np.linspace(0, 100, 600, dtype=np.float32).reshape(30, 20), name="SCI")
        hdu.scale("int16", bscale=0.01)
        source = _source(path, hdus=[hdu])
        with fits.open(source, do_not_scale_image_data=True) as src:
            new = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.array(src[1].data), name="SCI"), _asdf_hdu()])
        new[1].header["BSCALE"] = 0.01  # the raw integers, described as the input's
    elif layout == "other_dtype":
        source = _source(path)
        new = _rebuilt(source)
        new[1].data = new[1].data.astype(np.float64)
    elif layout == "other_hdus":
        source = _source(path)
        new = _rebuilt(source)
        new.insert(2, fits.ImageHDU(np.zeros((2, 2), np.float32), name="NEW"))
    new = new if new is not None else _rebuilt(source)
    plan, reason = fitspatch.plan(new, str(source))
    assert plan is None and why in reason, reason


def test_plan_refuses_a_source_it_cannot_read_raw(tmp_path, monkeypatch):
    source = _source(tmp_path / "in.fits")
    new = _rebuilt(source)

    def unreadable(*args, **kwargs):
        raise OSError("no raw access")

    monkeypatch.setattr(fits, "open", unreadable)
    plan, reason = fitspatch.plan(new, source)
    assert plan is None and reason == "its raw layout cannot be read (OSError: no raw access)"


def test_write_refuses_a_source_that_changed(tmp_path):
    source = _source(tmp_path / "in.fits")
    plan, _ = fitspatch.plan(_rebuilt(source), source)
    with open(source, "r+b") as f:
        f.truncate(2880 * 3)
    with pytest.raises(InputError, match="ended while its data were copied"):
        fitspatch.write(plan, str(tmp_path / "out.fits"))


# ---------------------------------------------------------------------------
# plain FITS outputs: header keywords changed, data never decoded
# ---------------------------------------------------------------------------


def test_fits_output_copies_the_data_bytes(tmp_path):
    """The arrays' bytes (unsigned integers with BZERO, NaN payloads) are the input's."""
    header = WCS(naxis=2)
    header.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    header.wcs.crval = [150.0, 2.0]
    header.wcs.crpix = [10.0, 15.0]
    header.wcs.cd = np.array([[-2.7e-5, 0.0], [0.0, 2.7e-5]])
    sci = np.arange(600, dtype=np.float32).reshape(30, 20)
    sci.view(np.uint32)[0, :3] = [0x7FC00001, 0x7FC0BEEF, 0xFFC00002]  # NaNs with payloads
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(sci, header=header.to_header(), name="SCI"),
        fits.ImageHDU(np.arange(600, dtype=np.uint16).reshape(30, 20) * 100, name="DQ"),
    ]
    src = str(tmp_path / "x.fits")
    fits.HDUList(hdus).writeto(src)
    before = _sha256(src)
    moved = WCS(fits.getheader(src, "SCI"))
    moved.wcs.crval = [150.0001, 2.0002]
    sidecar = {"extra": {"status": "COMPLETE"}, "chips": [{"hdu": 1, "extname": "SCI", "extver": 1, "status": "COMPLETE"}], "wcs": [moved]}
    out = str(tmp_path / "out" / "x_tweakreg.fits")
    assert write_fits_output(src, out, sidecar) == "COMPLETE"
    assert _data_blocks(out) == _data_blocks(src)
    assert fits.getheader(out, "SCI")["CRVAL1"] == 150.0001 and fits.getheader(out, "SCI")["CRVAL1O"] == 150.0
    assert _sha256(src) == before
