"""Steps of the global relative solve (``relative_solver: global``).

Gather, in three rules: `overlap_pairs_step` lists the overlapping pairs of
groups from the footprints the detection jobs wrote, and splits them into
batches; `match_pairs_step` (one job per batch, local or on the cluster)
matches each pair's catalogs; `global_solve_step` gathers the match tables
only and solves for every group's correction. Scatter:
`global_wcs_step` writes each image's corrected WCS sidecar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading

import numpy as np
from astropy.table import Table, vstack

from ..absolute import wcs_name
from ..atomic import atomic_output
from ..catalogs import read_table, write_catalog
from ..entries import fits_chip_entries, read_sidecar_or_unreadable, write_solution_sidecars
from ..errors import InputError
from ..fitting import entry_corrector
from ..geometry import gnomonic, mean_direction, tangent_plane_scale, to_tangent_plane
from ..globalsolve import match_variances, solve_groups
from ..io import read_sidecar, read_sidecar_sky
from ..pairs import MATCH_PAIR_COLUMNS, PAIR_COLUMNS, REFCAT, match_pair, overlapping_pairs, pair_min_matches
from ..params import ABSOLUTE_PARS, RELATIVE_PARS, resolve_block
from ..quality import consistent_rms_limit, gate_limits, resolve_quality
from ..refcat import read_reference_catalog
from ..results import attempt_table, columns_table, empty_match_table, fit_row, rows_to_table

__all__ = ["overlap_pairs_step", "match_pairs_step", "global_solve_step", "global_wcs_step", "reference_plane"]

log = logging.getLogger("tweakflow")


def overlap_pairs_step(sidecars, catalogs, pairs_out, images_out, *, n_batches, with_refcat=False, on_bad_input="fail"):
    """List the overlapping pairs of groups and assign them to ``n_batches`` batches.

    Writes ``images_out`` (JSON: per image its name, group, catalog and
    footprints) and ``pairs_out`` (ECSV: ``pair``, ``group_a``, ``group_b``,
    ``batch``); with ``with_refcat`` every group is also paired with the
    reference catalog (``group_b`` = `tweakflow.pairs.REFCAT`).
    """
    images = []
    for side, cat in zip(sidecars, catalogs):
        sky = read_sidecar_sky(side)
        if sky is None:
            sc = read_sidecar_or_unreadable(side, on_bad_input)  # raises the WCS's problem unless skipped
            if sc["kind"] != "unreadable":
                raise InputError(f"{side}: no footprint in the image sidecar (written by an older version: run detect_sources again)")
            images.append({"name": sc["filename"], "group": sc["group_id"], "unreadable": sc["extra"]["reason"], "footprints": []})
            continue
        images.append({"name": sky["filename"], "group": sky["group_id"], "catalog": cat, "kind": sky["kind"], "sidecar": side,
                       "footprints": [f.tolist() for f in sky["footprints"]], "pixel_scale": _pixel_scale(sky), "labels": sky["labels"]})
    groups = {}
    for im in images:
        if not im.get("unreadable"):
            groups.setdefault(im["group"], []).extend(np.asarray(f) for f in im["footprints"])
    pairs = overlapping_pairs(groups)
    if with_refcat:
        pairs += [(g, REFCAT) for g in groups]
    n = max(len(pairs), 1)
    rows = [{"pair": k, "group_a": a, "group_b": b, "batch": k * int(n_batches) // n} for k, (a, b) in enumerate(pairs)]
    log.info("%d images in %d groups: %d overlapping pairs%s, in %d batches", len(images), len(groups), len(pairs) - (len(groups) if with_refcat else 0),
             " (and each group with the reference catalog)" if with_refcat else "", n_batches)
    write_catalog(columns_table([("pair", int), ("group_a", str), ("group_b", str), ("batch", int)], rows), pairs_out)
    with atomic_output(images_out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"images": images}, f)


def _pixel_scale(sky):
    """Mean pixel scale (arcsec) of an image: its footprints' area over their pixels."""
    area = 0.0
    for f in sky["footprints"]:
        xy = 3600.0 * np.c_[(f[:, 0] - f[0, 0]) * np.cos(np.deg2rad(f[:, 1])), f[:, 1] - f[0, 1]]
        area += 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
    return float(np.sqrt(area / sum(float(ny) * float(nx) for ny, nx in sky["shapes"])))


