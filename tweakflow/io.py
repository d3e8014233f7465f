"""Reading input images and the small WCS sidecars the workflow passes around.

Two kinds of image are understood:

``jwst``
    A JWST level-2 ``ImageModel`` FITS file (``*_cal.fits``): pixel arrays in
    the ``SCI``/``DQ`` extensions and the GWCS plus all metadata in the
    ``ASDF`` extension. Only the arrays a job needs are read, and the ASDF
    tree is read lazily (its arrays are never loaded), which is several times
    cheaper than opening a full ``ImageModel``.
``fits``
    A plain FITS image with a celestial FITS WCS (TAN or TAN-SIP) in the
    header of each science chip (`read_fits_image`): one chip, or several
    (HST WFC3/UVIS, ACS/WFC ``SCI`` extensions), which are aligned together
    as one group, with the lookup-table distortions HST files carry
    (``D2IMARR``/``WCSDVARR`` extensions). The image sidecar keeps each
    chip's header and the file's lookup tables (`write_image_sidecar`).

Sidecars hold only what the alignment needs from an image, so the gather
steps never touch pixel data: the per-image jobs write an *image sidecar*
(JSON: file name, shape, observation metadata and the image's raw ASDF
extension, copied without being parsed, so those short jobs never load the
ASDF/GWCS machinery), and the gather steps write *WCS sidecars* (ASDF: the
corrected WCS, ``wcsinfo``, group id and the alignment status).
"""

from __future__ import annotations

import functools
import io
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_output
from .errors import InputError
from .grouping import resolve_group_id
from .params import FITS_DEFAULTS, resolve_block

__all__ = [
    "DO_NOT_USE",
    "NON_SCIENCE",
    "ImageData",
    "read_image",
    "read_jwst_meta",
    "write_image_sidecar",
    "read_image_sidecar",
    "write_unreadable_sidecar",
    "unreadable_sidecar",
    "asdf_open_bytes",
    "write_sidecar",
    "read_sidecar",
    "output_stem",
    "fits_root",
    "model_filename",
    "stage_wcs_folder",
    "wcs_sidecar_path",
    "wcs_sidecar_stem",
    "primary_header_string",
    "check_fits_signature",
    "FitsChip",
    "read_fits_image",
    "chip_label",
    "LOOKUP_TABLE_EXTNAMES",
    "lookup_table_blob",
]

#: JWST DQ bits (``dqflags``) of pixels that must not be used: detection masks
#: both (`tweakflow.detection.bad_pixel_mask`), the DQ of a plain FITS chip is
#: read as ``DO_NOT_USE`` (`FitsChip`) and the synthetic images flag their
#: hot pixels with it. Defined here, where DQ arrays are read, so that the
#: modules using them need not import the detection machinery.
DO_NOT_USE = 1
NON_SCIENCE = 512


@dataclass
class ImageData:
    """What a per-image job needs from an input image.

    Attributes
    ----------
    path : str
        The file it came from.
    kind : str
        ``"jwst"`` or ``"fits"``.
    data : numpy.ndarray or None
        Science array (float32), or None when not requested.
    dq : numpy.ndarray or None
        Data-quality array (uint32), or None.
    wcs : object
        ``gwcs.WCS`` (jwst) or ``astropy.wcs.WCS`` (fits).
    wcsinfo : dict
        JWST ``meta.wcsinfo`` (empty for fits).
    meta : dict
        Metadata: ``filename``, ``observation`` (dict), ``group_id``,
        ``tweakreg_catalog``, ``date``.
    shape : tuple
        (ny, nx) of the science array.
    wcs_blob : bytes or None
        The raw ASDF extension (jwst, when the WCS was not deserialized):
        copied into the image sidecar so the gather step can read the GWCS
        without the per-image job paying for the ASDF machinery.
    chips : list of FitsChip
        Plain FITS images: the science chips (one per science extension);
        empty for jwst. ``data``, ``dq``, ``wcs`` and ``shape`` above are
        those of the first chip.
    lookup_tables : bytes or None
        Plain FITS images: the file's lookup-table extensions
        (`LOOKUP_TABLE_EXTNAMES`) as a small FITS file, copied unchanged
        (`lookup_table_blob`); None when it has none.
    """

    path: str
    kind: str
    data: np.ndarray | None
    dq: np.ndarray | None
    wcs: object
    wcsinfo: dict
    meta: dict = field(default_factory=dict)
    shape: tuple = ()
    wcs_blob: bytes | None = None
    chips: list = field(default_factory=list)
    lookup_tables: bytes | None = None


