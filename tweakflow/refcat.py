"""Absolute reference catalogs: a user's file, or Gaia from the STScI service.

The ``abs_refcat`` step parameter is either the name of a Gaia catalog of
the service (``GAIAREFCAT``, ``GAIADR1``, ``GAIADR2``, ``GAIADR3``, any case)
or the path of a catalog file. This
module turns both into an astropy `~astropy.table.Table` with float64 columns
``RA`` and ``DEC`` in degrees (plus ``weight`` where a file provides one).

The Gaia service
----------------
The JWST pipeline (stcal's ``astrometric_utils``) queries the STScI catalog
web service ``https://gsss.stsci.edu/webservices/vo/CatalogSearch.aspx`` with
the query parameters ``RA``, ``DEC`` (degrees), ``EPOCH`` (decimal year, UTC),
``SR`` (search radius, degrees), ``FORMAT=CSV``, ``CAT`` and ``MINDET``. What
that service sends back, as observed by its public clients:

* plain text, lines ended by CRLF;
* a first line ``#Objects found : N`` giving the number of rows that follow;
* one CSV header line; for the Gaia catalogs the columns include ``objID``,
  ``GAIAsourceID``, ``ra``, ``dec`` (degrees), ``mag``, ``epoch`` (decimal
  year of the positions), ``pmra`` and ``pmdec`` (mas/yr, ``pmra`` including
  the cos(Dec) factor, as in Gaia) and their errors ``ra_error``,
  ``dec_error`` (mas) and ``pmra_error``, ``pmdec_error`` (mas/yr), under
  Gaia's names (drizzlepac's ``astrometric_utils`` reads them so from this
  service; ``raErr``/``decErr``/``pmraErr``/``pmdecErr``, as the service names
  them for its GSC catalogs, are accepted too); a source without a proper
  motion has empty ``pmra``/``pmdec``;
* one line per source;
* a query the service rejects (e.g. a malformed ``EPOCH``) is answered with
  HTTP 200 and a body whose first line starts with ``Error``.

With ``EPOCH`` the service moves each position from the catalog epoch
(2016.0 for DR3, 2015.5 for DR2) to the requested epoch with the catalog's
proper motion (and parallax where known), and reports the requested epoch in
the ``epoch`` column; stcal relies on this and does no correction of its own.
This module does not assume it blindly: every row whose ``epoch`` differs from
the requested epoch (a service that ignored ``EPOCH``, or a source whose
position could not be propagated) is propagated here with ``pmra``/``pmdec``
when they are known. The ``epoch`` column of the result is the epoch of each
returned position.

Catalog hygiene
---------------
What is done with the service's answer is set by the ``refcat`` block
(`HYGIENE_DEFAULTS`, `resolve_hygiene`); the defaults are what the JWST step
does:

* ``pm_missing``: a source without a proper motion cannot be moved to the
  observation epoch. ``drop`` (default) leaves it out, as the JWST step does
  (stcal's ``get_catalog`` keeps only the sources with ``pmra`` and ``pmdec``
  whenever it asks for an epoch, which the step always does); ``keep`` keeps
  it at its catalog epoch (with a warning), e.g. for fields whose reference
  sources are distant galaxies or cluster members.
* ``mag_min``, ``mag_max``: only sources with ``mag_min <= mag <= mag_max``
  are kept (saturated bright stars, noisy faint ones); ``null`` is no limit
  (the step has no magnitude cut). A source without a magnitude is dropped
  when a limit is set.
* ``weights``: ``none`` (the step's: every reference star counts the same)
  or ``errors``: a ``weight`` column ``1 / sigma^2`` (mas^-2) from the
  positional errors, which the absolute fit (and the global solve) use; see
  `error_weights` for the model.

The service can return a few sources slightly outside the search cone; they
are kept (harmless for matching).
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from . import __version__
from .atomic import atomic_output
from .catalogs import columns_any_case
from .errors import ConfigError, RefcatError, TweakflowError
from .geometry import enclosing_cone, unit_vectors
from .params import resolve_block

# astropy.table is imported by the functions that use it: the workflow imports
# this module when it reads the Snakefile, which needs no table (0.3-0.8 s of every
# snakemake start, dry runs included).
__all__ = [
    "DEFAULT_URL",
    "GAIA_CATALOGS",
    "DEFAULT_MINDET",
    "CATALOG_EPOCHS",
    "HYGIENE_DEFAULTS",
    "resolve_hygiene",
    "error_weights",
    "read_reference_catalog",
    "search_region",
    "epoch_from_dates",
    "gaia_query_url",
    "parse_gaia_response",
    "fetch_gaia_catalog",
    "write_reference_catalog",
    "gaia_catalog_for_footprints",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "https://gsss.stsci.edu/webservices/vo/CatalogSearch.aspx"
"""The STScI catalog web service used by the JWST pipeline."""

GAIA_CATALOGS = ("GAIAREFCAT", "GAIADR3", "GAIADR2", "GAIADR1")
"""Catalog names accepted by `fetch_gaia_catalog` (the JWST step's
``SINGLE_GROUP_REFCAT``), sent as ``CAT``. ``GAIAREFCAT`` is the service's
default Gaia catalog, which it resolves itself (Gaia DR3 today: the JWST
regression test aligns to ``GAIAREFCAT`` and ``GAIADR3`` against the same
truth files)."""

DEFAULT_MINDET = 5
"""``MINDET`` sent to the service (the value the JWST pipeline sends)."""

CATALOG_EPOCHS = {"GAIAREFCAT": 2016.0, "GAIADR1": 2015.0, "GAIADR2": 2015.5, "GAIADR3": 2016.0}
"""Reference epoch (decimal year) of each Gaia release's positions."""

HYGIENE_DEFAULTS = {"mag_min": None, "mag_max": None, "pm_missing": "drop", "weights": "none"}
"""The ``refcat`` block's catalog-hygiene keys and their defaults: the JWST
step's behaviour (no magnitude cut, sources without proper motion left out,
no weights)."""

_PM_POLICIES = ("drop", "keep")
_WEIGHT_MODES = ("none", "errors")

