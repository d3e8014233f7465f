"""Writing the corrected images: SIP approximation, JWST products, FITS-WCS copies.

JWST ``ImageModel`` inputs
    The output is the input model with the corrected GWCS in ``meta.wcs``
    (named after the absolute fit when there was one, as the JWST step does),
    ``meta.wcsinfo.s_region`` of the corrected footprint (`s_region`), and --
    with ``sip_approx`` -- the FITS TAN-SIP approximation of the corrected
    GWCS (`gwcs.wcs.WCS.to_fits_sip`) in ``meta.wcsinfo``, which
    stdatamodels writes as the FITS WCS keywords of the ``SCI`` header (what
    DS9 reads). Its metadata are the JWST step's (`write_jwst_output`): the
    step's status, group id, association, calibration software and log
    (``cal_logs.tweakreg``), and tweakflow's name and version with the
    image's fit results in ``meta.tweakflow``. The file is the one
    stdatamodels would write, written by patching (`save_product`): its
    headers and ``ASDF`` extension as stdatamodels builds them, every
    array's data copied byte for byte from the input (`tweakflow.fitspatch`).
Plain FITS images
    The output is a byte copy of the input in which only the WCS keywords
    of the science chips change: the corrected CRVAL/CRPIX/CD (or PC and
    CDELT, as the input had them) and SIP, ``WCSNAME``, and -- the first
    time a file is aligned -- the original WCS kept as the alternate WCS
    ``O`` (``CRVAL1O``, ``WCSNAMEO``, ...), as drizzlepac archives it. The
    SIP coefficients and the lookup tables (``D2IMARR``/``WCSDVARR``
    extensions and their keywords, left untouched) have no alternate form:
    they are shared, which is exact because the corrections (tweakwcs'
    FITS-WCS corrector) only change the linear part of the WCS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

import numpy as np

from . import __version__, fitspatch
from .atomic import atomic_output
from .callogs import CAL_LOGS_KEY, capture_lines
from .errors import InputError
from .params import SIP_PARS, resolve_block
from .results import restored_row, solution_message, summary_record

__all__ = [
    "MAX_SIP_DEGREE",
    "RELATIVE_WCSNAME",
    "ORIGINAL_WCS_KEY",
    "sip_approximation",
    "sip_accuracy_problem",
    "update_wcsinfo_sip",
    "s_region",
    "SOFTWARE_NAME",
    "LIST_EXPTYPE",
    "set_step_meta",
    "fit_record",
    "output_wcs_name",
    "write_jwst_output",
    "save_product",
    "update_fits_header_wcs",
    "write_fits_output",
]

log = logging.getLogger(__name__)


#: Highest SIP degree tried when ``sip_degree``/``sip_inv_degree`` is None.
MAX_SIP_DEGREE = 6

#: ``WCSNAME`` of a plain FITS image after relative alignment only (an
#: absolute fit names it as `tweakflow.absolute.wcs_name` does, ``FIT-LVL3-<abs_refcat>``).
RELATIVE_WCSNAME = "FIT-REL"

#: Alternate-WCS key under which the original FITS WCS is kept.
ORIGINAL_WCS_KEY = "O"

# wcsinfo entries replaced by a new SIP approximation (lower case, as JWST)
_WCSINFO_SIP_KEYS = re.compile(r"^(naxis\d*|cdelt[12]|pc[12]_[12]|cd[12]_[12]|[ab]p?_order|[ab]p?_\d_\d)$")
# FITS keywords of a primary celestial WCS, and of its SIP distortion
_FITS_WCS_KEYS = re.compile(
    r"^(WCSAXES|CRPIX[12]|CRVAL[12]|CTYPE[12]|CUNIT[12]|CDELT[12]|CROTA[12]|PC[12]_[12]|CD[12]_[12]|LONPOLE|LATPOLE|RADESYS|EQUINOX)$"
)
_FITS_SIP_KEYS = re.compile(r"^([AB]P?_ORDER|[AB]P?_\d+_\d+|[AB]P?_DMAX)$")


# ---------------------------------------------------------------------------
# SIP approximation and footprint (JWST)
# ---------------------------------------------------------------------------


def _degrees(degree):
    """A fixed degree, or every degree up to `MAX_SIP_DEGREE` (best fit)."""
    return range(1, MAX_SIP_DEGREE + 1) if degree is None else int(degree)


def sip_approximation(
    wcs,
    *,
    max_pix_error=0.01,
    degree=None,
    max_inv_pix_error=0.01,
    inv_degree=None,
    npoints=12,
    crpix=None,
    bounding_box=None,
):
    """FITS TAN-SIP approximation of a GWCS, with the step's parameters.

    `gwcs.wcs.WCS.to_fits_sip` does the fit; a ``degree`` (``inv_degree``)
    of None tries the degrees 1 to `MAX_SIP_DEGREE` and keeps the lowest one
    reaching ``max_pix_error`` (``max_inv_pix_error``) pixels, as the spec
    says; an explicit degree ignores the error limit.

    Parameters
    ----------
    wcs : gwcs.WCS
        The (corrected) GWCS.
    max_pix_error, max_inv_pix_error : float
        Largest forward/inverse fit error (pixels).
    degree, inv_degree : int or None
        Forward/inverse SIP degree; None: best fit.
    npoints : int
        Sampling points per axis of the fit.
    crpix : list of float or None
        1-based reference pixel; None: near the centre of the bounding box.
    bounding_box : tuple or None
        ((xmin, xmax), (ymin, ymax)); None: the GWCS's.

    Returns
    -------
    astropy.io.fits.Header
        CTYPE (``-SIP``), CRPIX, CRVAL, CD and A/B/AP/BP keywords, and the
        largest forward (``SIPMXERR``) and inverse (``SIPIVERR``) errors
        found on the fit grid and on a grid twice as dense (pixels). When the
        accuracy cannot be reached, gwcs returns its best fit (its warnings
        are silenced here: compare ``SIPMXERR``/``SIPIVERR`` with the limits,
        see `sip_accuracy_problem`).

    Raises
    ------
    ValueError or RuntimeError
        When the fit is impossible (from gwcs).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wcs.to_fits_sip(
            bounding_box=bounding_box,
            max_pix_error=float(max_pix_error),
            degree=_degrees(degree),
            max_inv_pix_error=float(max_inv_pix_error),
            inv_degree=_degrees(inv_degree),
            npoints=int(npoints),
            crpix=crpix,
        )