def fits_root(path):
    """The base name without its FITS extension (``.fits``, ``.fits.gz``, ``.fit``, ``.fts``)."""
    base = os.path.basename(os.fspath(path))
    for ext in (".fits.gz", ".fits", ".fit", ".fts"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def output_stem(path):
    """Stem used to name a product: the base name without ``.fits`` and ``_cal``.

    ``jw..._nrca1_cal.fits`` -> ``jw..._nrca1``; ``image.fits`` -> ``image``.
    """
    base = fits_root(path)
    if base.endswith("_cal"):
        base = base[:-4]
    return base


def _input_errors(func):
    """Re-raise any exception from parsing a file as an `InputError` naming it.

    astropy parses header cards lazily and asdf/gwcs deserialize on access,
    so a corrupt card or tree node raises (``VerifyError``, ``ValueError``,
    ``KeyError``...) wherever it is first read; the first argument of
    ``func`` is the file.
    """

    @functools.wraps(func)
    def wrapper(path, *args, **kwargs):
        try:
            return func(path, *args, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{os.fspath(path)}: corrupt or unsupported file ({type(exc).__name__}: {exc})") from exc

    return wrapper


#: A FITS file starts with this (the SIMPLE keyword, fixed format)
FITS_SIGNATURE = b"SIMPLE  ="
#: gzip magic: a compressed FITS file (astropy reads it; not checked further)
GZIP_SIGNATURE = b"\x1f\x8b"


def check_fits_signature(path):
    """The problem with an input image that can be seen without parsing it.

    Reads the first bytes of the file only (cheap enough to check thousands
    of inputs before any job runs): the file must be non-empty and start
    with the FITS ``SIMPLE`` keyword (or be gzip-compressed). A truncated
    or otherwise corrupt FITS file passes; the reader finds it.

    Parameters
    ----------
    path : str
        Input image.

    Returns
    -------
    str or None
        ``"<path>: <problem>"``, or None when the file looks like FITS.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(FITS_SIGNATURE))
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    if not head:
        return f"{path}: empty file"
    if head != FITS_SIGNATURE and not head.startswith(GZIP_SIGNATURE):
        return f"{path}: not a FITS file (it does not start with 'SIMPLE  =')"
    return None


def stage_wcs_folder(work, stage):
    """The folder of an alignment stage's WCS sidecars in a run's work folder.

    ``<work>/<stage>/wcs`` (stage ``relative``, ``absolute`` or ``global``):
    one `wcs_sidecar_path` per image.
    """
    return os.path.join(work, stage, "wcs")


def wcs_sidecar_path(folder, stem):
    """An image's WCS sidecar in ``folder`` (`stage_wcs_folder`): ``<folder>/<stem>_wcs.asdf``."""
    return os.path.join(folder, f"{stem}_wcs.asdf")


def wcs_sidecar_stem(path):
    """The image stem of a WCS sidecar's path (`wcs_sidecar_path`)."""
    name = os.path.basename(path)
    return name[: -len("_wcs.asdf")] if name.endswith("_wcs.asdf") else os.path.splitext(name)[0]


#: A FITS header is read in blocks of 36 cards of 80 characters
FITS_BLOCK, FITS_CARD = 2880, 80


def primary_header_string(path, keyword):
    """The string value of ``keyword`` in a FITS file's primary header, read directly.

    Only the primary header's blocks are read and only the card asked for is
    parsed, without astropy: ~10 times faster than ``astropy.io.fits``
    (0.15 ms against 1.6 ms for a header of 400 cards, 0.02 against 0.28 ms
    for a bare one), which counts when thousands of inputs are named before
    any job runs (`model_filename`).
    It reads the standard string card, ``KEYWORD = 'value' / comment``
    (quotes doubled inside the value); anything else raises `ValueError`
    for the caller to ask astropy.

    Parameters
    ----------
    path : str
        A FITS file.
    keyword : str
        A keyword of up to 8 characters.

    Returns
    -------
    str or None
        The value, without the trailing spaces that FITS does not count, or
        None when the primary header has no such card.

    Raises
    ------
    ValueError
        The file does not start like an uncompressed FITS file, its primary
        header has no END card, or the value is not a plain string (a
        number, a long string continued on CONTINUE cards, non-ASCII bytes).
    OSError
        The file cannot be read.
    """
    key = keyword.upper().ljust(8).encode("ascii")
    with open(path, "rb") as f:
        if f.read(len(FITS_SIGNATURE)) != FITS_SIGNATURE:
            raise ValueError("not an uncompressed FITS file")
        f.seek(0)
        while block := f.read(FITS_BLOCK):
            for start in range(0, len(block) - FITS_CARD + 1, FITS_CARD):
                card = block[start : start + FITS_CARD]
                if card[:8] == b"END     ":
                    return None
                if card.startswith(key):
                    if card[8:10] != b"= ":
                        raise ValueError("not a fixed-format value card")
                    return _card_string(card[10:])
    raise ValueError("no END card in the primary header")


def _card_string(field):
    """The string in a card's value field (what follows ``= ``), quotes undoubled."""
    text = field.decode("ascii").lstrip(" ")
    if not text.startswith("'"):
        raise ValueError("not a string value")
    parts, i = [], 1
    while True:
        j = text.find("'", i)
        if j < 0:
            raise ValueError("unterminated string")
        parts.append(text[i:j])
        if text[j + 1 : j + 2] != "'":
            break
        parts.append("'")
        i = j + 2
    value = "".join(parts).rstrip(" ")
    if value.endswith("&"):
        raise ValueError("a long string (CONTINUE cards)")
    return value


def model_filename(path):
    """``meta.filename`` of an image: its primary header's ``FILENAME``.

    Only the primary header is read (`primary_header_string`; astropy for
    what it does not read). The file's base name is returned when the
    keyword is absent or the file cannot be read (yet: the demo's images
    are made by the workflow); reading problems are reported by the jobs.
    """
    name = ""
    if os.path.isfile(path):
        try:
            name = primary_header_string(path, "FILENAME") or ""
        except ValueError:
            name = _astropy_header_value(path, "FILENAME")
        except OSError:
            name = ""
    return os.path.basename(name.strip()) or os.path.basename(os.fspath(path))


def _astropy_header_value(path, keyword):
    """``keyword`` of the primary header as a string, read by astropy ("" when absent or unreadable)."""
    from astropy.io import fits

    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            return str(hdul[0].header.get(keyword, ""))
    except Exception:
        return ""


def _open_fits(path):
    from astropy.io import fits

    if not os.path.exists(path):
        raise InputError(f"{path}: file does not exist")
    problem = check_fits_signature(path)
    if problem:
        raise InputError(problem)
    try:
        hdul = fits.open(path, mode="readonly", memmap=True, lazy_load_hdus=False, do_not_scale_image_data=True)
    except OSError as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    except Exception as exc:  # astropy raises many kinds on corrupt headers
        raise InputError(f"{path}: corrupt FITS file ({type(exc).__name__}: {exc})") from None
    _check_not_truncated(path, hdul)
    return hdul


def _check_not_truncated(path, hdul):
    """Raise `InputError` when the file ends before the data of its last HDU.

    astropy opens such a file with a warning (or silently, when the cut
    falls inside a header, dropping the HDUs after it); a file that only
    lacks the final block padding is complete and passes.
    """
    try:
        last = len(hdul) - 1
        info = hdul.fileinfo(last)
        need = int(info["datLoc"]) + int(hdul[last].size)
        have = os.path.getsize(path)
    except Exception as exc:
        hdul.close()
        raise InputError(f"{path}: corrupt FITS file ({type(exc).__name__}: {exc})") from None
    if have < need:
        name = hdul[last].name or str(last)
        hdul.close()
        raise InputError(f"{path}: truncated file: {have} bytes, but its HDU {last} ({name}) ends at byte {need}")


def _load_array(path, hdu, name):
    try:
        arr = hdu.data
    except Exception as exc:
        raise InputError(f"{path}: cannot read the {name} array ({type(exc).__name__}: {exc}); truncated file?") from None
    if arr is None:
        raise InputError(f"{path}: the {name} extension holds no array")
    # files are opened without scaling (so arrays stay memory-mapped);
    # apply BSCALE/BZERO here, exactly, for the integer DQ arrays.
    bscale = hdu.header.get("BSCALE", 1)
    bzero = hdu.header.get("BZERO", 0)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (bscale, bzero)):
        raise InputError(f"{path}: {name} header: BSCALE/BZERO must be finite numbers (got {bscale!r}, {bzero!r})")
    if bscale != 1 or bzero != 0:
        if bscale == 1 and float(bzero).is_integer() and arr.dtype.kind in "iu":
            arr = (arr.astype(np.int64) + int(bzero))
        else:
            arr = arr.astype(np.float64) * bscale + bzero
    return arr


#: Held around every ASDF read and write of this module. Jobs run as threads
#: of one Snakemake process, and asdf sets up its converters on first use in
#: a way that is not thread-safe: two jobs reading their first GWCS side by
#: side (align and fetch_refcat, say) could get an unconverted tree and fail
#: with "not a JWST GWCS" (reproduced: 2 runs in 12 with 8 threads).
#: Sidecars are small, so holding the lock costs little.
ASDF_LOCK = threading.RLock()


def asdf_open_bytes(path, raw):
    """Open the bytes of an ASDF file lazily (its arrays are never loaded).

    ``path`` only names the source in error messages.
    """
    import asdf

    try:
        return asdf.open(io.BytesIO(raw), lazy_load=True, memmap=False)
    except Exception as exc:
        raise InputError(f"{path}: corrupt ASDF extension ({type(exc).__name__}: {exc})") from None


def _read_asdf_tree(path, hdul):
    """The ASDF tree of a JWST FITS file (lazy: arrays are not loaded)."""
    try:
        raw = hdul["ASDF"].data.tobytes()
    except Exception as exc:
        raise InputError(f"{path}: cannot read the ASDF extension ({type(exc).__name__}: {exc})") from None
    return asdf_open_bytes(path, raw)


@_input_errors
def read_jwst_meta(path, hdul=None):
    """Metadata and WCS of a JWST ``ImageModel`` file, without pixel data.

    Returns
    -------
    wcs : gwcs.WCS
    wcsinfo : dict
    meta : dict
        ``filename``, ``observation``, ``group_id`` (or None),
        ``tweakreg_catalog`` (or None), ``cal_step``, ``date``.
    """
    close = hdul is None
    hdul = hdul if hdul is not None else _open_fits(path)
    try:
        with ASDF_LOCK:
            af = _read_asdf_tree(path, hdul)
            try:
                return _tree_meta(path, af.tree)
            finally:
                af.close()
    finally:
        if close:
            hdul.close()


def _tree_meta(path, tree):
    """WCS, wcsinfo and metadata from a JWST ASDF tree."""
    tree_meta = tree.get("meta", {})
    try:
        wcs = tree_meta.get("wcs")
    except Exception as exc:
        raise InputError(f"{path}: cannot deserialize meta.wcs ({type(exc).__name__}: {exc})") from None
    if wcs is None:
        raise InputError(f"{path}: no WCS (meta.wcs is missing; was assign_wcs run?)")
    if not hasattr(wcs, "pipeline") or "v2v3" not in getattr(wcs, "available_frames", []):
        raise InputError(f"{path}: meta.wcs is not a JWST GWCS with a 'v2v3' frame")
    from gwcs.coordinate_frames import CelestialFrame

    if not isinstance(wcs.output_frame, CelestialFrame):
        raise InputError(f"{path}: meta.wcs is not celestial (its output frame is {wcs.output_frame!r})")
    wcsinfo = dict(tree_meta.get("wcsinfo", {}))
    for key in ("v2_ref", "v3_ref", "roll_ref"):
        if key not in wcsinfo:
            raise InputError(f"{path}: meta.wcsinfo.{key} is missing")
    obs = dict(tree_meta.get("observation", {}))
    meta = {
        "filename": tree_meta.get("filename") or os.path.basename(path),
        "observation": obs,
        "group_id": tree_meta.get("group_id"),
        "tweakreg_catalog": tree_meta.get("tweakreg_catalog"),
        "cal_step": dict(tree_meta.get("cal_step", {})),
        "date": _obs_datetime(obs, tree_meta),
    }
    return wcs, wcsinfo, meta


def _obs_datetime(obs, tree_meta):
    date = obs.get("date")
    time = obs.get("time")
    if date and time:
        return f"{date}T{time}"
    if date:
        return str(date)
    start = tree_meta.get("exposure", {}).get("start_time")
    if start is not None:
        from astropy.time import Time

        return Time(start, format="mjd").isot
    return None


#: JWST FITS keywords of ``meta.observation`` (primary header).
_OBS_KEYWORDS = {
    "program_number": "PROGRAM",
    "observation_number": "OBSERVTN",
    "visit_number": "VISIT",
    "visit_group": "VISITGRP",
    "sequence_id": "SEQ_ID",
    "activity_id": "ACT_ID",
    "exposure_number": "EXPOSURE",
    "date": "DATE-OBS",
    "time": "TIME-OBS",
}
#: JWST FITS keywords of ``meta.wcsinfo`` (SCI header).
_WCSINFO_KEYWORDS = {
    "v2_ref": "V2_REF",
    "v3_ref": "V3_REF",
    "roll_ref": "ROLL_REF",
    "ra_ref": "RA_REF",
    "dec_ref": "DEC_REF",
    "v3yangle": "V3I_YANG",
    "vparity": "VPARITY",
}


def _header_meta(path, hdul):
    """JWST metadata from FITS keywords only (no ASDF parsing)."""
    phdr = hdul[0].header
    obs = {k: str(phdr[kw]).strip() for k, kw in _OBS_KEYWORDS.items() if kw in phdr}
    wcsinfo = {k: hdul["SCI"].header[kw] for k, kw in _WCSINFO_KEYWORDS.items() if kw in hdul["SCI"].header}
    date = f"{obs['date']}T{obs['time']}" if obs.get("date") and obs.get("time") else obs.get("date")
    if date is None and "EXPSTART" in phdr:
        from astropy.time import Time

        date = Time(phdr["EXPSTART"], format="mjd").isot
    meta = {
        "filename": str(phdr.get("FILENAME") or os.path.basename(path)),
        "observation": obs,
        "group_id": None,  # only in the ASDF tree: resolved by the gather step
        "tweakreg_catalog": str(phdr["TCATFILE"]).strip() if phdr.get("TCATFILE") else None,
        "date": date,
    }
    return wcsinfo, meta


@_input_errors
def read_image(path, with_data=True, with_wcs=True, fits=None):
    """Read an input image.

    Parameters
    ----------
    path : str
        FITS file: a JWST ``ImageModel`` (with an ``ASDF`` extension), or
        else a plain FITS image with a celestial FITS WCS (see
        `read_fits_image`).
    with_data : bool
        Also read the ``SCI`` and ``DQ`` arrays.
    with_wcs : bool
        Deserialize the GWCS (needs asdf, gwcs and their extensions: about
        two seconds of start-up). With False, metadata come from the FITS
        keywords and the raw ASDF extension is returned as ``wcs_blob``.
        Plain FITS images always get their (astropy) WCS.
    fits : dict or None
        Plain FITS images only: the ``fits`` configuration block
        (`tweakflow.params.FITS_DEFAULTS`).

    Returns
    -------
    ImageData

    Raises
    ------
    InputError
        Naming the file and the problem (not FITS, truncated, no SCI, no WCS).
    """
    path = os.fspath(path)
    hdul = _open_fits(path)
    try:
        names = [h.name for h in hdul]
        if "ASDF" not in names:
            # not a JWST ImageModel: a plain FITS image with a FITS WCS
            return read_fits_image(path, with_data=with_data, fits=fits, hdul=hdul)
        if "SCI" not in names:
            raise InputError(f"{path}: no SCI image extension")
        sci_hdu = hdul["SCI"]
        shape = tuple(int(n) for n in (sci_hdu.header.get("NAXIS2", 0), sci_hdu.header.get("NAXIS1", 0)))
        if sci_hdu.header.get("NAXIS", 0) != 2 or min(shape) < 1:
            raise InputError(f"{path}: SCI extension is not a 2-D image")
        blob = None
        if with_wcs:
            wcs, wcsinfo, meta = read_jwst_meta(path, hdul)
        else:
            wcs = None
            wcsinfo, meta = _header_meta(path, hdul)
            try:
                blob = hdul["ASDF"].data.tobytes()
            except Exception as exc:
                raise InputError(f"{path}: cannot read the ASDF extension ({type(exc).__name__}: {exc})") from None
            if not blob.startswith(b"#ASDF"):
                raise InputError(f"{path}: the ASDF extension does not hold an ASDF file")
        data = dq = None
        if with_data:
            data = np.asarray(_load_array(path, sci_hdu, "SCI"), dtype=np.float32)
            if "DQ" in names:
                dq = np.asarray(_load_array(path, hdul["DQ"], "DQ")).astype(np.uint32, copy=False)
                if dq.shape != data.shape:
                    raise InputError(f"{path}: DQ shape {dq.shape} differs from SCI shape {data.shape}")
    finally:
        hdul.close()
    return ImageData(path=path, kind="jwst", data=data, dq=dq, wcs=wcs, wcsinfo=wcsinfo, meta=meta, shape=shape, wcs_blob=blob)


# ---------------------------------------------------------------------------
# Plain FITS images with a celestial FITS WCS
# ---------------------------------------------------------------------------


#: FITS projections the FITS-WCS corrector supports here (SIP is optional).
_FITS_PROJECTIONS = ("TAN",)


@dataclass
class FitsChip:
    """One science chip of a plain FITS image.

    Attributes
    ----------
    hdu : int
        Index of its HDU in the file.
    extname : str
        EXTNAME (``"PRIMARY"`` for an image in the primary HDU).
    extver : int
        EXTVER (1 when absent).
    shape : tuple
        (ny, nx).
    wcs : astropy.wcs.WCS
        Its celestial FITS WCS (TAN or TAN-SIP, with its lookup tables if
        any), with ``pixel_shape`` set.
    header : str
        The chip's header as FITS card images: what the image sidecar keeps
        so the gather step rebuilds the exact WCS.
    data, dq : numpy.ndarray or None
        Science array (float32) and DQ (uint32, ``1`` = `DO_NOT_USE`), when read.
    """

    hdu: int
    extname: str
    extver: int
    shape: tuple
    wcs: object
    header: str
    data: np.ndarray | None = None
    dq: np.ndarray | None = None


def chip_label(filename, extname, extver, nchips=1):
    """Name of a chip in logs and solution tables: ``file.fits[SCI,2]``.

    A single-chip file is named by its file name alone.
    """
    return filename if nchips == 1 else f"{filename}[{extname},{int(extver)}]"


#: EXTNAMEs of the lookup-table distortions of HST files: detector-to-image
#: (``D2IMDISj``) and non-polynomial (``CPDISj``) corrections.
LOOKUP_TABLE_EXTNAMES = ("D2IMARR", "WCSDVARR")


def _fits_wcs(path, header, fobj, where, shape):
    """The celestial FITS WCS of one image HDU, checked for what alignment supports.

    Its distortions are SIP and the lookup tables (``D2IMDISj``,
    ``CPDISj`` = ``LOOKUP``) that astropy builds from the
    ``D2IMARR``/``WCSDVARR`` extensions of ``fobj`` (the file, or the
    tables kept in an image sidecar). Every other distortion is refused,
    since astropy would ignore it with a warning and the image would be
    aligned through a wrong WCS; so is a WCS that tweakwcs' FITS-WCS
    corrector cannot fit (its own structure check).

    Parameters
    ----------
    path : str
        The file, for messages.
    header : astropy.io.fits.Header
    fobj : astropy.io.fits.HDUList or None
        Where the lookup tables are.
    where : str
        The HDU, for messages (``[SCI,1]``).
    shape : tuple of int
        (ny, nx) of the chip: the WCS's ``pixel_shape``.
    """
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    for key in header:
        kind = str(header[key]).strip().upper() if key[:-1] in ("CPDIS", "D2IMDIS", "CQDIS") else None
        if kind is not None and (key.startswith("CQDIS") or kind != "LOOKUP"):
            raise InputError(
                f"{path}{where}: unsupported distortion {key} = '{header[key]}'; "
                "only SIP and lookup tables (CPDISj, D2IMDISj = 'LOOKUP') can be aligned"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header, fobj)
    except Exception as exc:
        raise InputError(f"{path}{where}: invalid FITS WCS ({type(exc).__name__}: {exc})") from None
    if not w.has_celestial or w.naxis != 2 or not w.is_celestial:
        raise InputError(f"{path}{where}: the WCS is not a 2-D celestial WCS (CTYPE = {list(w.wcs.ctype)})")
    proj = {c[5:8] for c in w.wcs.ctype}
    if len(proj) != 1 or proj.pop() not in _FITS_PROJECTIONS:
        raise InputError(
            f"{path}{where}: unsupported projection (CTYPE = {list(w.wcs.ctype)}); "
            "only TAN and TAN-SIP celestial WCSs can be aligned"
        )
    w.pixel_shape = (int(shape[1]), int(shape[0]))
    from tweakwcs.correctors import FITSWCSCorrector

    try:
        FITSWCSCorrector(w)  # checks that it can fit through every distortion
    except ValueError as exc:
        raise InputError(f"{path}{where}: its WCS cannot be aligned ({exc})") from None
    return w


def lookup_table_blob(path, hdul):
    """The lookup-table extensions of a FITS file as the bytes of a small FITS file.

    The image sidecar keeps them so that the gather steps, which never open
    the images, rebuild each chip's WCS *with* its tables
    (`read_image_sidecar`). The extensions are copied unchanged (header and
    array), so the rebuilt WCS is the one the per-image job used; they are
    small (an ACS/WFC file's six: ~70 kB). Keeping the file's path and HDU
    numbers instead would make the gather steps read every input again, and
    depend on it still being there, unchanged, on a host that can see it.

    Returns
    -------
    bytes or None
        None when the file has no such extension.
    """
    from astropy.io import fits

    tables = [h for h in hdul if h.name in LOOKUP_TABLE_EXTNAMES]
    if not tables:
        return None
    try:
        out = fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(h.data, h.header.copy()) for h in tables])
        buf = io.BytesIO()
        out.writeto(buf, output_verify="exception")
    except Exception as exc:
        raise InputError(f"{path}: cannot read its lookup-table extensions ({type(exc).__name__}: {exc})") from None
    return buf.getvalue()


