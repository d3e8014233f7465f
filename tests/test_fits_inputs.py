"""Plain FITS-WCS inputs (TAN, TAN-SIP; one chip or two), checked against the synthetic truth."""

import glob
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from tweakflow import metrics, synthetic
from tweakflow.errors import InputError
from tweakflow.io import read_fits_image, read_image, read_sidecar, write_image_sidecar
from workflow_runner import (
    CallableWCS,
    check_fits_product_is_input_copy,
    fits_sci_hdus,
    max_sky_distance_mas,
    run_workflow,
    sha256,
    without_lookup_tables,
)


@pytest.fixture(scope="module")
def fits_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("fits_dataset")
    return synthetic.make_fits_dataset(str(out))


def _by_name(ds, name):
    return next(p for p in ds["images"] if os.path.basename(p) == name)


def test_generator_file_wcs_is_truth_moved_by_the_pointing_error(fits_dataset):
    truth, errors = synthetic.load_truth(fits_dataset["truth"])
    assert sorted(truth) == ["mc1_flt.fits", "mc2_flt.fits", "sc1.fits", "sc2.fits"]
    for name, chips in truth.items():
        err = errors[name]
        rot = synthetic.pointing_error_rotation(*err["pointing"], err["shift_xi"], err["shift_eta"], err["roll_arcsec"])
        with fits.open(_by_name(fits_dataset, name)) as hdul:
            sci = [h for h in hdul if h.is_image and h.header.get("NAXIS") == 2 and h.name in ("PRIMARY", "SCI")]
            assert len(sci) == len(chips) == (2 if name.startswith("mc") else 1)
            for hdu, tw in zip(sci, chips):
                fw = WCS(hdu.header)
                # the file WCS is exactly the true WCS moved by the file's pointing error
                assert max_sky_distance_mas(synthetic.rotate_fits_wcs(tw, rot), fw, hdu.data.shape) < 1e-3
                assert 100 < max_sky_distance_mas(tw, fw, hdu.data.shape) < 3000


def test_read_fits_images(fits_dataset):
    # image in the primary HDU, TAN, uint16 stored with BZERO
    im = read_image(_by_name(fits_dataset, "sc1.fits"))
    assert im.kind == "fits" and len(im.chips) == 1 and im.chips[0].hdu == 0
    assert im.data.dtype == np.float32 and im.data.min() >= 0 and im.dq is None
    assert im.wcs.sip is None and im.meta["filename"] == "sc1.fits" and im.meta["date"].startswith("2025-01-10T05:00")
    # SCI extension, TAN-SIP with PC + CDELT
    im = read_image(_by_name(fits_dataset, "sc2.fits"))
    assert im.chips[0].extname == "SCI" and im.wcs.sip is not None
    # two chips, DQ masks the hot pixels
    path = _by_name(fits_dataset, "mc1_flt.fits")
    im = read_image(path, fits={"dq_ext": "DQ"})
    assert [(c.extname, c.extver, c.hdu) for c in im.chips] == [("SCI", 1, 1), ("SCI", 2, 4)]
    with fits.open(path) as hdul:
        for c in im.chips:
            assert np.array_equal(c.dq != 0, hdul["DQ", c.extver].data != 0)
            assert np.array_equal(c.data, hdul["SCI", c.extver].data)
    assert read_image(path, with_data=False).chips[1].data is None
    # explicit science extension, group keyword
    im = read_fits_image(path, fits={"sci_ext": "sci", "group_keyword": "EXPNAME"})
    assert len(im.chips) == 2 and im.meta["group_id"] == "exp003"
    assert read_fits_image(path).meta["group_id"] is None


def test_fits_reader_errors(fits_dataset, tmp_path):
    path = _by_name(fits_dataset, "mc1_flt.fits")
    with pytest.raises(InputError, match="no 2-D image extension named 'IMG'"):
        read_fits_image(path, fits={"sci_ext": "IMG"})
    with pytest.raises(InputError, match="group keyword 'NOSUCHKW'"):
        read_fits_image(path, fits={"group_keyword": "NOSUCHKW"})
    bad = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(bad)
    with pytest.raises(InputError, match="no 2-D image HDU has a celestial FITS WCS"):
        read_image(str(bad))
    with fits.open(_by_name(fits_dataset, "sc1.fits")) as hdul:
        hdr = hdul[0].header.copy()
        data = hdul[0].data
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---SIN", "DEC--SIN"
    sin = tmp_path / "sin.fits"
    fits.PrimaryHDU(data, header=hdr).writeto(sin)
    with pytest.raises(InputError, match=r"sin.fits\[0\]: unsupported projection"):
        read_image(str(sin))


