"""A local stand-in for the STScI catalog web service (``CatalogSearch.aspx``).

It answers ``GET`` requests on 127.0.0.1 in the service's CSV format::

    #Objects found : N\\r\\n
    objID,GAIAsourceID,ra,dec,mag,epoch,pmra,pmdec,ra_error,dec_error,pmra_error,pmdec_error\\r\\n
    <N rows>\\r\\n

for the stars of a synthetic list that fall in the requested cone (errors in
mas and mas/yr under Gaia's names, as drizzlepac reads them from the real
service). Like the real service, with ``EPOCH`` it moves each star with its
proper motion from the catalog epoch to the requested one and reports that
epoch in the ``epoch`` column; a star without proper motion (empty ``pmra``,
``pmdec`` and their errors) stays at the catalog epoch (``apply_epoch=False``
imitates a service that ignores ``EPOCH``); a query it cannot understand
gets HTTP 200 with a body starting ``Error``. Tests can queue canned answers (status, body, delay) that are used
before the normal behaviour, and every request's query is recorded.
"""

from __future__ import annotations

import http.server
import math
import threading
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np

# GAIAREFCAT: the service's default Gaia catalog, DR3 today
CATALOG_EPOCH = {"GAIADR1": 2015.0, "GAIADR2": 2015.5, "GAIADR3": 2016.0, "GAIAREFCAT": 2016.0}
COLUMNS = ("objID", "GAIAsourceID", "ra", "dec", "mag", "epoch", "pmra", "pmdec", "ra_error", "dec_error", "pmra_error", "pmdec_error")
REQUIRED = ("RA", "DEC", "SR", "FORMAT", "CAT")


@dataclass
class Star:
    obj_id: str
    source_id: int
    ra: float  # degrees at the catalog epoch
    dec: float
    mag: float
    pmra: float  # mas/yr, includes cos(dec)
    pmdec: float  # mas/yr; NaN pm = no proper motion known
    ra_error: float = 0.1  # mas, on the sky (Gaia's sigma_alpha*)
    dec_error: float = 0.1  # mas
    pmra_error: float = 0.1  # mas/yr (NaN when the proper motion is unknown)
    pmdec_error: float = 0.1  # mas/yr


def make_stars(ra0=359.995, dec0=-12.5, n=20, spread_deg=0.02, seed=1):
    """Synthetic stars around (ra0, dec0); the default field straddles RA = 0."""
    rng = np.random.default_rng(seed)
    stars = []
    cosd = math.cos(math.radians(dec0))
    for i in range(n):
        ra = (ra0 + rng.uniform(-spread_deg, spread_deg) / cosd) % 360.0
        dec = dec0 + rng.uniform(-spread_deg, spread_deg)
        pm = rng.normal(0.0, 40.0, 2)
        err = rng.uniform(0.02, 2.0, 4)
        stars.append(Star(f"S{i:04d}", 4_000_000_000_000_000 + i, ra, dec,
                          float(rng.uniform(12, 20)), float(pm[0]), float(pm[1]), *map(float, err)))
    # one fast mover and one without proper motion (as in Gaia: no pm errors either)
    stars[0].pmra, stars[0].pmdec = 800.0, -600.0
    stars[1].pmra = stars[1].pmdec = stars[1].pmra_error = stars[1].pmdec_error = float("nan")
    return stars


def propagate(star, dt):
    """Position of ``star`` after ``dt`` years (small-angle, fine for tests)."""
    if not (math.isfinite(star.pmra) and math.isfinite(star.pmdec)):
        return star.ra, star.dec
    dec = star.dec + star.pmdec * dt / 3.6e6
    ra = (star.ra + star.pmra * dt / 3.6e6 / math.cos(math.radians(star.dec))) % 360.0
    return ra, dec


