"""Tests of tweakflow.refcat: user reference catalogs and the Gaia service client.

No network: the Gaia tests talk to a local imitation of the STScI catalog
service (tests/refcat_server.py) on 127.0.0.1.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from refcat_server import CATALOG_EPOCH, CatalogServer, make_stars, propagate, service_body
from tweakflow.errors import ConfigError, RefcatError
from tweakflow.refcat import (
    HYGIENE_DEFAULTS,
    epoch_from_dates,
    error_weights,
    fetch_gaia_catalog,
    gaia_catalog_for_footprints,
    gaia_query_url,
    parse_gaia_response,
    read_reference_catalog,
    resolve_hygiene,
    search_region,
    write_reference_catalog,
)

CENTER = (359.995, -12.5)  # the synthetic field straddles RA = 0
EPOCH = 2023.5


@pytest.fixture
def server():
    srv = CatalogServer(stars=make_stars(*CENTER))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def fetch(server, **kw):
    args = dict(ra=CENTER[0], dec=CENTER[1], radius=0.1, epoch=EPOCH, url=server.url,
                timeout=5.0, retries=2, backoff=0.01)
    args.update(kw)
    return fetch_gaia_catalog(**args)


def expected_positions(stars, epoch, catalog="GAIADR3"):
    return {s.obj_id: propagate(s, epoch - CATALOG_EPOCH[catalog]) for s in stars}


def ang_sep_arcsec(ra1, dec1, ra2, dec2):
    return SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).arcsec


# ---------------------------------------------------------------------------
# The Gaia service client
# ---------------------------------------------------------------------------

def test_fetch_success_columns_count_and_query(server):
    cat = fetch(server, hygiene={"pm_missing": "keep"})
    assert len(cat) == len(server.stars) == 20
    assert cat["RA"].dtype == np.float64 and cat["DEC"].dtype == np.float64
    assert {"RA", "DEC", "mag", "objID", "GAIAsourceID", "epoch"} <= set(cat.colnames)
    assert ((cat["RA"] >= 0) & (cat["RA"] < 360)).all()
    # field straddles RA=0: stars on both sides
    assert (cat["RA"] > 359).any() and (cat["RA"] < 1).any()

    assert len(server.requests) == 1
    q = server.requests[0]
    assert server.paths[0].endswith("/CatalogSearch.aspx")
    assert float(q["EPOCH"]) == pytest.approx(EPOCH)
    assert float(q["RA"]) == pytest.approx(CENTER[0])
    assert float(q["DEC"]) == pytest.approx(CENTER[1])
    assert float(q["SR"]) == pytest.approx(0.1)
    assert q["FORMAT"] == "CSV" and q["CAT"] == "GAIADR3" and q["MINDET"] == "5"

    # the service applied the proper motion; the client keeps its positions
    exp = expected_positions(server.stars, EPOCH)
    for row in cat:
        ra, dec = exp[row["objID"]]
        assert ang_sep_arcsec(row["RA"], row["DEC"], ra, dec) < 1e-6
    assert cat.meta["catalog"] == "GAIADR3"
    assert cat.meta["query_url"].startswith(server.url)
    assert cat.meta["n_pm_applied_locally"] == 0
    # star S0001 has no proper motion: the real service leaves it at 2016.0
    epochs = dict(zip(cat["objID"], cat["epoch"]))
    assert epochs["S0001"] == pytest.approx(2016.0)
    assert epochs["S0000"] == pytest.approx(EPOCH)
    assert cat.meta["n_without_pm"] == 1


def test_fetch_applies_proper_motion_when_service_ignores_epoch():
    stars = make_stars(*CENTER)
    with CatalogServer(stars=stars, apply_epoch=False) as srv:
        cat = fetch(srv, catalog="gaiadr2")
    assert srv.requests[0]["CAT"] == "GAIADR2"
    exp = expected_positions(stars, EPOCH, "GAIADR2")
    for row in cat:
        ra, dec = exp[row["objID"]]
        assert ang_sep_arcsec(row["RA"], row["DEC"], ra, dec) < 1e-4
    # the fast mover really moved (~8 yr * 1 arcsec/yr)
    s0 = stars[0]
    row0 = cat[list(cat["objID"]).index("S0000")]
    assert ang_sep_arcsec(row0["RA"], row0["DEC"], s0.ra, s0.dec) > 7.0
    assert row0["epoch"] == pytest.approx(EPOCH)
    assert cat.meta["n_pm_applied_locally"] == 19
    assert cat.meta["n_without_pm"] == 1


def test_fetch_retries_transient_500_then_succeeds(server, caplog):
    server.queue(500, "<html>Service Unavailable</html>", times=2)
    with caplog.at_level(logging.WARNING, logger="tweakflow.refcat"):
        cat = fetch(server, retries=3)
    assert len(cat) == 19  # the star without proper motion is left out (pm_missing: drop)
    assert len(server.requests) == 3
    assert "retrying" in caplog.text


def test_fetch_persistent_500_raises_with_url_and_status(server):
    server.queue(500, "Internal failure: database offline", times=10)
    with pytest.raises(RefcatError) as err:
        fetch(server, retries=2)
    msg = str(err.value)
    assert server.url in msg and "EPOCH=2023.5" in msg
    assert "500" in msg and "database offline" in msg
    assert "3 attempt" in msg
    assert len(server.requests) == 3


def test_fetch_http_404_is_not_retried(server):
    server.queue(404, "Not Found", times=5)
    with pytest.raises(RefcatError, match="404"):
        fetch(server, retries=3)
    assert len(server.requests) == 1


def test_fetch_connection_refused_fails_fast():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/webservices/vo/CatalogSearch.aspx"
    t0 = time.monotonic()
    with pytest.raises(RefcatError) as err:
        fetch_gaia_catalog(CENTER[0], CENTER[1], 0.1, EPOCH, url=url, timeout=2.0,
                           retries=2, backoff=0.01)
    assert time.monotonic() - t0 < 2.0
    msg = str(err.value)
    assert url in msg and "network error" in msg and "refused" in msg.lower()


def test_fetch_timeout(server):
    server.queue(200, "#Objects found : 0\r\n", delay=1.5)
    t0 = time.monotonic()
    with pytest.raises(RefcatError, match="timeout"):
        fetch(server, timeout=0.3, retries=0)
    assert time.monotonic() - t0 < 1.4


@pytest.mark.parametrize("body, match", [
    ("<html><body>Server Error in '/' Application.</body></html>", "HTML"),
    ("#Objects found : 2\r\nfoo;bar\r\n1;2\r\n3;4\r\n", "no 'ra'/'dec'"),
    ('#Objects found : 2\r\nra,dec\r\n1.0,2.0,3.0,4.0\r\n"unterminated\r\n', "cannot parse|no 'ra'|announces"),
    ("#Objects found : 5\r\nobjID,ra,dec\r\nA,1.0,2.0\r\nB,1.1,2.1\r\n", "announces 5 objects but holds 2"),
    ("#Objects found : x\r\nra,dec\r\n", "malformed first line"),
    ("", "empty response"),
])
def test_fetch_malformed_body(server, body, match):
    server.queue(200, body)
    with pytest.raises(RefcatError, match=match) as err:
        fetch(server, retries=0)
    assert server.url in str(err.value)


def test_fetch_in_band_error_is_reported_and_not_retried(server):
    server.queue(200, "Error: EPOCH value out of range\r\n", times=3)
    with pytest.raises(RefcatError, match=r"refused the query.*EPOCH value out of range"):
        fetch(server, retries=3)
    assert len(server.requests) == 1


@pytest.mark.parametrize("body", [
    "#Objects found : 0\r\nobjID,GAIAsourceID,ra,dec,mag,epoch,pmra,pmdec\r\n",
    "#Objects found : 0\r\n",
])
def test_fetch_empty_result_names_region(server, body):
    server.queue(200, body)
    with pytest.raises(RefcatError) as err:
        fetch(server)
    msg = str(err.value)
    assert "no source" in msg and "GAIADR3" in msg
    assert "RA=359.995000" in msg and "Dec=-12.500000" in msg and "radius=0.10000" in msg


def test_fetch_empty_cone_from_service(server):
    # far from the synthetic stars: the server itself answers zero objects
    with pytest.raises(RefcatError, match="no source"):
        fetch(server, ra=120.0, dec=30.0, radius=0.01)


@pytest.mark.parametrize("kw, match", [
    ({"catalog": "GSC30"}, "unknown astrometric catalog"),
    ({"dec": 95.0}, "outside"),
    ({"radius": 0.0}, "radius"),
    ({"epoch": float("nan")}, "epoch"),
    ({"epoch": 55000.0}, "plausible"),
])
def test_fetch_rejects_bad_arguments_without_request(server, kw, match):
    with pytest.raises(RefcatError, match=match):
        fetch(server, **kw)
    assert server.requests == []


def test_service_imitation_format_and_parse():
    stars = make_stars(*CENTER)
    body = service_body(stars, {"RA": str(CENTER[0]), "DEC": str(CENTER[1]), "SR": "1",
                                "FORMAT": "CSV", "CAT": "GAIADR3", "EPOCH": "2020.0"})
    lines = body.split("\r\n")
    assert lines[0] == "#Objects found : 20"
    assert lines[1] == "objID,GAIAsourceID,ra,dec,mag,epoch,pmra,pmdec,ra_error,dec_error,pmra_error,pmdec_error"
    raw = parse_gaia_response(body)
    assert len(raw) == 20 and "GAIAsourceID" in raw.colnames
    assert service_body(stars, {"RA": "1"}).startswith("Error")


def test_query_url_parameters():
    url = gaia_query_url(10.5, -20.25, 0.05, 2021.25, catalog="GAIADR3",
                         url="https://example.invalid/CatalogSearch.aspx", mindet=7)
    assert url.startswith("https://example.invalid/CatalogSearch.aspx?RA=10.5")
    for part in ("DEC=-20.25", "EPOCH=2021.25", "SR=0.05", "FORMAT=CSV", "CAT=GAIADR3", "MINDET=7"):
        assert part in url


def test_gaia_catalog_for_footprints_end_to_end(server, tmp_path):
    fps = [np.array([[359.985, -12.51], [0.005, -12.51], [0.005, -12.49], [359.985, -12.49]]),
           np.array([[359.995, -12.50], [0.015, -12.50], [0.015, -12.49], [359.995, -12.49]])]
    cat = gaia_catalog_for_footprints(fps, ["2023-01-01T00:00:00", Time("2024-01-01T00:00:00")],
                                      catalog="GAIADR3", url=server.url, timeout=5.0, retries=1)
    q = server.requests[0]
    assert float(q["EPOCH"]) == pytest.approx(2023.5, abs=0.01)
    assert 0.0 < float(q["SR"]) < 0.05
    assert len(cat) > 0
    out = tmp_path / "refcat.ecsv"
    write_reference_catalog(cat, out)
    back = Table.read(out)
    np.testing.assert_array_equal(back["RA"], cat["RA"])
    assert back.meta["catalog"] == "GAIADR3"


@pytest.mark.parametrize("name", ["GAIAREFCAT", "gaiarefcat", "GaiaDR3"])
def test_gaiarefcat_and_any_case_are_service_catalogs(server, name):
    """As the JWST step: GAIAREFCAT (the service's default Gaia) is asked for by name, in any case."""
    cat = fetch(server, catalog=name)
    assert server.requests[0]["CAT"] == name.upper() == cat.meta["catalog"]
    exp = expected_positions(server.stars, EPOCH, name.upper())
    got = {str(o): (r, d) for o, r, d in zip(cat["objID"], cat["RA"], cat["DEC"])}
    assert set(got) == set(exp) - {"S0001"}  # S0001 has no proper motion (pm_missing: drop)
    assert max(ang_sep_arcsec(*got[k], *exp[k]) for k in got) < 1e-3


@pytest.mark.slow
def test_gaiarefcat_in_the_workflow_plans_a_fetch(tmp_path):
    """abs_refcat: gaiarefcat is accepted at parse time and fetched as GAIAREFCAT."""
    from workflow_runner import run_workflow

    proc = run_workflow(tmp_path, {"output_dir": "out", "tweakreg": {"abs_refcat": "gaiarefcat"}}, "-n", timeout=120)
    assert "out/work/refcat/GAIAREFCAT.ecsv" in proc.stdout and "fetch_refcat" in proc.stdout


# ---------------------------------------------------------------------------
# write_reference_catalog
# ---------------------------------------------------------------------------

def test_write_reference_catalog_atomic_and_roundtrip(tmp_path):
    t = Table({"RA": [1.0, 2.0], "DEC": [3.0, 4.0], "weight": [1.0, 0.5]})
    out = tmp_path / "sub" / "ref.ecsv"
    write_reference_catalog(t, out)
    assert sorted(os.listdir(out.parent)) == ["ref.ecsv"]  # no temporary left behind
    assert out.read_text().startswith("# %ECSV")
    back = read_reference_catalog(out)
    np.testing.assert_array_equal(back["weight"], [1.0, 0.5])
    # overwrite keeps a complete file
    write_reference_catalog(Table({"RA": [5.0], "DEC": [6.0]}), out)
    assert len(Table.read(out)) == 1


def test_write_reference_catalog_errors(tmp_path):
    with pytest.raises(RefcatError, match="missing column"):
        write_reference_catalog(Table({"ra": [1.0], "dec": [2.0]}), tmp_path / "x.ecsv")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RefcatError, match="cannot write"):
        write_reference_catalog(Table({"RA": [1.0], "DEC": [2.0]}), blocker / "x.ecsv")


