"""Synthetic JWST NIRCam-like data with a known true WCS.

The generator builds, for several exposures (dithers) of several detectors,
JWST level-2 ``ImageModel`` files (``*_cal.fits``) whose GWCS has the frames
``detector -> v2v3 -> world`` as JWST's ``assign_wcs`` makes them: a
distortion polynomial from detector pixels to V2/V3 (arcsec), then the
V2V3-to-sky rotation defined by ``wcsinfo`` (``v2_ref``, ``v3_ref``,
``roll_ref``, ``ra_ref``, ``dec_ref``).

The WCS written into each file is the true WCS of its exposure with a known
pointing error built into the exposure's *attitude*: the error is a shift and
a rotation in the V2/V3 plane about the module centre, expressed as a
different ``ra_ref``/``dec_ref``/``roll_ref`` of every detector of that
exposure, as a guide-star error would be.

Stars are rendered at pixel positions found by inverting the *forward* true
WCS iteratively (to 1e-6 px), never by trusting an approximate inverse.

With ``SyntheticConfig.grid`` the exposures are the tiles of a mosaic (see
`SyntheticConfig.mosaic`: a sparse NIRCam-SW-like mosaic, one detector and
one alignment group per tile, ~30% overlap between neighbours).
`make_catalog_mosaic` writes the same mosaic, of any size, as what the
workflow's detection jobs would write for it (catalogs and image sidecars,
no pixels), for scale tests of the gather steps.

Everything is seeded: the same parameters give byte-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_output
from .catalogs import write_catalog
from .geometry import det_to_world, footprint_world
from .grouping import resolve_group_id
from .io import DO_NOT_USE, ImageData, image_sidecar_doc, output_stem, write_image_sidecar

__all__ = [
    "SyntheticConfig",
    "DETECTOR_LAYOUT",
    "PIXEL_SCALE",
    "DEFAULT_FILTER",
    "MOSAIC_STAR_DENSITY",
    "exposure_filenames",
    "grid_positions",
    "grid_step",
    "make_dataset",
    "make_catalog_mosaic",
    "load_catalog_mosaic_truth",
    "MOSAIC_DETECTION_MAGLIM",
    "make_jwst_gwcs",
    "world_to_pixel_exact",
    "load_truth",
    "make_fits_dataset",
    "make_fits_chip_wcs",
    "make_lookup_tables",
    "lookup_table_hdus",
    "rotate_fits_wcs",
    "pointing_error_rotation",
]

#: NIRCam-like short-wave detector layout: name -> (V2, V3) offset (arcsec)
#: of the detector centre from the module centre, and detector V3 y-angle (deg).
DETECTOR_LAYOUT = {
    "nrca1": (-33.0, 33.5, 0.10),
    "nrca2": (-33.5, -33.0, -0.05),
    "nrca3": (33.2, 33.0, 0.08),
    "nrca4": (33.4, -33.3, -0.12),
    "nrcb1": (-33.1, 33.4, 0.06),
    "nrcb2": (-33.4, -33.2, -0.09),
    "nrcb3": (33.3, 33.1, 0.11),
    "nrcb4": (33.5, -33.4, -0.04),
}

#: V2/V3 (arcsec) of the module centre (roughly NIRCam module A).
MODULE_V2V3 = (86.0, -493.0)

PIXEL_SCALE = 0.031  # arcsec / pixel

#: Stars per square arcminute (magnitudes 16-25) of `SyntheticConfig.mosaic`:
#: ~40 detected sources per 1024 x 1024 tile (default detection parameters).
MOSAIC_STAR_DENSITY = 300

HOT = 2048  # JWST DQ bit HOT


@dataclass
class SyntheticConfig:
    """Parameters of a synthetic dataset.

    Parameters
    ----------
    n_exposures : int
        Number of exposures (dithers); each forms one alignment group.
    detectors : list of str
        Detector names (keys of `DETECTOR_LAYOUT`) exposed in every exposure.
    shape : tuple of int
        Image shape (ny, nx).
    n_stars : int
        Number of stars rendered per square arcminute.
    seed : int
        Seed of every random draw.
    ra, dec : float
        Sky position (deg) of the module centre of the first exposure.
    pa_v3 : float
        Position angle of V3 (deg).
    shift_error : tuple of float
        Range (min, max) of the pointing shift error per exposure (arcsec).
    rotation_error : float
        Maximum absolute pointing roll error per exposure (arcsec).
    refcat_noise : float
        Gaussian noise of the reference catalog per axis (mas).
    refcat_maglim : float
        Faintest magnitude kept in the reference catalog.
    date : str
        Observation date (ISO) of the first exposure.
    program : str
        Program number written to the metadata.
    grid : tuple of int or None
        ``(columns, rows)``: the exposures are the tiles of a mosaic, exposure
        ``k`` at grid cell ``(k % columns, k // columns)`` centred on
        (``ra``, ``dec``), instead of small dithers about it; then
        ``n_exposures`` must be ``columns * rows``. See `mosaic`.
    grid_step : float or None
        Grid step (arcsec) along both detector axes; None: 0.7 times the
        detector's extent along each axis (~30% overlap between neighbours).
    filter : str
        ``meta.instrument.filter``. Another filter than `DEFAULT_FILTER`
        gives every star a colour (its flux scaled by a seeded factor of
        its own, 0.25-4), so that a second dataset of the same ``seed``
        and exposures is the same exposures seen through another filter:
        same attitudes and pointing errors (drawn before and apart from
        the colours), other fluxes, other detected sources.
    """

    n_exposures: int = 4
    detectors: list = field(default_factory=lambda: ["nrca1", "nrca3"])
    shape: tuple = (2048, 2048)
    n_stars: int = 500
    seed: int = 42
    ra: float = 53.16
    dec: float = -27.78
    pa_v3: float = 35.0
    shift_error: tuple = (0.1, 1.0)
    rotation_error: float = 30.0
    refcat_noise: float = 5.0
    refcat_maglim: float = 21.5
    date: str = "2026-03-14T10:00:00"
    program: str = "04242"
    grid: tuple | None = None
    grid_step: float | None = None
    filter: str = "F200W"

    def __post_init__(self):
        if self.grid is None:
            return
        cols, rows = (int(v) for v in self.grid)
        if cols < 1 or rows < 1:
            raise ValueError(f"grid must be (columns, rows) of positive integers, not {self.grid!r}")
        self.grid = (cols, rows)
        if self.n_exposures != cols * rows:
            raise ValueError(f"a {cols} x {rows} grid needs n_exposures = {cols * rows}, not {self.n_exposures}")

    @classmethod
    def from_dict(cls, d):
        """Build from a (config) mapping, ignoring unknown keys.

        With a ``grid`` and no ``n_exposures``, ``n_exposures`` is the
        number of grid cells.
        """
        d = dict(d or {})
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("shape", "shift_error", "grid"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        if "detectors" in kw:
            kw["detectors"] = list(kw["detectors"])
        if kw.get("grid") is not None and "n_exposures" not in kw:
            kw["n_exposures"] = int(kw["grid"][0]) * int(kw["grid"][1])
        return cls(**kw)

    @classmethod
    def mosaic(cls, columns=7, rows=7, shape=(1024, 1024), seed=42, **kw):
        """A sparse NIRCam-SW-like mosaic: ``columns x rows`` tiles, one detector each.

        Each tile is an exposure of its own (its own alignment group) of
        ``nrca1``, on a grid of step 0.7 times the tile size (~30% overlap
        between neighbours), with the usual pointing errors (shift
        ``shift_error``, roll up to ``rotation_error``). The star density
        `MOSAIC_STAR_DENSITY` gives ~40 sources per 1024 x 1024 tile to the
        default source detection, ~6-12 of them shared with each
        side neighbour.

        Parameters
        ----------
        columns, rows : int
            Grid size.
        shape : tuple of int
            Tile shape (ny, nx).
        seed : int
            Seed of every random draw.
        **kw
            Any other `SyntheticConfig` field (``detectors``, ``n_stars``,
            ``grid_step``, ...).

        Returns
        -------
        SyntheticConfig
        """
        kw.setdefault("detectors", ["nrca1"])
        kw.setdefault("n_stars", MOSAIC_STAR_DENSITY)
        return cls(n_exposures=int(columns) * int(rows), shape=tuple(shape), seed=seed, grid=(columns, rows), **kw)


#: The grid fields of `SyntheticConfig`: left out of the truth of a dataset without a grid.
_GRID_FIELDS = ("grid", "grid_step")

#: The filter of the datasets made before `SyntheticConfig.filter` existed
#: (their stars have no colour; the truth of such a dataset does not name it).
DEFAULT_FILTER = "F200W"


def exposure_filenames(cfg: SyntheticConfig) -> list[str]:
    """File names of the ``*_cal.fits`` images the generator writes, in order."""
    names = []
    for iexp in range(cfg.n_exposures):
        for det in cfg.detectors:
            names.append(f"jw{cfg.program}001001_02101_{iexp + 1:05d}_{det}_cal.fits")
    return names


# ---------------------------------------------------------------------------
# WCS construction
# ---------------------------------------------------------------------------


def _v23tosky(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref):
    """V2/V3 (arcsec) -> sky (deg) rotation as JWST's assign_wcs builds it."""
    from astropy.modeling.models import RotationSequence3D, Scale
    from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

    angles = [v2_ref / 3600.0, -v3_ref / 3600.0, roll_ref, dec_ref, -ra_ref]
    rot = RotationSequence3D(angles, axes_order="zyxyz")
    model = (
        (Scale(1 / 3600.0) & Scale(1 / 3600.0))
        | SphericalToCartesian(wrap_lon_at=180)
        | rot
        | CartesianToSpherical(wrap_lon_at=360)
    )
    model.name = "v23tosky"
    return model


def _distortion(shape, v2_ref, v3_ref, v3yangle, coeffs, vparity=-1):
    """Detector (0-based pixels) -> V2/V3 (arcsec) polynomial with an inverse.

    The polynomial acts on pixel offsets from the detector centre, in units
    of 1000 pixels, and returns ideal-frame arcsec; a rotation by the V3
    y-angle, the parity flip and the detector's V2/V3 reference complete it.
    The inverse is a least-squares polynomial fit (approximate, ~1e-4 px).
    """
    from astropy.modeling import fitting, models

    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    polyx = models.Polynomial2D(3, **coeffs["x"])
    polyy = models.Polynomial2D(3, **coeffs["y"])
    ang = np.deg2rad(v3yangle)
    # ideal (xi, eta) arcsec -> (v2, v3) arcsec
    mat = np.array(
        [[vparity * np.cos(ang), np.sin(ang)], [-vparity * np.sin(ang), np.cos(ang)]]
    )
    to_v2v3 = models.AffineTransformation2D(matrix=mat, translation=[v2_ref, v3_ref])
    fwd = (
        (models.Shift(-cx) & models.Shift(-cy))
        | (models.Scale(1e-3) & models.Scale(1e-3))
        | models.Mapping((0, 1, 0, 1))
        | (polyx & polyy)
        | to_v2v3
    )
    # approximate inverse: fit v2v3 -> pixel polynomial of degree 5
    yy, xx = np.mgrid[-20 : ny + 20 : 64j, -20 : nx + 20 : 64j]
    v2, v3 = fwd(xx.ravel(), yy.ravel())
    fitter = fitting.LinearLSQFitter()
    u = (v2 - v2_ref) / 100.0
    v = (v3 - v3_ref) / 100.0
    ix = fitter(models.Polynomial2D(5), u, v, xx.ravel())
    iy = fitter(models.Polynomial2D(5), u, v, yy.ravel())
    inv = (
        (models.Shift(-v2_ref) & models.Shift(-v3_ref))
        | (models.Scale(0.01) & models.Scale(0.01))
        | models.Mapping((0, 1, 0, 1))
        | (ix & iy)
    )
    fwd.inverse = inv
    fwd.name = "distortion"
    return fwd


def make_jwst_gwcs(shape, distortion_coeffs, wcsinfo):
    """Build a JWST-like GWCS ``detector -> v2v3 -> world``.

    Parameters
    ----------
    shape : tuple of int
        Image shape (ny, nx); sets the bounding box.
    distortion_coeffs : dict
        ``{"x": {...}, "y": {...}}`` Polynomial2D coefficients (degree 3) of
        the detector distortion (see `_distortion`).
    wcsinfo : dict
        ``v2_ref``, ``v3_ref`` (arcsec), ``v3yangle``, ``vparity``,
        ``roll_ref``, ``ra_ref``, ``dec_ref`` (deg).

    Returns
    -------
    gwcs.WCS
    """
    det2v23 = _distortion(
        shape,
        wcsinfo["v2_ref"],
        wcsinfo["v3_ref"],
        wcsinfo["v3yangle"],
        distortion_coeffs,
        wcsinfo.get("vparity", -1),
    )
    return _jwst_gwcs(shape, det2v23, wcsinfo)


def _jwst_gwcs(shape, det2v23, wcsinfo):
    """`make_jwst_gwcs` with the detector -> V2/V3 model given (it may be shared)."""
    from astropy import coordinates as coord
    from astropy import units as u
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs

    v23sky = _v23tosky(
        wcsinfo["v2_ref"],
        wcsinfo["v3_ref"],
        wcsinfo["roll_ref"],
        wcsinfo["ra_ref"],
        wcsinfo["dec_ref"],
    )
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(
        name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"), unit=(u.arcsec, u.arcsec)
    )
    world = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world")
    w = gwcs_wcs.WCS([(detector, det2v23), (v2v3, v23sky), (world, None)])
    ny, nx = shape
    w.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    w.pixel_shape = (nx, ny)
    return w


def _attitude_refs(module_model, v2_ref, v3_ref):
    """ra_ref, dec_ref, roll_ref of a detector under a module-level attitude.

    ``module_model`` maps V2/V3 (arcsec) to sky (deg) for the whole focal
    plane. The returned angles make `_v23tosky` of the detector reproduce it
    (to ~1e-12 deg): roll is found by matching the sky position of a second
    V2/V3 point (the model is linear in roll at first order; two Newton steps).
    """
    ra_ref, dec_ref = module_model(v2_ref, v3_ref)
    probe = (v2_ref, v3_ref + 60.0)
    target = np.array(module_model(*probe))

    def pa_err(roll):
        m = _v23tosky(v2_ref, v3_ref, roll, ra_ref, dec_ref)
        got = np.array(m(*probe))
        return _position_angle(ra_ref, dec_ref, *got) - _position_angle(
            ra_ref, dec_ref, *target
        )

    roll = 0.0
    for _ in range(4):
        e0 = pa_err(roll)
        e1 = pa_err(roll + 1e-3)
        slope = (e1 - e0) / 1e-3
        roll = roll - e0 / slope
    return float(ra_ref), float(dec_ref), float(roll % 360.0)


def _position_angle(ra0, dec0, ra1, dec1):
    """Position angle (deg, E of N) from point 0 to point 1."""
    ra0, dec0, ra1, dec1 = map(np.deg2rad, (ra0, dec0, ra1, dec1))
    dra = ra1 - ra0
    pa = np.arctan2(
        np.sin(dra), np.cos(dec0) * np.tan(dec1) - np.sin(dec0) * np.cos(dra)
    )
    return np.rad2deg(pa)


def _module_attitude(v2c, v3c, ra, dec, pa_v3):
    """Focal-plane attitude pointing module centre (v2c, v3c) at (ra, dec).

    ``pa_v3`` is used as the roll at the module centre.
    """
    return _v23tosky(v2c, v3c, pa_v3, ra, dec)


def world_to_pixel_exact(wcs, ra, dec, tol=1e-6, maxiter=20):
    """Pixel positions whose *forward* transform gives (ra, dec).

    Starts from the WCS's (approximate) inverse and refines with Newton
    iterations on the forward transform until the position error is below
    ``tol`` pixels.

    Parameters
    ----------
    wcs : gwcs.WCS
    ra, dec : array-like
        Sky coordinates (deg).
    tol : float
        Convergence tolerance in pixels.

    Returns
    -------
    x, y : numpy.ndarray
        0-indexed pixel coordinates.
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    x, y = wcs.invert(ra, dec, with_bounding_box=False)
    x = np.array(x, dtype=float)
    y = np.array(y, dtype=float)
    cosd = np.cos(np.deg2rad(dec))
    h = 0.5
    for _ in range(maxiter):
        r0, d0 = wcs(x, y, with_bounding_box=False)
        rx, dx_ = wcs(x + h, y, with_bounding_box=False)
        ry, dy_ = wcs(x, y + h, with_bounding_box=False)
        # residuals in arcsec on the local tangent plane
        er = ((ra - r0 + 180.0) % 360.0 - 180.0) * cosd * 3600.0
        ed = (dec - d0) * 3600.0
        j11 = ((rx - r0 + 180.0) % 360.0 - 180.0) * cosd * 3600.0 / h
        j21 = (dx_ - d0) * 3600.0 / h
        j12 = ((ry - r0 + 180.0) % 360.0 - 180.0) * cosd * 3600.0 / h
        j22 = (dy_ - d0) * 3600.0 / h
        det = j11 * j22 - j12 * j21
        ddx = (j22 * er - j12 * ed) / det
        ddy = (-j21 * er + j11 * ed) / det
        x += ddx
        y += ddy
        if np.all(np.hypot(ddx, ddy) < tol):
            break
    return x, y


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _render_stars(shape, x, y, flux, fwhm=2.0, halo_frac=0.15, halo_fwhm=6.0, stamp=9):
    """Render pixel-integrated double-Gaussian PSFs (core + halo)."""
    from scipy.special import erf

    ny, nx = shape
    img = np.zeros(shape, dtype=np.float64)
    comps = [(1.0 - halo_frac, fwhm / 2.3548200450309493), (halo_frac, halo_fwhm / 2.3548200450309493)]
    half = stamp
    for xi, yi, fi in zip(x, y, flux):
        ix, iy = int(np.floor(xi + 0.5)), int(np.floor(yi + 0.5))
        x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
        y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        xe = np.arange(x0, x1 + 1) - 0.5 - xi
        ye = np.arange(y0, y1 + 1) - 0.5 - yi
        stampv = 0.0
        for w, s in comps:
            cx = np.diff(0.5 * erf(xe / (np.sqrt(2) * s)))
            cy = np.diff(0.5 * erf(ye / (np.sqrt(2) * s)))
            stampv = stampv + w * np.outer(cy, cx)
        img[y0:y1, x0:x1] += fi * stampv
    return img


def _star_field(rng, ra0, dec0, radius_arcsec, density_per_arcmin2):
    """Uniform random stars in a square around (ra0, dec0) with power-law mags."""
    area = (2 * radius_arcsec / 60.0) ** 2
    n = int(density_per_arcmin2 * area)
    xi = rng.uniform(-radius_arcsec, radius_arcsec, n) / 3600.0
    eta = rng.uniform(-radius_arcsec, radius_arcsec, n) / 3600.0
    # gnomonic de-projection about (ra0, dec0)
    ra0r, dec0r = np.deg2rad(ra0), np.deg2rad(dec0)
    xr, er = np.deg2rad(xi), np.deg2rad(eta)
    den = np.cos(dec0r) - er * np.sin(dec0r)
    ra = ra0r + np.arctan2(xr, den)
    dec = np.arctan2(np.sin(dec0r) + er * np.cos(dec0r), np.hypot(xr, den))
    # magnitudes: N(<m) ~ 10^(0.3 m) between 16 and 25
    u = rng.uniform(0, 1, n)
    a, b = 10 ** (0.3 * 16.0), 10 ** (0.3 * 25.0)
    mag = np.log10(a + u * (b - a)) / 0.3
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec), mag


def _distortion_coeffs(rng):
    """Deterministic small NIRCam-like distortion (arcsec per 1000 px units)."""
    s = PIXEL_SCALE * 1000.0  # arcsec per 1000 px
    cx = {"c1_0": s, "c0_1": 0.0015 * s}
    cy = {"c0_1": s * 1.0007, "c1_0": -0.0011 * s}
    for k in ("c2_0", "c1_1", "c0_2"):
        cx[k] = rng.normal(0, 0.02)
        cy[k] = rng.normal(0, 0.02)
    for k in ("c3_0", "c2_1", "c1_2", "c0_3"):
        cx[k] = rng.normal(0, 0.01)
        cy[k] = rng.normal(0, 0.01)
    return {"x": cx, "y": cy}


def _write_refcat(outdir, ra, dec, mag, maglim, noise_mas, seed):
    """Gaia-like ``refcat.ecsv``: stars brighter than ``maglim``, ``noise_mas`` per axis."""
    from astropy.table import Table

    sel = mag < maglim
    rng = np.random.default_rng([seed, 7])
    nsig = noise_mas / 3.6e6
    ref = Table()
    ref["RA"] = ra[sel] + rng.normal(0, nsig, sel.sum()) / np.cos(np.deg2rad(dec[sel]))
    ref["DEC"] = dec[sel] + rng.normal(0, nsig, sel.sum())
    ref["mag"] = mag[sel]
    path = os.path.join(outdir, "refcat.ecsv")
    with atomic_output(path) as tmp:
        ref.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def grid_positions(cfg: SyntheticConfig) -> list[tuple[int, int]]:
    """Grid cell ``(column, row)`` of every image, in `exposure_filenames` order.

    Exposure ``k`` sits at ``(k % columns, k // columns)``; all detectors of
    an exposure share its cell. Empty for a dataset without ``grid``.
    """
    if cfg.grid is None:
        return []
    cols = cfg.grid[0]
    return [(iexp % cols, iexp // cols) for iexp in range(cfg.n_exposures) for _ in cfg.detectors]


def grid_step(cfg: SyntheticConfig) -> tuple[float, float]:
    """Grid step (arcsec) along the detector x and y axes.

    ``cfg.grid_step`` on both axes, else 0.7 times the detector's extent
    along that axis (neighbouring tiles overlap by ~30%).
    """
    if cfg.grid_step is not None:
        return float(cfg.grid_step), float(cfg.grid_step)
    ny, nx = cfg.shape
    return 0.7 * nx * PIXEL_SCALE, 0.7 * ny * PIXEL_SCALE


def _detectors_centre(detectors):
    """Mean V2/V3 offset (arcsec) of the detectors from the module centre."""
    return tuple(float(np.mean([DETECTOR_LAYOUT[d][i] for d in detectors])) for i in (0, 1))


def _pointing_offset(cfg, iexp):
    """V2/V3 offset (arcsec) of exposure ``iexp``'s module centre on the base attitude.

    Without a grid: a deterministic dither spiral of a few arcsec to ~10
    arcsec. With one: the grid cell's offset, columns along the detectors'
    x axis (-V2: ``vparity`` is -1) and rows along y (V3), the detectors'
    mean position placed on the field centre for the middle of the grid.
    """
    if cfg.grid is None:
        if iexp == 0:
            return (0.0, 0.0)
        ang = 2.4 * iexp
        rad = 3.0 + 2.5 * iexp
        return (rad * np.cos(ang), rad * np.sin(ang))
    cols, rows = cfg.grid
    sx, sy = grid_step(cfg)
    dv2, dv3 = _detectors_centre(cfg.detectors)
    col, row = iexp % cols, iexp // cols
    return (-(col - (cols - 1) / 2.0) * sx - dv2, (row - (rows - 1) / 2.0) * sy - dv3)


def _star_field_radius(cfg):
    """Half side (arcsec) of the square star field: covers every image of the dataset."""
    ny, nx = cfg.shape
    if cfg.grid is None:
        half_fov = 0.5 * max(nx, ny) * PIXEL_SCALE + 40.0  # small dithers about the field centre
        return half_fov + 15.0
    cols, rows = cfg.grid
    sx, sy = grid_step(cfg)
    cv2, cv3 = _detectors_centre(cfg.detectors)
    spread = max(np.hypot(DETECTOR_LAYOUT[d][0] - cv2, DETECTOR_LAYOUT[d][1] - cv3) for d in cfg.detectors)
    reach = np.hypot((cols - 1) / 2.0 * sx, (rows - 1) / 2.0 * sy) + spread
    return float(reach + 0.5 * np.hypot(nx, ny) * PIXEL_SCALE + max(cfg.shift_error) + 15.0)


def _pointing_error(cfg, rng):
    """A pointing error drawn from ``rng``: shift (arcsec) in V2, V3 and roll (arcsec)."""
    smin, smax = cfg.shift_error
    amp = rng.uniform(smin, smax)
    phi = rng.uniform(0, 2 * np.pi)
    droll = rng.uniform(-cfg.rotation_error, cfg.rotation_error)  # arcsec
    return amp * np.cos(phi), amp * np.sin(phi), droll


def _exposure_attitudes(cfg, rng):
    """True and erroneous focal-plane attitudes of every exposure.

    Draws the pointing errors from ``rng`` (shift amplitude, angle, roll:
    three draws per exposure, in exposure order). The attitudes are
    `_v23tosky` models without a grid (as they always were) and, with one,
    the matrices of the same rotations (`_attitude_matrix`: ~100x faster,
    for mosaics of thousands of tiles).

    Returns
    -------
    list of dict
        ``true``, ``error`` (attitudes), ``shift_v2``, ``shift_v3``,
        ``roll_arcsec`` (the pointing error).
    """
    if cfg.grid is not None:
        return _exposure_attitude_matrices(cfg, rng)
    v2c, v3c = MODULE_V2V3
    out = []
    for iexp in range(cfg.n_exposures):
        dith = _pointing_offset(cfg, iexp)
        true_att = _v23tosky(v2c, v3c, cfg.pa_v3, cfg.ra, cfg.dec)
        ra_t, dec_t = true_att(v2c + dith[0], v3c + dith[1])
        true_att = _module_attitude(v2c, v3c, ra_t, dec_t, cfg.pa_v3)
        # pointing error: shift in V2/V3 and roll about the module centre
        dv2, dv3, droll = _pointing_error(cfg, rng)
        ra_e, dec_e = true_att(v2c + dv2, v3c + dv3)
        err_att = _module_attitude(v2c, v3c, ra_e, dec_e, cfg.pa_v3 + droll / 3600.0)
        out.append({"true": true_att, "error": err_att, "shift_v2": float(dv2), "shift_v3": float(dv3), "roll_arcsec": float(droll)})
    return out


def _exposure_attitude_matrices(cfg, rng):
    """`_exposure_attitudes` as rotation matrices (`_attitude_matrix`)."""
    v2c, v3c = MODULE_V2V3
    base = _attitude_matrix(v2c, v3c, cfg.pa_v3, cfg.ra, cfg.dec)
    out = []
    for iexp in range(cfg.n_exposures):
        dith = _pointing_offset(cfg, iexp)
        ra_t, dec_t = _v2v3_to_sky(base, v2c + dith[0], v3c + dith[1])
        true_att = _attitude_matrix(v2c, v3c, cfg.pa_v3, ra_t, dec_t)
        dv2, dv3, droll = _pointing_error(cfg, rng)
        ra_e, dec_e = _v2v3_to_sky(true_att, v2c + dv2, v3c + dv3)
        err_att = _attitude_matrix(v2c, v3c, cfg.pa_v3 + droll / 3600.0, ra_e, dec_e)
        out.append({"true": true_att, "error": err_att, "shift_v2": float(dv2), "shift_v3": float(dv3), "roll_arcsec": float(droll)})
    return out


def _axis_matrix(angle, axis):
    """`astropy.coordinates.matrix_utilities.rotation_matrix` (``angle`` in deg) without its overhead."""
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    if axis == "y":
        return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _attitude_matrix(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref):
    """The matrix of `_v23tosky`'s rotation: V2/V3 unit vectors -> sky unit vectors."""
    m = np.eye(3)
    for angle, axis in zip((v2_ref / 3600.0, -v3_ref / 3600.0, roll_ref, dec_ref, -ra_ref), "zyxyz"):
        m = _axis_matrix(angle, axis) @ m
    return m


def _v2v3_to_sky(matrix, v2, v3):
    """RA, Dec (deg) of V2/V3 positions (arcsec) under an attitude matrix."""
    return _to_radec(matrix @ _unit_vector(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0))


def _matrix_refs(matrix, v2_ref, v3_ref):
    """`_attitude_refs` of an attitude matrix, exactly (no iteration).

    ``ra_ref``, ``dec_ref`` are where the attitude puts (``v2_ref``,
    ``v3_ref``); the roll is what is left of the attitude once the
    rotations of `_v23tosky` on either side of it are undone.
    """
    ra, dec = _v2v3_to_sky(matrix, v2_ref, v3_ref)
    inner = _axis_matrix(-v3_ref / 3600.0, "y") @ _axis_matrix(v2_ref / 3600.0, "z")
    outer = _axis_matrix(-ra, "z") @ _axis_matrix(dec, "y")
    roll = outer.T @ matrix @ inner.T
    return float(ra), float(dec), float(np.rad2deg(np.arctan2(roll[1, 2], roll[1, 1])) % 360.0)


def _detector_wcsinfo(attitude, det):
    """``wcsinfo`` of detector ``det`` under a focal-plane attitude (a model or a matrix)."""
    v2c, v3c = MODULE_V2V3
    dv2_det, dv3_det, v3yangle = DETECTOR_LAYOUT[det]
    v2_ref, v3_ref = v2c + dv2_det, v3c + dv3_det
    refs = _matrix_refs if isinstance(attitude, np.ndarray) else _attitude_refs
    r, d, roll = refs(attitude, v2_ref, v3_ref)
    return {"v2_ref": v2_ref, "v3_ref": v3_ref, "v3yangle": v3yangle, "vparity": -1, "ra_ref": r, "dec_ref": d, "roll_ref": roll}


def _field(cfg):
    """The seeded star field and exposure attitudes of a dataset.

    Returns
    -------
    stars : tuple of numpy.ndarray
        ``ra``, ``dec`` (deg), ``mag``.
    attitudes : list of dict
        `_exposure_attitudes`.
    """
    rng = np.random.default_rng(cfg.seed)
    stars = _star_field(rng, cfg.ra, cfg.dec, _star_field_radius(cfg), cfg.n_stars)
    return stars, _exposure_attitudes(cfg, rng)


def _star_flux(mag):
    """Total flux (electrons) of a star of magnitude ``mag``."""
    return 10 ** (-0.4 * (mag - 25.0)) * 400.0


def _all_distortion_coeffs(seed):
    """Distortion coefficients of every detector of `DETECTOR_LAYOUT` (seeded per detector)."""
    return {det: _distortion_coeffs(np.random.default_rng([seed, i])) for i, det in enumerate(DETECTOR_LAYOUT)}


def _config_tree(cfg):
    """The configuration as stored in a truth file (the grid fields only for a grid, the filter only when not the default)."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in cfg.__dict__.items()
        if (cfg.grid is not None or k not in _GRID_FIELDS) and (k != "filter" or v != DEFAULT_FILTER)
    }


def _filter_flux(cfg, flux):
    """Star fluxes through ``cfg.filter``: unchanged for `DEFAULT_FILTER`, else
    each star scaled by its colour (a factor 0.25-4, seeded by the seed and the
    filter name, drawn apart from the pointing errors, which stay the same)."""
    if cfg.filter == DEFAULT_FILTER:
        return flux
    import zlib

    rng = np.random.default_rng([cfg.seed, 11, zlib.crc32(str(cfg.filter).encode())])
    return flux * 10 ** (-0.4 * rng.uniform(-1.5, 1.5, len(flux)))


def _render_image(cfg, true_wcs, stars, flux, k):
    """Pixel arrays of image ``k``: stars at their exact pixel positions through the TRUE wcs.

    Returns
    -------
    dict
        ``data``, ``err``, ``dq``, ``var_poisson``, ``var_rnoise``.
    """
    ra_s, dec_s = stars
    ny, nx = cfg.shape
    cra, cdec = true_wcs(nx / 2, ny / 2, with_bounding_box=False)
    sep = np.hypot(((ra_s - cra + 180) % 360 - 180) * np.cos(np.deg2rad(cdec)), dec_s - cdec) * 3600
    near = sep < 0.75 * max(nx, ny) * PIXEL_SCALE + 5
    xs, ys = world_to_pixel_exact(true_wcs, ra_s[near], dec_s[near])
    inside = (xs > -10) & (xs < nx + 9) & (ys > -10) & (ys < ny + 9)
    img_rng = np.random.default_rng([cfg.seed, 1000 + k])
    sky = 100.0
    model_img = sky + _render_stars(cfg.shape, xs[inside], ys[inside], flux[near][inside])
    data = img_rng.poisson(model_img).astype(np.float64)
    rn = 10.0
    data += img_rng.normal(0.0, rn, size=cfg.shape)
    var_poisson = np.maximum(model_img, 0.0)
    var_rnoise = np.full(cfg.shape, rn**2)
    dq = np.zeros(cfg.shape, dtype=np.uint32)
    nbad = int(0.001 * nx * ny)
    bx = img_rng.integers(0, nx, nbad)
    by = img_rng.integers(0, ny, nbad)
    dq[by, bx] = DO_NOT_USE | HOT
    data[by, bx] = img_rng.uniform(5e3, 5e4, nbad)  # hot pixels: flagged
    data -= sky  # level-2 products are background-subtracted-ish: keep a small residual
    data += 0.5
    return {"data": data, "err": np.sqrt(var_poisson + var_rnoise), "dq": dq, "var_poisson": var_poisson, "var_rnoise": var_rnoise}


def _observation(cfg, iexp, isot):
    """``meta.observation`` of exposure ``iexp`` (its own exposure group), starting at ``isot``."""
    return {
        "date": isot[:10],
        "time": isot[11:],
        "program_number": cfg.program,
        "observation_number": "001",
        "visit_number": "001",
        "visit_group": "02",
        "sequence_id": "1",
        "activity_id": "01",
        "exposure_number": f"{iexp + 1:05d}",
    }


def _cal_model(arrays, name, det, tstart, obs, wcsinfo, wcs, filter_name=DEFAULT_FILTER):
    """The level-2 ``ImageModel`` of one detector image (file WCS and ``wcsinfo``)."""
    from stdatamodels.jwst.datamodels import ImageModel

    model = ImageModel(data=arrays["data"].astype(np.float32))
    model.err = arrays["err"].astype(np.float32)
    model.dq = arrays["dq"]
    model.var_poisson = arrays["var_poisson"].astype(np.float32)
    model.var_rnoise = arrays["var_rnoise"].astype(np.float32)
    m = model.meta
    m.filename = name
    m.telescope = "JWST"
    m.instrument.name = "NIRCAM"
    m.instrument.detector = det.upper()
    m.instrument.channel = "SHORT"
    m.instrument.module = det[3].upper()
    m.instrument.filter = filter_name
    m.instrument.pupil = "CLEAR"
    m.exposure.type = "NRC_IMAGE"
    m.exposure.start_time = float(tstart.mjd)
    for key, value in obs.items():
        setattr(m.observation, key, value)
    for key in ("v2_ref", "v3_ref", "v3yangle", "vparity", "roll_ref", "ra_ref", "dec_ref"):
        setattr(m.wcsinfo, key, wcsinfo[key])
    m.cal_step.assign_wcs = "COMPLETE"
    m.cal_step.flat_field = "COMPLETE"
    m.cal_step.photom = "COMPLETE"
    m.wcs = wcs
    return model


def _write_asn(outdir, cfg, names):
    """The level-3 association ``asn.json`` of all images."""
    asn = {
        "asn_type": "image3",
        "asn_rule": "candidate_Asn_Lv3Image",
        "asn_id": "o001",
        "program": cfg.program,
        "target": "1",
        "asn_pool": "synthetic_pool",
        "products": [
            {
                "name": f"jw{cfg.program}-o001_t001_nircam_clear-{cfg.filter.lower()}",
                "members": [{"expname": n, "exptype": "science"} for n in names],
            }
        ],
    }
    asn_path = os.path.join(outdir, "asn.json")
    with atomic_output(asn_path) as tmp, open(tmp, "w") as f:
        json.dump(asn, f, indent=2)
    return asn_path


def make_dataset(outdir, cfg: SyntheticConfig | None = None):
    """Write a synthetic dataset into ``outdir``.

    Writes the ``*_cal.fits`` images, ``truth.asdf`` (the true GWCS and
    pointing errors of every image), ``asn.json`` (a level-3 association)
    and ``refcat.ecsv`` (a Gaia-like reference catalog, ``RA``/``DEC`` in
    degrees with ``cfg.refcat_noise`` mas of noise). Each file is written
    under a temporary name and renamed.

    With ``cfg.grid`` the exposures are the tiles of a mosaic (see
    `SyntheticConfig.mosaic`) instead of small dithers; the truth's
    ``errors`` then also give each image's ``grid`` cell (column, row).

    Returns
    -------
    dict
        Paths: ``images`` (list), ``truth``, ``asn``, ``refcat``.
    """
    import asdf
    from astropy.time import Time, TimeDelta

    cfg = cfg or SyntheticConfig()
    os.makedirs(outdir, exist_ok=True)
    (ra_s, dec_s, mag), attitudes = _field(cfg)
    flux = _filter_flux(cfg, _star_flux(mag))  # electrons
    dcoeffs = _all_distortion_coeffs(cfg.seed)
    names = exposure_filenames(cfg)
    cells = grid_positions(cfg)
    t0 = Time(cfg.date, scale="utc")

    truth = {"images": {}, "errors": {}, "config": _config_tree(cfg)}
    images = []
    k = 0
    for iexp, att in enumerate(attitudes):
        tstart = t0 + TimeDelta(600.0 * iexp, format="sec")
        obs = _observation(cfg, iexp, tstart.isot)
        for det in cfg.detectors:
            true_wcs = make_jwst_gwcs(cfg.shape, dcoeffs[det], _detector_wcsinfo(att["true"], det))
            err_info = _detector_wcsinfo(att["error"], det)
            file_wcs = make_jwst_gwcs(cfg.shape, dcoeffs[det], err_info)
            arrays = _render_image(cfg, true_wcs, (ra_s, dec_s), flux, k)
            model = _cal_model(arrays, names[k], det, tstart, obs, err_info, file_wcs, cfg.filter)
            path = os.path.join(outdir, names[k])
            with atomic_output(path) as tmp:
                model.save(tmp, overwrite=True)
            model.close()
            images.append(path)
            truth["images"][names[k]] = true_wcs
            truth["errors"][names[k]] = {key: att[key] for key in ("shift_v2", "shift_v3", "roll_arcsec")}
            truth["errors"][names[k]]["exposure"] = iexp
            if cells:
                truth["errors"][names[k]]["grid"] = list(cells[k])
            k += 1

    truth["stars"] = {"ra": ra_s, "dec": dec_s, "mag": mag}
    truth_path = os.path.join(outdir, "truth.asdf")
    with atomic_output(truth_path) as tmp:
        asdf.AsdfFile(truth).write_to(tmp)
    asn_path = _write_asn(outdir, cfg, names)
    ref_path = _write_refcat(outdir, ra_s, dec_s, mag, cfg.refcat_maglim, cfg.refcat_noise, cfg.seed)
    return {"images": images, "truth": truth_path, "asn": asn_path, "refcat": ref_path}


def load_truth(path, stars=False):
    """Read ``truth.asdf``.

    Returns
    -------
    wcs : dict
        ``{filename: true gwcs}``.
    errors : dict
        ``{filename: pointing error}`` (shift_v2, shift_v3 arcsec; roll_arcsec).
    stars : astropy.table.Table
        Only with ``stars=True``: the true star list (ra, dec, mag).
    """
    import asdf
    from astropy.table import Table

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        out = (dict(af.tree["images"]), {k: dict(v) for k, v in af.tree["errors"].items()})
        if stars:
            st = af.tree["stars"]
            out = out + (Table({k: np.array(st[k]) for k in ("ra", "dec", "mag")}),)
    return out


# ---------------------------------------------------------------------------
# Catalog-only mosaics (no pixels), for scale tests of the gather steps
# ---------------------------------------------------------------------------

#: Faintest magnitude of the catalogs of `make_catalog_mosaic` by default:
#: as many sources per tile as the default source detection finds on the
#: synthetic images (measured on the 7 x 7 `SyntheticConfig.mosaic`, seed 42:
#: 42.8 detected per tile, 42.0 stars brighter than this limit; the
#: detection finds all stars to 23.5, 86% at 23.75-24, 41% at 24-24.25,
#: 4% at 24.25-24.5).
MOSAIC_DETECTION_MAGLIM = 24.05

#: Sentinels of the per-image values in a `_BlobTemplate`: the ``wcsinfo``
#: values and those the GWCS holds (floats whose YAML text is unique).
_SENTINEL_INFO = {"ra_ref": 1.25e121, "dec_ref": 1.25e122, "roll_ref": 1.25e123}
_SENTINEL_WCS = {"ra_ref": 1.25e124, "dec_ref": 1.25e125, "roll_ref": 1.25e126}


def _yaml_float(value):
    """The YAML text of a float as the ASDF (PyYAML) representer writes it."""
    text = repr(float(value)).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def _yaml_angle(value):
    """The YAML text of an angle (deg) of a ``RotationSequence3D``: kept in radians, written in degrees."""
    return _yaml_float(np.rad2deg(np.deg2rad(float(value))))


def _yaml_str(value):
    """The YAML text of a short plain string: single-quoted when plain text would read back as another type."""
    import yaml

    if not value or value != value.strip() or any(c in value for c in ",[]{}#&*!|>'\"%@`") or ": " in value:
        raise ValueError(f"not a plain YAML string: {value!r}")
    tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False))
    return value if tag == "tag:yaml.org,2002:str" else f"'{value}'"


class _BlobTemplate:
    """The ASDF extension of a detector's images, serialized once.

    The images of one detector differ only by their attitude (``ra_ref``,
    ``dec_ref``, ``roll_ref`` in ``wcsinfo`` and in the angles of the
    V2/V3 -> sky rotation), file name and observation metadata; their
    distortion (all the binary blocks) is the same. `fill` writes those
    values into the template's YAML as the ASDF writer does and moves the
    block index by the change of length: microseconds instead of the
    ~30-60 ms of serializing each image's GWCS, and the same tree once read
    (checked by the tests).
    """

    def __init__(self, det2v23, shape, wcsinfo, observation):
        import io

        import asdf

        self.keys = ["filename", *(f"observation.{k}" for k in observation)]
        self.sentinels = {k: f"ZZSENTINEL{i:03d}" for i, k in enumerate(self.keys)}
        info = dict(wcsinfo, **_SENTINEL_INFO)
        obs = {k: self.sentinels[f"observation.{k}"] for k in observation}
        wcs = _jwst_gwcs(shape, det2v23, dict(wcsinfo, **_SENTINEL_WCS))
        buf = io.BytesIO()
        asdf.AsdfFile({"meta": {"wcs": wcs, "wcsinfo": info, "observation": obs, "filename": self.sentinels["filename"]}}).write_to(buf)
        raw = buf.getvalue()
        end = raw.index(b"\n...\n") + 5
        self.yaml, blocks = raw[:end].decode("utf-8"), raw[end:]
        self.blocks, _, index = blocks.partition(b"#ASDF BLOCK INDEX\n")
        self.offsets = [int(line[2:]) for line in index.splitlines() if line.startswith(b"- ")]
        texts = [*self.sentinels.values(), *map(_yaml_float, _SENTINEL_INFO.values()), *map(_yaml_angle, _SENTINEL_WCS.values())]
        if any(self.yaml.count(t) != 1 for t in texts) or f"-{_yaml_angle(_SENTINEL_WCS['ra_ref'])}" not in self.yaml:
            raise RuntimeError("ASDF template: the per-image values are not written as expected")

    def fill(self, wcsinfo, filename, observation):
        """The ASDF bytes of an image with this ``wcsinfo`` (attitude), file name and observation."""
        text = self.yaml
        for key in _SENTINEL_INFO:
            # the rotation holds -ra_ref: the sign stays in the text (ra_ref >= 0)
            text = text.replace(_yaml_float(_SENTINEL_INFO[key]), _yaml_float(wcsinfo[key]))
            text = text.replace(_yaml_angle(_SENTINEL_WCS[key]), _yaml_angle(wcsinfo[key]))
        values = {"filename": filename, **{f"observation.{k}": v for k, v in observation.items()}}
        for key, sentinel in self.sentinels.items():
            text = text.replace(sentinel, _yaml_str(values[key]))
        head = text.encode("utf-8")
        delta = len(head) - len(self.yaml.encode("utf-8"))
        index = "".join(f"- {o + delta}\n" for o in self.offsets)
        return head + self.blocks + f"#ASDF BLOCK INDEX\n%YAML 1.1\n---\n{index}...\n".encode("ascii")


class _DetectorPolynomial:
    """The detector -> V2/V3 model of `_distortion` in numpy, with an exact inverse.

    The same polynomial, ideal-frame rotation and parity as the GWCS of
    a detector (`make_jwst_gwcs`), evaluated without astropy's modeling
    overhead: `from_v2v3` inverts it by Newton iterations to ``tol``
    pixels, ~50x faster than `world_to_pixel_exact` on the GWCS.
    """

    def __init__(self, shape, wcsinfo, coeffs):
        from numpy.polynomial import polynomial

        ny, nx = shape
        self.centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
        self.poly = [np.array([[c.get(f"c{i}_{j}", 0.0) for j in range(4)] for i in range(4)]) for c in (coeffs["x"], coeffs["y"])]
        self.grad = [[polynomial.polyder(c, axis=a) for a in (0, 1)] for c in self.poly]
        ang, vparity = np.deg2rad(wcsinfo["v3yangle"]), wcsinfo.get("vparity", -1)
        self.matrix = np.array([[vparity * np.cos(ang), np.sin(ang)], [-vparity * np.sin(ang), np.cos(ang)]])
        self.ref = np.array([wcsinfo["v2_ref"], wcsinfo["v3_ref"]])

    def _ideal(self, u, v):
        from numpy.polynomial.polynomial import polyval2d

        return np.array([polyval2d(u, v, c) for c in self.poly])

    def to_v2v3(self, x, y):
        """V2, V3 (arcsec) of 0-based detector positions."""
        u, v = (np.asarray(x, float) - self.centre[0]) * 1e-3, (np.asarray(y, float) - self.centre[1]) * 1e-3
        return self.matrix @ self._ideal(u, v) + self.ref[:, np.newaxis]

    def from_v2v3(self, v2, v3, tol=1e-9, maxiter=20):
        """0-based detector positions of V2, V3 (arcsec), to ``tol`` pixels."""
        from numpy.polynomial.polynomial import polyval2d

        target = np.linalg.solve(self.matrix, np.array([v2, v3], float) - self.ref[:, np.newaxis])
        lin = np.array([[self.poly[k][1, 0], self.poly[k][0, 1]] for k in (0, 1)])
        u, v = np.linalg.solve(lin, target)
        for _ in range(maxiter):
            r = self._ideal(u, v) - target
            j = [[polyval2d(u, v, g) for g in row] for row in self.grad]
            det = j[0][0] * j[1][1] - j[0][1] * j[1][0]
            du = (j[1][1] * r[0] - j[0][1] * r[1]) / det
            dv = (-j[1][0] * r[0] + j[0][0] * r[1]) / det
            u, v = u - du, v - dv
            if np.all(np.hypot(du, dv) * 1e3 < tol):
                break
        return u * 1e3 + self.centre[0], v * 1e3 + self.centre[1]


def _sky_to_detector(wcsinfo, poly, ra, dec):
    """0-based detector positions of RA, Dec (deg) through the WCS of ``wcsinfo`` (exact)."""
    m = _attitude_matrix(*(wcsinfo[k] for k in ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref")))
    lon, lat = _to_radec(m.T @ _unit_vector(ra, dec))
    return poly.from_v2v3(((lon + 180.0) % 360.0 - 180.0) * 3600.0, lat * 3600.0)


def _near_stars(tree, wcsinfo, shape):
    """Indices of the stars within the circle around a detector (a k-d tree of unit vectors)."""
    ny, nx = shape
    radius = np.deg2rad((0.55 * np.hypot(nx, ny) * PIXEL_SCALE + 5.0) / 3600.0)
    centre = _unit_vector(wcsinfo["ra_ref"], wcsinfo["dec_ref"])
    return np.sort(np.asarray(tree.query_ball_point(centre, 2.0 * np.sin(radius / 2.0)), dtype=np.int64))


def _tile_sources(wcsinfo, poly, stars, near, shape, maglim, max_sources, edge=2.0):
    """The stars a detection would keep: inside the detector (``edge`` px from its
    border), brighter than ``maglim``, the ``max_sources`` brightest first.

    Returns
    -------
    index : numpy.ndarray
        Star indices.
    x, y : numpy.ndarray
        Their exact 0-based pixel positions through the TRUE WCS (``wcsinfo``, ``poly``).
    """
    ra_s, dec_s, mag = stars
    near = near[mag[near] < maglim]
    x, y = _sky_to_detector(wcsinfo, poly, ra_s[near], dec_s[near])
    ny, nx = shape
    inside = (x >= edge) & (x <= nx - 1 - edge) & (y >= edge) & (y <= ny - 1 - edge)
    order = np.argsort(mag[near][inside], kind="stable")[:max_sources]
    return near[inside][order], x[inside][order], y[inside][order]


def _tile_catalog(name, index, x, y, mag, file_wcs, noise):
    """The catalog of one tile as the detect job writes it (``ra``/``dec`` through the file WCS)."""
    from astropy.table import Table


    flux = _star_flux(mag[index])
    # centroid noise falls as 1/sqrt(flux) (photon noise): `noise` holds it at the catalog's median flux
    scale = np.sqrt(np.median(flux) / flux) if len(flux) else flux
    # peak: the central pixel of the synthetic PSF holds ~16% of the flux
    cat = Table({"id": np.arange(1, len(index) + 1, dtype=np.int64), "x": x + noise[0] * scale, "y": y + noise[1] * scale, "flux": flux, "peak": 0.16 * flux})
    cat.meta["image"] = name
    cat["ra"], cat["dec"] = det_to_world(file_wcs, np.asarray(cat["x"]), np.asarray(cat["y"]))
    cat["ra"].unit = cat["dec"].unit = "deg"
    return cat


def _write_tile(paths, cat, doc, file_wcs, shape):
    """Write a tile's catalog and image sidecar (with its ``sky``) as the detect job does."""

    gid = resolve_group_id(doc["observation"], None, doc["asn_group_id"], fallback=doc["filename"])
    sky = {"group_id": gid, "footprints": [np.column_stack(footprint_world(file_wcs, shape, edges=True))]}
    write_catalog(cat, paths[0], "ascii.ecsv")
    write_image_sidecar(paths[1], doc, sky=sky)


def _tile_doc(outdir, name, wcsinfo, obs, shape, blob):
    """The image sidecar document of a tile (`tweakflow.io.image_sidecar_doc` of an image without pixels)."""

    meta = {"filename": name, "observation": obs, "date": f"{obs['date']}T{obs['time']}"}
    im = ImageData(path=os.path.join(outdir, name), kind="jwst", data=None, dq=None, wcs=None, wcsinfo=wcsinfo, meta=meta, shape=tuple(shape), wcs_blob=blob)
    return image_sidecar_doc(im, None)


def make_catalog_mosaic(outdir, cfg: SyntheticConfig | None = None, *, maglim=MOSAIC_DETECTION_MAGLIM, centroid_noise=0.03, max_sources=200):
    """Write a mosaic as the detect jobs' outputs only: catalogs and image sidecars, no pixels.

    The images are those `make_dataset` would write for ``cfg`` (same star
    field, true and file WCSs, names; any ``columns x rows`` grid, e.g.
    32 x 32): for each, what the workflow's ``detect_sources`` job writes,

    - ``catalogs/<stem>_cat.ecsv``: ``id``, ``x``, ``y`` (0-based pixels:
      the stars' exact positions through the TRUE WCS, plus
      ``centroid_noise`` px of Gaussian noise per axis at the median flux,
      scaling as 1/sqrt(flux)), ``flux``
      (electrons, as `make_dataset` renders the star), ``peak`` (16% of
      it), and ``ra``, ``dec`` (deg) of ``x``, ``y`` through the FILE
      WCS; the stars a detection keeps: inside the detector, brighter than
      ``maglim``, the ``max_sources`` brightest;
    - ``sidecars/<stem>_meta.json``: the image sidecar (the image's ASDF
      tree ``meta.wcs``, ``wcsinfo``, ``observation``, ``filename``) with
      its ``sky`` (the resolved group id: one group per exposure; the
      detector's footprint through the file WCS).

    Also ``truth.asdf`` (`load_catalog_mosaic_truth`) and ``refcat.ecsv``
    (the stars brighter than ``cfg.refcat_maglim``, ``cfg.refcat_noise``
    mas of noise). ~10 ms per image (1,000 images of 1024 x 1024 px: ~10 s,
    ~30 MB).

    Parameters
    ----------
    outdir : str
    cfg : SyntheticConfig or None
        With a ``grid``; default `SyntheticConfig.mosaic` ().
    maglim : float
        Faintest magnitude detected (default: as many sources as the
        default detection finds on the synthetic images).
    centroid_noise : float
        Gaussian noise (pixels, per axis) of the catalog positions of a
        source of the catalog's median flux; it scales as 1/sqrt(flux), as
        a detection's centroid error does.
    max_sources : int
        Most sources per catalog (the brightest; the detection's ``brightest``).

    Returns
    -------
    dict
        ``catalogs``, ``sidecars``, ``names`` (lists, in `exposure_filenames`
        order), ``truth``, ``refcat`` (paths).
    """
    import asdf
    from astropy.time import Time, TimeDelta
    from scipy.spatial import cKDTree

    cfg = cfg or SyntheticConfig.mosaic()
    if cfg.grid is None:
        raise ValueError("make_catalog_mosaic needs a SyntheticConfig with a grid (see SyntheticConfig.mosaic)")
    for sub in ("catalogs", "sidecars"):
        os.makedirs(os.path.join(outdir, sub), exist_ok=True)
    stars, attitudes = _field(cfg)
    tree = cKDTree(_unit_vector(stars[0], stars[1]).T)
    dcoeffs = _all_distortion_coeffs(cfg.seed)
    names, cells = exposure_filenames(cfg), grid_positions(cfg)
    times = (Time(cfg.date, scale="utc") + TimeDelta(600.0 * np.arange(cfg.n_exposures), format="sec")).isot
    out = {"catalogs": [], "sidecars": [], "names": names}
    truth = {"kind": "catalog_mosaic", "config": _config_tree(cfg), "shape": list(cfg.shape), "distortion": {}, "tiles": {}}
    truth["catalog"] = {"maglim": float(maglim), "centroid_noise": float(centroid_noise), "max_sources": int(max_sources)}
    models, polys, templates, star_index = {}, {}, {}, []
    k = nrows = 0
    for iexp, att in enumerate(attitudes):
        obs = _observation(cfg, iexp, times[iexp])
        for det in cfg.detectors:
            true_info, err_info = _detector_wcsinfo(att["true"], det), _detector_wcsinfo(att["error"], det)
            if det not in models:
                models[det] = _distortion(cfg.shape, true_info["v2_ref"], true_info["v3_ref"], true_info["v3yangle"], dcoeffs[det])
                polys[det] = _DetectorPolynomial(cfg.shape, true_info, dcoeffs[det])
                templates[det] = _BlobTemplate(models[det], cfg.shape, err_info, obs)
                truth["distortion"][det] = dcoeffs[det]
            file_wcs = _jwst_gwcs(cfg.shape, models[det], err_info)
            near = _near_stars(tree, true_info, cfg.shape)
            index, x, y = _tile_sources(true_info, polys[det], stars, near, cfg.shape, maglim, max_sources)
            noise = np.random.default_rng([cfg.seed, 3000 + k]).normal(0.0, centroid_noise, (2, len(index)))
            cat = _tile_catalog(names[k], index, x, y, stars[2], file_wcs, noise)
            doc = _tile_doc(outdir, names[k], err_info, obs, cfg.shape, templates[det].fill(err_info, names[k], obs))
            stem = output_stem(names[k])
            paths = (os.path.join(outdir, "catalogs", f"{stem}_cat.ecsv"), os.path.join(outdir, "sidecars", f"{stem}_meta.json"))
            _write_tile(paths, cat, doc, file_wcs, cfg.shape)
            out["catalogs"].append(paths[0])
            out["sidecars"].append(paths[1])
            truth["tiles"][names[k]] = {
                "detector": det, "exposure": iexp, "grid": list(cells[k]), "wcsinfo": true_info, "file_wcsinfo": err_info,
                "shift_v2": att["shift_v2"], "shift_v3": att["shift_v3"], "roll_arcsec": att["roll_arcsec"],
                "rows": [nrows, nrows + len(index)],
            }
            star_index.append(index)
            nrows += len(index)
            k += 1
    truth["star_index"] = np.concatenate(star_index) if star_index else np.zeros(0, np.int64)
    truth["stars"] = {"ra": stars[0], "dec": stars[1], "mag": stars[2]}
    out["truth"] = os.path.join(outdir, "truth.asdf")
    with atomic_output(out["truth"]) as tmp:
        asdf.AsdfFile(truth).write_to(tmp)
    out["refcat"] = _write_refcat(outdir, stars[0], stars[1], stars[2], cfg.refcat_maglim, cfg.refcat_noise, cfg.seed)
    return out


def load_catalog_mosaic_truth(path):
    """Read the ``truth.asdf`` of `make_catalog_mosaic`.

    The true WCSs are rebuilt from the true ``wcsinfo`` of each image and
    the distortion of its detector (built once per detector and shared).

    Returns
    -------
    dict
        ``wcs`` (name -> true gwcs), ``errors`` (name -> ``shift_v2``,
        ``shift_v3``, ``roll_arcsec``, ``exposure``, ``grid``),
        ``star_index`` (name -> index in ``stars`` of each catalog row, in
        ``id`` order), ``stars`` (`astropy.table.Table`: ra, dec, mag),
        ``file_wcsinfo`` (name -> the file's ``wcsinfo``), ``catalog``
        (``maglim``, ``centroid_noise``, ``max_sources``), ``config``.
    """
    import asdf
    from astropy.table import Table

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        t = af.tree
        shape = tuple(int(n) for n in t["shape"])
        coeffs = {d: {a: dict(c) for a, c in v.items()} for d, v in t["distortion"].items()}
        tiles = {n: dict(v) for n, v in t["tiles"].items()}
        index = np.array(t["star_index"])
        stars = Table({k: np.array(t["stars"][k]) for k in ("ra", "dec", "mag")})
        extra = {"catalog": dict(t["catalog"]), "config": dict(t["config"])}
    models = {}
    out = {"wcs": {}, "errors": {}, "star_index": {}, "file_wcsinfo": {}, "stars": stars, **extra}
    for name, tile in tiles.items():
        info, det = dict(tile["wcsinfo"]), tile["detector"]
        if det not in models:
            models[det] = _distortion(shape, info["v2_ref"], info["v3_ref"], info["v3yangle"], coeffs[det], info.get("vparity", -1))
        out["wcs"][name] = _jwst_gwcs(shape, models[det], info)
        out["errors"][name] = {k: tile[k] for k in ("shift_v2", "shift_v3", "roll_arcsec", "exposure")}
        out["errors"][name]["grid"] = tuple(int(v) for v in tile["grid"])
        out["star_index"][name] = index[slice(*(int(v) for v in tile["rows"]))]
        out["file_wcsinfo"][name] = dict(tile["file_wcsinfo"])
    return out


# ---------------------------------------------------------------------------
# Plain FITS-WCS images (HST/ground-like), with known truth
# ---------------------------------------------------------------------------


def _unit_vector(ra, dec):
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _to_radec(v):
    v = np.asarray(v, dtype=float)
    ra = np.rad2deg(np.arctan2(v[1], v[0])) % 360.0
    dec = np.rad2deg(np.arctan2(v[2], np.hypot(v[0], v[1])))
    return ra, dec


def _axis_rotation(axis, angle):
    """3x3 matrix of a right-handed rotation by ``angle`` (rad) about ``axis``."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) * np.cos(angle) + np.sin(angle) * kx + (1 - np.cos(angle)) * np.outer(k, k)


def _east_north(ra, dec):
    """Unit vectors pointing east and north at (ra, dec)."""
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    east = np.array([-np.sin(ra), np.cos(ra), 0.0])
    north = np.array([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    return east, north


def _tangent_offset(ra0, dec0, xi, eta):
    """Sky position (deg) at standard coordinates (xi, eta) (arcsec) about (ra0, dec0)."""
    east, north = _east_north(ra0, dec0)
    v = _unit_vector(ra0, dec0) + np.deg2rad(xi / 3600.0) * east + np.deg2rad(eta / 3600.0) * north
    return _to_radec(v / np.linalg.norm(v))


def pointing_error_rotation(ra0, dec0, dxi, deta, droll):
    """Sky rotation of a pointing error about (ra0, dec0).

    A roll of ``droll`` arcsec about the pointing axis, then the shift that
    moves the pointing by (``dxi``, ``deta``) arcsec on its tangent plane.

    Returns
    -------
    numpy.ndarray
        3x3 rotation matrix acting on unit vectors.
    """
    p = _unit_vector(ra0, dec0)
    roll = _axis_rotation(p, np.deg2rad(droll / 3600.0))
    t = _unit_vector(*_tangent_offset(ra0, dec0, dxi, deta))
    axis = np.cross(p, t)
    if np.linalg.norm(axis) == 0:
        return roll
    return _axis_rotation(axis, np.arctan2(np.linalg.norm(axis), np.dot(p, t))) @ roll


def rotate_fits_wcs(wcs, rot):
    """The TAN(-SIP) FITS WCS ``rot`` o ``wcs`` (exact: the sky rotated by ``rot``).

    A rotation of the sphere maps the tangent plane at CRVAL isometrically
    onto the tangent plane at the rotated CRVAL, turned by the angle between
    the rotated and the local north: so the new WCS has the rotated CRVAL,
    the CD matrix turned by that angle, and the same SIP.
    """
    out = wcs.deepcopy()
    ra0, dec0 = wcs.wcs.crval
    c = _unit_vector(ra0, dec0)
    rc = rot @ c
    ra1, dec1 = _to_radec(rc)
    east0, _ = _east_north(ra0, dec0)
    east1, north1 = _east_north(ra1, dec1)
    re = rot @ east0
    phi = np.arctan2(np.dot(re, north1), np.dot(re, east1))
    m = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    out.wcs.crval = [ra1, dec1]
    if wcs.wcs.has_cd():
        out.wcs.cd = m @ wcs.wcs.cd
    else:  # PC + CDELT: keep CDELT, turn PC
        cdelt = np.diag(wcs.wcs.cdelt)
        out.wcs.pc = np.linalg.inv(cdelt) @ m @ cdelt @ wcs.wcs.pc
    out.wcs.set()
    return out


def _sip_coeffs(rng, order, amplitude, radius):
    """Random SIP A/B matrices, terms of order 2..``order``.

    Each term is about ``amplitude`` pixels at ``radius`` pixels from CRPIX.
    """
    a = np.zeros((order + 1, order + 1))
    b = np.zeros((order + 1, order + 1))
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q >= 2:
                a[p, q] = rng.normal(0, amplitude / radius ** (p + q))
                b[p, q] = rng.normal(0, amplitude / radius ** (p + q))
    return a, b


def make_lookup_tables(rng, shape, d2im_amplitude=0.3, npol_amplitude=0.15, d2im_block=64, npol_cells=64):
    """HST-like lookup-table distortions of one chip (`astropy.wcs.DistortionLookupTable`).

    D2IM, as ACS/WFC's: a correction of x only that depends on the column,
    constant over blocks of ``d2im_block`` columns and jumping from block to
    block by up to ``d2im_amplitude`` pixels (one table entry per column:
    astropy interpolates linearly between entries, so each jump is a ramp
    one pixel wide). NPOL: smooth x and y corrections on a coarse grid of
    ``npol_cells`` cells along x (65 x 33 nodes for a 1024 x 512 chip, as
    ACS/WFC's 65 x 33 for 4096 x 2048), a few sinusoids of periods a
    quarter to a whole chip -- not a low-order polynomial, so neither SIP
    nor the fit can absorb them -- scaled to ``npol_amplitude`` pixels at most.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        (ny, nx) of the chip.
    d2im_amplitude, npol_amplitude : float
        Largest correction (pixels); 0 leaves that kind out.

    Returns
    -------
    dict
        ``det2im1``, ``det2im2``, ``cpdis1``, ``cpdis2`` (None when absent).
    """
    from astropy.wcs import DistortionLookupTable

    ny, nx = shape
    out = {"det2im1": None, "det2im2": None, "cpdis1": None, "cpdis2": None}
    if d2im_amplitude:
        nblock = -(-nx // d2im_block)
        steps = rng.uniform(-d2im_amplitude / 2, d2im_amplitude / 2, nblock)
        col = np.repeat(steps - steps.mean(), d2im_block)[:nx]
        # entry k is pixel k + 1 (1-based), as astropy evaluates the tables
        out["det2im1"] = DistortionLookupTable(col[np.newaxis, :].astype(np.float32), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    if npol_amplitude:
        step = nx / float(npol_cells)
        nyg, nxg = round(ny / step) + 1, npol_cells + 1
        crpix, crval = ((nxg + 1) / 2.0, (nyg + 1) / 2.0), ((nx + 1) / 2.0, (ny + 1) / 2.0)
        gy, gx = np.mgrid[0:nyg, 0:nxg] * step
        for axis in (1, 2):
            field = np.zeros((nyg, nxg))
            for _ in range(3):
                kx, ky = 2 * np.pi / (max(nx, ny) * rng.uniform(0.25, 1.0, 2))
                field += np.sin(kx * gx + ky * gy + rng.uniform(0, 2 * np.pi))
            field *= npol_amplitude / np.max(np.abs(field))
            out[f"cpdis{axis}"] = DistortionLookupTable(field.astype(np.float32), crpix, crval, (step, step))
    return out


def lookup_table_hdus(wcs, extvers):
    """The lookup tables of a chip WCS as an HST file carries them.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        With ``det2im1/2`` and/or ``cpdis1/2``.
    extvers : dict
        ``{"D2IMARR": n, "WCSDVARR": m}``: the EXTVERs already used in the
        file (updated): each chip's tables get the next ones, as chip 2 of
        an ACS/WFC file refers to ``WCSDVARR`` 3 and 4.

    Returns
    -------
    cards : list of tuple
        ``(keyword, value, comment)`` for the chip header: ``D2IMDISj``,
        ``D2IMj.*``, ``CPDISj``, ``DPj.*`` (record-valued) and the errors
        ``D2IMERRj``/``CPERRj`` (largest correction), as astropy's
        ``WCS.to_fits`` writes them but with the file's EXTVERs.
    hdus : list of astropy.io.fits.ImageHDU
        The ``D2IMARR``/``WCSDVARR`` extensions to append to the file.
    """
    hl = wcs.to_fits(relax=True)
    renum = {}
    hdus = []
    for hdu in hl[1:]:
        extvers[hdu.name] = extvers.get(hdu.name, 0) + 1
        renum[(hdu.name, hdu.ver)] = extvers[hdu.name]
        hdu.ver = extvers[hdu.name]
        hdus.append(hdu)
    cards = []
    for c in hl[0].header.cards:
        key = c.keyword
        if not key.startswith(("D2IMDIS", "D2IM", "CPDIS", "DP")):
            continue
        value = c.value
        if key.endswith(".EXTVER"):
            value = renum[("D2IMARR" if key.startswith("D2IM") else "WCSDVARR", int(value))]
        cards.append((key, value, c.comment))
    for kind, err in (("det2im", "D2IMERR"), ("cpdis", "CPERR")):
        for j in (1, 2):
            table = getattr(wcs, f"{kind}{j}")
            if table is not None:
                cards.append((f"{err}{j}", float(np.max(np.abs(table.data))), "Maximum error of the lookup table (pixels)"))
    return cards, hdus


def make_fits_chip_wcs(shape, crval, pa, pixel_scale, sip=None, matrix="CD", tables=None):
    """A TAN (or TAN-SIP) FITS WCS for one chip, optionally with lookup tables.

    Parameters
    ----------
    shape : tuple of int
        (ny, nx); CRPIX is the chip centre.
    crval : tuple of float
        (RA, Dec) of the chip centre (deg).
    pa : float
        Position angle of the chip's +y axis (deg, east of north).
    pixel_scale : float
        arcsec / pixel.
    sip : tuple of numpy.ndarray or None
        SIP ``(A, B)`` forward matrices; None: plain TAN.
    matrix : str
        ``"CD"`` or ``"PC"`` (PC + CDELT) in the header.
    tables : dict or None
        Lookup-table distortions (`make_lookup_tables`): ``det2im1``,
        ``det2im2``, ``cpdis1``, ``cpdis2``.

    Returns
    -------
    astropy.wcs.WCS
    """
    from astropy.wcs import WCS, Sip

    ny, nx = shape
    w = WCS(naxis=2)
    sfx = "-SIP" if sip is not None else ""
    w.wcs.ctype = ["RA---TAN" + sfx, "DEC--TAN" + sfx]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.crval = list(crval)
    s = pixel_scale / 3600.0
    t = np.deg2rad(pa)
    cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    if matrix == "PC":
        w.wcs.cdelt = [s, s]
        w.wcs.pc = cd / s
    else:
        w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    if sip is not None:
        w.sip = Sip(sip[0], sip[1], None, None, w.wcs.crpix)
    for name, table in (tables or {}).items():
        setattr(w, name, table)
    w.wcs.set()
    w.pixel_shape = (nx, ny)
    return w


def _fits_wcs_header(w, matrix):
    """Header cards of a chip WCS in the CD or PC form (SIP included)."""
    h = w.to_header(relax=True)
    for k in ("MJDREF", "DATEREF", "MJD-OBS", "DATE-OBS"):
        h.remove(k, ignore_missing=True)
    if matrix == "CD":
        cd = w.wcs.cd if w.wcs.has_cd() else np.diag(w.wcs.cdelt) @ w.wcs.pc
        for k in ("CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            h.remove(k, ignore_missing=True)
        for i in range(2):
            for j in range(2):
                h[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    if w.sip is not None:
        # full precision (astropy writes SIP with fewer digits)
        for name, arr in (("A", w.sip.a), ("B", w.sip.b)):
            for p in range(arr.shape[0]):
                for q in range(arr.shape[1]):
                    if p + q >= 2 and arr[p, q] != 0:
                        h[f"{name}_{p}_{q}"] = float(arr[p, q])
    return h


def make_fits_dataset(
    outdir,
    n_single=2,
    n_multi=2,
    single_shape=(384, 384),
    chip_shape=(192, 384),
    chip_gap=12,
    pixel_scale=0.1,
    n_stars=900,
    seed=11,
    ra=150.1,
    dec=2.2,
    shift_error=(0.3, 1.5),
    rotation_error=60.0,
    refcat_noise=5.0,
    refcat_maglim=21.5,
    date="2025-01-10T05:00:00",
    lookup_tables=False,
    d2im_amplitude=0.3,
    npol_amplitude=0.15,
):
    """Write plain FITS-WCS images with known true WCSs into ``outdir``.

    ``n_single`` one-chip files alternate between an image in the primary
    HDU with a TAN WCS (CD matrix, unsigned 16-bit data with BZERO) and an
    image in a ``SCI`` extension with a TAN-SIP WCS (PC + CDELT).
    ``n_multi`` HST-like two-chip files (``mc{i}_flt.fits``) hold
    ``SCI``/``ERR``/``DQ`` extensions for chips 1 and 2 (TAN-SIP, CD
    matrix), the chips stacked along y with a gap, hot pixels flagged in DQ.
    With ``lookup_tables`` every TAN-SIP chip also has HST-like lookup-table
    distortions (`make_lookup_tables`: D2IM steps up to ``d2im_amplitude``
    px, NPOL up to ``npol_amplitude`` px), written as ACS/WFC files carry
    them (`lookup_table_hdus`: ``D2IMARR``/``WCSDVARR`` extensions after the
    chips, ``D2IMDISj``/``CPDISj``/``D2IMj``/``DPj`` keywords in the chip
    headers, ``D2IMFILE``/``NPOLFILE`` in the primary header); the truth
    includes them.

    Each file has its own pointing (a dither of a few arcsec and a few
    degrees of roll) and a pointing error: a rigid rotation of the sky
    (roll up to ``rotation_error`` arcsec about the pointing, then a shift
    in ``shift_error`` arcsec) shared by the chips of the file, so the file
    WCSs are exactly the true WCSs with that rotation applied
    (`rotate_fits_wcs`; the tables, in detector pixels, are the same).
    Stars are rendered at the true positions (the full true WCS inverted
    iteratively to 1e-9 px, `astropy.wcs.WCS.all_world2pix`). Seeded:
    the same arguments give byte-identical files.

    Returns
    -------
    dict
        ``images`` (list of paths), ``truth`` (``truth.asdf``: ``images``
        maps each file name to the list of true chip WCSs, ``errors`` to
        its pointing error (``pointing``, ``shift_xi``, ``shift_eta``,
        ``roll_arcsec``: `pointing_error_rotation` arguments); ``stars``), ``refcat`` (``refcat.ecsv``, RA/DEC
        with ``refcat_noise`` mas of noise), ``chips`` (file name -> list of
        (EXTNAME, EXTVER)).
    """
    import asdf
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng([seed, 5151])
    half = 0.5 * max(max(single_shape), 2 * chip_shape[0] + chip_gap, chip_shape[1]) * pixel_scale * 1.5 + 20.0
    ra_s, dec_s, mag = _star_field(rng, ra, dec, half, n_stars)
    flux = 10 ** (-0.4 * (mag - 25.0)) * 400.0
    t0 = Time(date, scale="utc")

    plan = [("single", i) for i in range(n_single)] + [("multi", i) for i in range(n_multi)]
    truth = {"images": {}, "errors": {}, "chips": {}}
    images = []
    for k, (kind, i) in enumerate(plan):
        frng = np.random.default_rng([seed, 6000 + k])
        # pointing: dither of a few arcsec, roll of a few degrees
        ang, rad = 2.4 * k, (3.0 + 2.0 * k) if k else 0.0
        pra, pdec = _tangent_offset(ra, dec, rad * np.cos(ang), rad * np.sin(ang))
        pa = 12.0 + 3.0 * k
        smin, smax = shift_error
        amp, phi = frng.uniform(smin, smax), frng.uniform(0, 2 * np.pi)
        dxi, deta = amp * np.cos(phi), amp * np.sin(phi)
        droll = frng.uniform(-rotation_error, rotation_error)
        rot = pointing_error_rotation(pra, pdec, dxi, deta, droll)
        tstart = t0 + TimeDelta(900.0 * k, format="sec")

        if kind == "single":
            name = f"sc{i + 1}.fits"
            tan_only = i % 2 == 0
            layout = [("PRIMARY" if tan_only else "SCI", 1, single_shape, (0.0, 0.0))]
            matrix = "CD" if tan_only else "PC"
        else:
            name = f"mc{i + 1}_flt.fits"
            dy = (chip_shape[0] + chip_gap) / 2.0 * pixel_scale
            # chip 1 below chip 2 on the chip y axis
            layout = [("SCI", 1, chip_shape, (0.0, -dy)), ("SCI", 2, chip_shape, (0.0, dy))]
            matrix = "CD"
            tan_only = False
        chips_true, chips_file, hdus, table_hdus, extvers = [], [], [], [], {}
        phdr = fits.Header()
        if kind == "multi":
            phdr["FILENAME"] = (name, "name of file")
        phdr["TELESCOP"] = "SYNTH"
        phdr["DATE-OBS"] = tstart.isot[:10]
        phdr["TIME-OBS"] = tstart.isot[11:]
        phdr["EXPNAME"] = f"exp{k + 1:03d}"
        with_tables = lookup_tables and not tan_only
        if with_tables:
            phdr["D2IMFILE"] = ("synth$d2im_d2i.fits", "detector to image correction table")
            phdr["NPOLFILE"] = ("synth$npol_npl.fits", "non-polynomial distortion tables")
        for c, (extname, extver, shape, (ox, oy)) in enumerate(layout):
            # chip centre offset (arcsec) along the chip axes, rotated by pa
            t = np.deg2rad(pa)
            xi = -ox * np.cos(t) + oy * np.sin(t)
            eta = ox * np.sin(t) + oy * np.cos(t)
            crval = _tangent_offset(pra, pdec, xi, eta)
            sip = None if tan_only else _sip_coeffs(np.random.default_rng([seed, 7000 + 10 * k + c]), 3, 1.5, 0.5 * max(shape))
            tables = None
            if with_tables:
                trng = np.random.default_rng([seed, 9000 + 10 * k + c])
                tables = make_lookup_tables(trng, shape, d2im_amplitude, npol_amplitude)
            true_w = make_fits_chip_wcs(shape, crval, pa + 0.05 * c, pixel_scale, sip=sip, matrix=matrix, tables=tables)
            file_w = rotate_fits_wcs(true_w, rot)
            # render stars at exact pixel positions of the TRUE wcs
            ny, nx = shape
            cra, cdec = crval
            sep = np.hypot(((ra_s - cra + 180) % 360 - 180) * np.cos(np.deg2rad(cdec)), dec_s - cdec) * 3600
            near = sep < 0.75 * max(nx, ny) * pixel_scale + 5
            xs, ys = true_w.all_world2pix(ra_s[near], dec_s[near], 0, tolerance=1e-9, maxiter=100)
            inside = (xs > -10) & (xs < nx + 9) & (ys > -10) & (ys < ny + 9)
            img_rng = np.random.default_rng([seed, 8000 + 10 * k + c])
            sky = 30.0
            model_img = sky + _render_stars(shape, xs[inside], ys[inside], flux[near][inside], fwhm=2.5)
            data = img_rng.poisson(model_img).astype(np.float64) + img_rng.normal(0.0, 5.0, size=shape)
            hdr = _fits_wcs_header(file_w, matrix)
            if kind == "multi":
                hdr["WCSNAME"] = "SYNTH-ORIG"
            hdr["BUNIT"] = "ELECTRONS"
            if with_tables:
                cards, chip_tables = lookup_table_hdus(true_w, extvers)
                hdr["D2IMEXT"] = phdr["D2IMFILE"]
                hdr["NPOLEXT"] = phdr["NPOLFILE"]
                for key, value, comment in cards:
                    hdr[key] = (value, comment)
                table_hdus.extend(chip_tables)
            if extname == "PRIMARY":
                arr = np.clip(np.round(data + 1000.0), 0, 65535).astype(np.uint16)
                ph = fits.PrimaryHDU(arr, header=phdr)
                ph.header.extend(hdr)
                hdus.append(ph)
            else:
                if not hdus:
                    hdus.append(fits.PrimaryHDU(header=phdr))
                sci = fits.ImageHDU((data - sky).astype(np.float32), header=hdr, name=extname, ver=extver)
                hdus.append(sci)
                if kind == "multi":
                    nbad = int(0.0005 * nx * ny)
                    bx, by = img_rng.integers(0, nx, nbad), img_rng.integers(0, ny, nbad)
                    sci.data[by, bx] = img_rng.uniform(5e3, 5e4, nbad).astype(np.float32)
                    dq = np.zeros(shape, dtype=np.int16)
                    dq[by, bx] = 16
                    err = np.sqrt(np.maximum(model_img, 0) + 25.0).astype(np.float32)
                    hdus.append(fits.ImageHDU(err, name="ERR", ver=extver))
                    hdus.append(fits.ImageHDU(dq, name="DQ", ver=extver))
            chips_true.append(true_w)
            chips_file.append((extname, extver))
        path = os.path.join(outdir, name)
        with atomic_output(path) as tmp:
            fits.HDUList(hdus + table_hdus).writeto(tmp, output_verify="exception")
        images.append(path)
        truth["images"][name] = chips_true
        truth["chips"][name] = [list(x) for x in chips_file]
        truth["errors"][name] = {
            "shift_xi": float(dxi),
            "shift_eta": float(deta),
            "roll_arcsec": float(droll),
            "pointing": [float(pra), float(pdec)],
            "exposure": k,
        }

    truth["stars"] = {"ra": ra_s, "dec": dec_s, "mag": mag}
    truth_path = os.path.join(outdir, "truth.asdf")
    with atomic_output(truth_path) as tmp:
        asdf.AsdfFile(truth).write_to(tmp)

    ref_path = _write_refcat(outdir, ra_s, dec_s, mag, refcat_maglim, refcat_noise, seed)
    return {"images": images, "truth": truth_path, "refcat": ref_path, "chips": truth["chips"]}