def _is_celestial_image(hdu):
    hdr = hdu.header
    return (
        hdu.is_image
        and hdr.get("NAXIS", 0) == 2
        and {str(hdr.get(k, "")).split("-")[0].strip().upper() for k in ("CTYPE1", "CTYPE2")}
        in ({"RA", "DEC"}, {"GLON", "GLAT"}, {"ELON", "ELAT"})
    )


def _science_hdus(path, hdul, sci_ext):
    """Indices of the science chips of a plain FITS file (see `tweakflow.params.FITS_DEFAULTS`)."""
    images = [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) == 2]
    if sci_ext:
        sel = [i for i in images if hdul[i].name == str(sci_ext).strip().upper()]
        if not sel:
            raise InputError(f"{path}: no 2-D image extension named '{sci_ext}' (fits.sci_ext)")
    else:
        first = next((i for i in images if _is_celestial_image(hdul[i])), None)
        if first is None:
            raise InputError(f"{path}: not a JWST ImageModel and no 2-D image HDU has a celestial FITS WCS")
        name = hdul[first].name
        sel = [first] if first == 0 or not name else [i for i in images if hdul[i].name == name]
    return sorted(sel, key=lambda i: (int(hdul[i].header.get("EXTVER", 1)), i))


def _fits_date(phdr, hdr):
    """Observation date-time (ISO) from DATE-OBS [+ TIME-OBS], MJD-OBS or EXPSTART."""
    for h in (hdr, phdr):
        date = str(h.get("DATE-OBS", "")).strip()
        if date:
            time = str(h.get("TIME-OBS", "")).strip()
            return f"{date}T{time}" if time and "T" not in date else date
    for h in (hdr, phdr):
        for kw in ("MJD-OBS", "EXPSTART"):
            if isinstance(h.get(kw), (int, float)):
                from astropy.time import Time

                return Time(float(h[kw]), format="mjd").isot
    return None


