"""Corrected JWST products: SIP approximation, meta.wcs round trip, carried-over arrays."""

import logging
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tweakflow.io import output_stem, read_jwst_meta, read_sidecar, write_sidecar
from tweakflow.params import SIP_PARS
from tweakflow.steps import apply_step
from tweakflow.wcs_update import output_wcs_name, s_region, update_fits_header_wcs


def _grid(shape, n=41):
    ny, nx = shape
    y, x = np.mgrid[-0.5 : ny - 0.5 : complex(n), -0.5 : nx - 0.5 : complex(n)]
    return x.ravel(), y.ravel()


def _sip_poly(m, u, v):
    return sum(m[p, q] * u**p * v**q for p in range(m.shape[0]) for q in range(m.shape[1]))


@pytest.fixture(scope="module")
def aligned(small_alignment, tmp_path_factory):
    """The SMALL dataset detected, aligned and written with the default SIP parameters."""
    work = tmp_path_factory.mktemp("wcs_update")
    images, wcss = small_alignment["images"], small_alignment["wcs"]
    outs = [str(work / "out" / f"{s}_tweakreg.fits") for s in small_alignment["stems"]]
    for p, w, o in zip(images, wcss, outs):
        apply_step(p, w, o, sip=dict(SIP_PARS))
    return {"images": images, "wcs": wcss, "outputs": outs, "work": work}


def test_sip_header_reproduces_corrected_gwcs(aligned):
    """DS9-style: astropy WCS of the output SCI header vs the corrected GWCS, in pixels."""
    for out, side in zip(aligned["outputs"], aligned["wcs"]):
        gw = read_sidecar(side)["wcs"]
        hdr = fits.getheader(out, "SCI")
        assert hdr["CTYPE1"] == "RA---TAN-SIP" and hdr["CTYPE2"] == "DEC--TAN-SIP"
        assert hdr["A_ORDER"] <= 6 and "AP_ORDER" in hdr
        aw = WCS(hdr)
        x, y = _grid((hdr["NAXIS2"], hdr["NAXIS1"]))
        ra, dec = aw.all_pix2world(x, y, 0)
        xg, yg = gw.invert(ra, dec, with_bounding_box=False)
        err = np.hypot(xg - x, yg - y)
        assert err.max() < SIP_PARS["sip_max_pix_error"], err.max()
        # the inverse SIP (AP/BP: sky -> pixel without iterations) of the header
        u, v = aw.wcs_world2pix(*gw(x, y, with_bounding_box=False), 0) - (aw.wcs.crpix[:, None] - 1)
        xi = aw.wcs.crpix[0] - 1 + u + _sip_poly(aw.sip.ap, u, v)
        yi = aw.wcs.crpix[1] - 1 + v + _sip_poly(aw.sip.bp, u, v)
        assert np.hypot(xi - x, yi - y).max() < SIP_PARS["sip_max_inv_pix_error"]


def test_meta_wcs_round_trips(aligned):
    from stdatamodels.jwst.datamodels import ImageModel

    for out, side in zip(aligned["outputs"], aligned["wcs"]):
        mem = read_sidecar(side)["wcs"]
        with ImageModel(out) as m:
            assert m.meta.cal_step.tweakreg == "COMPLETE"
            assert m.meta.filename == os.path.basename(out)
            w = m.meta.wcs
            assert w.available_frames == mem.available_frames
            x, y = _grid(m.data.shape, 16)
            r0, d0 = mem(x, y, with_bounding_box=False)
            r1, d1 = w(x, y, with_bounding_box=False)
            assert np.max(np.hypot((r1 - r0) * np.cos(np.deg2rad(d0)), d1 - d0)) * 3.6e6 < 1e-3  # mas
            info = m.meta.wcsinfo.instance
            assert info["ctype1"] == "RA---TAN-SIP" and "a_order" in info and "cd1_1" in info
            # s_region: the corrected footprint (the outer corners of the corner pixels)
            poly = np.array(m.meta.wcsinfo.s_region.split()[2:], dtype=float).reshape(4, 2)
            foot = np.asarray(mem.footprint(center=False, axis_type="spatial"))
            assert np.allclose(poly, foot, rtol=0, atol=1e-9)


def test_arrays_and_extensions_carried_over(aligned):
    for src, out in zip(aligned["images"], aligned["outputs"]):
        with fits.open(src) as a, fits.open(out) as b:
            b.verify("exception")
            assert [h.name for h in a] == [h.name for h in b]
            for ha, hb in zip(a, b):
                if ha.name == "ASDF" or ha.data is None:
                    continue
                assert ha.data.dtype == hb.data.dtype
                assert np.array_equal(ha.data, hb.data), ha.name
            for kw in ("PROGRAM", "EXPOSURE", "DATE-OBS", "TELESCOP"):
                assert a[0].header[kw] == b[0].header[kw]
            assert b[0].header["S_TWKREG"] == "COMPLETE"