def sip_accuracy_problem(header, *, max_pix_error, degree, max_inv_pix_error, inv_degree):
    """What a SIP approximation misses of the requested accuracy, or None.

    Only the best-fit searches (degree None) have an accuracy to reach; an
    explicit degree ignores the limit, as the spec says.
    """
    problems = []
    fwd, inv = header.get("SIPMXERR", 0.0), header.get("SIPIVERR", 0.0)
    if degree is None and fwd > max_pix_error:
        problems.append(f"forward error {fwd:.3g} px > sip_max_pix_error {max_pix_error:g}")
    if inv_degree is None and inv > max_inv_pix_error:
        problems.append(f"inverse error {inv:.3g} px > sip_max_inv_pix_error {max_inv_pix_error:g}")
    return "; ".join(problems) or None


def update_wcsinfo_sip(wcsinfo, header):
    """Replace the FITS-WCS entries of a ``meta.wcsinfo`` mapping by ``header``'s.

    As the JWST pipeline does: the previous linear matrix (``pc``, ``cd``,
    ``cdelt``) and SIP coefficients are removed, then every keyword of the
    SIP header except ``NAXIS*`` is set, in lower case.

    Parameters
    ----------
    wcsinfo : dict
        ``model.meta.wcsinfo.instance`` (modified in place).
    header : astropy.io.fits.Header
        From `sip_approximation`.
    """
    for key in [k for k in wcsinfo if _WCSINFO_SIP_KEYS.match(k)]:
        del wcsinfo[key]
    wcsinfo.update({k.lower(): v for k, v in header.items() if not k.upper().startswith("NAXIS")})