def _sep_deg(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _fmt(x):
    return "" if not math.isfinite(x) else repr(float(x))


def service_body(stars, query, apply_epoch=True):
    """Body the real service would send for ``query`` (dict of upper-case keys)."""
    missing = [k for k in REQUIRED if k not in query]
    if missing:
        return f"Error: missing parameter(s) {', '.join(missing)}\r\n"
    try:
        ra0, dec0, sr = float(query["RA"]), float(query["DEC"]), float(query["SR"])
        epoch = float(query["EPOCH"]) if "EPOCH" in query else None
    except ValueError:
        return "Error: invalid numeric parameter\r\n"
    cat = query["CAT"].upper()
    if cat not in CATALOG_EPOCH:
        return f"Error: unknown catalog {query['CAT']}\r\n"
    cat_epoch = CATALOG_EPOCH[cat]
    rows = []
    for s in stars:
        if _sep_deg(ra0, dec0, s.ra, s.dec) > sr:
            continue
        ra, dec, ep = s.ra, s.dec, cat_epoch
        if epoch is not None and apply_epoch and math.isfinite(s.pmra):
            ra, dec = propagate(s, epoch - cat_epoch)
            ep = epoch
        rows.append(",".join([s.obj_id, str(s.source_id), _fmt(ra), _fmt(dec), _fmt(s.mag),
                              _fmt(ep), _fmt(s.pmra), _fmt(s.pmdec), _fmt(s.ra_error),
                              _fmt(s.dec_error), _fmt(s.pmra_error), _fmt(s.pmdec_error)]))
    lines = [f"#Objects found : {len(rows)}", ",".join(COLUMNS)] + rows
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Canned:
    status: int = 200
    body: str = ""
    delay: float = 0.0


class CatalogServer:
    """Thread-based HTTP server imitating the catalog service; use as a context manager."""

    def __init__(self, stars=None, apply_epoch=True):
        self.stars = make_stars() if stars is None else stars
        self.apply_epoch = apply_epoch
        self.requests = []  # list of dicts (upper-case keys) of the queries received
        self.paths = []
        self.canned = []  # answers used (first in, first out) before the normal one
        self.always = None  # a Canned answer used for every request when set
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = None

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/webservices/vo/CatalogSearch.aspx"

    def queue(self, status=200, body="", delay=0.0, times=1):
        with self._lock:
            self.canned.extend(Canned(status, body, delay) for _ in range(times))

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _answer(self, query):
        with self._lock:
            self.requests.append(query)
            if self.always is not None:
                return self.always
            if self.canned:
                return self.canned.pop(0)
        return Canned(200, service_body(self.stars, query, self.apply_epoch))

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                parsed = urllib.parse.urlsplit(self.path)
                query = {k.upper(): v for k, v in urllib.parse.parse_qsl(parsed.query)}
                server.paths.append(parsed.path)
                answer = server._answer(query)
                if answer.delay:
                    time.sleep(answer.delay)
                data = answer.body.encode("utf-8")
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler


def stars_from_refcat(path, obs_epoch, pm_ra=20.0, pm_dec=-15.0, catalog="GAIADR3", pos_error=None, no_pm=()):
    """The stars of a synthetic ``refcat.ecsv`` (positions at ``obs_epoch``), as the service holds them.

    Each star is moved back to the catalog's epoch with a common proper
    motion, so that a client that does not ask for (or apply) the epoch of
    the observations gets positions off by years x ~25 mas/yr. Magnitudes
    are the catalog's ``mag`` (18 without one); ``pos_error`` (mas, one per
    star or one for all) is served as ``ra_error`` and ``dec_error``; the
    stars whose indices are in ``no_pm`` have no proper motion (and do not
    move: their position is the same at every epoch).
    """
    from astropy.table import Table

    ref = Table.read(path)
    dt = obs_epoch - CATALOG_EPOCH[catalog]
    mags = np.asarray(ref["mag"], float) if "mag" in ref.colnames else np.full(len(ref), 18.0)
    errs = np.broadcast_to(np.asarray(0.1 if pos_error is None else pos_error, float), (len(ref),))
    no_pm = {int(i) for i in no_pm}
    stars = []
    for i, (ra, dec) in enumerate(zip(ref["RA"], ref["DEC"])):
        pmr, pmd = (math.nan, math.nan) if i in no_pm else (pm_ra, pm_dec)
        ra0 = ra - (0.0 if i in no_pm else pm_ra * dt / 3.6e6 / np.cos(np.deg2rad(dec)))
        dec0 = dec - (0.0 if i in no_pm else pm_dec * dt / 3.6e6)
        pme = math.nan if i in no_pm else 0.1
        stars.append(Star(f"S{i}", 10**15 + i, float(ra0), float(dec0), float(mags[i]), pmr, pmd,
                          float(errs[i]), float(errs[i]), pme, pme))
    return stars


def stars_from_dataset(dataset, **kw):
    """`stars_from_refcat` of a synthetic dataset, at the mean epoch of its images (what the workflow asks for)."""
    from tweakflow.io import read_image
    from tweakflow.refcat import epoch_from_dates

    dates = [read_image(p, with_data=False, with_wcs=False).meta["date"] for p in dataset["images"]]
    return stars_from_refcat(dataset["refcat"], epoch_from_dates(dates), **kw)
