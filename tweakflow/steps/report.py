"""Report steps: the summary table, the demo's accuracy against the truth, the verdict.

The plots and pages of the QA report are `tweakflow.qa`'s steps.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from astropy.table import Table

from ..atomic import write_text
from ..catalogs import read_table, write_catalog
from ..metrics import absolute_errors, relative_errors
from ..results import summary_record, table_rows
from ..synthetic import load_truth
from ..verdict import verdict_lines

__all__ = ["summary_step", "demo_accuracy_step", "verdict_step"]

log = logging.getLogger("tweakflow")


def summary_step(solution_tables, output):
    """Merge the per-stage solution tables into ``tweakreg_summary.ecsv``.

    One row per image (`tweakflow.results.summary_record`, which the
    products' ``meta.tweakflow`` also holds): the final status and reason,
    the relative fit's statistics, and (with absolute alignment) the
    absolute fit's, prefixed ``abs_``.
    """
    stages = [table_rows(read_table(p)) for p in solution_tables]
    out = Table(rows=[summary_record(list(rows)) for rows in zip(*stages)])
    write_catalog(out, output)
    return out


def demo_accuracy_step(outputs, inputs, truth, output):
    """The demo's proof: each output WCS against the synthetic truth (mas).

    ``relative_mas`` is the RMS over the detector after removing the one
    rigid shift + rotation common to all images (what an absolute fit would
    still fix); ``absolute_mas`` the RMS with nothing removed. Both are also
    given for the input WCSs.
    """
    from stdatamodels.jwst.datamodels import ImageModel


    true_wcs, _ = load_truth(truth)
    cols = {"image": [], "status": []}
    sets = {"in": [], "out": []}
    shapes, names = [], []
    for pin, pout in zip(inputs, outputs):
        name = os.path.basename(pin)
        with ImageModel(pout) as m:
            sets["out"].append(m.meta.wcs)
            cols["status"].append(str(m.meta.cal_step.tweakreg))
            shapes.append(m.data.shape)
        with ImageModel(pin) as m:
            sets["in"].append(m.meta.wcs)
        names.append(name)
        cols["image"].append(name)
    tl = [true_wcs[n] for n in names]
    tab = Table(cols)
    for key, label in (("in", "input"), ("out", "output")):
        tab[f"{label}_relative_mas"] = relative_errors(sets[key], tl, shapes)
        tab[f"{label}_absolute_mas"] = absolute_errors(sets[key], tl, shapes)
    for row in tab:
        log.info(
            "%s %s: relative %.3f mas (input %.1f), absolute %.3f mas (input %.1f)",
            row["image"], row["status"], row["output_relative_mas"], row["input_relative_mas"],
            row["output_absolute_mas"], row["input_absolute_mas"],
        )
    log.info(
        "demo accuracy against the truth: worst relative error %.3f mas (inputs: %.0f mas), worst absolute %.3f mas",
        float(np.max(tab["output_relative_mas"])), float(np.min(tab["input_relative_mas"])), float(np.max(tab["output_absolute_mas"])),
    )
    write_catalog(tab, output)


def verdict_step(summary, output, accuracy=None):
    """Write the run's verdict (`tweakflow.verdict.verdict_lines`) to ``output``.

    Parameters
    ----------
    summary : str
        ``tweakreg_summary.ecsv``.
    output : str
        ``verdict.txt``: the lines the console ends with and the report opens with.
    accuracy : str or None
        ``demo_accuracy.ecsv`` (the demo only).

    Returns
    -------
    list of str
    """
    lines = verdict_lines(read_table(summary), read_table(accuracy) if accuracy else None)
    write_text(output, "\n".join(lines) + "\n")
    for line in lines:
        log.info("%s", line)
    return lines

