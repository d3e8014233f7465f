"""The report: quality-assessment plots and pages, from alignment results only.

The plots read the matches tables (`tweakflow.results.match_table`: one
row per matched source pair, its residuals before and after the fit), the
solution tables and the WCS sidecars; they never read pixel data. Matplotlib is imported only by the
plotting functions, which are thread-safe: object-oriented API only (a
`matplotlib.figure.Figure` on its own Agg canvas, PNG files), never pyplot.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
from astropy.table import Table

from .atomic import atomic_output, write_text
from .catalogs import read_table
from .geometry import footprint_world
from .io import chip_label, read_sidecar, wcs_sidecar_stem
from .results import empty_match_table
from .verdict import read_verdict

__all__ = [
    "plot_image_residuals",
    "plot_footprints",
    "plot_overview",
    "plot_absolute",
    "plot_overlaps",
    "summary_html",
    "attempts_html",
    "config_html",
    "run_record_html",
    "qa_images_step",
    "qa_plots_step",
    "qa_absolute_step",
    "qa_overlaps_step",
    "qa_tables_step",
]

log = logging.getLogger("tweakflow")


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------
#
# Thread-safe: every figure is a `matplotlib.figure.Figure` on its own Agg
# canvas, never pyplot (whose figure manager and current figure are global);
# nothing here changes rcParams, and no text goes through mathtext (whose
# parser is one object shared by all threads). The layouts are fixed
# margins in inches, sized from the texts that vary (headers, tick labels,
# legends) where needed, instead of a layout engine (constrained or tight
# layout measure every text of the figure several times).

#: Edge colour and line style of a footprint by fit status.
STATUS_STYLE = {
    "COMPLETE": {"edgecolor": "#1a7f37", "linestyle": "-", "hatch": None},
    "SKIPPED": {"edgecolor": "#d97706", "linestyle": "--", "hatch": "//"},
    "FAILED": {"edgecolor": "#b91c1c", "linestyle": ":", "hatch": "xx"},
}

#: Resolution of the PNGs (pixels per inch).
_DPI = 110
#: PNG options: zlib level 1 encodes about twice as fast as the default (6), for files of about the same size.
_PNG_OPTIONS = {"compress_level": 1}


def _figure(width, height):
    """A figure (size in inches) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Save a figure as PNG atomically."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, pil_kwargs=dict(_PNG_OPTIONS))


def _text_size(fig, text, size):
    """Width and height (inches) of a one-line text drawn on ``fig``."""
    from matplotlib.font_manager import FontProperties

    w, h, _ = fig.canvas.get_renderer().get_text_width_height_descent(str(text), FontProperties(size=size), ismath=False)
    return w / fig.dpi, h / fig.dpi


def short_names(names):
    """Names without their common prefix and the ``_cal.fits`` / ``.fits`` suffix."""
    names = [str(n) for n in names]
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""  # noqa: RUF071 (a string prefix, cut back below)
    # keep whole tokens: cut the prefix back to its last separator
    cut = max(prefix.rfind("_"), prefix.rfind("-")) + 1 if prefix else 0
    out = []
    for n in names:
        s = n[cut:]
        for suf in ("_cal.fits", ".fits"):
            if s.endswith(suf):
                s = s[: -len(suf)]
                break
        out.append(s or n)
    return out


def _nice(value):
    """A round number (1, 2 or 5 times a power of ten) close to ``value``."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10**exp >= value * 0.7:
            return m * 10**exp
    return 10.0 ** (exp + 1)


def _fmt_mas(value):
    return f"{value / 1000:g} arcsec" if value >= 1000 else f"{value:g} mas"


def _quiver(ax, x, y, dx, dy, used, extent, label):
    """Residual vectors on the detector (or sky) with a key arrow.

    The key arrow is a round value near the 90th percentile of the used
    residuals; vectors longer than four times it are drawn shortened to
    that length, in another colour, so that a few outliers do not hide the
    pattern of the others. One quiver (and one marker line) per set of
    vectors.
    """
    size = max(abs(extent[1] - extent[0]), abs(extent[3] - extent[2]))
    dx, dy = np.asarray(dx, float), np.asarray(dy, float)
    length = np.hypot(dx, dy)
    ref = float(np.percentile(length[used], 90)) if np.any(used) else float(np.max(length, initial=1.0))
    key = _nice(ref)
    cap = 4.0 * key
    long = length > cap
    shrink = np.where(long, cap / np.where(length > 0, length, 1.0), 1.0)
    dx, dy = dx * shrink, dy * shrink
    scale = key / (0.08 * size)  # residual units per axis unit: the key arrow is 8% of the field
    kw = dict(angles="xy", scale_units="xy", scale=scale, width=0.004, headwidth=3.5, headlength=4.5)
    q = None
    labelled = False
    for sel, colour, lab in (
        (used & ~long, "#1f3b73", None),
        (used & long, "#7c3aed", f"used, longer than {_fmt_mas(cap)} (shortened)"),
        (~used, "#c2410c", "clipped from the fit"),
    ):
        if not np.any(sel):
            continue
        qq = ax.quiver(x[sel], y[sel], dx[sel], dy[sel], color=colour, **kw)
        q = q if q is not None else qq
        if lab:
            ax.plot(x[sel], y[sel], "o" if colour == "#7c3aed" else "x", color=colour, ms=4, mfc="none", label=f"{int(sel.sum())} {lab}")
            labelled = True
    if labelled:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    if q is not None:
        ax.quiverkey(q, 0.97, 1.035, key, _fmt_mas(key), labelpos="W", coordinates="axes", fontproperties={"size": 8})
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.locator_params(nbins=6)  # 0, 500, ... 2000 pixels: readable, and half the tick artists (and texts) of the default
    ax.set_aspect("equal")
    ax.set_title(label, fontsize=10, loc="left", y=1.0)


def _plain_number(value, pos=None):
    """A tick label of a log axis as a plain number (1000, 0.01)."""
    return f"{value:g}"


def _log_xaxis(ax, lo, hi):
    """Log x axis from ``lo`` to ``hi`` (at least two decades) labelled with plain numbers, not mathtext powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if math.log10(hi / lo) > 3:
        # minor ticks at 2 and 5 only over more than three decades (each tick is a costly artist)
        ax.xaxis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))