def test_fits_image_sidecar_round_trip(fits_dataset, tmp_path):
    path = _by_name(fits_dataset, "mc2_flt.fits")
    im = read_image(path, with_data=False, fits={"group_keyword": "EXPNAME"})
    side = str(tmp_path / "mc2_meta.json")
    write_image_sidecar(side, im)
    sc = read_sidecar(side)
    assert sc["kind"] == "fits" and sc["group_id"] == "exp004" and sc["filename"] == "mc2_flt.fits"
    assert [(c["extname"], c["extver"], tuple(c["shape"])) for c in sc["chips"]] == [("SCI", 1, (192, 384)), ("SCI", 2, (192, 384))]
    for w, c in zip(sc["wcs"], im.chips):
        assert w.pixel_shape == c.wcs.pixel_shape
        assert max_sky_distance_mas(w, c.wcs, c.shape) == 0.0
    write_image_sidecar(side, im, asn_group_id="visit1")
    assert read_sidecar(side)["group_id"] == "visit1"


def test_jwst_and_fits_images_cannot_be_mixed(small_dataset, fits_dataset):
    from tweakflow.geometry import tangent_plane_scale
    from tweakflow.io import read_jwst_meta

    gw, _, _ = read_jwst_meta(small_dataset["images"][0])
    fw = read_image(_by_name(fits_dataset, "sc2.fits"), with_data=False).wcs
    with pytest.raises(InputError, match="cannot align JWST"):
        tangent_plane_scale([gw, fw])
    assert tangent_plane_scale([gw]) == 1.0
    assert tangent_plane_scale([fw]) == pytest.approx(0.1)


@pytest.mark.slow
def test_mixed_fits_run_aligns_to_truth(fits_dataset, tmp_path):
    """Single- and two-chip FITS-WCS files through the workflow: < 5 mas from the truth."""
    before = {p: sha256(p) for p in fits_dataset["images"]}
    folder = os.path.dirname(fits_dataset["images"][0])
    run_workflow(tmp_path, {"inputs": [os.path.join(folder, "*.fits")], "output_dir": "out", "fits": {"dq_ext": "DQ"}})
    assert {p: sha256(p) for p in fits_dataset["images"]} == before
    out = tmp_path / "out"
    truth, _ = synthetic.load_truth(fits_dataset["truth"])
    ins, outs, tl, shapes = [], [], [], []
    for name in sorted(truth):
        src = _by_name(fits_dataset, name)
        prod = out / (name[: -len(".fits")] + "_tweakreg.fits")
        check_fits_product_is_input_copy(src, prod, "FIT-REL")
        with fits.open(src) as a, fits.open(prod) as b:
            for i, tw in zip(fits_sci_hdus(a), truth[name]):
                hdr, shape = b[i].header, a[i].data.shape
                ins.append(CallableWCS(WCS(a[i].header)))
                outs.append(CallableWCS(WCS(hdr)))
                tl.append(CallableWCS(tw))
                shapes.append(shape)
    err_before = metrics.relative_errors(ins, tl, shapes)
    err_after = metrics.relative_errors(outs, tl, shapes)
    assert np.all(err_before > 100), err_before
    assert np.all(err_after < 5.0), err_after
    summary = Table.read(out / "tweakreg_summary.ecsv")
    assert len(summary) == 6 and set(summary["status"]) == {"COMPLETE"}
    chips = summary[[str(n).startswith("mc2_flt.fits[") for n in summary["image"]]]
    assert list(chips["image"]) == ["mc2_flt.fits[SCI,1]", "mc2_flt.fits[SCI,2]"]
    assert len(set(chips["group_id"])) == 1 and chips["xshift"][0] == chips["xshift"][1]
    # one detect job and one catalog per file, whatever its number of chips
    cats = sorted(glob.glob(str(out / "work" / "catalogs" / "*_cat.ecsv")))
    assert len(cats) == 4
    assert set(Table.read(out / "work" / "catalogs" / "mc1_flt_cat.ecsv")["chip"]) == {1, 2}
    # changing a SIP parameter re-runs only the outputs of the images
    proc = run_workflow(
        tmp_path,
        {"inputs": [os.path.join(folder, "*.fits")], "output_dir": "out", "fits": {"dq_ext": "DQ"}, "tweakreg": {"sip_npoints": 16}},
        "-n",
    )
    assert "apply_wcs" in proc.stdout and "detect_sources" not in proc.stdout and "rule align" not in proc.stdout


# ---------------------------------------------------------------------------
# lookup-table distortions (D2IM + NPOL, as ACS/WFC and WFC3/UVIS files carry them)
# ---------------------------------------------------------------------------