def _read_fits_chip(path, hdul, i, opts, with_data):
    """The science chip in HDU ``i``: shape, checked WCS, header, and the arrays if wanted."""
    hdu = hdul[i]
    extname = hdu.name or ("PRIMARY" if i == 0 else str(i))
    extver = int(hdu.header.get("EXTVER", 1))
    where = f"[{extname},{extver}]" if i else "[0]"
    shape = tuple(int(hdu.header[k]) for k in ("NAXIS2", "NAXIS1"))
    if min(shape) < 1:
        raise InputError(f"{path}{where}: empty image")
    wcs = _fits_wcs(path, hdu.header, hdul, where, shape)
    chip = FitsChip(hdu=i, extname=extname, extver=extver, shape=shape, wcs=wcs, header=hdu.header.tostring())
    if with_data:
        chip.data = np.array(_load_array(path, hdu, extname), dtype=np.float32)
        if opts["dq_ext"]:
            chip.dq = _fits_dq(path, hdul, opts["dq_ext"], extver, shape, opts["dq_bits"])
    return chip


def _fits_group_id(path, phdr, hdr, keyword):
    """Value of ``fits.group_keyword`` in the primary header, else the first chip's; None if not configured."""
    if not keyword:
        return None
    for h in (phdr, hdr):
        if keyword in h and str(h[keyword]).strip():
            return str(h[keyword]).strip()
    raise InputError(f"{path}: group keyword '{keyword}' (fits.group_keyword) is not in its headers")