def test_sip_parameters_and_skipped(small_dataset, aligned, tmp_path, caplog):
    from stdatamodels.jwst.datamodels import ImageModel

    src, side = aligned["images"][1], aligned["wcs"][1]
    # an explicit degree is used as given
    out = str(tmp_path / "deg2_tweakreg.fits")
    apply_step(src, side, out, sip=dict(SIP_PARS, sip_degree=2, sip_inv_degree=2))
    hdr = fits.getheader(out, "SCI")
    assert hdr["A_ORDER"] == 2 and hdr["AP_ORDER"] == 2
    # sip_approx off: the corrected GWCS, but no SIP keywords
    out = str(tmp_path / "nosip_tweakreg.fits")
    apply_step(src, side, out, sip=dict(SIP_PARS, sip_approx=False))
    hdr = fits.getheader(out, "SCI")
    assert "A_ORDER" not in hdr
    with ImageModel(out) as m:
        assert "v2v3corr" in m.meta.wcs.available_frames or m.meta.cal_step.tweakreg == "COMPLETE"
        # S_REGION all the same, as the JWST step sets it
        assert m.meta.wcsinfo.s_region == s_region(read_sidecar(side)["wcs"]) and hdr["S_REGION"] == m.meta.wcsinfo.s_region
    # an unreachable accuracy: the best fit is written, with a warning
    out = str(tmp_path / "strict_tweakreg.fits")
    with caplog.at_level(logging.WARNING):
        apply_step(src, side, out, sip=dict(SIP_PARS, sip_degree=None, sip_max_pix_error=1e-12, sip_max_inv_pix_error=1e-12))
    assert "misses the requested accuracy" in caplog.text and "sip_max_pix_error" in caplog.text
    assert fits.getheader(out, "SCI")["A_ORDER"] >= 3
    # SKIPPED: the input WCS unchanged, no SIP
    sc = read_sidecar(side)
    wcs_in, _, _ = read_jwst_meta(src)
    skipped = str(tmp_path / "skipped_wcs.asdf")
    write_sidecar(
        skipped, wcs=wcs_in, wcsinfo=sc["wcsinfo"], group_id=sc["group_id"], filename=sc["filename"], shape=sc["shape"],
        extra={"status": "SKIPPED", "reason": "test", "stage": "relative"},
    )
    out = str(tmp_path / "skipped_tweakreg.fits")
    apply_step(src, skipped, out, sip=dict(SIP_PARS))
    with ImageModel(out) as m:
        assert m.meta.cal_step.tweakreg == "SKIPPED"
        assert m.meta.wcs.available_frames == wcs_in.available_frames
        x, y = _grid(m.data.shape, 8)
        assert np.allclose(m.meta.wcs(x, y), wcs_in(x, y), rtol=0, atol=1e-12)
    assert "A_ORDER" not in fits.getheader(out, "SCI")


def test_absolute_fit_names_the_wcs(aligned, tmp_path):
    from stdatamodels.jwst.datamodels import ImageModel

    src, side = aligned["images"][2], aligned["wcs"][2]
    sc = read_sidecar(side)
    named = str(tmp_path / "abs_wcs.asdf")
    write_sidecar(
        named, wcs=sc["wcs"], wcsinfo=sc["wcsinfo"], group_id=sc["group_id"], filename=sc["filename"], shape=sc["shape"],
        extra={"status": "COMPLETE", "reason": "", "stage": "absolute", "wcsname": "FIT-GAIADR3"},
    )
    out = str(tmp_path / "abs_tweakreg.fits")
    apply_step(src, named, out)
    with ImageModel(out) as m:
        assert m.meta.wcs.name == "FIT-GAIADR3"
    assert output_wcs_name({"stage": "relative"}, "jwst") is None
    assert output_wcs_name({"stage": "relative", "wcsname": ""}, "fits") == "FIT-REL"


def test_output_use_model_names_from_meta_filename(small_dataset, tmp_path):
    from tweakflow.inputs import resolve_inputs

    src = small_dataset["images"][0]
    renamed = tmp_path / "renamed.fits"
    with fits.open(src) as h:
        h.writeto(renamed)
    by_model = resolve_inputs([str(renamed)], output_use_model=True)
    by_file = resolve_inputs([str(renamed)], output_use_model=False)
    assert by_model[0]["stem"] == output_stem(os.path.basename(src))
    assert by_file[0]["stem"] == "renamed"


def test_fits_header_update_keeps_first_original():
    """The alternate WCS 'O' keeps the WCS before the first alignment; CROTA becomes PC."""
    hdr = fits.Header()
    hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"] = 2, 100, 80
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRPIX1"], hdr["CRPIX2"] = 50.5, 40.5
    hdr["CRVAL1"], hdr["CRVAL2"] = 10.0, -5.0
    hdr["CDELT1"], hdr["CDELT2"] = -1e-4, 1e-4
    hdr["CROTA2"] = 20.0
    orig = WCS(hdr)
    moved = orig.deepcopy()
    moved.wcs.crval = [10.0001, -5.0002]
    moved.wcs.pc = np.array([[0.9, -0.3], [0.3, 0.9]]) / np.hypot(0.9, 0.3)
    moved.wcs.set()
    update_fits_header_wcs(hdr, moved, "FIT-REL")
    assert "CROTA2" not in hdr and hdr["WCSNAME"] == "FIT-REL" and hdr["WCSNAMEO"] == "ORIGINAL"
    x, y = np.array([0.0, 99.0, 30.0]), np.array([0.0, 79.0, 60.0])
    assert np.allclose(WCS(hdr).all_pix2world(x, y, 0), moved.all_pix2world(x, y, 0), rtol=0, atol=1e-12)
    assert np.allclose(WCS(hdr, key="O").all_pix2world(x, y, 0), orig.all_pix2world(x, y, 0), rtol=0, atol=1e-12)
    again = moved.deepcopy()
    again.wcs.crval = [10.0003, -5.0001]
    again.wcs.set()
    update_fits_header_wcs(hdr, again, "FIT-GAIADR3")
    assert hdr["WCSNAME"] == "FIT-GAIADR3" and hdr["WCSNAMEO"] == "ORIGINAL"
    assert np.allclose(WCS(hdr, key="O").all_pix2world(x, y, 0), orig.all_pix2world(x, y, 0), rtol=0, atol=1e-12)
    fits.PrimaryHDU(np.zeros((80, 100), np.float32), header=hdr).verify("exception")