#: Error columns of a service answer (mas, mas/yr): first name found wins, in any case.
_ERROR_COLUMNS = {
    "ra_error": ("ra_error", "raerr"),
    "dec_error": ("dec_error", "decerr"),
    "pmra_error": ("pmra_error", "pmraerr"),
    "pmdec_error": ("pmdec_error", "pmdecerr"),
}

_SNIPPET = 300  # characters of a response body quoted in error messages
_EPOCH_TOL = 1e-3  # years: a row's epoch this close to the requested one is "at epoch"
_MAS_TO_RAD = math.pi / (180.0 * 3600.0 * 1000.0)


# ---------------------------------------------------------------------------
# Reading a user's reference catalog
# ---------------------------------------------------------------------------

def read_reference_catalog(path):
    """Read a user-supplied reference catalog (``abs_refcat`` set to a file).

    Parameters
    ----------
    path : str or os.PathLike
        Any file `astropy.table.Table.read` can read: ECSV, FITS, VOTable,
        HDF5 or Parquet are identified from the file; other text files
        (``.csv``, ``.txt``, ``.cat`` ...) are read with astropy's ASCII
        format guessing. Positions come from ``RA`` and ``DEC`` columns in
        degrees or, failing those, from a ``sky_centroid`` column holding a
        `SkyCoord` or strings `SkyCoord` can parse; names in any case, as the
        JWST step matches them (two columns differing only in case are
        refused, and so are ``RA``/``DEC`` and ``sky_centroid`` columns that
        disagree). A column with an angular unit is converted to degrees. An
        optional ``weight`` column is kept.

    Returns
    -------
    astropy.table.Table
        float64 columns ``RA`` (wrapped to [0, 360)) and ``DEC`` in degrees,
        then ``weight`` (float64) if present, then the file's other columns.
        Rows with a non-finite position or weight are dropped (the count is
        logged). ``meta['refcat_source']`` is the path.

    Raises
    ------
    RefcatError
        If the file is missing or unreadable, lacks position columns or has
        ambiguous ones, holds non-numeric or out-of-range values, or has no
        usable row.
    """
    path = os.fspath(path)
    table = _read_catalog_file(path)
    ra, dec, used = _positions_from_table(path, table)
    weight = None
    if "weight" in table.colnames:
        weight = _numeric_column(path, table, "weight")
        used.append("weight")
    good = _finite_rows(path, len(table), ra, dec, weight)
    _check_ranges(path, good, dec, weight)
    return _reference_table(path, table, good, ra, dec, weight, used)


def _read_catalog_file(path):
    """The table in file ``path``, which must exist, be a file and hold rows."""
    if not os.path.exists(path):
        raise RefcatError(f"reference catalog {path!r}: file not found")
    if os.path.isdir(path):
        raise RefcatError(f"reference catalog {path!r}: is a directory, not a catalog file")
    table = _read_any_table(path)
    if len(table) == 0:
        raise RefcatError(f"reference catalog {path!r}: the table has no rows")
    return table


def _finite_rows(path, nrows, ra, dec, weight):
    """Rows with a finite RA, DEC (and weight, if any); the others are dropped with a warning.

    Raises
    ------
    RefcatError
        When no row is left.
    """
    good = np.isfinite(ra) & np.isfinite(dec)
    if weight is not None:
        good &= np.isfinite(weight)
    ndrop = int((~good).sum())
    if ndrop:
        log.warning("reference catalog %s: dropped %d of %d rows with NaN/missing "
                    "RA, DEC%s", path, ndrop, nrows,
                    " or weight" if weight is not None else "")
    if not good.any():
        raise RefcatError(f"reference catalog {path!r}: no row has a finite RA and DEC"
                          + (" and weight" if weight is not None else ""))
    return good


def _check_ranges(path, good, dec, weight):
    """Refuse a DEC outside [-90, 90] degrees or a negative weight among the ``good`` rows."""
    bad_dec = good & (np.abs(np.where(good, dec, 0.0)) > 90.0)
    if bad_dec.any():
        i = int(np.flatnonzero(bad_dec)[0])
        raise RefcatError(
            f"reference catalog {path!r}: {int(bad_dec.sum())} DEC value(s) outside "
            f"[-90, 90] degrees (first: {dec[i]!r} in row {i + 1}); RA and DEC must "
            "be in degrees")
    if weight is not None and (weight[good] < 0).any():
        i = int(np.flatnonzero(good & (weight < 0))[0])
        raise RefcatError(f"reference catalog {path!r}: negative weight {weight[i]!r} "
                          f"in row {i + 1}; weights must be >= 0")


def _reference_table(path, table, good, ra, dec, weight, used):
    """The ``good`` rows as `read_reference_catalog` returns them.

    float64 ``RA`` (wrapped to [0, 360)), ``DEC`` and ``weight`` (if not
    None), then the columns of ``table`` not in ``used``.
    """
    from astropy.table import Table

    out = Table(meta=dict(table.meta))
    out["RA"] = np.mod(ra[good], 360.0).astype(np.float64)
    out["DEC"] = dec[good].astype(np.float64)
    out["RA"].unit = "deg"
    out["DEC"].unit = "deg"
    if weight is not None:
        out["weight"] = weight[good].astype(np.float64)
    keep_idx = np.flatnonzero(good)
    for name in table.colnames:
        if name in used or name in out.colnames:
            continue
        out[name] = table[name][keep_idx]
    out.meta["refcat_source"] = path
    return out


def _read_any_table(path):
    """Read ``path`` with format auto-detection, then ASCII guessing."""
    from astropy.table import Table

    attempts = []
    try:
        return Table.read(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "try next"
        attempts.append(f"auto-detected format: {_one_line(exc)}")
    if not _looks_binary(path):
        for fmt in ("ascii.csv", "ascii"):
            try:
                table = Table.read(path, format=fmt)
            except Exception as exc:  # noqa: BLE001
                attempts.append(f"{fmt}: {_one_line(exc)}")
                continue
            if len(table.colnames) >= 2:
                return table
            attempts.append(f"{fmt}: found only column(s) {table.colnames}")
    raise RefcatError(f"reference catalog {path!r}: cannot be read as a table ("
                      + "; ".join(attempts) + ")")


def _looks_binary(path):
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"SIMPLE  ="):
        return True
    return b"\x00" in head