def _fits_meta(path, phdr, hdr, group_keyword):
    """``meta`` of a plain FITS image from its primary header and its first chip's header."""
    group_id = _fits_group_id(path, phdr, hdr, group_keyword)
    return {
        "filename": str(phdr.get("FILENAME") or os.path.basename(path)).strip(),
        "observation": {},
        "group_id": group_id,
        "tweakreg_catalog": None,
        "date": _fits_date(phdr, hdr),
    }


@_input_errors
def read_fits_image(path, with_data=True, fits=None, hdul=None):
    """Read a plain FITS image whose celestial WCS is in FITS keywords.

    The science chips are chosen by ``fits["sci_ext"]`` (default: the first
    2-D image HDU with a celestial WCS, and every HDU sharing its EXTNAME,
    so the two ``SCI`` chips of an HST WFC3/UVIS or ACS/WFC file are read
    together and aligned as one group). Each chip's WCS must be TAN or
    TAN-SIP; lookup-table distortions (``D2IMDISj``, ``CPDISj``) are read
    from the file's ``D2IMARR``/``WCSDVARR`` extensions (`_fits_wcs`).

    Parameters
    ----------
    path : str
        FITS file.
    with_data : bool
        Also read the science (and DQ, with ``fits["dq_ext"]``) arrays.
    fits : dict or None
        The ``fits`` configuration block (`tweakflow.params.FITS_DEFAULTS`).
    hdul : astropy.io.fits.HDUList or None
        The file, already open (it is not closed here).

    Returns
    -------
    ImageData
        ``kind="fits"``; ``chips`` lists every chip; ``meta["group_id"]`` is
        the value of ``fits["group_keyword"]`` (None when not configured).

    Raises
    ------
    InputError
        Naming the file, the extension and the problem.
    """
    path = os.fspath(path)
    opts = resolve_block("fits", FITS_DEFAULTS, fits)
    close = hdul is None
    hdul = hdul if hdul is not None else _open_fits(path)
    try:
        phdr = hdul[0].header
        chips = [_read_fits_chip(path, hdul, i, opts, with_data) for i in _science_hdus(path, hdul, opts["sci_ext"])]
        meta = _fits_meta(path, phdr, hdul[chips[0].hdu].header, opts["group_keyword"])
        tables = lookup_table_blob(path, hdul)
    finally:
        if close:
            hdul.close()
    c0 = chips[0]
    return ImageData(
        path=path, kind="fits", data=c0.data, dq=c0.dq, wcs=c0.wcs, wcsinfo={}, meta=meta, shape=c0.shape, chips=chips,
        lookup_tables=tables,
    )


