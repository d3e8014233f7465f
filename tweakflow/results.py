"""Result tables and statuses: what every stage reports, in one place.

A stage reports one *solution row* per image (`fit_row`; the columns of
`SOLUTION_COLUMNS`, then the optional `QUALITY_COLUMNS`), one *attempt row*
per image and alignment attempt (`ATTEMPT_COLUMNS`) and one *match row* per
matched source pair of a fit (`match_table`, `MATCH_COLUMNS`). The final
status of an image after both stages is `final_status`; the grades of an
absolute fit are `GRADES`; the summary's columns are `SUMMARY_FIT_COLUMNS`
and `SUMMARY_QUALITY_COLUMNS`, and one image's summary row is
`summary_record` of its solution rows (`table_rows`), which the WCS
sidecars keep (`storable_row`) for the products' metadata.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
from astropy.table import Table

__all__ = [
    "SOLUTION_COLUMNS",
    "QUALITY_COLUMNS",
    "ATTEMPT_COLUMNS",
    "MATCH_COLUMNS",
    "SUMMARY_FIT_COLUMNS",
    "SUMMARY_QUALITY_COLUMNS",
    "TOO_FEW_MATCHES",
    "GRADES",
    "SerializedWCS",
    "fit_row",
    "rows_to_table",
    "with_quality_columns",
    "attempt_table",
    "columns_table",
    "final_status",
    "table_rows",
    "storable_row",
    "restored_row",
    "summary_record",
    "solution_message",
    "match_table",
    "empty_match_table",
]


#: Columns of a solution table (one row per image and alignment stage).
SOLUTION_COLUMNS = [
    ("image", str),
    ("group_id", str),
    ("stage", str),
    ("status", str),
    ("reason", str),
    ("fitgeom", str),
    ("n_sources", int),
    ("n_matches", int),
    ("n_used", int),
    ("rms_mas", float),
    ("mae_mas", float),
    ("xshift", float),
    ("yshift", float),
    ("rotation", float),
    ("scale", float),
    ("skew", float),
]


#: Optional per-image columns of a solution table (added by the quality-gated
#: relative alignment; absent from tables of stages that do not set them).
QUALITY_COLUMNS = [
    ("image_n_matches", int, 0),
    ("image_n_used", int, 0),
    ("image_rms_mas", float, math.nan),
    ("match_fraction", float, math.nan),
    ("fit_error_mas", float, math.nan),
    ("chance_log10p", float, math.nan),
    ("attempt", int, 0),
    ("n_attempts", int, 0),
    ("recovery", str, ""),
    ("grade", int, 0),
]


#: Columns of the table of alignment attempts (one row per image and attempt).
ATTEMPT_COLUMNS = [
    ("image", str),
    ("group_id", str),
    ("pass_no", int),
    ("attempt", int),
    ("searchrad", float),
    ("use2dhist", bool),
    ("fitgeom", str),
    ("n_images", int),
    ("fit", str),
    ("passed", bool),
    ("chosen", bool),
    ("n_matches", int),
    ("n_used", int),
    ("rms_mas", float),
    ("match_fraction", float),
    ("fit_error_mas", float),
    ("chance_log10p", float),
    ("image_n_used", int),
    ("image_match_fraction", float),
    ("xshift", float),
    ("yshift", float),
    ("rotation", float),
    ("scale", float),
    ("reason", str),
]


#: tweakwcs' reason for a fit not made: fewer than ``minobj`` matches.
TOO_FEW_MATCHES = "not enough matches"


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


#: Fit columns of a stage's solution table copied into the summary (those of
#: the absolute stage prefixed ``abs_``, without ``n_sources``).
SUMMARY_FIT_COLUMNS = ("n_sources", "n_matches", "n_used", "rms_mas", "mae_mas", "xshift", "yshift", "rotation", "scale", "skew", "fitgeom")

#: Per-image fit statistics and recovery record copied into the summary when a
#: stage's table has them (quality-gated alignment).
SUMMARY_QUALITY_COLUMNS = (
    "image_n_matches", "image_n_used", "image_rms_mas", "match_fraction", "fit_error_mas", "chance_log10p",
    "attempt", "n_attempts", "recovery", "grade",
)


#: Grades of an absolute fit (summary column ``abs_grade``).
GRADES = {
    1: "the configured fit passed every quality gate",
    2: "a recovery attempt passed every quality gate",
    3: "not aligned relatively: aligned to the reference catalog on its own",
    4: "every fit was rejected by the quality gates: relative alignment kept",
    5: "no fit could be made: relative alignment kept",
}


class SerializedWCS:
    """A corrected WCS kept serialized in memory until it is written.

    A corrected GWCS takes ~0.45 MB as Python objects and ~70 KB pickled
    (1-2 ms each way, the same transforms after the round trip): kept this
    way, the WCSs of thousands of aligned images do not add up in the
    gather step's memory.
    """

    __slots__ = ("_blob",)

    def __init__(self, wcs):
        self._blob = pickle.dumps(wcs, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self):
        """The WCS object (a new one at each call)."""
        return pickle.loads(self._blob)


def fit_row(name, group_id, stage, status, reason="", fit_info=None, n_sources=0, tp_scale=1.0):
    """One solution-table row from a tweakwcs ``fit_info``.

    ``tp_scale`` is the arcsec per tangent-plane unit (`tangent_plane_scale`):
    RMS, MAE and shifts are reported in arcsec (mas) for every image kind.
    """
    row = {
        "image": name,
        "group_id": str(group_id),
        "stage": stage,
        "status": status,
        "reason": reason or "",
        "fitgeom": "",
        "n_sources": int(n_sources),
        "n_matches": 0,
        "n_used": 0,
        "rms_mas": math.nan,
        "mae_mas": math.nan,
        "xshift": 0.0,
        "yshift": 0.0,
        "rotation": 0.0,
        "scale": 1.0,
        "skew": 0.0,
    }
    fi = fit_info or {}
    if fi.get("status") == "SUCCESS":
        row.update(
            fitgeom=str(fi.get("fitgeom", "")),
            n_matches=int(fi.get("nmatches", 0)),
            n_used=int(np.count_nonzero(fi.get("fitmask", []))),
            rms_mas=1000.0 * tp_scale * float(fi["rmse"]),
            mae_mas=1000.0 * tp_scale * float(fi["mae"]),
            xshift=tp_scale * float(fi["shift"][0]),
            yshift=tp_scale * float(fi["shift"][1]),
            rotation=float(fi["<rot>"]),
            scale=float(fi["<scale>"]),
            skew=float(fi["skew"]),
        )
    return row


def rows_to_table(rows):
    """Solution rows -> `astropy.table.Table`.

    The `SOLUTION_COLUMNS`, then each of the `QUALITY_COLUMNS` that any row
    has (rows without it get its default).
    """
    cols = {}
    for name, typ in SOLUTION_COLUMNS:
        vals = [r[name] for r in rows]
        cols[name] = np.array(vals, dtype=typ if typ is not str else "U")
    for name, typ, default in QUALITY_COLUMNS:
        if any(name in r for r in rows):
            vals = [r.get(name, default) for r in rows]
            cols[name] = np.array(vals, dtype=typ if typ is not str else "U")
    return Table(cols)


def with_quality_columns(rows):
    """Every row with every `QUALITY_COLUMNS` entry (its default where unset)."""
    for r in rows:
        for name, _, default in QUALITY_COLUMNS:
            r.setdefault(name, default)
    return rows


def columns_table(columns, rows):
    """Rows (dicts) -> `astropy.table.Table` with the ``(name, type)`` ``columns``, in order (an empty table keeps them)."""
    cols = {}
    for name, typ in columns:
        vals = [r[name] for r in rows]
        cols[name] = np.array(vals, dtype=typ if typ is not str else "U") if vals else np.array([], dtype=typ if typ is not str else "U1")
    return Table(cols)


def attempt_table(records):
    """Attempt rows (dicts with the `ATTEMPT_COLUMNS`) -> `astropy.table.Table`."""
    return columns_table(ATTEMPT_COLUMNS, records)


def final_status(rel_status, rel_reason, abs_status, abs_reason):
    """Status and reason of an image after both stages.

    ``COMPLETE`` when the absolute solution was applied; otherwise the image
    keeps its relative result, and a failed absolute fit is said so.
    """
    if abs_status == "COMPLETE":
        return "COMPLETE", abs_reason
    if abs_status == "FAILED":
        return rel_status, f"absolute alignment failed ({abs_reason}); relative alignment kept"
    return rel_status, rel_reason


def _python_value(value):
    """A table cell as a Python scalar (``str``, ``int``, ``float``, ``bool``)."""
    return value.item() if hasattr(value, "item") else value


def table_rows(tab):
    """The rows of a table as dicts of Python scalars, in column order."""
    names = tab.colnames
    return [{name: _python_value(row[name]) for name in names} for row in tab]


def storable_row(row):
    """A solution row for a WCS sidecar: NaN as None.

    None compares equal to None, NaN never does: sidecars of identical
    alignments then compare equal (`restored_row` undoes it).
    """
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def restored_row(row):
    """A solution row read back from a WCS sidecar (`storable_row`): None as NaN."""
    return {k: math.nan if v is None else v for k, v in row.items()}


def summary_record(stage_rows):
    """One image's row of the summary table (``tweakreg_summary.ecsv``).

    Parameters
    ----------
    stage_rows : list of dict
        The image's solution rows (`table_rows` of the solution tables), in
        the order of the stages: the relative (or global) stage's, then the
        absolute stage's if there was one.

    Returns
    -------
    dict
        ``image``, ``group_id``, the final ``status`` and ``reason``
        (`final_status`), the first stage's `SUMMARY_FIT_COLUMNS` and those
        of its `SUMMARY_QUALITY_COLUMNS` the row has; for an absolute stage
        ``abs_status`` and its fit columns (without ``n_sources``) and
        quality columns prefixed ``abs_``.
    """
    rel = stage_rows[0]
    out = {"image": rel["image"], "group_id": rel["group_id"], "status": rel["status"], "reason": rel["reason"]}
    for row in stage_rows:
        pre = "abs_" if row["stage"] == "absolute" else ""
        if pre:
            out["status"], out["reason"] = final_status(out["status"], out["reason"], row["status"], row["reason"])
            out["abs_status"] = row["status"]
        out.update({pre + col: row[col] for col in SUMMARY_FIT_COLUMNS if not (pre and col == "n_sources")})
        out.update({pre + col: row[col] for col in SUMMARY_QUALITY_COLUMNS if col in row})
    return out


def solution_message(row):
    """One line saying what a stage did for an image (its solution row), for logs.

    ``<image> [<group>]: <stage> fit <fitgeom> ...`` with the statistics
    of the fit when there was one, else ``<image> [<group>]: <stage>
    <status> <reason>``.
    """
    head = f"{row['image']} [{row['group_id']}]: {row['stage']}"
    if row["stage"] != "absolute" and row.get("n_sources"):
        head += f", {row['n_sources']} sources"
    if not row.get("fitgeom"):
        return f"{head}: {row['status']} {row['reason']}".rstrip()
    text = (
        f"{head}: {row['status']}, fit {row['fitgeom']}: {row['n_used']} of {row['n_matches']} matches used, "
        f"shift ({row['xshift']:.6f}, {row['yshift']:.6f}) arcsec, rotation {row['rotation']:.6g} deg, "
        f"scale {row['scale']:.9f}, skew {row['skew']:.3g}, RMS {row['rms_mas']:.3f} mas, MAE {row['mae_mas']:.3f} mas"
    )
    if row.get("grade"):
        text += f", grade {row['grade']} ({GRADES.get(row['grade'], '?')})"
    if row.get("recovery"):
        text += f", recovered: {row['recovery']}"
    return text + (f"; {row['reason']}" if row["reason"] else "")


def empty_match_table():
    """A matches table with no rows."""
    return Table({name: np.zeros(0, dtype=typ if typ is not str else "U1") for name, typ in MATCH_COLUMNS})


def _per_source(value, n, dtype):
    if value is None:
        return np.full(n, np.nan if dtype is float else "", dtype=dtype if dtype is not str else "U1")
    arr = np.asarray(value)
    if arr.ndim == 0:
        if dtype is str:
            return np.full(n, str(arr.item()), dtype=f"U{max(len(str(arr.item())), 1)}")
        return np.full(n, arr.item(), dtype=arr.dtype)
    return arr


def match_table(fit_info, ref_xy, im_xy, *, image, x=None, y=None, group_id="", stage="relative", tp_scale=1.0, accepted=True, pair_columns=None):
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
        scale for FITS-WCS correctors, see `tweakflow.geometry.tangent_plane_scale`).
    accepted : bool
        Whether the fit was accepted (False: a fit the quality gates
        rejected, kept to show what it matched).
    pair_columns : dict, optional
        Extra columns, one value per matched pair (in the order of
        ``matched_input_idx``), appended as they are; the relative stage
        adds ``ref_image``, ``ref_x`` and ``ref_y`` (the image and detector
        position of each pair's reference source).

    Returns
    -------
    astropy.table.Table
        `MATCH_COLUMNS`: ``tp_x``, ``tp_y`` (arcsec) the source's position
        after the fit; ``d*_before`` = input - reference and ``d*_after`` =
        fitted input - reference (mas).
    """
    ri = np.asarray(fit_info["matched_ref_idx"], dtype=int)
    ii = np.asarray(fit_info["matched_input_idx"], dtype=int)
    n, m = len(ii), len(np.asarray(im_xy).reshape(-1, 2))
    fitted, before, after = _pair_residuals(fit_info, ref_xy, im_xy, ri, ii, tp_scale)

    def per_pair(value, dtype):
        if not n:
            return np.zeros(0, "U1" if dtype is str else float)
        return np.asarray(_per_source(value, m, dtype)[ii], dtype="U" if dtype is str else float)

    tab = Table(
        {
            "stage": np.array([stage] * n, dtype=f"U{max(len(stage), 1)}"),
            "image": per_pair(image, str),
            "group_id": per_pair(group_id, str),
            "x": per_pair(x, float),
            "y": per_pair(y, float),
            "tp_x": tp_scale * fitted[:, 0],
            "tp_y": tp_scale * fitted[:, 1],
            "dx_before": before[:, 0],
            "dy_before": before[:, 1],
            "dx_after": after[:, 0],
            "dy_after": after[:, 1],
            "used": np.asarray(fit_info.get("fitmask", np.ones(n, bool)), dtype=bool),
            "accepted": np.full(n, bool(accepted)),
        }
    )
    for name, values in (pair_columns or {}).items():
        tab[name] = np.asarray(values)
    for name, unit in {**_UNITS, "ref_x": "pix", "ref_y": "pix"}.items():
        if name in tab.colnames:
            tab[name].unit = unit
    return tab


def _pair_residuals(fit_info, ref_xy, im_xy, ri, ii, tp_scale):
    """Fitted positions of the pairs' input sources (tangent-plane units), and
    their offsets from the reference before and after the fit (mas)."""
    ref = np.asarray(ref_xy, dtype=float).reshape(-1, 2)[ri]
    src = np.asarray(im_xy, dtype=float).reshape(-1, 2)[ii]
    fitted = np.asarray(fit_info["shift"], dtype=float) + src @ np.asarray(fit_info["matrix"], dtype=float).T
    return fitted, 1000.0 * tp_scale * (src - ref), 1000.0 * tp_scale * (fitted - ref)