def _positions_from_table(path, table):
    """Return (ra_deg, dec_deg, names_of_columns_used) as float64 arrays.

    Column names are matched regardless of case, as the JWST step matches
    them (stcal ``_parse_sky_centroid``): ``RA`` and ``DEC`` (``ra``,
    ``Ra``...), else ``sky_centroid``. Two columns that differ only in case
    are refused, as the step refuses them. With both ``RA``/``DEC`` and
    ``sky_centroid`` the step uses ``RA``/``DEC``; here too, but only when
    the two agree (`_check_same_positions`): otherwise the file is refused.
    """
    ra_name, dec_name, sky_name = (_column_any_case(path, table, n) for n in ("RA", "DEC", "sky_centroid"))
    if ra_name is None and dec_name is None:
        if sky_name is None:
            raise RefcatError(
                f"reference catalog {path!r}: needs 'RA' and 'DEC' columns (degrees) or a "
                f"'sky_centroid' column (any case); found columns {table.colnames}")
        ra, dec = _sky_centroid(path, table[sky_name])
        return ra, dec, [sky_name]
    if ra_name is None or dec_name is None:
        have, missing = (ra_name, "DEC") if dec_name is None else (dec_name, "RA")
        raise RefcatError(f"reference catalog {path!r}: has a {have!r} column but "
                          f"no {missing!r} column (any case)")
    ra = _angle_column(path, table, ra_name)
    dec = _angle_column(path, table, dec_name)
    if sky_name is None:
        return ra, dec, [ra_name, dec_name]
    _check_same_positions(path, (ra, dec), _sky_centroid(path, table[sky_name]), (ra_name, dec_name, sky_name))
    return ra, dec, [ra_name, dec_name, sky_name]


def _column_any_case(path, table, name):
    """The column of ``table`` called ``name`` in any case, or None; two such columns are refused."""
    found = columns_any_case(table.colnames, name)
    if len(found) > 1:
        raise RefcatError(f"reference catalog {path!r}: columns {found} are one column name in "
                          "different case (names are matched regardless of case); keep one")
    return found[0] if found else None


def _check_same_positions(path, radec, sky, names, tol_mas=1.0):
    """Refuse RA/DEC and sky_centroid columns that give different positions.

    The JWST step takes ``RA``/``DEC`` and ignores ``sky_centroid`` (with a
    warning); when the two disagree, which one the user meant is unknown.
    """
    both = np.isfinite(radec[0]) & np.isfinite(radec[1]) & np.isfinite(sky[0]) & np.isfinite(sky[1])
    a = unit_vectors(radec[0][both], radec[1][both])
    b = unit_vectors(sky[0][both], sky[1][both])
    sep_mas = np.degrees(2 * np.arcsin(np.clip(np.linalg.norm(a - b, axis=-1) / 2, 0, 1))) * 3.6e6
    if sep_mas.size and sep_mas.max() > tol_mas:
        i = int(np.flatnonzero(both)[np.argmax(sep_mas)])
        raise RefcatError(
            f"reference catalog {path!r}: columns {names[0]!r}/{names[1]!r} and {names[2]!r} give "
            f"different positions (up to {sep_mas.max() / 1000:.3g} arcsec, row {i + 1}); keep one")
    log.info("reference catalog %s: positions from %r/%r (%r gives the same)", path, *names)


def _column_mask(col):
    """Boolean mask of a table column (all False for a column without one)."""
    return np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), dtype=bool)


def _numeric_column(path, table, name):
    """Column ``name`` as float64 with masked entries as NaN; error on text."""
    col = table[name]
    if getattr(col, "ndim", 1) != 1:
        raise RefcatError(f"reference catalog {path!r}: column {name!r} must hold one "
                          f"value per row, not shape {col.shape[1:]}")
    mask = _column_mask(col)
    data = np.asarray(getattr(col, "data", col))
    if data.dtype.kind in "biuf":
        values = data.astype(np.float64)
    else:
        values = np.full(len(data), np.nan)
        for i, item in enumerate(data):
            if mask.shape and mask[i]:
                continue
            text = item.decode() if isinstance(item, bytes) else str(item)
            text = text.strip()
            if text == "" or text.lower() in ("nan", "--", "null", "none"):
                continue
            try:
                values[i] = float(text)
            except ValueError:
                raise RefcatError(
                    f"reference catalog {path!r}: column {name!r} has a non-numeric "
                    f"value {text!r} in row {i + 1}") from None
    if mask.any():
        values[mask] = np.nan
    return values


def _angle_column(path, table, name):
    values = _numeric_column(path, table, name)
    unit = getattr(table[name], "unit", None)
    if unit is None or str(unit) in ("", "deg"):
        return values
    from astropy import units as u

    try:
        return (values * unit).to_value(u.deg)
    except u.UnitsError:
        raise RefcatError(f"reference catalog {path!r}: column {name!r} has unit "
                          f"{unit!s}, which is not an angle") from None


def _sky_centroid(path, col):
    from astropy.coordinates import SkyCoord

    if isinstance(col, SkyCoord):
        coord = col
    else:
        data = np.asarray(getattr(col, "data", col))
        if data.dtype.kind not in "US" or data.ndim != 1:
            raise RefcatError(f"reference catalog {path!r}: 'sky_centroid' is neither a "
                              "SkyCoord column nor a column of coordinate strings")
        mask = _column_mask(col)
        texts = [d.decode() if isinstance(d, bytes) else str(d) for d in data]
        ra = np.full(len(texts), np.nan)
        dec = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            if (mask.shape and mask[i]) or not text.strip():
                continue
            try:
                c = _parse_coord_string(text)
            except Exception:  # noqa: BLE001
                raise RefcatError(f"reference catalog {path!r}: 'sky_centroid' value "
                                  f"{text!r} in row {i + 1} is not a sky position") from None
            ra[i], dec[i] = c.ra.deg, c.dec.deg
        return ra, dec
    try:
        icrs = coord.icrs
    except Exception as exc:  # noqa: BLE001
        raise RefcatError(f"reference catalog {path!r}: 'sky_centroid' cannot be "
                          f"converted to ICRS: {_one_line(exc)}") from None
    return (np.asarray(icrs.ra.deg, dtype=np.float64).ravel(),
            np.asarray(icrs.dec.deg, dtype=np.float64).ravel())