def _group_sides(images, groups_needed):
    """Per group: the sky positions of all its sources and its footprints."""
    sides = {}
    for index, im in enumerate(images):
        if im["group"] not in groups_needed or im.get("unreadable"):
            continue
        cat = read_table(im["catalog"])
        s = sides.setdefault(im["group"], {"ra": [], "dec": [], "image": [], "row": [], "x": [], "y": [], "flux": [], "weight": [], "footprints": [],
                                           "pixel_scale": im["pixel_scale"]})
        s["ra"].append(np.asarray(cat["ra"], float))
        s["dec"].append(np.asarray(cat["dec"], float))
        s["x"].append(np.asarray(cat["x"], float))
        s["y"].append(np.asarray(cat["y"], float))
        s["flux"].append(np.asarray(cat["flux"], float) if "flux" in cat.colnames else np.full(len(cat), np.nan))
        s["weight"].append(np.full(len(cat), np.nan))  # detections: their noise is in the fluxes
        s["image"].append(np.full(len(cat), index))
        s["row"].append(np.arange(len(cat)))
        s["footprints"].extend(np.asarray(f, float) for f in im["footprints"])
    for s in sides.values():
        for key in ("ra", "dec", "image", "row", "x", "y", "flux", "weight"):
            s[key] = np.concatenate(s[key]) if s[key] else np.zeros(0)
    return sides


def _refcat_side(refcat, footprints):
    """The reference catalog as the other side of a group's pair."""
    return {"ra": np.asarray(refcat["RA"], float), "dec": np.asarray(refcat["DEC"], float), "footprints": list(footprints), "pixel_scale": None,
            "image": np.full(len(refcat), -1), "row": np.arange(len(refcat)), "x": np.full(len(refcat), np.nan), "y": np.full(len(refcat), np.nan),
            "flux": np.full(len(refcat), np.nan),
            "weight": np.asarray(refcat["weight"], float) if "weight" in refcat.colnames else np.full(len(refcat), np.nan)}


@contextlib.contextmanager
def _quiet_offset_search():
    """Keep tweakwcs' per-match warnings (no 2-D histogram peak, no match within
    the radius) out of the console for this thread: for a pair job they are
    one line per pair tried, and the pair's table says what happened."""
    ident = threading.get_ident()
    logger = logging.getLogger("tweakwcs.matchutils")

    def keep(record):
        return record.thread != ident or record.levelno >= logging.ERROR

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _absolute_matching(absolute):
    """The ``abs_*`` matching parameters under the names `tweakflow.pairs.match_pair` takes."""
    a = resolve_block("tweakreg", ABSOLUTE_PARS, absolute)
    return {k: a[f"abs_{k}"] for k in ("searchrad", "separation", "tolerance", "use2dhist", "nclip", "sigma")}