# ---------------------------------------------------------------------------
# read_reference_catalog
# ---------------------------------------------------------------------------

def _table():
    return Table({"RA": [10.0, 10.1, 359.9], "DEC": [-5.0, -5.1, 0.5],
                  "weight": [1.0, 2.0, 0.5], "name": ["a", "b", "c"]})


@pytest.mark.parametrize("fname, fmt", [("ref.ecsv", "ascii.ecsv"), ("ref.fits", "fits"),
                                        ("ref.csv", "ascii.csv"), ("ref.txt", "ascii.basic"),
                                        ("ref.cat", "ascii.commented_header")])
def test_read_formats(tmp_path, fname, fmt):
    path = tmp_path / fname
    _table().write(path, format=fmt)
    t = read_reference_catalog(path)
    assert t.colnames[:3] == ["RA", "DEC", "weight"]
    assert t["RA"].dtype == np.float64 and t["DEC"].dtype == np.float64
    np.testing.assert_allclose(t["RA"], [10.0, 10.1, 359.9])
    np.testing.assert_allclose(t["weight"], [1.0, 2.0, 0.5])
    assert list(t["name"]) == ["a", "b", "c"]
    assert t.meta["refcat_source"] == str(path)


def test_read_lowercase_and_integer_columns(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("ra,dec,mag\n10,-5,12.5\n370,1,13\n")
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["RA"], [10.0, 10.0])  # wrapped to [0, 360)
    assert t["RA"].dtype == np.float64
    assert "ra" not in t.colnames and "mag" in t.colnames


