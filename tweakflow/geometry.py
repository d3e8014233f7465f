"""WCS geometry: image kinds, sky positions, footprints, tangent planes, polygons.

The one home of the geometric conventions every stage shares: which WCS an
image has (`wcs_kind`), how detector positions reach the sky
(`det_to_world`), where an image's corners are (`footprint_world`), how sky
positions enter a tangent plane (`to_tangent_plane`, `gnomonic`) and which
points fall inside which polygons (`inside_any`).

Pixel conventions: detector positions are 0-based, pixel centres at
integers. `footprint_world` gives the centres of the corner pixels (the
extent of the sources an image can hold, used by the fits) or, with
``edges=True``, the outer edges of the detector (what a plot or a catalog
query should cover).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = [
    "wcs_kind",
    "tangent_plane_scale",
    "det_to_world",
    "footprint_world",
    "to_tangent_plane",
    "gnomonic",
    "mean_direction",
    "unit_vectors",
    "angle_between",
    "enclosing_cone",
    "in_polygon",
    "inside_any",
]


def wcs_kind(wcs):
    """``"fits"`` for an `astropy.wcs.WCS` (plain FITS image), else ``"jwst"`` (GWCS)."""
    from astropy.wcs import WCS

    return "fits" if isinstance(wcs, WCS) else "jwst"


def tangent_plane_scale(wcs_list):
    """Arcsec per unit of the tangent plane tweakwcs fits in.

    JWST correctors work in arcsec (1.0); FITS-WCS correctors in the pixels
    of the reference image: their median pixel scale is returned (exact when
    the images share a pixel scale, as the images of one dataset do).
    Matching radii are divided by it and fit results multiplied by it, so
    parameters and solution tables stay in arcsec for both kinds.

    Raises
    ------
    InputError
        If JWST and plain FITS-WCS images are mixed (their tangent planes
        have different units: tweakwcs cannot align them together).
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    kinds = {wcs_kind(w) for w in wcs_list}
    if len(kinds) > 1:
        raise InputError("cannot align JWST (GWCS) and plain FITS-WCS images in one run: align them separately")
    if kinds != {"fits"}:
        return 1.0
    return float(np.median([3600.0 * np.mean(proj_plane_pixel_scales(w)) for w in wcs_list]))


def det_to_world(wcs, x, y, with_bounding_box=True):
    """RA, DEC (deg) of 0-based detector positions through a GWCS or an astropy WCS.

    What a tweakwcs corrector's ``det_to_world`` gives for that WCS, without
    building a corrector (each deep-copies its WCS: ~30 ms for a GWCS). An
    astropy WCS goes through its full distortion (SIP and lookup tables,
    ``all_pix2world``); ``with_bounding_box`` applies to a GWCS only (an
    astropy WCS has no bounding box).
    """
    if wcs_kind(wcs) == "fits":
        ra, dec = wcs.all_pix2world(x, y, 0)
    else:
        ra, dec = wcs(x, y, with_bounding_box=with_bounding_box)
    return np.asarray(ra, float), np.asarray(dec, float)


def footprint_world(wcs, shape, *, edges=False):
    """RA, DEC (deg) of the four corners of a detector of ``shape`` (ny, nx).

    Parameters
    ----------
    wcs : gwcs.WCS or astropy.wcs.WCS
    shape : tuple
        The detector's shape (the last two values are used).
    edges : bool
        False: the centres of the corner pixels, through the WCS as the fits
        use it (a GWCS with its bounding box). True: the outer pixel edges
        of a GWCS (bounding box ignored), and the corner-pixel centres of
        an astropy WCS as `astropy.wcs.WCS.calc_footprint` orders them:
        what the QA plots draw.

    Returns
    -------
    ra, dec : numpy.ndarray
    """
    ny, nx = (int(v) for v in shape[-2:])
    if not edges:
        x = np.array([0.0, nx - 1.0, nx - 1.0, 0.0])
        y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0])
        return det_to_world(wcs, x, y)
    if wcs_kind(wcs) == "fits":
        corners = np.asarray(wcs.calc_footprint(axes=(nx, ny)), float)
        return corners[:, 0], corners[:, 1]
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return det_to_world(wcs, x, y, with_bounding_box=False)


def to_tangent_plane(tpwcs, radec):
    """(N, 2) positions in the tangent plane of a tweakwcs corrector of ``radec`` = (RA, DEC) in deg."""
    x, y = tpwcs.world_to_tanp(*radec)
    return np.c_[np.asarray(x, float), np.asarray(y, float)]


def gnomonic(ra, dec, ra0, dec0):
    """Gnomonic projection (deg) of RA, DEC (deg) about (ra0, dec0): (xi, eta)."""
    ra, dec, ra0, dec0 = (np.deg2rad(np.asarray(v, float)) for v in (ra, dec, ra0, dec0))
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.rad2deg(xi), np.rad2deg(eta)


def mean_direction(ra, dec):
    """RA, DEC (deg) of the mean of the unit vectors of the given directions."""
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    v = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=1)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))


def unit_vectors(ra, dec):
    """(N, 3) unit vectors of RA, DEC (deg)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def angle_between(vectors, direction):
    """Angles (rad) between (N, 3) unit vectors and one unit vector.

    atan2(|a x b|, a.b): accurate for tiny and large angles alike.
    """
    return np.arctan2(np.linalg.norm(np.cross(vectors, direction), axis=-1), vectors @ direction)


def enclosing_cone(ra, dec):
    """Centre (unit vector) and radius (rad) of a cone enclosing the directions RA, DEC (deg).

    The centre is the normalised mean of their unit vectors (directions
    across RA = 0/360 are handled), the radius the largest angle from it;
    None when the directions surround the whole sky (no single centre).
    """
    vec = unit_vectors(ra, dec)
    mean = vec.mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-9:
        return None
    centre = mean / norm
    return centre, float(angle_between(vec, centre).max())


def in_polygon(px, py, poly):
    """Points inside a polygon (ray casting); ``poly`` is (N, 2)."""
    px = np.asarray(px, float)
    py = np.asarray(py, float)
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for k in range(n):
        x1, y1 = poly[k]
        x2, y2 = poly[(k + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        xcross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xcross)
    return inside


def inside_any(px, py, polys):
    """Finite points inside at least one of the (N, 2) polygons ``polys``."""
    inside = np.zeros(np.shape(px), dtype=bool)
    for poly in polys:
        inside |= in_polygon(px, py, poly)
    return inside & np.isfinite(px) & np.isfinite(py)