def s_region(wcs, bounding_box=None, shape=None):
    """``S_REGION`` of an image: the ``POLYGON ICRS`` of its bounding box's corners.

    As the JWST pipeline computes it (``assign_wcs`` and ``tweakreg``): the
    sky positions of the corners of the bounding box -- the outer edges of
    the corner pixels, not their centres -- in the order of
    `gwcs.wcs.WCS.footprint`, RA in [0, 360), 9 decimals.

    Parameters
    ----------
    wcs : gwcs.WCS
    bounding_box : tuple or None
        ((xmin, xmax), (ymin, ymax)); None: the GWCS's, or, when it has
        none, the one of an image of ``shape`` ((-0.5, nx - 0.5), (-0.5, ny - 0.5)).
    shape : tuple or None
        (ny, nx) of the image.

    Returns
    -------
    str or None
        ``"POLYGON ICRS  ra1 dec1 ... ra4 dec4"`` (degrees), or None when a
        corner has no sky position.
    """
    bbox = bounding_box if bounding_box is not None else wcs.bounding_box
    if bbox is None:
        if shape is None:
            raise ValueError("s_region: the WCS has no bounding box and no image shape is given")
        bbox = ((-0.5, shape[-1] - 0.5), (-0.5, shape[-2] - 0.5))
    foot = np.asarray(wcs.footprint(bbox, center=False, axis_type="spatial"), dtype=float)
    if not np.all(np.isfinite(foot)):
        return None
    foot[:, 0] %= 360.0
    return "POLYGON ICRS  " + " ".join(f"{v:.9f}" for v in foot.ravel())


def output_wcs_name(extra, kind):
    """The WCS name an output records.

    The absolute stage's ``wcsname`` (``FIT-LVL3-<abs_refcat>``) when the absolute
    fit was applied. Otherwise JWST products keep their GWCS name (the JWST
    step only names absolute fits; None is returned) and plain FITS images
    get `RELATIVE_WCSNAME`.
    """
    name = str((extra or {}).get("wcsname") or "").strip()
    if name:
        return name
    return RELATIVE_WCSNAME if kind == "fits" else None


# ---------------------------------------------------------------------------
# JWST ImageModel outputs
# ---------------------------------------------------------------------------


#: The software of the step, as the products' ``meta.tweakflow`` names it
#: (see `set_step_meta`).
SOFTWARE_NAME = "tweakflow"

#: ``meta.asn.exptype`` of an image given in a list of files rather than an
#: association, when it has none: what the JWST pipeline writes then.
LIST_EXPTYPE = "SCIENCE"