def test_read_sky_centroid_skycoord(tmp_path):
    path = tmp_path / "ref.ecsv"
    sc = SkyCoord([10.0, 359.5] * u.deg, [20.0, -1.0] * u.deg)
    Table({"sky_centroid": sc, "flux": [1.0, 2.0]}).write(path)
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["RA"], [10.0, 359.5])
    np.testing.assert_allclose(t["DEC"], [20.0, -1.0])
    assert "sky_centroid" not in t.colnames and "flux" in t.colnames


@pytest.mark.parametrize("names", [("Ra", "Dec"), ("rA", "DEC"), ("SKY_CENTROID",), ("Sky_Centroid",)])
def test_position_columns_match_in_any_case(tmp_path, names):
    """As the JWST step (stcal _parse_sky_centroid): RA/DEC and sky_centroid in any case."""
    path = tmp_path / "ref.ecsv"
    ra, dec = [10.0, 359.5], [20.0, -1.0]
    cols = {names[0]: SkyCoord(ra * u.deg, dec * u.deg)} if len(names) == 1 else {names[0]: ra, names[1]: dec}
    Table({**cols, "flux": [1.0, 2.0]}).write(path)
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["RA"], ra)
    np.testing.assert_allclose(t["DEC"], dec)
    assert t.colnames == ["RA", "DEC", "flux"]


