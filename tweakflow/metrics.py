"""Accuracy of a WCS against the truth, in milliarcseconds.

Used by tests and benchmarks: each WCS is evaluated on a grid of pixels over
its detector and compared with the true WCS on a common tangent plane.
"""

from __future__ import annotations

import numpy as np

from .geometry import gnomonic

__all__ = ["wcs_offsets", "absolute_errors", "relative_errors"]


def _grid(shape, n=16):
    ny, nx = shape
    y, x = np.mgrid[0 : ny - 1 : complex(n), 0 : nx - 1 : complex(n)]
    return x.ravel(), y.ravel()


def wcs_offsets(wcs, true_wcs, shape, n=16, center=None):
    """Tangent-plane positions (arcsec) of a pixel grid through both WCSs.

    Returns
    -------
    got, true : numpy.ndarray
        (N, 2) arrays of (xi, eta) in arcsec on a plane about ``center``
        (default: the true position of the grid's first point).
    """
    x, y = _grid(shape, n)
    ra, dec = wcs(x, y, with_bounding_box=False)
    rat, dect = true_wcs(x, y, with_bounding_box=False)
    if center is None:
        center = (float(rat[0]), float(dect[0]))
    got = 3600.0 * np.column_stack(gnomonic(ra, dec, *center))
    true = 3600.0 * np.column_stack(gnomonic(rat, dect, *center))
    return got, true


def absolute_errors(wcs_list, true_list, shapes, n=16):
    """RMS (mas) over each detector of the distance between WCS and truth."""
    out = []
    for w, t, s in zip(wcs_list, true_list, shapes):
        got, true = wcs_offsets(w, t, s, n)
        out.append(1000.0 * float(np.sqrt(np.mean(np.sum((got - true) ** 2, axis=1)))))
    return np.array(out)


def relative_errors(wcs_list, true_list, shapes, n=16):
    """RMS (mas) per image after removing one rigid shift+rotation common to all.

    The common transformation is the least-squares rotation + shift that
    maps the positions of all images together onto the truth (on one
    tangent plane), i.e. what an absolute alignment of the whole set would
    still have to fix; what remains is the relative misalignment.
    """
    center = None
    gots, trues = [], []
    for w, t, s in zip(wcs_list, true_list, shapes):
        x, y = _grid(s, n)
        if center is None:
            r, d = t(x[:1], y[:1], with_bounding_box=False)
            center = (float(np.atleast_1d(r)[0]), float(np.atleast_1d(d)[0]))
        g, tr = wcs_offsets(w, t, s, n, center=center)
        gots.append(g)
        trues.append(tr)
    G = np.vstack(gots)
    T = np.vstack(trues)
    gm, tm = G.mean(axis=0), T.mean(axis=0)
    # Kabsch (2-D): rotation R minimising |R (G - gm) - (T - tm)|
    H = (G - gm).T @ (T - tm)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, d]) @ U.T
    out = []
    for g, tr in zip(gots, trues):
        res = (R @ (g - gm).T).T + tm - tr
        out.append(1000.0 * float(np.sqrt(np.mean(np.sum(res**2, axis=1)))))
    return np.array(out)