def write_jwst_output(image, output, sidecar, sip, association=None):
    """Write the corrected JWST ``ImageModel`` ``output`` (atomically).

    The corrected GWCS, ``S_REGION`` and (``sip_approx``) the SIP
    approximation when the image was aligned; the step's metadata
    (`set_step_meta`) in any case. The lines the job logs here -- the
    image's fit results (`tweakflow.results.solution_message`), its SIP
    approximation and ``S_REGION``, its status -- are the step's log in the
    product (``cal_logs.tweakreg``, `tweakflow.callogs`). They are logged
    here, from the sidecar, rather than kept from the alignment jobs: the
    work files stay byte for byte the same from run to run (timestamps
    live in the products only, as ``meta.date`` does). The file is written
    by `save_product`: patched from the input's bytes where its layout
    allows, in full by stdatamodels otherwise (the job's log says which).

    Parameters
    ----------
    image : str
        Input ``ImageModel`` file.
    output : str
        Output path; it becomes the product's ``meta.filename``.
    sidecar : dict
        The image's final WCS sidecar (`tweakflow.io.read_sidecar`).
    sip : dict
        `tweakflow.params.SIP_PARS`.
    association : dict or None
        What the level-3 association says of the image (``table_name``,
        ``pool_name``, ``exptype``, ``tweakreg_catalog`` as it has them;
        `tweakflow.inputs.read_association`), None for an image given in a
        list of files.

    Returns
    -------
    str
        ``meta.cal_step.tweakreg``: ``COMPLETE`` or ``SKIPPED``.
    """
    pars = resolve_block("tweakreg", SIP_PARS, sip)
    extra = sidecar["extra"]
    status = extra.get("status", "SKIPPED")
    with _open_image_model(image) as model, capture_lines() as lines:
        solutions = [restored_row(row) for row in extra.get("solutions", {}).values()]
        for row in solutions:
            log.info("%s", solution_message(row))
        if status == "COMPLETE":
            wcs = sidecar["wcs"]
            _set_meta_wcs(model, wcs, output_wcs_name(extra, "jwst"), image)
            if pars["sip_approx"]:
                _update_jwst_fits_wcs(model, wcs, pars, image)
            _update_s_region(model, wcs, image)
        set_step_meta(model, status, sidecar["group_id"], association)
        model.meta.tweakflow = fit_record(solutions)
        reason = extra.get("reason")
        log.info("%s: tweakreg %s%s", sidecar["filename"], status, f" ({reason})" if reason else "")
        if not hasattr(model, "cal_logs"):
            model.cal_logs = {}
        setattr(model.cal_logs, CAL_LOGS_KEY, list(lines))
        with atomic_output(output) as tmp:
            save_product(model, image, tmp)
    return status


@contextlib.contextmanager
def _open_image_model(image):
    """The ``ImageModel`` of ``image``, its arrays memory-mapped where they can be.

    The arrays are not read (the output copies their bytes, `save_product`),
    except those astropy must scale (the unsigned ``DQ``).
    """
    from astropy.io import fits
    from stdatamodels.jwst.datamodels import ImageModel

    try:
        hdul = fits.open(image, mode="readonly")
        try:
            model = ImageModel(hdul)
        except BaseException:
            hdul.close()
            raise
    except Exception as exc:
        raise InputError(f"{image}: cannot open as a JWST ImageModel ({type(exc).__name__}: {exc})") from None
    with hdul, model:
        yield model


def save_product(model, image, path):
    """Write ``model``, read from ``image`` with only its metadata changed, to ``path``.

    The file stdatamodels' ``DataModel.save`` writes, without re-encoding
    the arrays: the headers and the ``ASDF`` extension of the list
    stdatamodels builds (`stdatamodels.fits_support.to_fits`, after
    ``on_save``, as ``DataModel.save`` does), the data blocks copied byte
    for byte from ``image`` (`tweakflow.fitspatch`). Where ``image``'s
    layout does not allow it (`tweakflow.fitspatch.plan` says why),
    stdatamodels writes the whole file. The path taken is logged (INFO).
    ``path`` is the temporary file of the caller's `tweakflow.atomic.atomic_output`.

    Parameters
    ----------
    model : stdatamodels.jwst.datamodels.ImageModel
        Read from ``image``; its arrays unmodified.
    image : str
        The input file.
    path : str
        Output file (``.fits``); its name becomes ``meta.filename``.
    """
    from stdatamodels import fits_support

    model.on_save(path)
    plan, reason = fitspatch.plan(fits_support.to_fits(model.instance, model.schema), image)
    if plan is None:
        log.info("%s: written in full by stdatamodels: %s", os.path.basename(path), reason)
        # ``path``: the temporary file of the caller's atomic_output
        model.save(path)
    else:
        fitspatch.write(plan, path)
        log.info("%s: written by patching %s (new headers and ASDF extension, data copied)", os.path.basename(path), os.path.basename(image))