def match_pairs_step(pairs, images, batch, matches_out, summary_out, *, relative, quality=None, refcat=None, absolute=None):
    """Match the catalogs of the pairs of one batch (``match_pairs`` rule).

    Pairs of groups are matched with the relative parameters, a group and
    the reference catalog with the ``abs_*`` ones (``absolute``). Writes
    ``matches_out`` (`tweakflow.pairs.MATCH_PAIR_COLUMNS`, plus the detector
    ``x_a``, ``y_a``, the sources' ``flux_a``, ``flux_b`` (NaN for a
    reference star) and ``weight_b``, the reference star's catalog weight
    (NaN for a pair of groups or a catalog without weights): one row per
    matched source of each accepted pair) and
    ``summary_out`` (`tweakflow.pairs.PAIR_COLUMNS`: one row per pair).
    """
    p = resolve_block("tweakreg", RELATIVE_PARS, relative)
    p_ref = _absolute_matching(absolute)
    q = resolve_quality(quality)
    limits, limits_ref = gate_limits(q, p["tolerance"]), gate_limits(q, p_ref["tolerance"])
    tab = read_table(pairs)
    mine = tab[np.asarray(tab["batch"]) == int(batch)]
    with open(images, encoding="utf-8") as f:
        ims = json.load(f)["images"]
    sides = _group_sides(ims, {str(g) for g in mine["group_a"]} | {str(g) for g in mine["group_b"]})
    ref = read_reference_catalog(refcat) if refcat and REFCAT in set(mine["group_b"]) else None
    summary, matches = [], []
    for row in mine:
        a = sides[str(row["group_a"])]
        with_refcat = str(row["group_b"]) == REFCAT
        b = _refcat_side(ref, a["footprints"]) if with_refcat else sides[str(row["group_b"])]
        with _quiet_offset_search():
            res = match_pair(a, b, p_ref if with_refcat else p, q, limits_ref if with_refcat else limits)
        summary.append(dict(res["stats"], pair=int(row["pair"]), group_a=str(row["group_a"]), group_b=str(row["group_b"]), accepted=res["accepted"], reason=res["reason"]))
        ia, ib = res["idx_a"], res["idx_b"]
        matches += [{"pair": int(row["pair"]), "image_a": int(a["image"][i]), "row_a": int(a["row"][i]), "image_b": int(b["image"][j]), "row_b": int(b["row"][j]),
                     "ra_a": a["ra"][i], "dec_a": a["dec"][i], "ra_b": b["ra"][j], "dec_b": b["dec"][j], "x_a": a["x"][i], "y_a": a["y"][i],
                     "flux_a": a["flux"][i], "flux_b": b["flux"][j], "weight_b": b["weight"][j]} for i, j in zip(ia, ib)]
    n_ok = sum(s["accepted"] for s in summary)
    log.info("batch %s: %d pairs, %d accepted, %d matched sources", batch, len(summary), n_ok, len(matches))
    extra = [("x_a", float), ("y_a", float), ("flux_a", float), ("flux_b", float), ("weight_b", float)]
    write_catalog(columns_table([*MATCH_PAIR_COLUMNS, *extra], matches), matches_out)
    write_catalog(columns_table(PAIR_COLUMNS, summary), summary_out)


def _entry_of(sc):
    """An alignment entry (no catalog) of a sidecar: of its first chip for a plain FITS file."""
    empty = Table({"x": np.zeros(0), "y": np.zeros(0)})
    if sc["kind"] == "fits":
        return fits_chip_entries(sc, empty, 0)[0]
    return {"name": sc["filename"], "wcs": sc["wcs"], "wcsinfo": sc["wcsinfo"], "catalog": empty, "group_id": sc["group_id"], "sidecar": sc}


def reference_plane(sidecar):
    """The tweakwcs corrector whose tangent plane the global solve works in (``sidecar``: the reference image's)."""
    return entry_corrector(_entry_of(read_sidecar(sidecar)))


def _reference_image(ims):
    """The image whose tangent plane the solve works in: the one nearest the mosaic's centre."""
    centers = np.array([np.mean(np.vstack(im["footprints"]), axis=0) for im in ims])
    xi, eta = gnomonic(centers[:, 0], centers[:, 1], *mean_direction(centers[:, 0], centers[:, 1]))
    d = np.hypot(xi, eta)
    return ims[int(np.argmin(d))]