def _parse_coord_string(text):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    text = text.strip()
    if any(ch in text for ch in "hdms:"):
        try:
            return SkyCoord(text, frame="icrs")
        except Exception:  # noqa: BLE001 - "12:00:00 ..." needs an explicit unit
            return SkyCoord(text, unit=(u.hourangle, u.deg), frame="icrs")
    return SkyCoord(text.replace(",", " "), unit=(u.deg, u.deg), frame="icrs")


# ---------------------------------------------------------------------------
# Search region and epoch
# ---------------------------------------------------------------------------

def search_region(footprints, margin_arcsec=6.0):
    """Cone enclosing all image footprints.

    Parameters
    ----------
    footprints : sequence of array_like
        One ``(N, 2)`` array per image of (RA, Dec) corners in degrees, as
        ``gwcs.WCS.footprint()`` returns them.
    margin_arcsec : float, optional
        Added to the radius, in arcseconds, so that sources whose position is
        off by up to the WCS error are still fetched. The default is the JWST
        default ``abs_searchrad`` (6 arcsec).

    Returns
    -------
    ra_center, dec_center, radius : float
        Cone center in degrees (RA in [0, 360)) and radius in degrees. The
        center is the normalised mean of the corners' unit vectors, so fields
        across RA = 0/360 are handled; the radius is the largest angular
        distance from the center to any corner, plus the margin.

    Raises
    ------
    RefcatError
        If there is no footprint, a footprint is not ``(N, 2)``, or holds
        non-finite values or a Dec outside [-90, 90].
    """
    if margin_arcsec is None or not np.isfinite(margin_arcsec) or margin_arcsec < 0:
        raise RefcatError(f"search region: margin_arcsec must be a finite number >= 0, "
                          f"not {margin_arcsec!r}")
    corners = []
    for i, fp in enumerate(footprints):
        arr = np.asarray(fp, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
            raise RefcatError(f"search region: footprint {i} must be an (N, 2) array of "
                              f"(RA, Dec) corners, not shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise RefcatError(f"search region: footprint {i} has non-finite corners "
                              f"({arr.tolist()}); is the image's WCS valid?")
        if (np.abs(arr[:, 1]) > 90).any():
            raise RefcatError(f"search region: footprint {i} has a Dec outside [-90, 90]: "
                              f"{arr.tolist()}")
        corners.append(arr)
    if not corners:
        raise RefcatError("search region: no image footprint given")
    pts = np.concatenate(corners)
    cone = enclosing_cone(pts[:, 0], pts[:, 1])
    if cone is None:
        raise RefcatError("search region: the footprints surround the whole sky; "
                          "no single cone center exists")
    center, radius_rad = cone
    ra_c = math.degrees(math.atan2(center[1], center[0])) % 360.0
    dec_c = math.degrees(math.asin(max(-1.0, min(1.0, center[2]))))
    radius = math.degrees(radius_rad) + margin_arcsec / 3600.0
    return float(ra_c), float(dec_c), radius


def epoch_from_dates(dates):
    """Mean observation epoch as a decimal year (UTC).

    Parameters
    ----------
    dates : sequence of str, datetime or astropy.time.Time
        Observation dates: ISO/FITS strings (``"2023-07-01T12:00:00"``),
        `datetime.datetime` objects or `~astropy.time.Time` (scalar or array).

    Returns
    -------
    float
        Mean of the dates as a decimal year in the UTC scale, the form the
        STScI catalog service expects for ``EPOCH``.

    Raises
    ------
    RefcatError
        If no date is given or one cannot be parsed.
    """
    from astropy.time import Time

    if isinstance(dates, (str, bytes)) or isinstance(dates, Time):
        dates = [dates]
    years = []
    for d in dates:
        if isinstance(d, Time):
            t = d
        elif isinstance(d, (int, float, np.number)):
            raise RefcatError(f"observation date {d!r}: a bare number is ambiguous; give an "
                              "ISO date string or an astropy Time (e.g. Time(mjd, format='mjd'))")
        else:
            text = d.decode() if isinstance(d, bytes) else d
            try:
                t = Time(text, scale="utc")
            except Exception as exc:  # noqa: BLE001
                raise RefcatError(f"observation date {d!r} cannot be parsed: "
                                  f"{_one_line(exc)}") from None
        try:
            yr = np.atleast_1d(np.asarray(t.utc.decimalyear, dtype=np.float64))
        except Exception as exc:  # noqa: BLE001
            raise RefcatError(f"observation date {d!r} cannot be converted to a "
                              f"decimal year: {_one_line(exc)}") from None
        years.extend(yr.tolist())
    if not years:
        raise RefcatError("no observation date given: cannot compute the epoch")
    years = np.asarray(years)
    if not np.isfinite(years).all():
        raise RefcatError(f"observation dates give non-finite epochs: {years.tolist()}")
    return float(years.mean())


# ---------------------------------------------------------------------------
# The Gaia web service
# ---------------------------------------------------------------------------

def gaia_query_url(ra, dec, radius, epoch, catalog="GAIADR3", url=DEFAULT_URL,
                   mindet=DEFAULT_MINDET):
    """Full query URL for a cone search of the catalog service.

    Parameters
    ----------
    ra, dec : float
        Cone center in degrees.
    radius : float
        Cone radius in degrees (``SR``).
    epoch : float
        Decimal year the positions are wanted at (``EPOCH``).
    catalog : str, optional
        ``CAT``: one of `GAIA_CATALOGS`.
    url : str, optional
        Service endpoint; any query string already in it is kept.
    mindet : int, optional
        ``MINDET`` parameter.

    Returns
    -------
    str
    """
    params = [("RA", f"{float(ra):.8f}"), ("DEC", f"{float(dec):.8f}"),
              ("EPOCH", f"{float(epoch):.6f}"), ("SR", f"{float(radius):.8f}"),
              ("FORMAT", "CSV"), ("CAT", catalog), ("MINDET", str(int(mindet)))]
    sep = "&" if "?" in url else "?"
    return url + sep + urllib.parse.urlencode(params)


def parse_gaia_response(text, query_url="the catalog service"):
    """Parse a body of the catalog service (``FORMAT=CSV``) into a raw table.

    Parameters
    ----------
    text : str
        The decoded body: ``#Objects found : N``, a CSV header and N rows.
    query_url : str, optional
        The URL asked, quoted in error messages.

    Returns
    -------
    astropy.table.Table
        All columns as served (possibly zero rows).

    Raises
    ------
    RefcatError
        If the body is an in-band error, is not CSV with ``ra``/``dec``
        columns, or holds fewer/more rows than its first line announces.
    """
    from astropy.table import Table

    body = text.lstrip("\ufeff")
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if not lines:
        raise RefcatError(f"catalog service: empty response to {query_url}")
    first = lines[0].strip()
    if first.lower().startswith("error"):
        raise RefcatError(f"catalog service refused the query {query_url}: "
                          f"{_snippet(body)}")
    if first.startswith("<"):
        raise RefcatError(f"catalog service: expected CSV but got HTML/XML from "
                          f"{query_url}: {_snippet(body)}")
    expected = None
    if first.startswith("#"):
        key, _, value = first[1:].partition(":")
        if key.strip().lower().startswith("objects found"):
            try:
                expected = int(value.strip())
            except ValueError:
                raise RefcatError(f"catalog service: malformed first line {first!r} in the "
                                  f"response to {query_url}") from None
        lines = lines[1:]
    data_lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    if not data_lines:
        if expected:
            raise RefcatError(f"catalog service: response to {query_url} announces "
                              f"{expected} objects but holds no table (truncated?)")
        return Table()
    try:
        table = Table.read(data_lines, format="ascii.csv", guess=False)
    except Exception as exc:  # noqa: BLE001
        raise RefcatError(f"catalog service: cannot parse the CSV returned for {query_url} "
                          f"({_one_line(exc)}): {_snippet(body)}") from None
    lower = {c.lower(): c for c in table.colnames}
    if "ra" not in lower or "dec" not in lower:
        raise RefcatError(f"catalog service: the response to {query_url} has no 'ra'/'dec' "
                          f"columns (columns: {table.colnames}): {_snippet(body)}")
    if expected is not None and expected != len(table):
        raise RefcatError(f"catalog service: response to {query_url} announces {expected} "
                          f"objects but holds {len(table)} rows (truncated or corrupted)")
    return table


def _http_get(query_url, timeout):
    """One GET. Returns (status, body_text). Raises OSError/HTTPException on transport errors."""
    req = urllib.request.Request(query_url, headers={
        "User-Agent": f"tweakflow/{__version__}", "Accept": "text/csv, text/plain, */*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
            charset = resp.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as err:
        try:
            raw = err.read()
        except Exception:  # noqa: BLE001
            raw = b""
        finally:
            err.close()
        status = err.code
        charset = "utf-8"
    return status, raw.decode(charset, errors="replace")


def _retryable_status(status):
    return status >= 500 or status in (408, 429)


def _get_with_retries(query_url, timeout, retries, backoff):
    """GET ``query_url`` with bounded retries; return the 200 body or raise RefcatError."""
    attempts = int(retries) + 1
    last = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            status, body = _http_get(query_url, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(exc, (socket.timeout, TimeoutError)):
                last = f"no answer within {timeout:g} s (timeout)"
            else:
                last = f"network error: {_one_line(reason)}"
        else:
            if status == 200:
                return body
            last = f"HTTP status {status}, body: {_snippet(body) or '(empty)'}"
            if not _retryable_status(status):
                raise RefcatError(f"catalog service request {query_url} failed: {last}")
        if attempt < attempts:
            delay = backoff * (2 ** (attempt - 1))
            log.warning("catalog service request %s failed (attempt %d of %d: %s); "
                        "retrying in %.2g s", query_url, attempt, attempts, last, delay)
            if delay > 0:
                time.sleep(delay)
    raise RefcatError(f"catalog service request {query_url} failed after {attempts} "
                      f"attempt(s): {last}")


def _propagate(ra, dec, pmra, pmdec, dt):
    """Move positions by proper motion over ``dt`` years (unit-vector form, pole-safe).

    ``pmra`` includes cos(Dec) (Gaia convention); all in mas/yr; angles in degrees.
    """
    ra_r = np.radians(ra)
    dec_r = np.radians(dec)
    sa, ca = np.sin(ra_r), np.cos(ra_r)
    sd, cd = np.sin(dec_r), np.cos(dec_r)
    p = np.stack([cd * ca, cd * sa, sd])
    east = np.stack([-sa, ca, np.zeros_like(sa)])
    north = np.stack([-sd * ca, -sd * sa, cd])
    new = p + (east * pmra + north * pmdec) * (dt * _MAS_TO_RAD)
    new /= np.linalg.norm(new, axis=0)
    new_ra = np.degrees(np.arctan2(new[1], new[0])) % 360.0
    new_dec = np.degrees(np.arcsin(np.clip(new[2], -1.0, 1.0)))
    return new_ra, new_dec


def _float_col(table, name):
    col = table[name]
    mask = _column_mask(col)
    data = np.asarray(getattr(col, "data", col))
    if data.dtype.kind in "biuf":
        out = data.astype(np.float64)
    else:
        out = np.array([_to_float(v) for v in data], dtype=np.float64)
    if mask.any():
        out[mask] = np.nan
    return out


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _str_col(table, name):
    col = table[name]
    mask = _column_mask(col)
    data = np.asarray(getattr(col, "data", col))
    out = []
    for i, v in enumerate(data):
        if mask.shape and mask[i]:
            out.append("")
        elif data.dtype.kind == "f":
            out.append("" if not np.isfinite(v) else repr(float(v)))
        else:
            out.append(str(v).strip())
    return np.array(out, dtype=str)


def fetch_gaia_catalog(ra, dec, radius, epoch, catalog="GAIADR3", url=DEFAULT_URL,
                       timeout=30.0, retries=3, mindet=DEFAULT_MINDET, backoff=1.0, hygiene=None):
    """Gaia sources in a cone from the STScI catalog service, at an epoch.

    Parameters
    ----------
    ra, dec : float
        Cone center in degrees.
    radius : float
        Cone radius in degrees (> 0, at most 5).
    epoch : float
        Decimal year (UTC) the positions are wanted at, e.g. from
        `epoch_from_dates`.
    catalog : str, optional
        One of `GAIA_CATALOGS` (case-insensitive).
    url : str, optional
        Service endpoint (`DEFAULT_URL`); a local or mirror URL for tests.
    timeout : float, optional
        Seconds to wait for each request to be answered.
    retries : int, optional
        How many times a failed request is retried (network error, timeout,
        HTTP 5xx/408/429): up to ``retries + 1`` attempts, waiting ``backoff``,
        ``2 * backoff``, ``4 * backoff`` ... seconds between them. Other HTTP
        errors and in-band ``Error`` answers are not retried.
    mindet : int, optional
        ``MINDET`` query parameter.
    backoff : float, optional
        Seconds before the first retry.
    hygiene : dict or None, optional
        The catalog-hygiene keys of the ``refcat`` block (`resolve_hygiene`;
        None: `HYGIENE_DEFAULTS`, the JWST step's behaviour): magnitude
        limits, what is done with sources without proper motion, weights.

    Returns
    -------
    astropy.table.Table
        float64 ``RA`` and ``DEC`` (degrees, at ``epoch`` where the proper
        motion is known), ``weight`` (mas^-2, `error_weights`) with
        ``weights: errors``, then what the service sent of ``mag``,
        ``objID`` and ``GAIAsourceID`` (as strings), ``epoch`` (decimal
        year of each position), ``pmra``, ``pmdec`` and the errors
        ``ra_error``, ``dec_error``, ``pmra_error``, ``pmdec_error``: the
        sources kept by the hygiene. ``meta`` records the catalog, epoch,
        query URL, search cone, hygiene and counts.

    Raises
    ------
    RefcatError
        Naming the URL asked and what came back (HTTP status and the start of
        the body, or the network error), for an unusable response, when
        the cone holds no source or the hygiene leaves none, or when the
        hygiene needs a column the service did not send (``mag`` for a
        magnitude limit, ``ra_error``/``dec_error`` for weights).
    ConfigError
        For invalid ``hygiene`` (`resolve_hygiene`), before any request.
    """
    h = resolve_hygiene(hygiene)
    cat = str(catalog).strip().upper()
    if cat not in GAIA_CATALOGS:
        raise RefcatError(f"unknown astrometric catalog {catalog!r}: use one of "
                          f"{', '.join(GAIA_CATALOGS)} or the path of a catalog file")
    _check_query(ra, dec, radius, epoch, timeout, retries, backoff)
    ra = float(ra) % 360.0
    epoch = float(epoch)
    query_url = gaia_query_url(ra, dec, radius, epoch, catalog=cat, url=url, mindet=mindet)
    log.info("querying %s", query_url)
    body = _get_with_retries(query_url, float(timeout), int(retries), float(backoff))
    raw = parse_gaia_response(body, query_url)
    region = (f"{cat} cone RA={ra:.6f} Dec={float(dec):.6f} radius={float(radius):.5f} deg "
              f"at epoch {epoch:.3f}")
    if len(raw) == 0:
        raise RefcatError(f"catalog service returned no source for the {region} "
                          f"(query {query_url})")
    search = {"search_ra": ra, "search_dec": float(dec), "search_radius": float(radius)}
    return _normalise_gaia(raw, query_url, region, cat, epoch, search, h)


def _check_query(ra, dec, radius, epoch, timeout, retries, backoff):
    """Refuse arguments of `fetch_gaia_catalog` that make no query (before any request)."""
    values = {"ra": ra, "dec": dec, "radius": radius, "epoch": epoch, "timeout": timeout}
    for name, value in values.items():
        try:
            ok = np.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise RefcatError(f"Gaia query: {name} must be a finite number, not {value!r}")
    if not -90.0 <= float(dec) <= 90.0:
        raise RefcatError(f"Gaia query: dec={dec!r} is outside [-90, 90] degrees")
    if not 0.0 < float(radius) <= 5.0:
        raise RefcatError(f"Gaia query: radius={radius!r} degrees must be in (0, 5]")
    if not 1900.0 <= float(epoch) <= 2200.0:
        raise RefcatError(f"Gaia query: epoch={epoch!r} is not a plausible decimal year")
    if float(timeout) <= 0 or int(retries) < 0 or float(backoff) < 0:
        raise RefcatError(f"Gaia query: need timeout > 0, retries >= 0 and backoff >= 0 "
                          f"(got {timeout!r}, {retries!r}, {backoff!r})")


def resolve_hygiene(hygiene=None):
    """The catalog-hygiene keys of the ``refcat`` block over `HYGIENE_DEFAULTS`, checked.

    Parameters
    ----------
    hygiene : dict or None
        Any of ``mag_min``, ``mag_max`` (a magnitude, or None for no
        limit), ``pm_missing`` (``drop`` or ``keep``) and ``weights``
        (``none`` or ``errors``); see the module's "Catalog hygiene".

    Returns
    -------
    dict
        Every key of `HYGIENE_DEFAULTS`.

    Raises
    ------
    ConfigError
        For an unknown key (with the closest known one), a value outside its
        choices, a limit that is not a number, or ``mag_min`` > ``mag_max``.
    """
    h = resolve_block("refcat", HYGIENE_DEFAULTS, hygiene)
    for key, choices in (("pm_missing", _PM_POLICIES), ("weights", _WEIGHT_MODES)):
        if h[key] not in choices:
            raise ConfigError(f"refcat.{key}: {h[key]!r} is not one of {', '.join(choices)}")
    for key in ("mag_min", "mag_max"):
        value = h[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value)):
            raise ConfigError(f"refcat.{key}: {value!r} is not a magnitude (a number, or null for no limit)")
    if h["mag_min"] is not None and h["mag_max"] is not None and h["mag_min"] > h["mag_max"]:
        raise ConfigError(f"refcat.mag_min ({h['mag_min']}) is larger than refcat.mag_max ({h['mag_max']}): "
                          "no source could be kept")
    return h


def error_weights(ra_error, dec_error, pmra_error=None, pmdec_error=None, dt=0.0):
    """Weights ``1 / sigma^2`` (mas^-2) of reference positions, from their errors.

    The model: a position at the observation epoch carries the error of the
    catalog position (``ra_error``, Gaia's sigma_alpha* on the sky, and
    ``dec_error``) and, for a source moved there with its proper motion over
    ``dt`` years, the error of that motion times ``dt``::

        sigma^2 = ra_error^2 + dec_error^2 + (pmra_error^2 + pmdec_error^2) * dt^2

    ``sigma^2`` is the expected squared distance of the position from the
    truth (both axes), what a fit of 2-D residuals weighs by; the errors are
    taken as independent (the service sends no correlations). A source not
    moved (``dt`` 0, e.g. one without proper motion kept at its catalog
    epoch) or without proper-motion errors has the positional term only.
    Only the ratios of the weights matter to the fits.

    Parameters
    ----------
    ra_error, dec_error : array_like
        Positional errors (mas).
    pmra_error, pmdec_error : array_like or None
        Proper-motion errors (mas/yr); None or NaN: no proper-motion term.
    dt : float or array_like
        Years the position was moved by its proper motion.

    Returns
    -------
    numpy.ndarray
        float64 weights; NaN where the positional term is not a finite
        positive number (an error missing or infinite, or both zero, which
        no real position has).
    """
    pos_var = np.asarray(ra_error, float) ** 2 + np.asarray(dec_error, float) ** 2
    var = pos_var
    if pmra_error is not None and pmdec_error is not None:
        pm_var = (np.asarray(pmra_error, float) ** 2 + np.asarray(pmdec_error, float) ** 2) * np.asarray(dt, float) ** 2
        var = pos_var + np.where(np.isfinite(pm_var), pm_var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(pos_var) & (pos_var > 0), 1.0 / var, np.nan)


def _served_columns(raw):
    """The service's columns as float64 arrays (None when not served): positions, epoch,
    proper motions, magnitude and errors (`_ERROR_COLUMNS`), found in any case."""
    lower = {c.lower(): c for c in raw.colnames}

    def col(*names):
        for n in names:
            if n in lower:
                return _float_col(raw, lower[n])
        return None

    cols = {k: col(k) for k in ("ra", "dec", "epoch", "pmra", "pmdec", "mag")}
    cols.update({k: col(*names) for k, names in _ERROR_COLUMNS.items()})
    return cols


def _move_to_epoch(cols, cat, epoch, region):
    """Move the rows not at ``epoch`` with their proper motion (``cols`` changed in place).

    Returns
    -------
    has_pm : numpy.ndarray of bool
        Rows with a proper motion (all False when the service sent none).
    dt : numpy.ndarray
        Years each position was moved by its proper motion, by the service
        (from the catalog's epoch, `CATALOG_EPOCHS`) or here (from the row's
        epoch); 0 for a row not moved.
    n_prop, stuck
        How many rows were moved here, and which rows stay at another epoch.
    """
    n = len(cols["ra"])
    row_epoch = cols["epoch"] if cols["epoch"] is not None else np.full(n, np.nan)
    if cols["epoch"] is None:
        log.warning("%s: the service sent no 'epoch' column; positions are assumed to be at "
                    "the requested epoch", region)
        row_epoch[:] = epoch
    served_pm = cols["pmra"] is not None and cols["pmdec"] is not None
    has_pm = np.isfinite(cols["pmra"]) & np.isfinite(cols["pmdec"]) if served_pm else np.zeros(n, bool)
    off = np.isfinite(row_epoch) & (np.abs(row_epoch - epoch) > _EPOCH_TOL)
    can = off & has_pm & np.isfinite(cols["ra"]) & np.isfinite(cols["dec"])
    dt = np.where(has_pm, epoch - CATALOG_EPOCHS.get(cat, epoch), 0.0)
    if can.any():
        dt[can] = epoch - row_epoch[can]
        cols["ra"][can], cols["dec"][can] = _propagate(cols["ra"][can], cols["dec"][can], cols["pmra"][can],
                                                       cols["pmdec"][can], dt[can])
        row_epoch[can] = epoch
        log.info("%s: moved %d source(s) to epoch %.3f with their proper motion "
                 "(the service returned them at another epoch)", region, int(can.sum()), epoch)
    cols["epoch"] = row_epoch
    if not served_pm:
        log.warning("%s: the service sent no proper motions (pmra/pmdec)", region)
    return has_pm, dt, int(can.sum()), off & ~can


def _pm_policy(has_pm, stuck, served_pm, policy, region):
    """Rows kept by ``refcat.pm_missing`` (``drop``: those with a proper motion; ``keep``: all)."""
    without = ~has_pm if served_pm else stuck
    n_without, n_stuck = int(without.sum()), int(stuck.sum())
    if policy == "drop":
        if n_without:
            log.info("%s: left out %d source(s) without proper motion (refcat.pm_missing: drop, "
                     "as the JWST step)", region, n_without)
        return ~without
    if n_stuck:
        log.warning("%s: %d source(s) have no proper motion and stay at their catalog "
                    "epoch (refcat.pm_missing: keep)", region, n_stuck)
    return np.ones(len(has_pm), bool)


def _magnitude_cut(mag, h, region, query_url):
    """Rows within ``refcat.mag_min`` <= mag <= ``refcat.mag_max`` (all when neither is set)."""
    lo, hi = h["mag_min"], h["mag_max"]
    if lo is None and hi is None:
        return True
    if mag is None:
        raise RefcatError(f"catalog service: the response to {query_url} has no 'mag' column: cannot apply "
                          f"refcat.mag_min/mag_max ({lo}, {hi})")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(mag) & (mag >= (-np.inf if lo is None else lo)) & (mag <= (np.inf if hi is None else hi))
    log.info("%s: magnitude cut [%s, %s] keeps %d of %d source(s)", region, lo, hi, int(ok.sum()), len(mag))
    return ok


def _gaia_weights(cols, dt, region, query_url):
    """``refcat.weights: errors``: the weights (`error_weights`) and the rows that have one."""
    if cols["ra_error"] is None or cols["dec_error"] is None:
        raise RefcatError(f"catalog service: the response to {query_url} has no positional errors "
                          "(ra_error/dec_error): cannot apply refcat.weights: errors")
    w = error_weights(cols["ra_error"], cols["dec_error"], cols["pmra_error"], cols["pmdec_error"], dt)
    ok = np.isfinite(w)
    if not ok.all():
        log.warning("%s: left out %d source(s) without positional errors (refcat.weights: errors)",
                    region, int((~ok).sum()))
    return w, ok


def _normalise_gaia(raw, query_url, region, cat, epoch, search, h):
    """The service's rows as `fetch_gaia_catalog` returns them, at ``epoch``, with ``h``'s hygiene applied."""
    cols = _served_columns(raw)
    has_pm, dt, n_prop, stuck = _move_to_epoch(cols, cat, epoch, region)
    ra, dec = cols["ra"], cols["dec"]
    good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    if not good.all():
        log.warning("%s: dropped %d source(s) with missing or invalid ra/dec", region, int((~good).sum()))
    if not good.any():
        raise RefcatError(f"catalog service returned no usable source (all ra/dec invalid) "
                          f"for the {region} (query {query_url})")
    served_pm = cols["pmra"] is not None and cols["pmdec"] is not None
    n_without = int((good & (~has_pm if served_pm else stuck)).sum())
    keep = good & _pm_policy(has_pm & good, stuck & good, served_pm, h["pm_missing"], region)
    keep &= _magnitude_cut(cols["mag"], h, region, query_url)
    weight = None
    if h["weights"] == "errors":
        weight, has_weight = _gaia_weights(cols, dt, region, query_url)
        keep &= has_weight
    if not keep.any():
        raise RefcatError(f"no source of the {region} is left after the catalog hygiene (refcat: "
                          f"{h}; query {query_url})")
    out = _gaia_table(raw, cols, keep, weight)
    out.meta.update({"catalog": cat, "epoch": epoch, "query_url": query_url, **search,
                     "n_pm_applied_locally": n_prop, "n_without_pm": n_without, "n_served": len(raw),
                     "hygiene": dict(h)})
    log.info("%s: %d source(s)", region, len(out))
    return out


def _gaia_table(raw, cols, keep, weight):
    """The kept rows: ``RA``, ``DEC`` (deg), ``weight`` (if any), then what the service sent of
    ``mag``, the ids (strings), ``epoch``, the proper motions and the errors."""
    from astropy.table import Table

    lower = {c.lower(): c for c in raw.colnames}
    out = Table()
    out["RA"] = np.mod(cols["ra"][keep], 360.0)
    out["DEC"] = cols["dec"][keep]
    out["RA"].unit = "deg"
    out["DEC"].unit = "deg"
    if weight is not None:
        out["weight"] = weight[keep]
    if cols["mag"] is not None:
        out["mag"] = cols["mag"][keep]
    for idname in ("objID", "GAIAsourceID"):
        if idname.lower() in lower:
            out[idname] = _str_col(raw, lower[idname.lower()])[keep]
    out["epoch"] = cols["epoch"][keep]
    for name in ("pmra", "pmdec", *_ERROR_COLUMNS):
        if cols[name] is not None:
            out[name] = cols[name][keep]
    return out


# ---------------------------------------------------------------------------
# Writing, and the workflow entry point
# ---------------------------------------------------------------------------

def write_reference_catalog(table, path):
    """Write a reference catalog as ECSV, atomically.

    The table is written under a temporary name in the destination folder and
    renamed over ``path`` only once complete (`os.replace`), so a killed job
    never leaves a partial catalog.

    Parameters
    ----------
    table : astropy.table.Table
        Must have ``RA`` and ``DEC`` columns.
    path : str or os.PathLike
        Destination file (ECSV whatever the extension).

    Raises
    ------
    RefcatError
        If the table lacks ``RA``/``DEC`` or the file cannot be written.
    """
    path = os.fspath(path)
    missing = [c for c in ("RA", "DEC") if c not in table.colnames]
    if missing:
        raise RefcatError(f"cannot write reference catalog {path!r}: missing column(s) "
                          f"{missing} (have {table.colnames})")
    try:
        with atomic_output(path) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    except (OSError, TweakflowError) as exc:
        if isinstance(exc, RefcatError):
            raise
        raise RefcatError(f"cannot write reference catalog {path!r}: {_one_line(exc)}") from None


def gaia_catalog_for_footprints(footprints, dates, catalog="GAIADR3", url=DEFAULT_URL,
                                timeout=30.0, retries=3, margin_arcsec=6.0,
                                mindet=DEFAULT_MINDET, backoff=1.0, hygiene=None):
    """Gaia reference catalog covering the images, at their mean epoch.

    Combines `search_region`, `epoch_from_dates` and `fetch_gaia_catalog`;
    this is what the workflow's ``fetch_refcat`` rule calls.

    Parameters
    ----------
    footprints : sequence of array_like
        ``(N, 2)`` (RA, Dec) corner arrays in degrees, one per image.
    dates : sequence of str or astropy.time.Time
        Observation dates of the images; ``None``/empty entries are ignored.
        With no date at all the catalog's reference epoch is used (no
        proper-motion correction), as the JWST pipeline does.
    catalog, url, timeout, retries, mindet, backoff, hygiene
        As for `fetch_gaia_catalog`.
    margin_arcsec : float, optional
        As for `search_region`.

    Returns
    -------
    astropy.table.Table
        As `fetch_gaia_catalog` returns it.
    """
    ra, dec, radius = search_region(footprints, margin_arcsec=margin_arcsec)
    dates = [d for d in dates if d is not None and not (isinstance(d, str) and not d.strip())]
    cat = str(catalog).strip().upper()
    if not dates and cat in CATALOG_EPOCHS:
        # as the JWST pipeline does: without a date, ask for the catalog's own epoch
        epoch = CATALOG_EPOCHS[cat]
        log.warning("no observation date available: using the %s reference epoch %.1f "
                    "(no proper-motion correction)", cat, epoch)
    else:
        epoch = epoch_from_dates(dates)
    return fetch_gaia_catalog(ra, dec, radius, epoch, catalog=catalog, url=url,
                              timeout=timeout, retries=retries, mindet=mindet,
                              backoff=backoff, hygiene=hygiene)


# ---------------------------------------------------------------------------

def _one_line(exc):
    text = " ".join(str(exc).split())
    return text[:_SNIPPET] if text else type(exc).__name__


def _snippet(body):
    text = " ".join(body.split())
    return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")