def _fits_dq(path, hdul, dq_ext, extver, shape, dq_bits):
    """DQ of a chip as the workflow's mask (``1`` = `DO_NOT_USE`); None if the file has no DQ."""
    name = str(dq_ext).strip().upper()
    if not any(h.name == name for h in hdul):
        return None
    idx = [i for i, h in enumerate(hdul) if h.name == name and int(h.header.get("EXTVER", 1)) == extver]
    if not idx:
        raise InputError(f"{path}: no '{name}' extension with EXTVER={extver} (fits.dq_ext)")
    dq = np.asarray(_load_array(path, hdul[idx[0]], f"{name},{extver}"))
    if dq.shape != shape:
        raise InputError(f"{path}[{name},{extver}]: DQ shape {dq.shape} differs from the science shape {shape}")
    dq = dq.astype(np.int64, copy=False)
    bad = (dq & int(dq_bits)) != 0 if dq_bits is not None else dq != 0
    return bad.astype(np.uint32)


def _fits_sidecar_wcs(source, chip, tables):
    """Rebuild a chip's WCS from the header (and lookup tables) kept in an image sidecar."""
    from astropy.io import fits as afits

    hdr = afits.Header.fromstring(chip["header"])
    where = f"[{chip['extname']},{chip['extver']}]"
    return _fits_wcs(source, hdr, tables, where, chip["shape"])


