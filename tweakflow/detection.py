"""Point-source detection for alignment catalogs.

The background is estimated on a mesh of ``bkg_boxsize`` pixels
(`photutils.background.Background2D`), the detection threshold is
``snr_threshold`` times the background RMS, and sources are found with one
of photutils' `~photutils.detection.IRAFStarFinder`,
`~photutils.detection.DAOStarFinder`, or
`~photutils.segmentation.SourceFinder` + `~photutils.segmentation.SourceCatalog`.

Pixels flagged ``DO_NOT_USE`` in the DQ array and non-finite pixels are
masked. Problems that make detection impossible (everything masked, a
constant image, an image smaller than the kernel, no source above the
threshold) do not raise: they return an empty catalog and a reason.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.table import Table

__all__ = ["DEFAULT_DETECTION_PARS", "detect_sources", "empty_catalog", "bad_pixel_mask"]

log = logging.getLogger(__name__)

#: Source-finding parameters of the tweakreg step and their defaults.
DEFAULT_DETECTION_PARS = {
    "starfinder": "iraf",
    "snr_threshold": 10.0,
    "kernel_fwhm": 2.5,
    "bkg_boxsize": 400,
    "minsep_fwhm": 0.0,
    "sigma_radius": 2.5,
    "sharplo": 0.5,
    "sharphi": 2.0,
    "roundlo": 0.0,
    "roundhi": 0.2,
    "brightest": 200,
    "peakmax": None,
    "npixels": 10,
    "connectivity": 8,
    "nlevels": 32,
    "contrast": 0.001,
    "multithresh_mode": "exponential",
    "localbkg_width": 0,
    "apermask_method": "correct",
    "kron_params": None,
}

DO_NOT_USE = 1


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


def bad_pixel_mask(data, dq=None, dq_bits=DO_NOT_USE):
    """True where a pixel must not be used: flagged in ``dq`` or non-finite."""
    mask = ~np.isfinite(data)
    if dq is not None:
        mask |= (dq & dq_bits) != 0
    return mask


def _background(data, mask, boxsize):
    """Background and RMS maps on a mesh of ``boxsize`` (clipped to the image)."""
    from photutils.background import Background2D, MedianBackground, StdBackgroundRMS

    ny, nx = data.shape
    box = (min(int(boxsize), ny), min(int(boxsize), nx))
    # A mesh box smaller than a few pixels cannot give a robust estimate.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = Background2D(
            data,
            box,
            mask=mask,
            filter_size=(3, 3) if min(ny // box[0], nx // box[1]) >= 3 else (1, 1),
            bkg_estimator=MedianBackground(),
            bkg_rms_estimator=StdBackgroundRMS(),
            exclude_percentile=50.0,
        )
    return np.asarray(bkg.background, dtype=np.float32), np.asarray(bkg.background_rms, dtype=np.float32)


def _starfinder(name, threshold, pars):
    from photutils.detection import DAOStarFinder, IRAFStarFinder

    fwhm = float(pars["kernel_fwhm"])
    common = dict(
        threshold=threshold,
        fwhm=fwhm,
        sigma_radius=float(pars["sigma_radius"]),
        min_separation=float(pars["minsep_fwhm"]) * fwhm,
        sharpness_range=(float(pars["sharplo"]), float(pars["sharphi"])),
        roundness_range=(float(pars["roundlo"]), float(pars["roundhi"])),
        exclude_border=False,
    )
    if name == "iraf":
        return IRAFStarFinder(**common)
    if name == "dao":
        return DAOStarFinder(**common)
    raise ValueError(f"unknown starfinder {name!r}")


def _segmentation(data_sub, mask, threshold, pars):
    from astropy.convolution import convolve
    from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel

    fwhm = float(pars["kernel_fwhm"])
    size = max(3, int(2 * round(2 * fwhm) + 1))
    kernel = make_2dgaussian_kernel(fwhm, size=size)
    conv = convolve(data_sub, kernel, mask=mask, normalize_kernel=True)
    finder = SourceFinder(
        n_pixels=int(pars["npixels"]),
        connectivity=int(pars["connectivity"]),
        deblend=True,
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
    kron = (2.5, 1.4, 0.0) if kron is None else tuple(float(k) for k in kron)
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
        tab = Table(
            {
                "id": np.asarray(cat.label, dtype=np.int64),
                "x": np.asarray(cat.x_centroid if hasattr(cat, "x_centroid") else cat.xcentroid, dtype=float),
                "y": np.asarray(cat.y_centroid if hasattr(cat, "y_centroid") else cat.ycentroid, dtype=float),
                "flux": np.asarray(cat.segment_flux, dtype=float),
                "peak": np.asarray(cat.max_value, dtype=float),
            }
        )
    return tab


def detect_sources(data, dq=None, bounding_box=None, **pars):
    """Detect point-like sources in an image.

    Parameters
    ----------
    data : numpy.ndarray
        2-D science array.
    dq : numpy.ndarray, optional
        Data-quality array; pixels with the ``DO_NOT_USE`` bit are masked.
    bounding_box : tuple, optional
        ``((xmin, xmax), (ymin, ymax))`` of the valid WCS region; sources
        outside are dropped.
    **pars
        Source-finding parameters (see `DEFAULT_DETECTION_PARS`; the
        names and meanings are those of the JWST tweakreg step).

    Returns
    -------
    catalog : astropy.table.Table
        Columns ``id``, ``x``, ``y`` (0-indexed pixels), ``flux``, ``peak``.
    reason : str or None
        Why the catalog is empty, or None when sources were found.
    """
    p = dict(DEFAULT_DETECTION_PARS)
    unknown = set(pars) - set(p)
    if unknown:
        raise TypeError(f"unknown detection parameters: {sorted(unknown)}")
    p.update(pars)

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        return empty_catalog(), f"data is not a 2-D image (shape {data.shape})"
    mask = bad_pixel_mask(data, dq)
    ny, nx = data.shape
    kernel_size = 2 * int(np.ceil(float(p["sigma_radius"]) * float(p["kernel_fwhm"]) / 2.355)) + 1
    if min(ny, nx) < max(kernel_size, 3):
        return empty_catalog(), f"image ({ny}x{nx}) is smaller than the detection kernel ({kernel_size} px)"
    if mask.all():
        return empty_catalog(), "all pixels are masked (DO_NOT_USE or non-finite)"
    good = data[~mask]
    if np.ptp(good) == 0:
        return empty_catalog(), "image is constant: background RMS is zero"

    try:
        bkg, rms = _background(data, mask, p["bkg_boxsize"])
    except Exception as exc:  # photutils raises ValueError when too few good pixels
        return empty_catalog(), f"background estimation failed: {exc}"
    if not np.all(np.isfinite(rms)) or not np.any(rms > 0):
        return empty_catalog(), "background RMS is zero or undefined"

    data_sub = data - bkg
    data_sub[mask] = 0.0
    threshold = float(p["snr_threshold"]) * rms

    if p["starfinder"] == "segmentation":
        cat = _segmentation(data_sub, mask, threshold, p)
    else:
        finder = _starfinder(p["starfinder"], threshold, p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = finder(data_sub, mask=mask)
        if found is None:
            cat = None
        else:
            cat = Table(
                {
                    "id": np.asarray(found["id"], dtype=np.int64),
                    "x": np.asarray(found["x_centroid"], dtype=float),
                    "y": np.asarray(found["y_centroid"], dtype=float),
                    "flux": np.asarray(found["flux"], dtype=float),
                    "peak": np.asarray(found["peak"], dtype=float),
                }
            )
    if cat is None or len(cat) == 0:
        return empty_catalog(), f"no sources above {p['snr_threshold']} x background RMS"

    keep = np.isfinite(cat["x"]) & np.isfinite(cat["y"])
    if bounding_box is not None:
        (x0, x1), (y0, y1) = bounding_box
        keep &= (cat["x"] >= x0) & (cat["x"] <= x1) & (cat["y"] >= y0) & (cat["y"] <= y1)
    if p["starfinder"] != "segmentation" and p["peakmax"] is not None:
        keep &= cat["peak"] < float(p["peakmax"])
    cat = cat[keep]
    if p["starfinder"] != "segmentation" and p["brightest"] is not None and len(cat) > int(p["brightest"]):
        order = np.argsort(-np.asarray(cat["flux"]), kind="stable")[: int(p["brightest"])]
        cat = cat[np.sort(order)]
    if len(cat) == 0:
        return empty_catalog(), "no sources left after the bounding-box/peakmax/brightest cuts"
    cat["id"] = np.arange(1, len(cat) + 1, dtype=np.int64)
    return cat, None