def set_step_meta(model, status, group_id, association=None):
    """The metadata the JWST step sets in its products, tweakflow as the software.

    ``meta.cal_step.tweakreg``; ``meta.group_id`` (the group id the
    alignment used); from an association, ``meta.asn.table_name`` (its
    file name), ``pool_name`` and the member's ``exptype`` (and the
    member's ``tweakreg_catalog``, when it has one, as
    ``meta.tweakreg_catalog``), or, without one, ``meta.asn.exptype``
    `LIST_EXPTYPE` unless the image has one; and the calibration software.

    The JWST pipeline records its own version as the calibration software
    of every step it runs (``meta.calibration_software_version``, ``CAL_VER``,
    and ``calibration_software_revision``, ``CAL_VCS``: a commit, or
    ``RELEASE`` for a released version). This step is tweakflow's: it
    records ``tweakflow.__version__`` and ``RELEASE``. The name goes with
    the image's fit results (`fit_record`): the JWST schema has no
    software name (``CAL_VER``/``CAL_VCS`` carry none), and a JWST step run
    on the product afterwards records its own version there, which the
    record in ``meta.tweakflow`` outlives.
    """
    meta = model.meta
    meta.cal_step.tweakreg = status
    meta.group_id = str(group_id)
    assoc = dict(association or {})
    for key in ("table_name", "pool_name", "exptype"):
        if assoc.get(key) is not None:
            setattr(meta.asn, key, str(assoc[key]))
    if not assoc and meta.asn.instance.get("exptype") is None:
        meta.asn.exptype = LIST_EXPTYPE
    if assoc.get("tweakreg_catalog") is not None:
        meta.tweakreg_catalog = str(assoc["tweakreg_catalog"])
    meta.calibration_software_version = __version__
    meta.calibration_software_revision = "RELEASE"


def fit_record(solutions):
    """``meta.tweakflow`` of a product: the software, and the image's fit results.

    ``calibration_software_name`` (`SOFTWARE_NAME`) and
    ``calibration_software_version`` (``tweakflow.__version__``), then --
    when the sidecar has the image's solution rows -- its row of the
    summary table, with the same names (`tweakflow.results.summary_record`:
    group, status and reason, matches, RMS and MAE in mas, shifts in
    arcsec, rotation, scale, skew, fit geometry, the quality measures and
    recovery, and, after an absolute fit, the same prefixed ``abs_`` with
    its ``abs_grade``).
    """
    record = {"calibration_software_name": SOFTWARE_NAME, "calibration_software_version": __version__}
    if solutions:
        record.update(summary_record(solutions))
    return record


def _set_meta_wcs(model, wcs, name, image):
    """``model.meta.wcs = wcs`` (named ``name`` unless None), without validation on assignment.

    stdatamodels validates an assigned value against the schema: for the
    GWCS, it serializes the whole transform pipeline to an ASDF tagged tree
    and checks it against the GWCS schemas -- which ``model.save`` does again
    when it writes the ASDF extension (asdf validates every tree it writes,
    here the whole output tree). That first validation was 15-20% of the
    CPU time of the step, for no change in the output (the file written is
    byte for byte the same); an invalid GWCS now fails the write instead of
    being silently replaced by the input's GWCS with a warning.
    What the ``meta.wcs`` schema itself asks (``tag: tag:stsci.edu:gwcs/wcs-*``)
    is checked here.
    """
    from gwcs import WCS

    if not isinstance(wcs, WCS):
        raise InputError(f"{image}: the corrected WCS is a {type(wcs).__name__}, not a GWCS")
    if name:
        wcs.name = name
    model.meta.instance["wcs"] = wcs