def _sidecar_tables(source, doc):
    """The lookup-table extensions kept in an image sidecar (an HDUList), or None."""
    import base64

    from astropy.io import fits as afits

    if not doc.get("lookup_tables"):
        return None
    try:
        return afits.HDUList.fromstring(base64.b64decode(doc["lookup_tables"]))
    except Exception as exc:
        raise InputError(f"{source}: corrupt lookup tables in its image sidecar ({type(exc).__name__}: {exc})") from None


def image_sidecar_doc(image, asn_group_id=None):
    """The sidecar of an input image as a JSON-ready dict (see `write_image_sidecar`)."""
    import base64

    doc = {
        "kind": image.kind,
        "filename": image.meta["filename"],
        "source": os.path.abspath(image.path),
        "shape": [int(n) for n in image.shape],
        "date": image.meta.get("date"),
        "observation": image.meta.get("observation", {}),
        "asn_group_id": asn_group_id,
        "wcsinfo": {k: (v.item() if hasattr(v, "item") else v) for k, v in image.wcsinfo.items()},
        "asdf": base64.b64encode(image.wcs_blob).decode("ascii") if image.wcs_blob else None,
    }
    if image.kind == "fits":
        # the chips' headers, from which read_image_sidecar rebuilds their WCSs
        doc["group_id"] = image.meta.get("group_id")
        doc["chips"] = [
            {"hdu": c.hdu, "extname": c.extname, "extver": c.extver, "shape": [int(n) for n in c.shape], "header": c.header}
            for c in image.chips
        ]
        doc["lookup_tables"] = base64.b64encode(image.lookup_tables).decode("ascii") if image.lookup_tables else None
    return doc


def write_image_sidecar(path, image, asn_group_id=None, sky=None):
    """Write the sidecar of an input image (JSON), atomically.

    It holds what the gather step needs from the image and nothing more:
    file name, shape, observation metadata, date, the association's group id
    (if any) and the image's raw ASDF extension (base64), from which
    `read_image_sidecar` deserializes the GWCS, ``wcsinfo`` and
    ``meta.group_id``. A plain FITS image keeps instead its chips' headers
    and its lookup-table extensions (`lookup_table_blob`, base64).

    Parameters
    ----------
    path : str
        Output ``.json`` path.
    image : ImageData or dict
        As returned by ``read_image(..., with_wcs=False)``, or its
        `image_sidecar_doc`.
    asn_group_id : str or None
        Group id given by the association (highest precedence).
    sky : dict or None
        ``group_id`` (resolved) and ``footprints`` (per chip, the four
        corners' RA, Dec in deg): what `read_sidecar_sky` returns without
        deserializing the WCS.
    """
    import json

    doc = dict(image) if isinstance(image, dict) else image_sidecar_doc(image, asn_group_id)
    if sky is not None:
        doc["sky"] = {"group_id": str(sky["group_id"]), "footprints": [np.asarray(f, float).tolist() for f in sky["footprints"]]}
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)


def read_sidecar_sky(path):
    """``filename``, ``kind``, ``group_id``, ``footprints``, ``shapes`` and ``labels`` (per chip, as the
    solution tables name them) of an image sidecar, without its WCS.

    None for a sidecar without them (an unreadable image, or one written
    without ``sky``).
    """
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except Exception as exc:
        raise InputError(f"{path}: unreadable image sidecar ({type(exc).__name__}: {exc})") from None
    if "sky" not in doc:
        return None
    chips = doc["chips"] if doc["kind"] == "fits" else None
    shapes = [tuple(c["shape"]) for c in chips] if chips else [tuple(doc["shape"])]
    labels = [chip_label(doc["filename"], c["extname"], c["extver"], len(chips)) for c in chips] if chips else [doc["filename"]]
    return {"filename": doc["filename"], "kind": doc["kind"], "group_id": doc["sky"]["group_id"], "shapes": shapes, "labels": labels,
            "footprints": [np.asarray(f, float) for f in doc["sky"]["footprints"]]}


@_input_errors
def read_image_sidecar(path):
    """Read a sidecar written by `write_image_sidecar`, deserializing the WCS.

    Returns a dict with the same keys as `read_sidecar`; ``group_id`` is
    resolved by precedence (association, ``meta.group_id``, exposure).
    """
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except Exception as exc:
        raise InputError(f"{path}: unreadable image sidecar ({type(exc).__name__}: {exc})") from None
    return image_sidecar_from_doc(doc, doc.get("source") or path)


def image_sidecar_from_doc(doc, source):
    """`read_image_sidecar` of a sidecar already in memory (``source``: its image, for messages)."""
    import base64

    if doc.get("kind") == "unreadable":
        return unreadable_sidecar(doc)
    if doc.get("kind") == "fits":
        return _read_fits_image_sidecar(doc, source)
    with ASDF_LOCK:
        af = asdf_open_bytes(source, base64.b64decode(doc["asdf"]))
        try:
            wcs, wcsinfo, meta = _tree_meta(source, af.tree)
        finally:
            af.close()
    gid = resolve_group_id(meta["observation"] or doc.get("observation"), meta.get("group_id"), doc.get("asn_group_id"), fallback=doc["filename"])
    return {
        "kind": doc["kind"],
        "wcs": wcs,
        "wcsinfo": wcsinfo,
        "group_id": gid,
        "filename": doc["filename"],
        "shape": tuple(doc["shape"]),
        "date": doc.get("date") or meta.get("date"),
        "source": doc.get("source"),
        "extra": {},
    }