def _has_tables(w):
    return w.det2im1 is not None and w.cpdis1 is not None and w.cpdis2 is not None


def test_generator_writes_hst_like_lookup_tables(fits_lut_dataset):
    truth, errors = synthetic.load_truth(fits_lut_dataset["truth"])
    path = _by_name(fits_lut_dataset, "mc1_flt.fits")
    with fits.open(path) as hdul:
        assert [(h.name, h.ver) for h in hdul[7:]] == [("D2IMARR", 1), ("WCSDVARR", 1), ("WCSDVARR", 2), ("D2IMARR", 2), ("WCSDVARR", 3), ("WCSDVARR", 4)]
        assert hdul[0].header["D2IMFILE"] and hdul[0].header["NPOLFILE"]
        hdr = hdul["SCI", 2].header
        assert hdr["D2IMDIS1"] == "LOOKUP" and hdr["CPDIS2"] == "LOOKUP" and hdr["DP2.EXTVER"] == 4 and hdr["D2IM1.EXTVER"] == 2
        err = errors["mc1_flt.fits"]
        rot = synthetic.pointing_error_rotation(*err["pointing"], err["shift_xi"], err["shift_eta"], err["roll_arcsec"])
        for k, tw in enumerate(truth["mc1_flt.fits"], 1):
            fw = WCS(hdul["SCI", k].header, fobj=hdul)
            assert _has_tables(tw) and _has_tables(fw)
            shape = hdul["SCI", k].data.shape
            # the file WCS is the true WCS (tables included) moved by the pointing error
            assert max_sky_distance_mas(synthetic.rotate_fits_wcs(tw, rot), fw, shape) < 1e-3
            # realistic sizes: D2IM steps up to 0.3 px between column blocks, NPOL <= 0.15 px on 65 x 33 nodes
            steps = np.abs(np.diff(tw.det2im1.data[0]))
            assert 0.1 < steps.max() <= 0.3 and tw.cpdis1.data.shape == (33, 65)
            assert 0.1 < np.abs(tw.cpdis1.data).max() <= 0.15 + 1e-6
            # control: the tables matter (ignoring them is tens of mas wrong at 0.1"/px)
            assert max_sky_distance_mas(without_lookup_tables(tw), tw, shape) > 20


def test_lookup_tables_are_read_and_kept_in_the_image_sidecar(fits_lut_dataset, tmp_path):
    path = _by_name(fits_lut_dataset, "mc2_flt.fits")
    _truth, _ = synthetic.load_truth(fits_lut_dataset["truth"])
    im = read_image(path, with_data=False)
    assert all(_has_tables(c.wcs) for c in im.chips)
    side = str(tmp_path / "mc2_meta.json")
    write_image_sidecar(side, im)
    sc = read_sidecar(side)
    for w, c in zip(sc["wcs"], im.chips):
        # rebuilt from the sidecar alone, with the same tables: the same WCS exactly
        assert _has_tables(w) and w.det2im2 is None
        assert np.array_equal(w.cpdis2.data, c.wcs.cpdis2.data) and np.array_equal(w.det2im1.data, c.wcs.det2im1.data)
        assert max_sky_distance_mas(w, c.wcs, c.shape) == 0.0
    # a file without tables keeps none
    assert read_image(_by_name(fits_lut_dataset, "sc1.fits"), with_data=False).lookup_tables is None


def _edited_copy(src, dst, edit):
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    hdul.writeto(dst)
    return str(dst)


def test_unusable_distortions_are_refused_in_one_line(fits_lut_dataset, tmp_path):
    src = _by_name(fits_lut_dataset, "sc2.fits")

    def polynomial(h):
        h["SCI"].header["CPDIS1"] = "Polynomial"

    def cqdis(h):
        h["SCI"].header["CQDIS1"] = "LOOKUP"

    def no_table(h):
        del h["WCSDVARR", 2]

    cases = [
        (polynomial, r"poly.fits\[SCI,1\]: unsupported distortion CPDIS1 = 'Polynomial'"),
        (cqdis, r"cqdis.fits\[SCI,1\]: unsupported distortion CQDIS1"),
        (no_table, r"no_table.fits\[SCI,1\]: invalid FITS WCS \(KeyError: .*WCSDVARR"),
    ]
    for (edit, match), name in zip(cases, ("poly", "cqdis", "no_table")):
        bad = _edited_copy(src, tmp_path / f"{name}.fits", edit)
        with pytest.raises(InputError, match=match) as exc:
            read_image(bad)
        assert "\n" not in str(exc.value)