def _sky(ra, dec):
    return SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)


@pytest.mark.parametrize("columns, needles", [
    ({"RA": [1.0], "ra": [1.0], "DEC": [2.0]}, ["'RA', 'ra'", "different case"]),
    ({"Dec": [2.0], "DEC": [2.0], "RA": [1.0]}, ["'Dec', 'DEC'", "different case"]),
    ({"sky_centroid": _sky([1.0], [2.0]), "SKY_CENTROID": _sky([1.0], [2.0])}, ["'sky_centroid', 'SKY_CENTROID'"]),
    ({"RA": [1.0, 5.0], "DEC": [2.0, 6.0], "sky_centroid": _sky([1.0, 5.0], [2.0, 6.001])}, ["'RA'/'DEC' and 'sky_centroid'", "3.6 arcsec, row 2"]),
])
def test_ambiguous_position_columns_are_refused(tmp_path, columns, needles):
    """Duplicated position columns: one line naming the file and the columns."""
    path = tmp_path / "ref.ecsv"
    Table(columns).write(path)
    with pytest.raises(RefcatError) as err:
        read_reference_catalog(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_radec_and_matching_sky_centroid_use_radec(tmp_path):
    """RA/DEC and a sky_centroid giving the same positions: accepted, as the JWST step accepts them."""
    path = tmp_path / "ref.ecsv"
    Table({"ra": [1.0, 5.0], "dec": [2.0, 6.0], "sky_centroid": _sky([1.0, 5.0], [2.0, 6.0]), "mag": [3, 4]}).write(path)
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["DEC"], [2.0, 6.0])
    assert t.colnames == ["RA", "DEC", "mag"]


