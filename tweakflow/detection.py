"""Point-source detection for alignment catalogs, as the JWST tweakreg step does it.

The background and its RMS are estimated on a mesh of ``bkg_boxsize``
pixels (`photutils.background.Background2D`: 3-sigma clipped median and
standard deviation per box, 3x3 median filter of the mesh; the box is
clipped to the image when the image is smaller), the background is
subtracted and the detection threshold is ``snr_threshold`` times the
background RMS. Sources are then found with one of

``iraf``
    `photutils.detection.IRAFStarFinder` (image moments),
``dao``
    `photutils.detection.DAOStarFinder` (1-D Gaussian fits to marginals),
``segmentation``
    `photutils.segmentation.SourceFinder` on the image convolved with a
    Gaussian of ``kernel_fwhm``, with centroids, fluxes and Kron fluxes
    from `photutils.segmentation.SourceCatalog`.

Pixels flagged ``DO_NOT_USE`` or ``NON_SCIENCE`` in the DQ array and
non-finite pixels are masked: they are excluded from the background
statistics, set to the background level before detection and never
reported as peaks. Problems that make detection impossible (everything
masked, a constant image, an image smaller than the kernel, no source
above the threshold) do not raise: `detect_sources` returns an empty
catalog and the reason.

Two things are done more cheaply than the JWST function does them, with
the same results:

* The background mesh statistics are computed on a regular subsample of
  the pixels (every ``s``-th row and column, ``s = bkg_boxsize // 100``,
  so each box still holds >= 10^4 pixels): the interpolation of the mesh
  to a full-resolution map, which is most of the cost of `Background2D`,
  then runs on an ``s**2`` times smaller map that is expanded by pixel
  replication (the background varies over hundreds of pixels).
* For ``iraf`` and ``dao``, the local maxima of the convolved image are
  located only among the pixels above the threshold (`find_local_peaks`,
  equal to `photutils.detection.find_peaks` with ``min_separation``),
  then handed to the star finder as ``xycoords``; photutils' own search
  spends most of its time on noise peaks below the threshold.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.table import Table

from .io import DO_NOT_USE, NON_SCIENCE
from .params import DEFAULT_DETECTION_PARS, resolve_block

__all__ = [
    "STARFINDERS",
    "DO_NOT_USE",
    "NON_SCIENCE",
    "detect_sources",
    "empty_catalog",
    "bad_pixel_mask",
    "estimate_background",
    "find_local_peaks",
    "fill_zero_rms",
    "min_separation_pixels",
]

log = logging.getLogger(__name__)


#: Allowed values of ``starfinder``.
STARFINDERS = ("iraf", "dao", "segmentation")

#: Kron aperture parameters used when ``kron_params`` is None (the spec's default).
DEFAULT_KRON_PARAMS = (2.5, 1.4, 0.0)

#: Smallest number of subsampled pixels along a background box side.
_MIN_SUBSAMPLED_BOX = 100


class _BackgroundError(ValueError):
    """The background cannot be estimated (the message says why)."""


def empty_catalog():
    """An empty source catalog with the standard columns."""
    return Table(
        {
            "id": np.zeros(0, dtype=np.int64),
            "x": np.zeros(0),
            "y": np.zeros(0),
            "flux": np.zeros(0),
            "peak": np.zeros(0),
        }
    )


def bad_pixel_mask(data, dq=None, dq_bits=DO_NOT_USE | NON_SCIENCE):
    """True where a pixel must not be used: flagged in ``dq`` or non-finite.

    Parameters
    ----------
    data : numpy.ndarray
        Science array.
    dq : numpy.ndarray or None
        Data-quality array of the same shape.
    dq_bits : int
        DQ bits that mark a pixel as unusable (JWST ``DO_NOT_USE`` and
        ``NON_SCIENCE``, as the JWST step masks).
    """
    mask = ~np.isfinite(data)
    if dq is not None:
        mask |= (np.asarray(dq) & dq_bits) != 0
    return mask


def min_separation_pixels(minsep_fwhm, kernel_fwhm):
    """Minimum source separation in pixels, as the JWST step computes it.

    ``max(2, int(minsep_fwhm * kernel_fwhm + 0.5))``: photutils' historical
    ``minsep_fwhm`` rule, which the JWST step applies to both star finders.
    """
    return max(2, int(float(minsep_fwhm) * float(kernel_fwhm) + 0.5))


def estimate_background(data, mask, box_size):
    """Background and background-RMS maps on a mesh of ``box_size`` pixels.

    `photutils.background.Background2D` with the JWST step's settings
    (3-sigma clipped median per box, standard deviation for the RMS, 3x3
    median filter of the mesh, boxes with more than 10% masked pixels
    interpolated from their neighbours). The box is clipped to the image.
    If no box has enough good pixels, the whole image is used as one box,
    as the JWST step does. The statistics are computed on every ``s``-th
    row and column (``s = min(box) // 100``) and the maps expanded back by
    pixel replication; see the module docstring.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image (float32 is kept).
    mask : numpy.ndarray of bool
        Pixels excluded from the statistics.
    box_size : int
        Mesh box size in pixels (``bkg_boxsize``).

    Returns
    -------
    background, rms : numpy.ndarray
        Full-resolution float32 maps.

    Raises
    ------
    ValueError
        When no background can be estimated (the message says why).
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground, StdBackgroundRMS

    ny, nx = data.shape
    box = (min(int(box_size), ny), min(int(box_size), nx))
    step = max(1, min(box) // _MIN_SUBSAMPLED_BOX)
    sub = data[::step, ::step]
    sub_mask = mask[::step, ::step]
    sub_box = (max(1, round(box[0] / step)), max(1, round(box[1] / step)))
    kwargs = dict(
        mask=sub_mask,
        filter_size=(3, 3),
        sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
        bkg_estimator=MedianBackground(),
        bkg_rms_estimator=StdBackgroundRMS(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bkg = Background2D(sub, sub_box, exclude_percentile=10.0, **kwargs)
        except ValueError:
            # no box has enough good pixels: one box, the whole image
            bkg = Background2D(sub, sub.shape, exclude_percentile=100.0, **kwargs)
            log.info("background: too many masked pixels for %s-pixel boxes; using the whole image", box)
        maps = [np.asarray(bkg.background, dtype=np.float32), np.asarray(bkg.background_rms, dtype=np.float32)]
    if step > 1:
        maps = [np.repeat(np.repeat(m, step, axis=0), step, axis=1)[:ny, :nx] for m in maps]
    return maps[0], maps[1]


def fill_zero_rms(rms):
    """The background-RMS map, made one value when part of it is zero or undefined.

    A mesh box of a constant, unflagged region (or of a noise-free image)
    has zero RMS, and the spline interpolation of the mesh rings around it
    (values slightly below and above zero), so that per-pixel thresholds
    there would be zero or tiny and find plateaus as sources. The JWST step
    thresholds the whole image at one value, the median of
    ``snr_threshold`` x RMS; in this case the map becomes that one value,
    the median of its positive values (zero for a noise-free image: every
    positive peak is a source, as in the step).

    Parameters
    ----------
    rms : numpy.ndarray
        Background-RMS map (`estimate_background`).

    Returns
    -------
    numpy.ndarray
        ``rms`` itself when all its values are positive and finite, else a
        map of one value >= 0.
    """
    positive = np.isfinite(rms) & (rms > 0)
    if positive.all():
        return rms
    level = np.median(rms[positive]) if positive.any() else 0.0
    log.info("background RMS zero or undefined in %.1f%% of the image: one threshold from RMS %.3g", 100 * (1 - positive.mean()), level)
    return np.full_like(rms, level)


def find_local_peaks(convolved, threshold, radius, mask=None):
    """Pixels above ``threshold`` that are the maximum within ``radius`` pixels.

    The same peaks as ``photutils.detection.find_peaks(convolved,
    threshold, min_separation=radius, mask=mask)`` for an integer
    ``radius`` and ``threshold >= 0`` (ties kept, pixels beyond the border
    count as 0), found by examining only the pixels above the threshold.

    Parameters
    ----------
    convolved : numpy.ndarray
        2-D image without NaN (the star finder's convolved image).
    threshold : float or numpy.ndarray
        Scalar or per-pixel threshold (a peak is strictly above it).
    radius : int
        Radius of the circular footprint (the minimum separation).
    mask : numpy.ndarray of bool, optional
        Pixels that cannot be peaks.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` integer ``(x, y)`` positions, in row-major order.
    """
    above = convolved > threshold
    if mask is not None:
        above &= ~mask
    y, x = np.nonzero(above)
    r = int(radius)
    if len(y) == 0 or r < 1:
        return np.transpose((x, y))
    offs = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    inside = (dx**2 + dy**2 <= r * r) & ((dx != 0) | (dy != 0))
    dy, dx = dy[inside], dx[inside]
    padded = np.pad(convolved, r, mode="constant", constant_values=0)
    neighbours = padded[y[:, None] + r + dy, x[:, None] + r + dx]
    keep = convolved[y, x] >= neighbours.max(axis=1)
    return np.transpose((x[keep], y[keep]))


def _starfinder(name, threshold, pars, xycoords=None):
    from photutils.detection import DAOStarFinder, IRAFStarFinder

    cls = {"iraf": IRAFStarFinder, "dao": DAOStarFinder}[name]
    fwhm = float(pars["kernel_fwhm"])
    return cls(
        threshold,
        fwhm,
        sigma_radius=float(pars["sigma_radius"]),
        min_separation=min_separation_pixels(pars["minsep_fwhm"], fwhm),
        sharpness_range=(float(pars["sharplo"]), float(pars["sharphi"])),
        roundness_range=(float(pars["roundlo"]), float(pars["roundhi"])),
        n_brightest=None if pars["brightest"] is None else int(pars["brightest"]),
        # the spec drops peak >= peakmax; photutils drops peak > peak_max
        peak_max=None if pars["peakmax"] is None else np.nextafter(float(pars["peakmax"]), -np.inf),
        exclude_border=False,
        xycoords=xycoords,
    )


def _run_starfinder(name, data_sub, mask, threshold, pars):
    """IRAF/DAO star finder, with the peaks located by `find_local_peaks`."""
    from scipy.ndimage import convolve

    finder = _starfinder(name, threshold, pars)
    kernel = getattr(getattr(finder, "kernel", None), "data", None)
    if kernel is not None:
        # the star finder's own convolution and peak threshold (DAO scales
        # the threshold by the kernel's relative error)
        conv = convolve(data_sub, kernel, mode="constant", cval=0.0)
        peak_threshold = getattr(finder, "threshold_eff", finder.threshold)
        xy = find_local_peaks(conv, peak_threshold, finder.min_separation, mask=mask)
        if len(xy) == 0:
            return None
        finder = _starfinder(name, threshold, pars, xycoords=xy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = finder(data_sub, mask=mask)
    if found is None:
        return None
    return Table(
        {
            "id": np.asarray(found["id"], dtype=np.int64),
            "x": np.asarray(found["x_centroid"], dtype=float),
            "y": np.asarray(found["y_centroid"], dtype=float),
            "flux": np.asarray(found["flux"], dtype=float),
            "peak": np.asarray(found["peak"], dtype=float),
        }
    )


def _gaussian_1d(fwhm):
    """Normalized 1-D Gaussian of ``fwhm`` sampled as astropy's Gaussian2DKernel (8 sigma wide)."""
    from astropy.convolution import Gaussian1DKernel
    from astropy.stats import gaussian_fwhm_to_sigma

    return Gaussian1DKernel(float(fwhm) * gaussian_fwhm_to_sigma).array


def _convolve_separable(image, g, cval=0.0):
    """Convolve ``image`` with the separable symmetric kernel ``outer(g, g)``.

    Pixels beyond the border take the value ``cval``. Shifted-slice
    accumulation in float32 (the kernel is short): several times faster
    than `scipy.ndimage.convolve1d` along the first axis.
    """
    h = len(g) // 2
    ny, nx = image.shape
    padded = np.pad(image, h, mode="constant", constant_values=cval)
    tmp = g[0] * padded[0:ny, :]
    for k in range(1, len(g)):
        tmp += g[k] * padded[k : k + ny, :]
    out = g[0] * tmp[:, 0:nx]
    for k in range(1, len(g)):
        out += g[k] * tmp[:, k : k + nx]
    return out


def _smooth_and_fill(data_sub, mask, fwhm, smoothed=True):
    """Gaussian-smoothed image ignoring masked pixels, and the image with them filled.

    The smoothed image is the convolution of ``data_sub`` with a
    normalized Gaussian of ``fwhm`` in which masked pixels carry no
    weight (``astropy.convolution.convolve(data, kernel, mask=mask)``:
    pixels beyond the border count as 0, the background level). Masked
    pixels of the returned image are replaced by their smoothed value, so
    that a masked pixel inside a star neither leaves a hole nor keeps a
    hot value.

    Parameters
    ----------
    data_sub : numpy.ndarray
        Background-subtracted float32 image.
    mask : numpy.ndarray of bool
        Masked pixels.
    fwhm : float
        FWHM of the Gaussian (pixels).
    smoothed : bool
        Whether the smoothed image is wanted; without masked pixels it is
        then not computed.

    Returns
    -------
    smoothed : numpy.ndarray or None
        float32, or None when not wanted and not needed.
    filled : numpy.ndarray
        float32 copy of ``data_sub`` with masked pixels filled.
    """
    g = _gaussian_1d(fwhm).astype(np.float32)
    data0 = np.where(mask, np.float32(0), data_sub)
    if not mask.any():
        return (_convolve_separable(data0, g) if smoothed else None), data0
    smoothed = _convolve_separable(data0, g)
    weight = _convolve_separable((~mask).astype(np.float32), g, cval=1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = np.where(weight > 0, smoothed / weight, np.float32(0)).astype(np.float32)
    data0[mask] = smoothed[mask]
    return smoothed, data0


def _run_segmentation(data_sub, conv, mask, threshold, pars):
    """SourceFinder on the Gaussian-convolved image + SourceCatalog measurements."""
    from photutils.segmentation import SourceCatalog, SourceFinder

    finder = SourceFinder(
        n_pixels=int(pars["npixels"]),
        connectivity=int(pars["connectivity"]),
        deblend=bool(pars["deblend"]),
        n_levels=int(pars["nlevels"]),
        contrast=float(pars["contrast"]),
        mode=pars["multithresh_mode"],
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = finder(conv, threshold, mask=mask)
    if segm is None:
        return None
    kron = pars.get("kron_params")
    kron = DEFAULT_KRON_PARAMS if kron is None else tuple(float(k) for k in kron)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = SourceCatalog(
            data_sub,
            segm,
            convolved_data=conv,
            mask=mask,
            local_bkg_width=int(pars["localbkg_width"]),
            aperture_mask_method=pars["apermask_method"],
            kron_params=kron,
            progress_bar=False,
        )
        return Table(
            {
                "id": np.asarray(cat.label, dtype=np.int64),
                "x": np.asarray(cat.x_centroid, dtype=float),
                "y": np.asarray(cat.y_centroid, dtype=float),
                "flux": np.asarray(cat.segment_flux, dtype=float),
                "peak": np.asarray(cat.max_value, dtype=float),
                "kron_flux": np.asarray(cat.kron_flux, dtype=float),
            }
        )


def _kernel_shape(pars):
    """Shape of the detection kernel of the chosen finder."""
    if pars["starfinder"] == "segmentation":
        n = len(_gaussian_1d(pars["kernel_fwhm"]))
        return (n, n)
    return tuple(_starfinder(pars["starfinder"], 1.0, pars).kernel.shape)


def _detection_pars(pars):
    """`tweakflow.params.DEFAULT_DETECTION_PARS` updated with ``pars``; unknown names and starfinders refused.

    Raises
    ------
    ConfigError
        For an unknown parameter name.
    ValueError
        For an unknown ``starfinder``.
    """
    p = resolve_block("tweakreg", DEFAULT_DETECTION_PARS, pars)
    if p["starfinder"] not in STARFINDERS:
        raise ValueError(f"unknown starfinder {p['starfinder']!r} (expected one of {', '.join(STARFINDERS)})")
    return p


def _usable_pixels(data, dq, p):
    """Mask of the unusable pixels of a float32 image, or why nothing can be detected in it.

    Returns
    -------
    mask : numpy.ndarray or None
        `bad_pixel_mask` of the image; None with a reason.
    reason : str or None
        Why the image cannot be searched: not 2-D, smaller than the
        detection kernel, every pixel masked, or constant.
    """
    if data.ndim != 2:
        return None, f"data is not a 2-D image (shape {data.shape})"
    ny, nx = data.shape
    kshape = _kernel_shape(p)
    if ny < kshape[0] or nx < kshape[1]:
        return None, f"image ({ny}x{nx}) is smaller than the detection kernel ({kshape[0]}x{kshape[1]} px)"
    mask = bad_pixel_mask(data, dq)
    if mask.all():
        return None, "all pixels are masked (DO_NOT_USE, NON_SCIENCE or non-finite)"
    good = data[~mask]
    if good.min() == good.max():
        return None, "image is constant: background RMS is zero"
    return mask, None


def _find_sources(data, mask, p):
    """Subtract the background and run the chosen finder above ``snr_threshold`` x RMS.

    Returns
    -------
    catalog : astropy.table.Table or None
        The finder's sources (not yet filtered or renumbered); None with a
        reason.
    reason : str or None
        Why there is no source: the background could not be estimated, or
        nothing is above the threshold.
    """
    try:
        bkg, rms = estimate_background(data, mask, p["bkg_boxsize"])
    except ValueError as exc:
        return None, f"background estimation failed: {exc}"
    rms = fill_zero_rms(rms)

    segmentation = p["starfinder"] == "segmentation"
    conv, data_sub = _smooth_and_fill(data - bkg, mask, p["kernel_fwhm"], smoothed=segmentation)
    threshold = np.float32(p["snr_threshold"]) * rms

    if segmentation:
        cat = _run_segmentation(data_sub, conv, mask, threshold, p)
    else:
        cat = _run_starfinder(p["starfinder"], data_sub, mask, threshold, p)
    if cat is None or len(cat) == 0:
        return None, f"no sources above {p['snr_threshold']} x background RMS"
    return cat, None


def _finite_inside(cat, bounding_box):
    """The sources with finite positions inside ``bounding_box`` (if any), numbered from 1.

    Returns ``(catalog, None)``, or ``(None, reason)`` when no source is left.
    """
    keep = np.isfinite(cat["x"]) & np.isfinite(cat["y"])
    if bounding_box is not None:
        (x0, x1), (y0, y1) = bounding_box
        keep &= (cat["x"] >= x0) & (cat["x"] <= x1) & (cat["y"] >= y0) & (cat["y"] <= y1)
    cat = cat[keep]
    if len(cat) == 0:
        return None, "no sources left inside the bounding box"
    cat["id"] = np.arange(1, len(cat) + 1, dtype=np.int64)
    return cat, None


def detect_sources(data, dq=None, bounding_box=None, **pars):
    """Detect point-like sources in an image.

    Parameters
    ----------
    data : numpy.ndarray
        2-D science array.
    dq : numpy.ndarray, optional
        Data-quality array; pixels with the ``DO_NOT_USE`` or
        ``NON_SCIENCE`` bit are masked.
    bounding_box : tuple, optional
        ``((xmin, xmax), (ymin, ymax))`` of the valid WCS region; sources
        outside are dropped.
    **pars
        Source-finding parameters (see `tweakflow.params.DEFAULT_DETECTION_PARS`; names,
        meanings and defaults are those of the JWST tweakreg step:
        ``sigma_radius`` is in units of the kernel's sigma, as photutils
        takes it; ``minsep_fwhm`` becomes `min_separation_pixels`;
        ``brightest`` and ``peakmax`` apply to ``iraf``/``dao`` only;
        ``localbkg_width``, ``apermask_method`` and ``kron_params`` only
        shape the ``kron_flux`` column of ``segmentation`` catalogs).

    Returns
    -------
    catalog : astropy.table.Table
        Columns ``id``, ``x``, ``y`` (0-indexed pixels), ``flux``,
        ``peak`` (background-subtracted), and ``kron_flux`` for
        ``segmentation``.
    reason : str or None
        Why the catalog is empty, or None when sources were found.

    Raises
    ------
    ConfigError
        For an unknown parameter name.
    ValueError
        For an unknown ``starfinder``.
    """
    p = _detection_pars(pars)
    data = np.asarray(data, dtype=np.float32)
    mask, reason = _usable_pixels(data, dq, p)
    if reason is not None:
        return empty_catalog(), reason
    cat, reason = _find_sources(data, mask, p)
    if reason is not None:
        return empty_catalog(), reason
    cat, reason = _finite_inside(cat, bounding_box)
    if reason is not None:
        return empty_catalog(), reason
    return cat, None