def _log_hist(ax, before, after, title):
    """Histogram of residual lengths (mas) before and after the fit, log axis."""
    vals = [v for v in (before, after) if len(v)]
    if not vals:
        ax.text(0.5, 0.5, "no matched sources", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    allv = np.concatenate(vals)
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo = max(float(np.min(allv, initial=0.01)), 1e-2) / 1.5
    hi = float(np.max(allv, initial=1.0)) * 1.5
    bins = np.geomspace(lo, hi, 40)
    if len(before):
        # one filled outline, not one bar per bin
        ax.hist(before, bins=bins, histtype="stepfilled", color="#9ca3af", alpha=0.8, label=f"before: median {np.median(before):.3g} mas")
    if len(after):
        ax.hist(after, bins=bins, histtype="step", lw=2, color="#1f3b73", label=f"after: median {np.median(after):.3g} mas")
    _log_xaxis(ax, lo, hi)
    ax.set_xlabel("residual |source - reference| (mas)")
    ax.set_ylabel("matched sources used in the fit")
    ax.legend(fontsize=8, loc="upper center")
    ax.set_title(title, fontsize=10, loc="left", y=1.0)


def _row_text(row):
    """One line of fit statistics from a solution row."""
    if row is None:
        return "no solution row"
    status = str(row["status"])
    parts = [f"group {row['group_id']}", status]
    if str(row["reason"]):
        parts.append(str(row["reason"]))
    if int(row["n_matches"]) > 0:
        parts.append(
            f"{int(row['n_used'])}/{int(row['n_matches'])} matches used, RMS {float(row['rms_mas']):.2f} mas, "
            f"shift ({float(row['xshift']):+.3f}, {float(row['yshift']):+.3f}) arcsec, "
            f"rotation {float(row['rotation']):.4g} deg, {row['fitgeom']}"
        )
    if "recovery" in row.colnames and str(row["recovery"]):
        parts.append(f"recovered by {row['recovery']}")
    elif "n_attempts" in row.colnames and int(row["n_attempts"]) > 1:
        if int(row["attempt"]) > 0:
            parts.append(f"attempt {int(row['attempt'])} of {int(row['n_attempts'])}")
        else:
            parts.append(f"{int(row['n_attempts'])} attempts")
    return " | ".join(parts)


def _wrap(text, width=110):
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else ""


#: Height (inches) of the title band of the per-image and absolute-fit figures.
_TITLE_BAND = 0.38
#: Height (inches) of one row of panels (a chip) in those figures, with its header.
_ROW_HEIGHT = 5.5


class _PanelFigure:
    """A figure of rows of three panels (residuals before and after the fit, their histogram).

    The per-image and absolute-fit figures: a title, and per row a header
    line (fit statistics) over the three axes. Fixed margins in inches: room
    above the axes for their titles and the key arrow, below for the tick
    labels and the x label, between them for the y labels.

    `qa_images_step` draws every image with the same number of chips on one
    such figure (`clear` between images): creating the axes and their ticks
    is about a third of the time of a plot. It belongs to one call (one
    thread); nothing is shared.
    """

    def __init__(self, nrows):
        self.height = _TITLE_BAND + _ROW_HEIGHT * nrows
        self.fig = _figure(16, self.height)
        self.title = self.fig.text(0.5, 1.0 - 0.08 / self.height, "", fontsize=13, fontweight="bold", ha="center", va="top", parse_math=False)
        self.rows = []
        for k in range(nrows):
            top = self.height - _TITLE_BAND - _ROW_HEIGHT * k
            header = self.fig.text(0.15 / 16, (top - 0.05) / self.height, "", fontsize=9.5, ha="left", va="top", parse_math=False)
            axes = [self.fig.add_axes(rect) for rect in self._rects(k, 1)]
            self.rows.append((header, axes))

    def _rects(self, k, header_lines):
        """Axes rectangles (figure fractions) of row ``k`` under a header of ``header_lines`` lines."""
        w, h = 16.0, self.height
        top = self.height - _TITLE_BAND - _ROW_HEIGHT * k
        bottom = top - _ROW_HEIGHT + 0.6  # tick labels and x labels
        if header_lines:
            top -= 0.12 + 0.17 * header_lines
        top -= 0.32  # axes titles and key arrows
        left, right, gap = 0.8, 0.2, 0.95
        widths = np.array([1.0, 1.0, 1.15])
        widths *= (w - left - right - 2 * gap) / widths.sum()
        rects, x = [], left
        for width in widths:
            rects.append((x / w, bottom / h, width / w, (top - bottom) / h))
            x += width + gap
        return rects

    def row(self, k, header):
        """The three axes of row ``k``, under ``header``."""
        text, axes = self.rows[k]
        text.set_text(header)
        for ax, rect in zip(axes, self._rects(k, header.count("\n") + 1 if header else 0)):
            ax.set_position(rect)
        return axes

    def clear(self):
        """Remove what the axes show (not the axes and their ticks)."""
        for _, axes in self.rows:
            for ax in axes:
                for artist in [*ax.collections, *ax.lines, *ax.patches, *ax.texts, *ax.artists]:
                    artist.remove()
                if ax.get_legend() is not None:
                    ax.get_legend().remove()
                ax.set_title("", loc="left")
                ax.set_xlabel("")
                ax.set_ylabel("")
                ax.relim()
                ax.set_axis_on()


def _residual_panels(axes, m, used, x, y, ext, tag, xlabel, ylabel, hist_title):
    """Residual vectors before and after the fit and their histogram on three axes."""
    _quiver(axes[0], x, y, np.asarray(m["dx_before"]), np.asarray(m["dy_before"]), used, ext, f"before the fit{tag[0]}")
    _quiver(axes[1], x, y, np.asarray(m["dx_after"]), np.asarray(m["dy_after"]), used, ext, f"after the fit{tag[1]}")
    for ax in axes[:2]:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    before = np.hypot(np.asarray(m["dx_before"], float), np.asarray(m["dy_before"], float))[used]
    after = np.hypot(np.asarray(m["dx_after"], float), np.asarray(m["dy_after"], float))[used]
    _log_hist(axes[2], before, after, hist_title)


def _empty_panels(axes, message):
    for ax in axes:
        ax.set_axis_off()
    axes[1].text(0.5, 0.5, message, ha="center", va="center", fontsize=11, transform=axes[1].transAxes)


def plot_image_residuals(path, title, chips, matches):
    """Per-image figure: residual vectors before/after the fit and their histogram.

    Parameters
    ----------
    path : str
        PNG to write.
    title : str
        Figure title (the file name).
    chips : list of dict
        One per chip (a JWST image has one): ``name`` (the solution-table
        image name), ``shape`` (ny, nx) and ``row`` (its relative solution
        row, an `astropy.table.Row`, or None).
    matches : astropy.table.Table
        The relative stage's matches table (`tweakflow.results.match_table`), all images.
    """
    _save(_draw_image_residuals(_PanelFigure(len(chips)), title, chips, matches), path)


def _draw_image_residuals(panels, title, chips, matches, images=None):
    """`plot_image_residuals` on a `_PanelFigure` of ``len(chips)`` rows; returns its figure.

    ``images``: ``matches["image"]`` as an array (computed once per step).
    """
    panels.clear()
    panels.title.set_text(title)
    if images is None:
        images = np.asarray(matches["image"]) if len(matches) else np.zeros(0, "U1")
    ref_images = np.asarray(matches["ref_image"]) if len(matches) and "ref_image" in matches.colnames else None
    for k, chip in enumerate(chips):
        name, row = chip["name"], chip["row"]
        ny, nx = (int(v) for v in chip["shape"][-2:])
        m = matches[images == name] if len(matches) else matches
        head = _wrap(f"{name}: {_row_text(row)}", 150) if len(chips) > 1 else _wrap(_row_text(row), 150)
        axes = panels.row(k, head)
        as_ref = False
        if len(m) == 0 and ref_images is not None:
            # an alignment reference: the pairs whose reference source is one of its sources
            m = matches[(ref_images == name) & np.asarray(matches["accepted"], bool)]
            as_ref = len(m) > 0
        if len(m) == 0:
            reason = "alignment reference: no image was aligned to its sources" if row is not None and str(row["reason"]) == "alignment reference" else "no matched sources recorded for this image"
            _empty_panels(axes, reason)
            continue
        accepted = bool(np.all(m["accepted"]))
        used = np.asarray(m["used"], bool)
        if as_ref:
            x, y = np.asarray(m["ref_x"], float), np.asarray(m["ref_y"], float)
            tag = " [as reference]"
        else:
            x, y = np.asarray(m["x"], float), np.asarray(m["y"], float)
            tag = "" if accepted else " [REJECTED]"
        rx = float(np.sqrt(np.mean(np.asarray(m["dx_after"])[used] ** 2))) if used.any() else math.nan
        ry = float(np.sqrt(np.mean(np.asarray(m["dy_after"])[used] ** 2))) if used.any() else math.nan
        _residual_panels(
            axes, m, used, x, y, (0, nx, 0, ny), (f" (input WCS){tag}", tag), "x (pixel)", "y (pixel)",
            f"{int(used.sum())} sources used: RMS x {rx:.2f}, y {ry:.2f} mas",
        )
    return panels.fig


def plot_footprints(path, footprints, title="Image footprints on the sky"):
    """Footprints of all images on the sky, filled by group, outlined by fit status.

    Parameters
    ----------
    path : str
        PNG to write.
    footprints : list of dict
        ``name``, ``group_id``, ``status`` and ``radec`` ((N, 2) corners in
        degrees, after the alignment); ``reference`` (optional, True for the
        alignment reference, labelled "(ref)").
    """
    _save(_footprints_figure(footprints, title), path)


def _footprints_figure(footprints, title="Image footprints on the sky"):
    """The figure of `plot_footprints`."""
    import matplotlib as mpl
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    width, height = 10.0, 9.0
    fig = _figure(width, height)
    if not footprints:
        ax = fig.add_axes((0.1, 0.1, 0.85, 0.85))
        ax.text(0.5, 0.5, "no image has a WCS", ha="center", va="center", transform=ax.transAxes)
        return fig
    ax = fig.add_axes((0.1, 0.1, 0.7, 0.8))
    allc = np.vstack([f["radec"] for f in footprints])
    ra0 = float(np.rad2deg(np.arctan2(np.mean(np.sin(np.deg2rad(allc[:, 0]))), np.mean(np.cos(np.deg2rad(allc[:, 0]))))) % 360.0)
    dec0 = float(np.mean(allc[:, 1]))
    groups = list(dict.fromkeys(str(f["group_id"]) for f in footprints))
    cmap = mpl.colormaps["tab20" if len(groups) > 10 else "tab10"]
    colours = {g: cmap(k % cmap.N) for k, g in enumerate(groups)}
    labels = short_names([f["name"] for f in footprints])
    labels = [lab + (" (ref)" if f.get("reference") else "") for f, lab in zip(footprints, labels)]
    # one collection per outline style (status), drawn COMPLETE first so that the others stay visible
    polys = {s: ([], []) for s in STATUS_STYLE}
    for f, lab in zip(footprints, labels):
        ra, dec = f["radec"][:, 0], f["radec"][:, 1]
        dra = ((ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(dec0)) * 3600.0
        ddec = (dec - dec0) * 3600.0
        style = str(f["status"]) if str(f["status"]) in STATUS_STYLE else "FAILED"
        polys[style][0].append(np.c_[dra, ddec])
        polys[style][1].append((*colours[str(f["group_id"])][:3], 0.3))
        ax.text(float(np.mean(dra)), float(np.mean(ddec)), lab, ha="center", va="center", fontsize=7, parse_math=False)
    for s, (verts, faces) in polys.items():
        if verts:
            st = STATUS_STYLE[s]
            ax.add_collection(PolyCollection(verts, closed=True, facecolors=faces, edgecolors=st["edgecolor"], linestyles=st["linestyle"], hatch=st["hatch"], linewidths=2))
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.invert_xaxis()  # east to the left
    ax.set_xlabel(f"ΔRA cos(Dec) (arcsec) from RA {ra0:.5f} deg")
    ax.set_ylabel(f"ΔDec (arcsec) from Dec {dec0:.5f} deg")
    counts = {}
    for f in footprints:
        counts[str(f["status"])] = counts.get(str(f["status"]), 0) + 1
    ax.set_title(f"{title}: {len(footprints)} images, " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), fontsize=11, y=1.0)
    handles = []
    short_groups = short_names(groups)
    if len(groups) <= 20:
        handles += [Patch(facecolor=(*colours[g][:3], 0.35), edgecolor="none", label=f"group {sg}") for g, sg in zip(groups, short_groups)]
    handles += [Line2D([], [], color=st["edgecolor"], linestyle=st["linestyle"], lw=2, label=s) for s, st in STATUS_STYLE.items() if s in counts]
    leg = ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="fill: group, outline: status", title_fontsize=8)
    # fixed margins; the right one fits the legend
    legend_width = leg.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    left, bottom, top = 0.9, 0.65, 0.45
    right = min(legend_width + 0.25, 0.45 * width)
    ax.set_position((left / width, bottom / height, (width - left - right) / width, (height - bottom - top) / height))
    return fig