def test_read_sky_centroid_strings(tmp_path):
    path = tmp_path / "ref.ecsv"
    Table({"sky_centroid": ["10.5 -20.25", "00h42m44.3s +41d16m09s", "12:00:00 +30:00:00"]}).write(path)
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["RA"], [10.5, 10.684583, 180.0], atol=1e-5)
    np.testing.assert_allclose(t["DEC"], [-20.25, 41.269167, 30.0], atol=1e-5)


def test_read_radian_unit_converted(tmp_path):
    path = tmp_path / "ref.ecsv"
    t = Table({"RA": [math.pi] * u.rad, "DEC": [0.5] * u.rad})
    t.write(path)
    back = read_reference_catalog(path)
    np.testing.assert_allclose(back["RA"], [180.0])
    np.testing.assert_allclose(back["DEC"], [math.degrees(0.5)])


def test_read_nan_rows_dropped_and_logged(tmp_path, caplog):
    path = tmp_path / "ref.csv"
    path.write_text("RA,DEC,weight\n1.0,2.0,1\nnan,2.0,1\n1.5,,1\n2.0,3.0,nan\n3.0,4.0,2\n")
    with caplog.at_level(logging.WARNING, logger="tweakflow.refcat"):
        t = read_reference_catalog(path)
    assert len(t) == 2
    assert "dropped 3 of 5 rows" in caplog.text


def test_read_missing_file(tmp_path):
    with pytest.raises(RefcatError, match=r"nope\.ecsv.*not found"):
        read_reference_catalog(tmp_path / "nope.ecsv")


def test_read_directory(tmp_path):
    with pytest.raises(RefcatError, match="directory"):
        read_reference_catalog(tmp_path)


@pytest.mark.parametrize("content, match", [
    ("x,y\n1,2\n", r"needs 'RA' and 'DEC'.*\['x', 'y'\]"),
    ("RA,flux\n1,2\n", "no 'DEC' column"),
    ("RA,DEC\n1,abc\n", "non-numeric value 'abc' in row 1"),
    ("RA,DEC,weight\n1,2,heavy\n", "column 'weight' has a non-numeric"),
    ("RA,DEC\n1,95\n", r"outside \[-90, 90\]"),
    ("RA,DEC,weight\n1,2,-1\n", "negative weight"),
    ("RA,DEC\nnan,nan\n", "no row has a finite"),
    ("RA,DEC\n", "no rows"),
])
def test_read_bad_content(tmp_path, content, match):
    path = tmp_path / "ref.csv"
    path.write_text(content)
    with pytest.raises(RefcatError, match=match) as err:
        read_reference_catalog(path)
    assert str(path) in str(err.value)


def test_read_unreadable_binary(tmp_path):
    path = tmp_path / "ref.fits"
    path.write_bytes(b"\x00\x01garbage\xff" * 100)
    with pytest.raises(RefcatError, match="cannot be read as a table") as err:
        read_reference_catalog(path)
    assert str(path) in str(err.value)


def test_read_fits_sky_centroid(tmp_path):
    path = tmp_path / "ref.fits"
    Table({"sky_centroid": SkyCoord([1.0, 2.0] * u.deg, [3.0, 4.0] * u.deg)}).write(path)
    t = read_reference_catalog(path)
    np.testing.assert_allclose(t["RA"], [1.0, 2.0])


