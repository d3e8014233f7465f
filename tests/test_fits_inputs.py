"""Plain FITS-WCS inputs (TAN, TAN-SIP; one chip or two), checked against the synthetic truth."""

import glob
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from workflow_runner import run_workflow, sha256
from tweakflow import metrics, synthetic
from tweakflow.errors import InputError
from tweakflow.io import read_fits_image, read_image, read_sidecar, write_image_sidecar


class _Evaluate:
    """An astropy WCS called like a GWCS, for `tweakflow.metrics`."""

    def __init__(self, wcs):
        self.wcs = wcs

    def __call__(self, x, y, with_bounding_box=False):
        return self.wcs.all_pix2world(x, y, 0)


def _pixel_grid(shape, n=9):
    ny, nx = shape
    y, x = np.mgrid[0 : ny - 1 : complex(n), 0 : nx - 1 : complex(n)]
    return x.ravel(), y.ravel()


def _sky_distance_mas(w1, w2, shape):
    x, y = _pixel_grid(shape)
    r1, d1 = w1.all_pix2world(x, y, 0)
    r2, d2 = w2.all_pix2world(x, y, 0)
    return 3.6e6 * np.max(np.hypot((r1 - r2) * np.cos(np.deg2rad(d1)), d1 - d2))


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
                assert _sky_distance_mas(synthetic.rotate_fits_wcs(tw, rot), fw, hdu.data.shape) < 1e-3
                assert 100 < _sky_distance_mas(tw, fw, hdu.data.shape) < 3000


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
        assert _sky_distance_mas(w, c.wcs, c.shape) == 0.0
    write_image_sidecar(side, im, asn_group_id="visit1")
    assert read_sidecar(side)["group_id"] == "visit1"


def test_jwst_and_fits_images_cannot_be_mixed(small_dataset, fits_dataset):
    from tweakflow.align import tangent_plane_scale
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
        with fits.open(src, do_not_scale_image_data=True) as a, fits.open(prod, do_not_scale_image_data=True) as b:
            b.verify("exception")
            # every HDU, array and non-WCS keyword carried over
            assert [(h.name, h.ver) for h in a] == [(h.name, h.ver) for h in b]
            for ha, hb in zip(a, b):
                if ha.data is not None:
                    assert ha.data.dtype == hb.data.dtype and np.array_equal(ha.data, hb.data)
                for k in ha.header:
                    if not k.startswith(("CRVAL", "CD", "PC", "LATPOLE", "WCSNAME")):
                        assert hb.header[k] == ha.header[k], (name, ha.name, k)
            sci = [i for i, h in enumerate(a) if h.is_image and h.header.get("NAXIS") == 2 and h.name in ("PRIMARY", "SCI")]
            for i, tw in zip(sci, truth[name]):
                hdr = b[i].header
                assert hdr["WCSNAME"] == "FIT-REL"
                assert hdr["WCSNAMEO"] == a[i].header.get("WCSNAME", "ORIGINAL")
                # the alternate WCS 'O' is the input WCS
                shape = a[i].data.shape
                assert _sky_distance_mas(WCS(hdr, key="O"), WCS(a[i].header), shape) < 1e-6
                ins.append(_Evaluate(WCS(a[i].header)))
                outs.append(_Evaluate(WCS(hdr)))
                tl.append(_Evaluate(tw))
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
