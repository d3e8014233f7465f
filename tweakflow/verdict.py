"""The run's verdict: a few lines a person reads at the end of a run.

Built from ``tweakreg_summary.ecsv`` (and, for the demo, ``demo_accuracy.ecsv``):
how many images ended ``COMPLETE``, ``SKIPPED`` or ``FAILED``, one line per
group (or per troubled group, in large runs), and for the demo how far the
corrected WCSs are from the synthetic truth, said plainly. The same lines end
the console of a run (``onsuccess`` in the Snakefile), open the report's first
page and are written to ``{output_dir}/verdict.txt``.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["verdict_lines", "accuracy_line", "transfer_line", "read_verdict", "written_since", "MAX_GROUP_LINES"]

#: Runs with more groups list only the groups that are not all COMPLETE.
MAX_GROUP_LINES = 12

_STATUSES = ("COMPLETE", "SKIPPED", "FAILED")


def _status_counts(status):
    """``"6 COMPLETE, 2 SKIPPED"``: the statuses present, in `_STATUSES` order."""
    status = np.asarray(status).astype(str)
    return ", ".join(f"{int(np.sum(status == s))} {s}" for s in _STATUSES if np.any(status == s))


def written_since(path, since):
    """Whether ``path`` exists and was written at or after ``since`` (a time stamp)."""
    try:
        return since is None or os.path.getmtime(path) >= since
    except OSError:
        return False


def _finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _group_line(group, rows, absolute):
    """One group: its status and its fit (matches, RMS, shift, rotation)."""
    first = rows[0]
    statuses = sorted({str(r["status"]) for r in rows})
    n = len(rows)
    head = f"  {group} ({n} image{'s' if n != 1 else ''}): {'/'.join(statuses)}"
    reason = "" if np.ma.is_masked(first["reason"]) else str(first["reason"])
    if statuses != ["COMPLETE"]:
        troubled = next(r for r in rows if str(r["status"]) != "COMPLETE")
        return f"{head}: {troubled['reason']}"
    if reason == "alignment reference":
        head += ", the relative alignment's reference"
    elif _finite(first["rms_mas"]) is not None:
        head += (
            f", {int(first['n_used'])} matches, RMS {float(first['rms_mas']):.2f} mas, "
            f"shift ({float(first['xshift']):+.3f}, {float(first['yshift']):+.3f}) arcsec, "
            f"rotation {float(first['rotation']):+.4f} deg"
        )
    if absolute and _finite(first["abs_rms_mas"]) is not None:
        head += f"; absolute RMS {float(first['abs_rms_mas']):.2f} mas"
    return head


def _group_lines(summary, absolute):
    groups = {}
    for row in summary:
        groups.setdefault(str(row["group_id"]), []).append(row)
    items = list(groups.items())
    if len(items) > MAX_GROUP_LINES:
        troubled = [(g, rows) for g, rows in items if any(str(r["status"]) != "COMPLETE" for r in rows)]
        shown = troubled[:MAX_GROUP_LINES]
        lines = [_group_line(g, rows, absolute) for g, rows in shown]
        rest = len(items) - len(shown)
        lines.append(f"  ... {rest} more group(s){' all COMPLETE' if len(troubled) <= MAX_GROUP_LINES else ''}: "
                     "see tweakreg_summary.ecsv")
        return lines
    return [_group_line(g, rows, absolute) for g, rows in items]


def verdict_lines(summary, accuracy=None):
    """The verdict of a finished run.

    Parameters
    ----------
    summary : astropy.table.Table
        ``tweakreg_summary.ecsv``.
    accuracy : astropy.table.Table or None
        ``demo_accuracy.ecsv`` (the demo only).

    Returns
    -------
    list of str
    """
    absolute = "abs_status" in summary.colnames
    counts = _status_counts(summary["status"])
    n_groups = len(set(np.asarray(summary["group_id"]).astype(str)))
    stage = "relative + absolute alignment" if absolute else "relative alignment only: no abs_refcat"
    lines = [f"tweakflow verdict: {len(summary)} images in {n_groups} groups: {counts} ({stage})"]
    lines += _group_lines(summary, absolute)
    if accuracy is not None:
        lines.append(accuracy_line(accuracy, absolute))
    return lines


def accuracy_line(accuracy, absolute):
    """The demo's accuracy against the synthetic truth, in one plain sentence."""
    rel = float(np.max(accuracy["output_relative_mas"]))
    rel_in = float(np.max(accuracy["input_relative_mas"]))
    abs_out = float(np.max(accuracy["output_absolute_mas"]))
    abs_in = float(np.max(accuracy["input_absolute_mas"]))
    text = (
        f"demo accuracy against the synthetic truth: images aligned to each other within {rel:.2f} mas "
        f"(inputs up to {rel_in:.0f} mas)"
    )
    if absolute:
        return text + f"; on the sky within {abs_out:.2f} mas of the truth (inputs up to {abs_in:.0f} mas)"
    return (
        text + f"; no absolute fit in this run (abs_refcat off), so the set keeps the reference group's "
        f"pointing error: {abs_out:.0f} mas from the truth on the sky"
    )


def transfer_line(summary, folder):
    """The closing line of ``snakemake transfer``: how many images were corrected, and where.

    Parameters
    ----------
    summary : astropy.table.Table
        ``transfer/transfer_summary.ecsv``.
    folder : str
        Where the corrected images are.
    """
    counts = _status_counts(summary["status"]) if len(summary) else ""
    return f"tweakflow transfer: {len(summary)} images with the run's solutions ({counts or 'none'}) in {folder}/"


def read_verdict(path, since=None):
    """The lines of a ``verdict.txt``; [] if it is absent or older than ``since`` (a time stamp)."""
    if not written_since(path, since):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except OSError:
        return []