# ---------------------------------------------------------------------------
# search_region and epoch_from_dates
# ---------------------------------------------------------------------------

def test_search_region_across_ra_zero():
    fp1 = np.array([[359.9, -0.1], [0.1, -0.1], [0.1, 0.1], [359.9, 0.1]])
    fp2 = np.array([[359.95, 0.0], [0.15, 0.0], [0.15, 0.2], [359.95, 0.2]])
    ra, dec, radius = search_region([fp1, fp2], margin_arcsec=0.0)
    assert ra == pytest.approx(0.025, abs=1e-4)  # mean of the corners' unit vectors
    assert dec == pytest.approx(0.05, abs=1e-4)
    center = SkyCoord(ra * u.deg, dec * u.deg)
    pts = np.concatenate([fp1, fp2])
    seps = center.separation(SkyCoord(pts[:, 0] * u.deg, pts[:, 1] * u.deg)).deg
    assert radius == pytest.approx(seps.max(), rel=1e-9)
    assert radius < 0.25  # a naive mean of RA (180 deg) would give a huge radius
    _, _, r2 = search_region([fp1, fp2], margin_arcsec=36.0)
    assert r2 == pytest.approx(radius + 0.01)


def test_search_region_single_square():
    fp = np.array([[10.0, 20.0], [10.1, 20.0], [10.1, 20.1], [10.0, 20.1]])
    ra, dec, radius = search_region([fp])
    assert ra == pytest.approx(10.05, abs=1e-3) and dec == pytest.approx(20.05, abs=1e-3)
    assert radius == pytest.approx(math.hypot(0.05 * math.cos(math.radians(20.05)), 0.05) + 6 / 3600, rel=2e-3)


@pytest.mark.parametrize("fps, match", [
    ([], "no image footprint"),
    ([np.zeros((4, 3))], "must be an"),
    ([np.array([[1.0, np.nan], [2.0, 2.0]])], "non-finite"),
    ([np.array([[1.0, 91.0]])], "Dec outside"),
])
def test_search_region_errors(fps, match):
    with pytest.raises(RefcatError, match=match):
        search_region(fps)


def test_epoch_from_dates():
    assert epoch_from_dates(["2020-01-01T00:00:00"]) == pytest.approx(2020.0)
    e = epoch_from_dates(["2022-01-01T00:00:00", Time("2024-01-01T00:00:00", scale="utc")])
    assert e == pytest.approx(2023.0, abs=1e-3)
    assert epoch_from_dates("2021-07-02T12:00:00") == pytest.approx(2021.5, abs=2e-3)
    assert epoch_from_dates([Time(["2020-01-01", "2022-01-01"])]) == pytest.approx(2021.0, abs=1e-3)
    # JWST metadata often gives date and time separately joined with a space
    assert epoch_from_dates(["2023-03-01 06:00:00.000"]) == pytest.approx(2023 + 59.25 / 365, abs=1e-6)


@pytest.mark.parametrize("dates, match", [([], "no observation date"),
                                          (["not a date"], "cannot be parsed"),
                                          ([59000.0], "ambiguous")])
def test_epoch_from_dates_errors(dates, match):
    with pytest.raises(RefcatError, match=match):
        epoch_from_dates(dates)


