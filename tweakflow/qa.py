"""Quality-assessment tables and plots, from alignment results only.

`match_table` turns a fit (tweakwcs ``fit_info`` or the absolute fit's)
into one row per matched source pair: where the source is, how far it was
from its reference counterpart before the fit and after it, and whether the
fit used it. The plots read these tables, the solution tables and the WCS
sidecars; they never read pixel data. Matplotlib is imported only by the
plotting functions (``Agg`` backend, PNG files).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

__all__ = [
    "MATCH_COLUMNS",
    "match_table",
    "empty_match_table",
]

#: Columns of a matches table (one row per matched source pair).
MATCH_COLUMNS = [
    ("stage", str),
    ("image", str),
    ("group_id", str),
    ("x", float),
    ("y", float),
    ("tp_x", float),
    ("tp_y", float),
    ("dx_before", float),
    ("dy_before", float),
    ("dx_after", float),
    ("dy_after", float),
    ("used", bool),
    ("accepted", bool),
]

_UNITS = {"x": "pix", "y": "pix", "tp_x": "arcsec", "tp_y": "arcsec", "dx_before": "mas", "dy_before": "mas", "dx_after": "mas", "dy_after": "mas"}


def empty_match_table():
    """A matches table with no rows."""
    return Table({name: np.zeros(0, dtype=typ if typ is not str else "U1") for name, typ in MATCH_COLUMNS})


def _per_source(value, n, dtype):
    if value is None:
        return np.full(n, np.nan if dtype is float else "", dtype=dtype if dtype is not str else "U1")
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr.item(), dtype=arr.dtype if dtype is not str else "U")
    return arr


def match_table(fit_info, ref_xy, im_xy, *, image, x=None, y=None, group_id="", stage="relative", tp_scale=1.0, accepted=True):
    """One row per matched source pair of a fit.

    Parameters
    ----------
    fit_info : dict
        The fit: ``matched_ref_idx`` and ``matched_input_idx`` (indices of
        the pairs in ``ref_xy`` and ``im_xy``), ``fitmask`` (per pair: used
        in the fit), ``matrix`` (2x2) and ``shift`` (2,) of the fitted
        transformation ``ref = shift + matrix @ im``, in tangent-plane units
        (tweakwcs ``fit_info`` has all of these).
    ref_xy : array-like, shape (N, 2)
        Tangent-plane positions of the reference catalog's sources.
    im_xy : array-like, shape (M, 2)
        Tangent-plane positions of the input catalog's sources before the
        fit, in the same plane.
    image : str or array-like of str, shape (M,)
        Name of the image each input source belongs to (a single name for
        all, e.g. ``"combined"`` for an absolute fit's combined catalog).
    x, y : array-like, shape (M,), optional
        Detector positions (pixels) of the input sources (NaN if omitted).
    group_id : str or array-like of str, shape (M,)
    stage : str
        ``relative`` or ``absolute``.
    tp_scale : float
        Arcsec per tangent-plane unit (1 for JWST correctors; the pixel
        scale for FITS-WCS correctors, see `tweakflow.align.tangent_plane_scale`).
    accepted : bool
        Whether the fit was accepted (False: a fit the quality gates
        rejected, kept to show what it matched).

    Returns
    -------
    astropy.table.Table
        `MATCH_COLUMNS`: ``tp_x``, ``tp_y`` (arcsec) the source's position
        after the fit; ``d*_before`` = input - reference and ``d*_after`` =
        fitted input - reference (mas).
    """
    ri = np.asarray(fit_info["matched_ref_idx"], dtype=int)
    ii = np.asarray(fit_info["matched_input_idx"], dtype=int)
    n = len(ii)
    ref_xy = np.asarray(ref_xy, dtype=float).reshape(-1, 2)
    im_xy = np.asarray(im_xy, dtype=float).reshape(-1, 2)
    mask = np.asarray(fit_info.get("fitmask", np.ones(n, bool)), dtype=bool)
    matrix = np.asarray(fit_info["matrix"], dtype=float)
    shift = np.asarray(fit_info["shift"], dtype=float)
    ref = ref_xy[ri]
    src = im_xy[ii]
    fitted = shift + src @ matrix.T
    before = 1000.0 * tp_scale * (src - ref)
    after = 1000.0 * tp_scale * (fitted - ref)
    m = len(im_xy)
    names = _per_source(image, m, str)[ii] if n else np.zeros(0, "U1")
    gids = _per_source(group_id, m, str)[ii] if n else np.zeros(0, "U1")
    xs = _per_source(x, m, float)[ii] if n else np.zeros(0)
    ys = _per_source(y, m, float)[ii] if n else np.zeros(0)
    tab = Table(
        {
            "stage": np.full(n, stage, dtype="U"),
            "image": np.asarray(names, dtype="U"),
            "group_id": np.asarray(gids, dtype="U"),
            "x": np.asarray(xs, dtype=float),
            "y": np.asarray(ys, dtype=float),
            "tp_x": tp_scale * fitted[:, 0],
            "tp_y": tp_scale * fitted[:, 1],
            "dx_before": before[:, 0],
            "dy_before": before[:, 1],
            "dx_after": after[:, 0],
            "dy_after": after[:, 1],
            "used": mask,
            "accepted": np.full(n, bool(accepted)),
        }
    )
    for name, unit in _UNITS.items():
        tab[name].unit = unit
    return tab