def plot_overlaps(path, images, pairs, solutions):
    """The global solve's overlap graph on the sky: tiles, pairs used and rejected.

    Parameters
    ----------
    path : str
        PNG to write.
    images : list of dict
        ``name``, ``group`` and ``footprints`` (list of (4, 2) RA, Dec corners, input WCS).
    pairs : astropy.table.Table
        The pairs' table (`tweakflow.pairs.PAIR_COLUMNS`); pairs with the
        reference catalog are shown as a dot on their group.
    solutions : astropy.table.Table
        The solve's solution table (``group_id``, ``status``).
    """
    _save(_overlaps_figure(images, pairs, solutions), path)


def _overlaps_figure(images, pairs, solutions):
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.lines import Line2D

    width, height = 10.0, 9.0
    fig = _figure(width, height)
    ax = fig.add_axes((0.1, 0.08, 0.86, 0.84))
    allc = np.vstack([np.vstack(im["footprints"]) for im in images])
    ra0, dec0 = float(np.median(allc[:, 0])), float(np.median(allc[:, 1]))

    def plane(radec):
        radec = np.asarray(radec, float)
        return np.c_[((radec[:, 0] - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(dec0)) * 3600.0, (radec[:, 1] - dec0) * 3600.0]

    status = {str(g): str(st) for g, st in zip(solutions["group_id"], solutions["status"])}
    centre = {}
    verts, edges = [], []
    for im in images:
        for f in im["footprints"]:
            xy = plane(f)
            verts.append(xy)
            edges.append(STATUS_STYLE.get(status.get(im["group"], "SKIPPED"), STATUS_STYLE["FAILED"])["edgecolor"])
            centre.setdefault(im["group"], []).append(xy.mean(axis=0))
    centre = {g: np.mean(c, axis=0) for g, c in centre.items()}
    ax.add_collection(PolyCollection(verts, closed=True, facecolors="none", edgecolors=edges, linewidths=1.0))
    groups = pairs[np.asarray(pairs["group_b"]) != "<refcat>"]
    for accepted, colour, style in ((True, "tab:green", "-"), (False, "tab:red", ":")):
        sel = groups[np.asarray(groups["accepted"], bool) == accepted]
        segs = [[centre[str(r["group_a"])], centre[str(r["group_b"])]] for r in sel if str(r["group_a"]) in centre and str(r["group_b"]) in centre]
        if segs:
            ax.add_collection(LineCollection(segs, colors=colour, linestyles=style, linewidths=1.5 if accepted else 1.0))
    ref = pairs[(np.asarray(pairs["group_b"]) == "<refcat>") & np.asarray(pairs["accepted"], bool)]
    if len(ref):
        xy = np.array([centre[str(g)] for g in ref["group_a"] if str(g) in centre])
        ax.plot(xy[:, 0], xy[:, 1], "o", color="tab:blue", ms=4)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.invert_xaxis()
    ax.set_xlabel(f"ΔRA cos(Dec) (arcsec) from RA {ra0:.5f} deg")
    ax.set_ylabel(f"ΔDec (arcsec) from Dec {dec0:.5f} deg")
    n_ok = int(np.sum(groups["accepted"])) if len(groups) else 0
    ax.set_title(f"Overlaps of the global solve: {len(centre)} groups, {n_ok} of {len(groups)} pairs used, {len(ref)} groups matched to the reference catalog",
                 fontsize=10)
    handles = [Line2D([], [], color="tab:green", lw=1.5, label="pair used"), Line2D([], [], color="tab:red", ls=":", label="pair rejected"),
               Line2D([], [], color="tab:blue", marker="o", ls="none", label="matched to the reference catalog")]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return fig


def plot_overview(path, solutions, matches):
    """All images: pooled residual histogram and per-image fit RMS and match fraction.

    Parameters
    ----------
    path : str
        PNG to write.
    solutions : astropy.table.Table
        Relative solution table (one row per image).
    matches : astropy.table.Table
        Relative matches table.
    """
    _save(_overview_figure(solutions, matches), path)


def _overview_figure(solutions, matches):
    """The figure of `plot_overview`."""
    from matplotlib.patches import Patch

    width, height = 16.0, 6.5
    fig = _figure(width, height)
    names = short_names(list(solutions["image"]))
    n = len(solutions)
    twin = "match_fraction" in solutions.colnames
    fontsize = 7 if n > 20 else 8
    # fixed margins; the bottom one fits the image names (rotated by 60 degrees)
    label_height = max((0.866 * tw + 0.5 * th for tw, th in (_text_size(fig, s, fontsize) for s in names)), default=0.0)
    left, right, gap, top = 0.8, 0.8 if twin else 0.2, 0.95, 0.35
    bottom = max(0.6, label_height + 0.2)
    w1 = (width - left - right - gap) / 2.4
    ax1 = fig.add_axes((left / width, bottom / height, w1 / width, (height - bottom - top) / height))
    ax2 = fig.add_axes(((left + w1 + gap) / width, bottom / height, 1.4 * w1 / width, (height - bottom - top) / height))
    ok = np.asarray(matches["used"], bool) & np.asarray(matches["accepted"], bool) if len(matches) else np.zeros(0, bool)
    m = matches[ok] if len(matches) else matches
    _log_hist(
        ax1,
        np.hypot(np.asarray(m["dx_before"], float), np.asarray(m["dy_before"], float)) if len(m) else [],
        np.hypot(np.asarray(m["dx_after"], float), np.asarray(m["dy_after"], float)) if len(m) else [],
        f"relative fits: {len(m)} sources used, all images",
    )
    rms = np.asarray(solutions["image_rms_mas"] if "image_rms_mas" in solutions.colnames else solutions["rms_mas"], float)
    status = [str(s) for s in solutions["status"]]
    colours = [STATUS_STYLE.get(s, STATUS_STYLE["FAILED"])["edgecolor"] for s in status]
    xs = np.arange(n)
    ax2.bar(xs, np.nan_to_num(rms), color=colours)
    for k, (s, r) in enumerate(zip(solutions, rms)):
        if not np.isfinite(r):
            lab = "reference" if str(s["reason"]) == "alignment reference" else str(s["status"])
            ax2.text(k, 0, lab, rotation=90, ha="center", va="bottom", fontsize=7)
    ax2.set_ylabel("RMS of the image's used sources after the fit (mas)")
    ax2.set_xticks(xs)
    ax2.set_xticklabels(names, rotation=60, ha="right", fontsize=fontsize)
    if twin:
        ax3 = ax2.twinx()
        ax3.plot(xs, np.asarray(solutions["match_fraction"], float), "o", color="k", ms=5, label="match fraction")
        ax3.set_ylim(0, 1.05)
        ax3.set_ylabel("match fraction (sources used / sources in the overlap)")
        ax3.legend(loc="upper right", fontsize=8)
    ax2.legend(handles=[Patch(color=st["edgecolor"], label=s) for s, st in STATUS_STYLE.items() if s in status], loc="upper left", fontsize=8)
    ax2.set_title("per image: fit RMS (bars, colour = status) and match fraction (dots)", fontsize=10, loc="left", y=1.0)
    return fig


def plot_absolute(path, matches, row=None):
    """The absolute fit: residual vectors on the sky before/after and their histogram.

    Parameters
    ----------
    path : str
        PNG to write.
    matches : astropy.table.Table
        The absolute stage's matches table (``tp_x``/``tp_y`` in arcsec).
    row : astropy.table.Row or None
        A solution row of the absolute fit (statistics for the title).
    """
    panels = _PanelFigure(1)
    panels.title.set_text("Absolute fit to the reference catalog")
    axes = panels.row(0, _wrap(_row_text(row), 150) if row is not None else "")
    if len(matches) == 0:
        _empty_panels(axes, "no matched sources recorded for the absolute fit")
        _save(panels.fig, path)
        return
    used = np.asarray(matches["used"], bool)
    x, y = np.asarray(matches["tp_x"], float), np.asarray(matches["tp_y"], float)
    pad = 0.05 * max(np.ptp(x), np.ptp(y), 1.0)
    ext = (float(x.min() - pad), float(x.max() + pad), float(y.min() - pad), float(y.max() + pad))
    _residual_panels(
        axes, matches, used, x, y, ext, (" (relative WCS)", ""), "tangent-plane x (arcsec)", "tangent-plane y (arcsec)",
        f"residuals of {int(used.sum())} sources used",
    )
    _save(panels.fig, path)


# ---------------------------------------------------------------------------
# HTML tables for the report
# ---------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 13px; margin: 1em; color: #111; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #d1d5db; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f4f6; position: sticky; top: 0; }
td.t { text-align: left; white-space: normal; max-width: 48em; }
tr.COMPLETE td.status { background: #dcfce7; } tr.SKIPPED td.status { background: #fef3c7; }
tr.FAILED td.status { background: #fee2e2; } tr.chosen { font-weight: bold; background: #eff6ff; }
pre { background: #f9fafb; border: 1px solid #e5e7eb; padding: 0.6em; overflow-x: auto; font-size: 12px; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
.note { color: #4b5563; }
"""


def _esc(value):
    import html

    return html.escape(str(value))


def _cell(value, fmt=None):
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        return format(float(value), fmt or ".4g")
    return _esc(value)


def html_table(table, columns, *, formats=None, text_columns=(), row_class=None, headers=None):
    """An HTML ``<table>`` of some columns of an astropy Table.

    Parameters
    ----------
    table : astropy.table.Table
    columns : list of str
        Columns to show (missing ones are skipped).
    formats : dict, optional
        Column -> format spec for floats.
    text_columns : sequence of str
        Left-aligned, wrapping columns.
    row_class : callable, optional
        Row -> CSS class of the ``<tr>``.
    headers : dict, optional
        Column -> header text.
    """
    formats = formats or {}
    headers = headers or {}
    cols = [c for c in columns if c in table.colnames]
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(headers.get(c, c))}</th>" for c in cols) + "</tr>"]
    for row in table:
        cls = f' class="{_esc(row_class(row))}"' if row_class else ""
        cells = []
        for c in cols:
            klass = "status" if c in ("status", "abs_status") else ("t" if c in text_columns else "")
            cells.append(f'<td class="{klass}">{_cell(row[c], formats.get(c))}</td>')
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _page(title, body):
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n<h1>{_esc(title)}</h1>\n{body}\n</body></html>\n'


_SUMMARY_FORMATS = {
    "rms_mas": ".2f", "mae_mas": ".2f", "image_rms_mas": ".2f", "match_fraction": ".2f", "xshift": ".4f", "yshift": ".4f",
    "rotation": ".5f", "scale": ".7f", "skew": ".4g", "abs_rms_mas": ".2f", "abs_mae_mas": ".2f", "abs_xshift": ".4f",
    "abs_yshift": ".4f", "abs_rotation": ".5f", "abs_scale": ".7f",
}


def group_table(summary):
    """One row per group from a per-image summary: the group's fit and its images' statuses."""
    groups = list(dict.fromkeys(str(g) for g in summary["group_id"]))
    rows = []
    for g in groups:
        sel = summary[np.asarray(summary["group_id"]).astype(str) == g]
        fitted = [r for r in sel if int(r["n_matches"]) > 0]
        r = fitted[0] if fitted else sel[0]
        counts = {}
        for st in sel["status"]:
            counts[str(st)] = counts.get(str(st), 0) + 1
        row = {
            "group_id": g,
            "n_images": len(sel),
            "statuses": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
            "fitgeom": str(r["fitgeom"]),
            "n_matches": int(r["n_matches"]),
            "n_used": int(r["n_used"]),
            "rms_mas": float(r["rms_mas"]),
            "mae_mas": float(r["mae_mas"]),
            "xshift": float(r["xshift"]),
            "yshift": float(r["yshift"]),
            "rotation": float(r["rotation"]),
            "scale": float(r["scale"]),
            "skew": float(r["skew"]),
        }
        for c in ("attempt", "n_attempts"):
            if c in summary.colnames:
                row[c] = int(r[c])
        row["recovery"] = str(r["recovery"]) if "recovery" in summary.colnames else ""
        reasons = sorted({str(x) for x in sel["reason"] if str(x)})
        row["reasons"] = "; ".join(reasons)
        rows.append(row)
    return Table(rows=rows) if rows else Table()


def front_page_rst(template, verdict, path):
    """The report's first page: the workflow's description, then the run's verdict.

    Parameters
    ----------
    template : str
        ``workflow/report/workflow.rst``.
    verdict : list of str
        `tweakflow.verdict.verdict_lines`.
    path : str
        The page written (reStructuredText, as Snakemake's report reads it).
    """
    with open(template, encoding="utf-8") as f:
        text = f.read()
    block = "\n".join(f"    {line}" for line in verdict)
    write_text(path, f"**Verdict of this run**::\n\n{block}\n\n{text}")


def summary_html(summary, path, *, verdict=(), attempts=None, title="Alignment summary"):
    """The summary table (and one row per group) as a self-contained HTML page, after the run's verdict."""
    n = len(summary)
    counts = {}
    for st in summary["status"]:
        counts[str(st)] = counts.get(str(st), 0) + 1
    body = [f"<pre class='verdict'>{_esc(chr(10).join(verdict))}</pre>"] if verdict else []
    body.append(f"<p>{n} images: " + ", ".join(f"<b>{v}</b> {_esc(k)}" for k, v in sorted(counts.items())) + ". ")
    body.append(
        "Fit statistics per image (the group's fit: matches, RMS and MAE in mas, shift in arcsec, rotation in deg; "
        "<i>image_*</i> and <i>match_fraction</i>: the image's own sources), the same as <code>tweakreg_summary.ecsv</code>.</p>"
    )
    cols = [
        "image", "group_id", "status", "reason", "fitgeom", "n_sources", "n_matches", "n_used", "rms_mas", "mae_mas",
        "image_n_used", "image_rms_mas", "match_fraction", "xshift", "yshift", "rotation", "scale", "skew", "attempt",
        "n_attempts", "recovery", "abs_status", "abs_fitgeom", "abs_n_matches", "abs_n_used", "abs_rms_mas", "abs_xshift",
        "abs_yshift", "abs_rotation", "abs_scale",
    ]
    body.append("<h2>Per image</h2>")
    body.append(html_table(summary, cols, formats=_SUMMARY_FORMATS, text_columns=("image", "reason", "recovery"), row_class=lambda r: str(r["status"])))
    gt = group_table(summary)
    if len(gt):
        body.append("<h2>Per group</h2><p class='note'>The images of a group (one exposure) share one fit.</p>")
        body.append(html_table(gt, list(gt.colnames), formats=_SUMMARY_FORMATS, text_columns=("group_id", "statuses", "recovery", "reasons")))
    write_text(path, _page(title, "\n".join(body)))


def attempts_html(attempts, path, title="Alignment attempts"):
    """Every alignment attempt (gates, recovery chain) as an HTML page."""
    body = [
        ("<p>One row per image and attempt. Attempt 1 is the configured fit; later attempts are the recovery chain "
        "(wider search radius with the 2D-histogram offset search, then fewer degrees of freedom, or a refit without "
        "images whose catalogs contradict the fit). <b>Bold</b>: the attempt kept. <i>pass_no</i> 2: the alignment "
        "was run again without a suspect reference image.</p>")
    ]
    if len(attempts) == 0:
        body.append("<p>No attempts were recorded (nothing to align relatively).</p>")
    else:
        body.append(
            html_table(
                attempts,
                list(attempts.colnames),
                formats={"rms_mas": ".2f", "match_fraction": ".2f", "image_match_fraction": ".2f", "xshift": ".4f", "yshift": ".4f", "rotation": ".5f", "scale": ".7f"},
                text_columns=("image", "group_id", "reason"),
                row_class=lambda r: "chosen" if bool(r["chosen"]) else "",
            )
        )
    write_text(path, _page(title, "\n".join(body)))


def config_html(config, path, title="Configuration of this run"):
    """The run's effective configuration (after defaults and overrides) as HTML."""
    import yaml

    def plain(v):
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    text = yaml.safe_dump(plain(dict(config)), sort_keys=False, default_flow_style=False)
    body = "<p>The configuration the workflow ran with: <code>config/config.yaml</code> merged with <code>--configfile</code> and <code>--config</code>, with schema defaults filled in.</p>"
    write_text(path, _page(title, body + f"<pre>{_esc(text)}</pre>"))


def _read_benchmark(path):
    try:
        tab = Table.read(path, format="ascii.tab")
        return {k: float(tab[k][-1]) for k in ("s", "max_rss", "cpu_time") if k in tab.colnames}
    except Exception:  # a benchmark file being written or malformed: show it as missing
        return {}


def run_record_html(logs_dir, bench_dir, path, *, max_lines=300, title="Logs and benchmarks"):
    """One page with every job's log (collapsible) and benchmark (wall time, memory).

    Parameters
    ----------
    logs_dir, bench_dir : str
        The workflow's log and benchmark folders (searched recursively for
        ``*.log`` and ``*.tsv``).
    path : str
        HTML page to write.
    max_lines : int
        Only the last ``max_lines`` lines of a longer log are shown.
    """
    import glob
    logs = sorted(glob.glob(os.path.join(logs_dir, "**", "*.log"), recursive=True))
    benches = sorted(glob.glob(os.path.join(bench_dir, "**", "*.tsv"), recursive=True))
    jobs = {}
    for p in logs:
        jobs.setdefault(os.path.splitext(os.path.relpath(p, logs_dir))[0], {})["log"] = p
    for p in benches:
        jobs.setdefault(os.path.splitext(os.path.relpath(p, bench_dir))[0], {})["bench"] = p
    body = [
        (f"<p>{len(logs)} log files ({_esc(logs_dir)}) and {len(benches)} benchmark files ({_esc(bench_dir)}), one per job. "
        "Wall time and peak memory are from Snakemake's <code>benchmark:</code> files. Click a job to read its log.</p>"),
        "<table><tr><th>job</th><th>wall time (s)</th><th>CPU time (s)</th><th>max RSS (MB)</th><th>warnings / errors</th></tr>",
    ]
    details = []
    for k, (job, item) in enumerate(sorted(jobs.items())):
        b = _read_benchmark(item["bench"]) if "bench" in item else {}
        text = ""
        if "log" in item:
            with open(item["log"], encoding="utf-8", errors="replace") as f:
                text = f.read()
        lines = text.splitlines()
        nwarn = sum(1 for ln in lines if " WARNING " in ln)
        nerr = sum(1 for ln in lines if " ERROR " in ln)
        flag = f"{nwarn} / {nerr}" if (nwarn or nerr) else ""
        anchor = f"job{k}"
        link = f'<a href="#{anchor}">{_esc(job)}</a>' if "log" in item else _esc(job)
        body.append(
            f"<tr><td class='t'>{link}</td><td>{_cell(b.get('s', math.nan), '.2f')}</td>"
            f"<td>{_cell(b.get('cpu_time', math.nan), '.2f')}</td><td>{_cell(b.get('max_rss', math.nan), '.0f')}</td><td>{flag}</td></tr>"
        )
        if "log" in item:
            shown = lines[-max_lines:]
            cut = f"<p class='note'>last {max_lines} of {len(lines)} lines</p>" if len(lines) > max_lines else ""
            details.append(f'<details id="{anchor}"><summary>{_esc(job)} ({len(lines)} lines)</summary>{cut}<pre>{_esc(chr(10).join(shown))}</pre></details>')
    body.append("</table>")
    body.append("<h2>Logs</h2>")
    body.extend(details)
    write_text(path, _page(title, "\n".join(body)))


# ---------------------------------------------------------------------------
# rule steps
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# the report's rules
# ---------------------------------------------------------------------------


def _chips_of(sc):
    """Per chip of a WCS sidecar: name (as in the solution tables), shape, WCS, status."""
    if sc["kind"] == "fits":
        chips = sc["chips"]
        return [
            {
                "name": chip_label(sc["filename"], ch["extname"], ch["extver"], len(chips)),
                "shape": tuple(ch["shape"]),
                "wcs": w,
                "status": ch.get("status", sc["extra"].get("status", "")),
            }
            for ch, w in zip(chips, sc["wcs"])
        ]
    return [{"name": sc["filename"], "shape": tuple(sc["shape"]), "wcs": sc["wcs"], "status": sc["extra"].get("status", "")}]


def _saved(fig, path):
    """`_save`, logged."""
    _save(fig, path)
    log.info("wrote %s", path)


def qa_images_step(solutions, matches, sidecars, images_dir):
    """One PNG per image: its sources' residuals before and after the relative fit (``qa_images`` rule).

    They depend on the relative stage alone (its solution and matches
    tables), so that a change of an absolute-fit parameter does not redraw them.

    Parameters
    ----------
    solutions, matches : str
        The relative stage's solution and matches tables.
    sidecars : list of str
        Each image's WCS sidecar of the relative stage, ``{stem}_wcs.asdf``:
        the PNG is ``{stem}.png``.
    images_dir : str
        Folder of the PNGs.
    """
    sol = read_table(solutions)
    mt = read_table(matches)
    by_name = {str(r["image"]): r for r in sol}
    images = np.asarray(mt["image"]) if len(mt) else np.zeros(0, "U1")
    os.makedirs(images_dir, exist_ok=True)
    figures = {}  # number of chips -> _PanelFigure, redrawn for each image
    for path in sidecars:
        png = os.path.join(images_dir, f"{wcs_sidecar_stem(path)}.png")
        sc = read_sidecar(path)
        if sc["kind"] == "unreadable":
            fig = _figure(10, 2)
            fig.text(0.5, 0.5, _wrap(f"{sc['filename']}: not aligned: {sc['extra'].get('reason', '')}", 100), ha="center", va="center", parse_math=False)
            _saved(fig, png)
            continue
        chips = _chips_of(sc)
        for ch in chips:
            ch["row"] = by_name.get(ch["name"])
        if len(chips) not in figures:
            figures[len(chips)] = _PanelFigure(len(chips))
        _saved(_draw_image_residuals(figures[len(chips)], sc["filename"], chips, mt, images), png)


def qa_plots_step(solutions, matches, sidecars, footprints_out, overview_out):
    """The footprints on the sky (final WCS) and the overview of the relative fit (``qa_plots`` rule).

    Parameters
    ----------
    solutions, matches : str
        The relative stage's solution and matches tables.
    sidecars : list of str
        The final WCS sidecar of each image (``{stem}_wcs.asdf``): the
        footprints and final statuses come from them.
    footprints_out, overview_out : str
        PNG files.
    """
    sol = read_table(solutions)
    mt = read_table(matches)
    by_name = {str(r["image"]): r for r in sol}
    fps = []
    for path in sidecars:
        sc = read_sidecar(path)
        if sc["kind"] == "unreadable":
            continue
        for ch in _chips_of(sc):
            row = by_name.get(ch["name"])
            fps.append(
                {
                    "name": ch["name"],
                    "group_id": sc["group_id"],
                    "status": ch["status"] or (str(row["status"]) if row is not None else "SKIPPED"),
                    "radec": np.column_stack(footprint_world(ch["wcs"], ch["shape"], edges=True)),
                    "reference": row is not None and str(row["reason"]) == "alignment reference",
                }
            )
    _saved(_footprints_figure(fps), footprints_out)
    _saved(_overview_figure(sol, mt), overview_out)


def qa_overlaps_step(images, pairs, solutions, output):
    """The global solve's overlap graph (``qa_overlaps`` rule)."""
    import json

    with open(images, encoding="utf-8") as f:
        ims = json.load(f)["images"]
    plot_overlaps(output, ims, read_table(pairs), read_table(solutions))


def qa_absolute_step(solutions, matches, output):
    """Plot of the absolute fit (``qa_absolute`` rule)."""
    sol = read_table(solutions)
    fitted = [r for r in sol if int(r["n_matches"]) > 0]
    row = fitted[0] if fitted else (sol[0] if len(sol) else None)
    mt = read_table(matches) if matches else empty_match_table()
    plot_absolute(output, mt, row)


def qa_tables_step(
    summary, attempts, verdict, front_page, summary_out, attempts_out, config_out, record_out, front_page_out, *,
    config, logs_dir, bench_dir,
):
    """Pages of the report: front page, summary, attempts, configuration, logs and benchmarks (``qa_tables`` rule)."""
    lines = read_verdict(verdict)
    front_page_rst(front_page, lines, front_page_out)
    summary_html(read_table(summary), summary_out, verdict=lines)
    attempts_html(read_table(attempts), attempts_out)
    config_html(config, config_out)
    run_record_html(logs_dir, bench_dir, record_out)