def test_module_import_is_light():
    import subprocess
    import sys

    code = ("import sys; import tweakflow.refcat; "
            "bad=[m for m in ('astropy.coordinates','requests') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == ""


def test_gaia_catalog_for_footprints_without_dates_uses_catalog_epoch(server, caplog):
    fp = np.array([[359.99, -12.51], [0.01, -12.51], [0.01, -12.49], [359.99, -12.49]])
    with caplog.at_level(logging.WARNING, logger="tweakflow.refcat"):
        cat = gaia_catalog_for_footprints([fp], [None, ""], catalog="GAIADR3", url=server.url,
                                          timeout=5.0, retries=0)
    assert float(server.requests[0]["EPOCH"]) == pytest.approx(2016.0)
    assert "no observation date" in caplog.text
    # at the catalog epoch the positions are the catalog's
    by_id = {s.obj_id: s for s in server.stars}
    for row in cat:
        s = by_id[row["objID"]]
        assert ang_sep_arcsec(row["RA"], row["DEC"], s.ra, s.dec) < 1e-6


# ---------------------------------------------------------------------------
# Catalog hygiene: magnitude limits, proper-motion policy, weights
# ---------------------------------------------------------------------------

def _ids(cat):
    return {str(o) for o in cat["objID"]}


def test_hygiene_defaults_are_the_jwst_steps():
    """No magnitude cut, sources without proper motion left out (stcal get_catalog with an
    epoch, since stcal PR 493), no weights."""
    assert HYGIENE_DEFAULTS == {"mag_min": None, "mag_max": None, "pm_missing": "drop", "weights": "none"}
    assert resolve_hygiene(None) == HYGIENE_DEFAULTS


def test_magnitude_cut_keeps_exactly_the_stars_within_limits():
    stars = make_stars(*CENTER)
    stars[2].mag, stars[3].mag, stars[4].mag = 14.0, 18.0, math.nan  # on both limits, and no magnitude
    with CatalogServer(stars=stars) as srv:
        cat = fetch(srv, hygiene={"mag_min": 14.0, "mag_max": 18.0, "pm_missing": "keep"})
        faint = fetch(srv, hygiene={"mag_max": 16, "pm_missing": "keep"})
    inside = {s.obj_id for s in stars if 14.0 <= s.mag <= 18.0}
    assert {"S0002", "S0003"} <= inside and "S0004" not in inside
    assert _ids(cat) == inside
    assert 0 < len(cat) < len(stars)
    assert _ids(faint) == {s.obj_id for s in stars if s.mag <= 16}
    assert cat.meta["hygiene"]["mag_min"] == 14.0 and cat.meta["n_served"] == 20


@pytest.mark.parametrize("apply_epoch", [True, False])
def test_pm_policy_drop_and_keep(apply_epoch):
    """drop leaves out the source without proper motion; keep keeps it where the catalog
    has it (its catalog epoch), and every other source is at the observation epoch."""
    stars = make_stars(*CENTER)
    with CatalogServer(stars=stars, apply_epoch=apply_epoch) as srv:
        dropped = fetch(srv, catalog="GAIADR2")
        kept = fetch(srv, catalog="GAIADR2", hygiene={"pm_missing": "keep"})
    assert _ids(dropped) == {s.obj_id for s in stars} - {"S0001"}
    assert _ids(kept) == {s.obj_id for s in stars}
    exp = expected_positions(stars, EPOCH, "GAIADR2")
    for cat in (dropped, kept):
        for row in cat:
            assert ang_sep_arcsec(row["RA"], row["DEC"], *exp[row["objID"]]) < 1e-4
            assert row["epoch"] == pytest.approx(2015.5 if row["objID"] == "S0001" else EPOCH)
    assert dropped.meta["n_without_pm"] == kept.meta["n_without_pm"] == 1
    assert kept.meta["n_pm_applied_locally"] == (0 if apply_epoch else 19)


@pytest.mark.parametrize("catalog, apply_epoch", [("GAIADR3", True), ("GAIADR2", False)])
def test_weights_are_one_over_sigma_squared(catalog, apply_epoch):
    """sigma^2 = ra_error^2 + dec_error^2 + (pmra_error^2 + pmdec_error^2) dt^2, dt from the
    catalog epoch to the observations; a source kept at its catalog epoch: positional term only."""
    stars = make_stars(*CENTER)
    with CatalogServer(stars=stars, apply_epoch=apply_epoch) as srv:
        cat = fetch(srv, catalog=catalog, hygiene={"weights": "errors", "pm_missing": "keep"})
        plain = fetch(srv, catalog=catalog)
    assert "weight" not in plain.colnames  # weights: none, as the JWST step
    dt = EPOCH - CATALOG_EPOCH[catalog]
    by_id = {s.obj_id: s for s in stars}
    for row in cat:
        s = by_id[row["objID"]]
        pm_var = 0.0 if math.isnan(s.pmra) else (s.pmra_error**2 + s.pmdec_error**2) * dt**2
        assert row["weight"] == pytest.approx(1.0 / (s.ra_error**2 + s.dec_error**2 + pm_var), rel=1e-9)
    assert len(cat) == 20 and np.all(cat["weight"] > 0)
    # the errors are served on, for the published catalog
    assert {"ra_error", "dec_error", "pmra", "pmdec", "pmra_error", "pmdec_error"} <= set(cat.colnames)


def test_error_weights_model():
    w = error_weights([3.0, 0.0, np.nan, 1.0], [4.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, np.nan], [1.0, 1.0, 1.0, np.nan], dt=2.0)
    assert w[0] == pytest.approx(1 / (25 + 8))
    assert np.isnan(w[1]) and np.isnan(w[2])  # no positional error: no weight
    assert w[3] == pytest.approx(0.5)  # no proper-motion error: positional term only
    assert error_weights([3.0], [4.0])[0] == pytest.approx(1 / 25)


def test_weights_leave_out_sources_without_errors(caplog):
    stars = make_stars(*CENTER)
    stars[5].ra_error = math.nan
    with CatalogServer(stars=stars) as srv, caplog.at_level(logging.WARNING, logger="tweakflow.refcat"):
        cat = fetch(srv, hygiene={"weights": "errors"})
    assert _ids(cat) == {s.obj_id for s in stars} - {"S0001", "S0005"}
    assert "1 source(s) without positional errors" in caplog.text


def _without_columns(body, drop):
    """A service body without the columns ``drop``."""
    lines = body.split("\r\n")
    head = lines[1].split(",")
    keep = [i for i, c in enumerate(head) if c not in drop]
    return "\r\n".join(lines[:1] + [",".join(ln.split(",")[i] for i in keep) for ln in lines[1:] if ln]) + "\r\n"


def test_hygiene_needing_a_column_the_service_did_not_send_is_refused(server):
    query = {"RA": str(CENTER[0]), "DEC": str(CENTER[1]), "SR": "0.1", "FORMAT": "CSV", "CAT": "GAIADR3", "EPOCH": str(EPOCH)}
    body = service_body(server.stars, query)
    server.queue(200, _without_columns(body, {"ra_error", "dec_error"}))
    with pytest.raises(RefcatError, match=r"no positional errors \(ra_error/dec_error\): cannot apply refcat.weights: errors"):
        fetch(server, retries=0, hygiene={"weights": "errors"})
    server.queue(200, _without_columns(body, {"mag"}))
    with pytest.raises(RefcatError, match=r"has no 'mag' column: cannot apply refcat.mag_min/mag_max"):
        fetch(server, retries=0, hygiene={"mag_max": 19})


def test_gsc_style_error_names_are_read(server):
    """raErr/decErr/pmraErr/pmdecErr (any case) give the same weights as Gaia's names."""
    query = {"RA": str(CENTER[0]), "DEC": str(CENTER[1]), "SR": "0.1", "FORMAT": "CSV", "CAT": "GAIADR3", "EPOCH": str(EPOCH)}
    body = service_body(server.stars, query)
    renamed = {"ra_error": "raErr", "dec_error": "decErr", "pmra_error": "pmraErr", "pmdec_error": "pmdecErr"}
    lines = body.split("\r\n")
    lines[1] = ",".join(renamed.get(c, c) for c in lines[1].split(","))
    server.queue(200, "\r\n".join(lines))
    gsc = fetch(server, hygiene={"weights": "errors"})
    gaia = fetch(server, hygiene={"weights": "errors"})
    np.testing.assert_allclose(gsc["weight"], gaia["weight"], rtol=1e-12)


@pytest.mark.parametrize("hygiene, match", [
    ({"pm_mising": "keep"}, r"^refcat: unknown key\(s\): pm_mising \(did you mean pm_missing\?\)$"),
    ({"pm_missing": "maybe"}, r"refcat.pm_missing: 'maybe' is not one of drop, keep"),
    ({"weights": "flux"}, r"refcat.weights: 'flux' is not one of none, errors"),
    ({"mag_min": "bright"}, r"refcat.mag_min: 'bright' is not a magnitude"),
    ({"mag_min": 19, "mag_max": 12}, r"refcat.mag_min \(19\) is larger than refcat.mag_max \(12\)"),
])
def test_bad_hygiene_is_refused_before_any_request(server, hygiene, match):
    with pytest.raises(ConfigError, match=match):
        fetch(server, hygiene=hygiene)
    assert server.requests == []


def test_hygiene_that_leaves_no_source_says_so(server):
    with pytest.raises(RefcatError, match=r"no source of the GAIADR3 cone .* is left after the catalog hygiene"):
        fetch(server, hygiene={"mag_min": 30})