def global_solve_step(pairs, images, batch_matches, batch_summaries, solutions_out, corrections_out, summary_out, matches_out, attempts_out, *,
                      relative, quality=None, refcat_name=None):
    """Solve for every group's correction from the matched pairs (``global_solve`` rule).

    Writes the solution table (one row per image, as the relative stage's),
    the corrections (one row per group: ``matrix``, ``shift`` in the
    tangent plane of the ``reference`` image named in its metadata), the
    pairs' summary, a matches table for the QA plots and an (empty)
    attempts table.
    """
    p = resolve_block("tweakreg", RELATIVE_PARS, relative)
    q = resolve_quality(quality)
    with open(images, encoding="utf-8") as f:
        all_ims = json.load(f)["images"]
    ims = [im for im in all_ims if not im.get("unreadable")]
    summary = vstack([read_table(s) for s in batch_summaries]) if batch_summaries else columns_table(PAIR_COLUMNS, [])
    matches = vstack([read_table(m) for m in batch_matches]) if batch_matches else columns_table(MATCH_PAIR_COLUMNS, [])
    if q["enabled"] and len(summary):
        matches = matches[~np.isin(np.asarray(matches["pair"], int), _inconsistent_pairs(summary, q["max_rms_ratio"]))]
    ref_im = _reference_image(ims)
    tp = reference_plane(ref_im["sidecar"])
    tps = tangent_plane_scale([tp.wcs])
    group_ids = list(dict.fromkeys(im["group"] for im in ims))
    rows, corners = _solve_rows(matches, all_ims, group_ids, tp)
    sols = solve_groups(rows, len(group_ids), corners, fitgeom=p["fitgeometry"], nclip=p["nclip"], sigma=float(p["sigma"]),
                        pair_min=(pair_min_matches(q), pair_min_matches(q, refcat=True)), quality=q, limits=gate_limits(q, p["tolerance"]), tps=tps)
    anchored = bool(np.any(rows["gb"] < 0))
    name = wcs_name(refcat_name) if anchored and refcat_name else ""
    _write_corrections(corrections_out, group_ids, sols, ref_im, "global", name, tps)
    write_catalog(rows_to_table(_image_rows(all_ims, group_ids, sols, "global", tps)), solutions_out)
    write_catalog(summary, summary_out)
    write_catalog(_qa_matches(matches, rows, all_ims, sols, tps), matches_out)
    write_catalog(attempt_table([]), attempts_out)
    n_ok = sum(s["status"] == "COMPLETE" for s in sols)
    log.info("global solve: %d of %d groups aligned (%s), %d of %d pairs accepted", n_ok, len(sols), "to the reference catalog" if name else "relative", int(np.sum(summary["accepted"])) if len(summary) else 0, len(summary))


def _inconsistent_pairs(summary, ratio):
    """Accepted pairs whose RMS the run's other pairs of their kind contradict
    (`tweakflow.quality.consistent_rms_limit`): marked rejected in ``summary``; their ids.

    Pairs of groups share the detections' noise, pairs with the reference
    catalog the catalog's: a pair several times worse than the median of
    its kind holds false matches, which would pull its groups however
    robust the solve.
    """
    refcat = np.asarray(summary["group_b"]) == REFCAT
    summary["reason"] = summary["reason"].astype(object)
    bad = []
    for kind in (refcat, ~refcat):
        ok = kind & np.asarray(summary["accepted"], bool)
        limit = consistent_rms_limit(np.asarray(summary["rms_mas"], float)[ok], ratio)
        for k in np.flatnonzero(ok & (np.asarray(summary["rms_mas"], float) > limit)):
            summary["accepted"][k] = False
            summary["reason"][k] = f"RMS {summary['rms_mas'][k]:.1f} mas inconsistent with the run's other pairs (limit {limit:.1f} mas)"
            bad.append(int(summary["pair"][k]))
    if bad:
        log.warning("%d pair(s) with an RMS inconsistent with the others left out of the solve", len(bad))
    return np.array(bad, int)