def _update_jwst_fits_wcs(model, wcs, pars, image):
    """``meta.wcsinfo``: SIP approximation of the corrected GWCS."""
    info = model.meta.wcsinfo.instance
    crpix = [info.get("crpix1"), info.get("crpix2")]
    bbox = wcs.bounding_box
    if bbox is None:
        ny, nx = model.data.shape
        bbox = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    try:
        hdr = sip_approximation(
            wcs,
            max_pix_error=pars["sip_max_pix_error"],
            degree=pars["sip_degree"],
            max_inv_pix_error=pars["sip_max_inv_pix_error"],
            inv_degree=pars["sip_inv_degree"],
            npoints=pars["sip_npoints"],
            crpix=None if None in crpix else crpix,
            bounding_box=bbox,
        )
    except (ValueError, RuntimeError) as exc:
        # as the JWST step: the GWCS is corrected, the FITS approximation is not
        log.warning("%s: failed to update meta.wcsinfo with a FITS SIP approximation: %s", image, exc)
    else:
        update_wcsinfo_sip(info, hdr)
        degrees = f"degree {hdr.get('A_ORDER', 1)} (inverse {hdr.get('AP_ORDER', '-')})"
        problem = sip_accuracy_problem(
            hdr,
            max_pix_error=pars["sip_max_pix_error"],
            degree=pars["sip_degree"],
            max_inv_pix_error=pars["sip_max_inv_pix_error"],
            inv_degree=pars["sip_inv_degree"],
        )
        if problem:
            log.warning("%s: the SIP approximation (best fit, %s) misses the requested accuracy: %s", image, degrees, problem)
        else:
            log.info("%s: SIP approximation of %s, max error %.2g px", image, degrees, hdr.get("SIPMXERR", 0.0))


def _update_s_region(model, wcs, image):
    """``meta.wcsinfo.s_region`` of the corrected GWCS (`s_region`), as the JWST step sets it whatever ``sip_approx``."""
    region = s_region(wcs, shape=model.data.shape)
    if region is None:
        log.info("%s: the footprint has NaNs: S_REGION not updated", image)
    else:
        model.meta.wcsinfo.s_region = region
        log.info("%s: S_REGION %s", image, region)


# ---------------------------------------------------------------------------
# Plain FITS outputs
# ---------------------------------------------------------------------------


def _archive_original_wcs(header, key):
    """Copy the primary WCS keywords of ``header`` to alternate WCS ``key``.

    Nothing is done when the alternate already exists (the WCS it keeps is
    the one before the first alignment).
    """
    if f"WCSNAME{key}" in header or f"CTYPE1{key}" in header:
        return False
    cards = [(k + key, header[k], header.comments[k]) for k in header if _FITS_WCS_KEYS.match(k) and not k.startswith("CROTA")]
    if any(k in header for k in ("CROTA1", "CROTA2")):
        # CROTAn has no alternate form: keep the rotation as PCi_j
        import warnings

        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            # the WCS cards only: lookup-table keywords would need the file's tables
            pc = WCS(fits.Header([c for c in header.cards if _FITS_WCS_KEYS.match(c.keyword)])).wcs.get_pc()
        cards += [(f"PC{i + 1}_{j + 1}{key}", float(pc[i, j]), "") for i in range(2) for j in range(2)]
    header.set(f"WCSNAME{key}", str(header.get("WCSNAME", "ORIGINAL")).strip() or "ORIGINAL", "WCS before alignment")
    for k, v, c in cards:
        header.set(k, v, c)
    return True


def update_fits_header_wcs(header, wcs, wcsname, archive_key=ORIGINAL_WCS_KEY):
    """Write the corrected WCS of a chip into its FITS header (in place).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The chip's header, holding its original WCS.
    wcs : astropy.wcs.WCS
        The corrected WCS (same projection; tweakwcs changes CRVAL and the
        linear matrix).
    wcsname : str
        New ``WCSNAME``.
    archive_key : str
        Alternate-WCS key the original WCS is kept under (first time only).
    """
    had_cd = any(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2))
    _archive_original_wcs(header, archive_key)
    for i, k in enumerate(("1", "2")):
        _set_value(header, f"CRPIX{k}", wcs.wcs.crpix[i])
        _set_value(header, f"CRVAL{k}", wcs.wcs.crval[i])
    pc = wcs.wcs.get_pc()
    cdelt = wcs.wcs.get_cdelt()
    if had_cd:
        cd = np.diag(cdelt) @ pc
        for i in range(2):
            for j in range(2):
                _set_value(header, f"CD{i + 1}_{j + 1}", cd[i, j])
    else:
        for k in ("CROTA1", "CROTA2"):  # replaced by PC (kept in the alternate WCS)
            header.remove(k, ignore_missing=True)
        for i in range(2):
            _set_value(header, f"CDELT{i + 1}", cdelt[i])
            for j in range(2):
                _set_value(header, f"PC{i + 1}_{j + 1}", pc[i, j])
    for k, v in (("LONPOLE", wcs.wcs.lonpole), ("LATPOLE", wcs.wcs.latpole)):
        if k in header:
            _set_value(header, k, v)
    _write_sip(header, wcs)
    header.set("WCSNAME", wcsname)