def _read_fits_image_sidecar(doc, source):
    """`read_image_sidecar` of a plain FITS image: one WCS per chip.

    ``wcs`` is the list of the chips' `astropy.wcs.WCS` and ``chips`` their
    ``hdu``, ``extname``, ``extver`` and ``shape``; ``shape`` is the first
    chip's. The group id is the association's, else the configured header
    keyword's value, else the file name (one group per file, chips together).
    """
    chips = doc.get("chips") or []
    if not chips:
        raise InputError(f"{source}: image sidecar lists no science chip")
    gid = resolve_group_id(None, doc.get("group_id"), doc.get("asn_group_id"), fallback=doc["filename"])
    tables = _sidecar_tables(source, doc)
    return {
        "kind": "fits",
        "wcs": [_fits_sidecar_wcs(source, c, tables) for c in chips],
        "wcsinfo": {},
        "group_id": gid,
        "filename": doc["filename"],
        "shape": tuple(chips[0]["shape"]),
        "date": doc.get("date"),
        "source": doc.get("source"),
        "extra": {},
        "chips": [{k: c[k] for k in ("hdu", "extname", "extver", "shape")} for c in chips],
    }


def write_unreadable_sidecar(path, image, reason, asn_group_id=None):
    """Write the image sidecar of an input image that could not be read, atomically.

    With ``on_bad_input: skip`` it stands in for the image's sidecar: the
    gather steps leave the image out of the alignment and list it as
    ``FAILED`` with ``reason``; its ``apply_wcs`` job fails.

    Parameters
    ----------
    path : str
        Output ``.json`` path.
    image : str
        The input image.
    reason : str
        Why it could not be read (the `InputError` message).
    asn_group_id : str or None
        Group id given by the association.
    """
    import json

    doc = {
        "kind": "unreadable",
        "filename": os.path.basename(image),
        "source": os.path.abspath(image),
        "asn_group_id": asn_group_id,
        "reason": str(reason),
    }
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)


def unreadable_sidecar(doc, reason=None):
    """The `read_sidecar` dict of an image left out of the alignment.

    Parameters
    ----------
    doc : dict
        An image sidecar's JSON document (``filename``, ``source``,
        ``asn_group_id``; ``reason`` when written by `write_unreadable_sidecar`).
    reason : str or None
        Why the image cannot be used (default: ``doc["reason"]``).

    Returns
    -------
    dict
        ``kind="unreadable"``, ``wcs=None`` and ``extra`` with ``status``
        ``FAILED`` and the reason.
    """
    reason = reason or doc.get("reason") or "unreadable"
    return {
        "kind": "unreadable",
        "wcs": None,
        "wcsinfo": {},
        "group_id": resolve_group_id(None, asn_group_id=doc.get("asn_group_id"), fallback=doc["filename"]),
        "filename": doc["filename"],
        "shape": (),
        "date": None,
        "source": doc.get("source"),
        "extra": {"status": "FAILED", "reason": f"unreadable input: {reason}", "stage": "relative"},
    }


def write_sidecar(path, *, wcs, wcsinfo, group_id, filename, shape, kind="jwst", date=None, source=None, extra=None, chips=None):
    """Write the alignment sidecar of one image (ASDF), atomically.

    Parameters
    ----------
    path : str
        Output ``.asdf`` path.
    wcs : gwcs.WCS
    wcsinfo : dict
    group_id : str
    filename : str
        The image's ``meta.filename``.
    shape : tuple
        (ny, nx).
    kind : str
        Image kind (``"jwst"``).
    date : str or None
        Observation date-time (ISO), used for reference-catalog epochs.
    source : str or None
        Path of the input image.
    extra : dict or None
        Further plain values (e.g. alignment ``status`` and ``reason``).
    chips : list of dict or None
        Plain FITS images: the chips (``hdu``, ``extname``, ``extver``,
        ``shape``, and per-chip ``status``/``reason``); ``wcs`` is then the
        list of their `astropy.wcs.WCS`, in the same order.
    """
    import asdf

    tree = {
        "kind": kind,
        "wcs": wcs,
        "wcsinfo": {k: (v.item() if hasattr(v, "item") else v) for k, v in wcsinfo.items()},
        "group_id": str(group_id),
        "filename": filename,
        "shape": [int(s) for s in shape],
        "date": date,
        "source": source,
        "extra": dict(extra or {}),
    }
    if chips is not None:
        tree["chips"] = [dict(c) for c in chips]
    # asdf (6) validates every tree it writes against the schemas, ~25 ms of
    # a sidecar's ~40 ms for a NIRCam GWCS; it has no option to skip that
    with atomic_output(path) as tmp, ASDF_LOCK:
        asdf.AsdfFile(tree).write_to(tmp)


def read_sidecar(path):
    """Read a WCS sidecar (`write_sidecar`) or an image sidecar (`write_image_sidecar`).

    Returns a plain dict: ``kind``, ``wcs``, ``wcsinfo``, ``group_id``,
    ``filename``, ``shape``, ``date``, ``source``, ``extra``; for plain FITS
    images (``kind="fits"``) also ``chips``, and ``wcs`` is then a list
    (one `astropy.wcs.WCS` per chip).
    """
    import asdf

    if os.fspath(path).endswith(".json"):
        return read_image_sidecar(path)

    try:
        with ASDF_LOCK, asdf.open(path, lazy_load=False, memmap=False) as af:
            tree = {k: af.tree[k] for k in ("kind", "wcs", "wcsinfo", "group_id", "filename", "shape", "date", "source")}
            tree["extra"] = dict(af.tree.get("extra", {}))
            if "chips" in af.tree:
                tree["chips"] = [dict(c) for c in af.tree["chips"]]
                tree["wcs"] = list(tree["wcs"])
    except Exception as exc:
        raise InputError(f"{path}: unreadable sidecar ({type(exc).__name__}: {exc})") from None
    tree["wcsinfo"] = dict(tree["wcsinfo"])
    tree["shape"] = tuple(tree["shape"])
    return tree