def _solve_rows(matches, ims, group_ids, tp):
    """The solve's rows in the tangent plane of ``tp``, and each group's footprint corners there.

    ``ims`` is every image of ``images.json`` (the match tables index them);
    unreadable ones are in no match and have no footprint.
    """
    gindex = {g: k for k, g in enumerate(group_ids)}
    group_of_image = np.array([gindex.get(im["group"], -1) for im in ims])
    image_a = np.asarray(matches["image_a"], int)
    image_b = np.asarray(matches["image_b"], int)
    pa = to_tangent_plane(tp, (np.asarray(matches["ra_a"], float), np.asarray(matches["dec_a"], float))) if len(matches) else np.zeros((0, 2))
    pb = to_tangent_plane(tp, (np.asarray(matches["ra_b"], float), np.asarray(matches["dec_b"], float))) if len(matches) else np.zeros((0, 2))
    rows = {"ga": group_of_image[image_a] if len(matches) else np.zeros(0, int), "gb": np.where(image_b >= 0, group_of_image[np.maximum(image_b, 0)], -1) if len(matches) else np.zeros(0, int),
            "pa": pa, "pb": pb, "pair": np.asarray(matches["pair"], int)}
    if "flux_a" in matches.colnames:
        rows["var"] = match_variances(matches["flux_a"], matches["flux_b"], matches["weight_b"] if "weight_b" in matches.colnames else None)
    corners = [[] for _ in group_ids]
    for im in ims:
        if im.get("unreadable"):
            continue
        fp = np.vstack(im["footprints"])
        corners[gindex[im["group"]]].append(to_tangent_plane(tp, (fp[:, 0], fp[:, 1])))
    return rows, [np.vstack(c) for c in corners]


#: The fit columns of a group's images' solution rows, which the corrections
#: table also has per group (the products' ``meta.tweakflow`` takes them from
#: there), with their values for a group that was not aligned.
_GROUP_FIT = {"fitgeom": "", "n_matches": 0, "n_used": 0, "rms_mas": math.nan, "mae_mas": math.nan, "xshift": 0.0, "yshift": 0.0,
              "rotation": 0.0, "scale": 1.0, "fit_error_mas": math.nan}


def _group_fit(s, tps):
    """The `_GROUP_FIT` columns of a group's solve result ``s`` (their defaults when it was not aligned)."""
    if s["status"] != "COMPLETE":
        return dict(_GROUP_FIT)
    m = s["matrix"]
    return {"fitgeom": s["fitgeom"], "n_matches": s["n_matches"], "n_used": s["n_used"], "rms_mas": s["rms_mas"], "mae_mas": math.nan,
            "xshift": tps * float(s["shift"][0]), "yshift": tps * float(s["shift"][1]), "rotation": s["rotation_deg"],
            "scale": float(math.sqrt(abs(np.linalg.det(m)))), "fit_error_mas": s["fit_error_mas"]}


def _write_corrections(path, group_ids, sols, ref_im, stage, wcsname, tps):
    rows = []
    for g, s in zip(group_ids, sols):
        m = s.get("matrix", np.eye(2))
        sh = s.get("shift", np.zeros(2))
        rows.append({"group_id": g, "status": s["status"], "reason": s["reason"], "m00": m[0, 0], "m01": m[0, 1], "m10": m[1, 0], "m11": m[1, 1],
                     "shift_x": sh[0], "shift_y": sh[1], **_group_fit(s, tps)})
    tab = columns_table([("group_id", str), ("status", str), ("reason", str), ("m00", float), ("m01", float), ("m10", float), ("m11", float),
                  ("shift_x", float), ("shift_y", float)] + [(k, type(v)) for k, v in _GROUP_FIT.items()], rows)
    tab.meta.update(reference_image=ref_im["name"], reference_sidecar=ref_im["sidecar"], stage=stage, wcsname=wcsname)
    write_catalog(tab, path)


def _image_rows(ims, group_ids, sols, stage, tps):
    """One solution row per image, per chip of a plain FITS file (named as the sequential stage names them; they share the group's correction)."""
    by_group = dict(zip(group_ids, sols))
    out = []
    for im in ims:
        if im.get("unreadable"):
            out.append(fit_row(im["name"], im["group"], stage, "FAILED", im["unreadable"]))
            continue
        s = by_group[im["group"]]
        for label in im.get("labels", [im["name"]]):
            row = fit_row(label, im["group"], stage, s["status"], s["reason"])
            if s["status"] == "COMPLETE":
                row.update(_group_fit(s, tps))
            out.append(row)
    return out