def _set_value(header, key, value):
    """Set a numeric keyword, leaving it (and its formatting) alone when unchanged.

    "Unchanged" allows a relative 1e-12: the WCS sidecars keep about 14
    significant digits (0.5 micro-arcsec on CRVAL), and an image that was not
    moved (the alignment reference) keeps its header values as they were.
    """
    value = float(value)
    old = header.get(key)
    if isinstance(old, (int, float)) and not isinstance(old, bool) and abs(float(old) - value) <= 1e-12 * abs(value):
        return
    header.set(key, value)


def _write_sip(header, wcs):
    """SIP keywords of ``wcs``, rewritten only when they differ from the header's."""
    from astropy.io import fits
    from astropy.wcs import WCS

    old = WCS(fits.Header([c for c in header.cards if _FITS_SIP_KEYS.match(c.keyword) or _FITS_WCS_KEYS.match(c.keyword)])).sip
    new = wcs.sip
    same = (old is None and new is None) or (
        old is not None
        and new is not None
        and all(
            (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
            for a, b in ((old.a, new.a), (old.b, new.b), (old.ap, new.ap), (old.bp, new.bp))
        )
    )
    if same:
        return
    for k in [c.keyword for c in header.cards if _FITS_SIP_KEYS.match(c.keyword)]:
        header.remove(k, ignore_missing=True, remove_all=True)
    if new is None:
        return
    for name, arr in (("A", new.a), ("B", new.b), ("AP", new.ap), ("BP", new.bp)):
        if arr is None:
            continue
        order = arr.shape[0] - 1
        header.set(f"{name}_ORDER", int(order))
        for p in range(order + 1):
            for q in range(order + 1 - p):
                if arr[p, q] != 0:
                    _set_value(header, f"{name}_{p}_{q}", arr[p, q])


def write_fits_output(image, output, sidecar):
    """Write ``output``: a copy of a plain FITS image with its corrected WCS.

    Only the science chips' WCS keywords change (`update_fits_header_wcs`);
    every array, and every other HDU and keyword, is copied unchanged
    (raw, without scaling). Existing checksums are recomputed. A chip that
    was not aligned keeps its WCS.

    Parameters
    ----------
    image : str
        Input FITS file.
    output : str
        Output path.
    sidecar : dict
        The image's final WCS sidecar (``kind="fits"``).

    Returns
    -------
    str
        ``COMPLETE`` (at least one chip corrected) or ``SKIPPED``.
    """
    from astropy.io import fits

    extra = sidecar["extra"]
    status = extra.get("status", "SKIPPED")
    name = output_wcs_name(extra, "fits")
    try:
        hdul = fits.open(image, mode="readonly", memmap=True, do_not_scale_image_data=True)
    except Exception as exc:
        raise InputError(f"{image}: not a readable FITS file ({type(exc).__name__}: {exc})") from None
    with hdul:
        checksum = any("CHECKSUM" in h.header for h in hdul)
        if status == "COMPLETE":
            for chip, wcs in zip(sidecar["chips"], sidecar["wcs"]):
                if chip.get("status", status) != "COMPLETE":
                    continue
                i = int(chip["hdu"])
                if i >= len(hdul) or (hdul[i].name or ("PRIMARY" if i == 0 else str(i))) != chip["extname"]:
                    raise InputError(f"{image}: HDU {chip['hdu']} is not the chip {chip['extname']},{chip['extver']} that was aligned")
                update_fits_header_wcs(hdul[chip["hdu"]].header, wcs, name)
        with atomic_output(output) as tmp:
            hdul.writeto(tmp, output_verify="exception", checksum=checksum)
    return status
