"""tweakflow.io: the direct reader of primary-header strings that names thousands of inputs fast."""

import gzip

import pytest
from astropy.io import fits

from tweakflow.io import model_filename, primary_header_string


def _write(path, cards, n_filler=0):
    """A FITS file with a primary header of ``n_filler`` integer cards, then ``cards``."""
    hdr = fits.Header()
    for i in range(n_filler):
        hdr[f"KEY{i}"] = (i, "filler")
    for key, value in cards:
        hdr[key] = value
    fits.PrimaryHDU(header=hdr).writeto(path)
    return str(path)


def _astropy(path):
    with fits.open(path) as hdul:
        return hdul[0].header.get("FILENAME")


@pytest.mark.parametrize(
    "value",
    [
        "jw01234001001_02101_00001_nrca1_cal.fits",
        "it''s quoted.fits",
        "  leading spaces.fits",
        "trailing spaces.fits    ",
        "a/b/in a folder.fits",
        "",
        "x" * 40,
    ],
)
def test_string_values_read_as_astropy_reads_them(tmp_path, value):
    path = _write(tmp_path / "im.fits", [("FILENAME", (value, "a comment / with a slash"))], n_filler=100)
    assert primary_header_string(path, "FILENAME") == _astropy(path)


def test_keyword_absent_is_none(tmp_path):
    path = _write(tmp_path / "im.fits", [("OTHER", "x")], n_filler=50)
    assert primary_header_string(path, "FILENAME") is None
    assert model_filename(path) == "im.fits"


def test_only_the_primary_header_is_read(tmp_path):
    """A FILENAME in an extension's header is not the image's meta.filename."""
    ext = fits.ImageHDU()
    ext.header["FILENAME"] = "from_the_extension.fits"
    path = str(tmp_path / "im.fits")
    fits.HDUList([fits.PrimaryHDU(), ext]).writeto(path)
    assert primary_header_string(path, "FILENAME") is None
    assert model_filename(path) == "im.fits"


@pytest.mark.parametrize(
    "cards",
    [
        [("FILENAME", "long " * 30 + "name.fits")],  # continued on CONTINUE cards
        [("FILENAME", 12345)],  # not a string
    ],
)
def test_what_it_does_not_read_is_left_to_astropy(tmp_path, cards):
    path = _write(tmp_path / "im.fits", cards)
    with pytest.raises(ValueError, match=r"long string|not a string"):
        primary_header_string(path, "FILENAME")
    assert model_filename(path) == str(_astropy(path)).strip()


def test_compressed_and_broken_files(tmp_path):
    path = _write(tmp_path / "im.fits", [("FILENAME", "inside.fits")])
    gz = tmp_path / "im.fits.gz"
    gz.write_bytes(gzip.compress(open(path, "rb").read()))
    with pytest.raises(ValueError, match="not an uncompressed FITS file"):
        primary_header_string(str(gz), "FILENAME")
    assert model_filename(str(gz)) == "inside.fits"  # astropy reads it

    headless = tmp_path / "headless.fits"
    headless.write_bytes(open(path, "rb").read()[:800])  # 10 cards, no END
    assert model_filename(str(headless)) == "inside.fits"  # FILENAME is among the first cards
    cut = tmp_path / "cut.fits"
    cut.write_bytes(open(_write(tmp_path / "late.fits", [("FILENAME", "late.fits")], n_filler=80), "rb").read()[:2880])
    with pytest.raises(ValueError, match="no END card"):
        primary_header_string(str(cut), "FILENAME")
    assert model_filename(str(cut)) == "cut.fits"  # neither reader finds it: the file's name

    text = tmp_path / "page_cal.fits"
    text.write_text("<html>502</html>")
    assert model_filename(str(text)) == "page_cal.fits"
    assert model_filename(str(tmp_path / "not_made_yet_cal.fits")) == "not_made_yet_cal.fits"