def _qa_matches(matches, rows, ims, sols, tps):
    """The matched sources as a relative matches table (`tweakflow.results.MATCH_COLUMNS`) for the QA plots."""
    if not len(matches):
        return empty_match_table()
    mats = {k: (s.get("matrix", np.eye(2)), s.get("shift", np.zeros(2))) for k, s in enumerate(sols)}
    fa = np.array([rows["pa"][i] @ mats[g][0].T + mats[g][1] for i, g in enumerate(rows["ga"])])
    fb = np.array([rows["pb"][i] @ mats[g][0].T + mats[g][1] if g >= 0 else rows["pb"][i] for i, g in enumerate(rows["gb"])])
    image_a = np.asarray(matches["image_a"], int)
    ok = np.array([sols[g]["status"] == "COMPLETE" for g in rows["ga"]])
    before, after = 1000.0 * tps * (rows["pa"] - rows["pb"]), 1000.0 * tps * (fa - fb)
    return Table({
        "stage": np.full(len(matches), "relative"), "image": np.array([ims[i]["name"] for i in image_a], dtype="U"),
        "group_id": np.array([ims[i]["group"] for i in image_a], dtype="U"), "x": np.asarray(matches["x_a"], float), "y": np.asarray(matches["y_a"], float),
        "tp_x": tps * fa[:, 0], "tp_y": tps * fa[:, 1], "dx_before": before[:, 0], "dy_before": before[:, 1], "dx_after": after[:, 0], "dy_after": after[:, 1],
        "used": ok, "accepted": ok,
    })


def global_wcs_step(sidecar, corrections, output, *, on_bad_input="fail"):
    """The corrected WCS sidecar of one image from the global solve (``global_wcs`` rule).

    An image left out (``on_bad_input: skip``) gets an "unreadable" sidecar,
    from which its ``apply_wcs`` job reports why no output is written.
    """
    tab = read_table(corrections)
    sc = read_sidecar_or_unreadable(sidecar, on_bad_input)
    if sc["kind"] == "unreadable":  # on_bad_input: skip: left out; its apply_wcs job says why
        entry = {"name": sc["filename"], "group_id": sc["group_id"], "sidecar": sc}
        write_solution_sidecars([entry], [None], [{"status": "FAILED", "reason": sc["extra"]["reason"], "stage": "global", "wcsname": ""}], [output])
        return
    ref_tp = reference_plane(tab.meta["reference_sidecar"])
    row = tab[np.asarray(tab["group_id"]) == sc["group_id"]]
    if not len(row):
        raise InputError(f"{sidecar}: group {sc['group_id']} is not in {corrections}")
    row = row[0]
    status, reason, stage = str(row["status"]), str(row["reason"]), tab.meta["stage"]
    entries = fits_chip_entries(sc, Table({"x": np.zeros(0), "y": np.zeros(0)}), 0) if sc["kind"] == "fits" else [_entry_of(sc)]
    wcs_list = []
    for e in entries:
        if status == "COMPLETE":
            c = entry_corrector(e)
            c.set_correction(matrix=np.array([[row["m00"], row["m01"]], [row["m10"], row["m11"]]]), shift=np.array([row["shift_x"], row["shift_y"]]), ref_tpwcs=ref_tp)
            wcs_list.append(c.wcs)
        else:
            wcs_list.append(e["wcs"])
    rows = [{"status": status, "reason": reason, "stage": stage, "wcsname": tab.meta["wcsname"] if status == "COMPLETE" else ""} for _ in entries]
    write_solution_sidecars(entries, wcs_list, rows, [output], solutions=[{stage: _solution_row(e, row, stage)} for e in entries])
    log.info("%s: %s%s", sc["filename"], status, f" ({reason})" if reason else "")


def _solution_row(entry, crow, stage):
    """The global solution-table row of an image (a chip) from its group's row of the corrections table."""
    row = fit_row(entry["name"], entry["group_id"], stage, str(crow["status"]), str(crow["reason"]))
    if str(crow["status"]) == "COMPLETE" and all(k in crow.colnames for k in _GROUP_FIT):
        row.update({k: crow[k].item() if hasattr(crow[k], "item") else crow[k] for k in _GROUP_FIT})
    return dict(row, fit_error_mas=row.get("fit_error_mas", math.nan))
