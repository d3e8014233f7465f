"""The workflow's steps, one function per rule, callable without Snakemake.

Each function takes explicit input/output paths and parameters; the thin
scripts in ``scripts/`` only unpack ``snakemake.input/params/output`` and
call them through `run_rule`, which sends the job's log records to its log
file and turns a `~tweakflow.errors.TweakflowError` into a one-line message
and a failed job instead of a traceback. The workflow runs the scripts as
threads of the Snakemake process (``run_script`` in
``workflow/rules/common.smk``), so every function here is safe to run side
by side with the others in one process: the only global state they change
is the log handlers of the calling thread (`job_logging`) and, around
library calls whose warnings a step handles itself (no sources found, a
refitted SIP), Python's warning filters (``warnings.catch_warnings`` is
process-wide before Python 3.14: with jobs side by side, such an "ignore"
can outlast its block and silence warnings of another job on the console;
no result depends on it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading


import numpy as np

from .errors import InputError, TweakflowError

__all__ = ["run_rule", "job_logging", "detect_step", "publish_catalog_step", "align_step", "apply_step", "summary_step", "demo_step"]

log = logging.getLogger("tweakflow")


#: Loggers whose INFO records go to a job's log (tweakwcs reports its fits).
JOB_LOGGERS = ("tweakflow", "tweakwcs")

_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def job_logging(log_path=None):
    """Send the log records of the calling thread to a job's log file.

    Jobs run side by side as threads of one process (the Snakemake process,
    see ``workflow/rules/common.smk``), so the handlers added here keep only
    the records made by the thread that entered the context: each job's log
    holds its own messages, whatever else runs at the same time. INFO and
    above go to ``log_path``; WARNING and above (everything without a log
    file) also go to standard error, where Snakemake shows them.

    Parameters
    ----------
    log_path : str or None
        The job's log file, truncated first.
    """
    ident = threading.get_ident()

    def this_thread(record):
        return record.thread == ident

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if log_path else logging.INFO)
    handlers = [console]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(_FORMAT)
        h.addFilter(this_thread)
        root.addHandler(h)
    for name in JOB_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()


def run_rule(func, log_path=None, **kwargs):
    """Run a step with logging to ``log_path`` and clean error reporting.

    A `TweakflowError` is logged as one line naming the file and the problem.
    In a job thread of the Snakemake process the error is then raised again,
    and Snakemake reports the job as failed with that message; as the main
    program of a process of its own (a ``script:`` job) the process exits
    with status 1 instead of printing a traceback.
    """
    with job_logging(log_path):
        try:
            return func(**kwargs)
        except TweakflowError as exc:
            log.error("%s", exc)
            if threading.current_thread() is not threading.main_thread():
                raise
    sys.exit(1)


# ---------------------------------------------------------------------------
# demo data
# ---------------------------------------------------------------------------


def demo_step(outdir, demo_config):
    """Generate the built-in synthetic dataset into ``outdir``."""
    from .synthetic import SyntheticConfig, make_dataset

    cfg = SyntheticConfig.from_dict(demo_config)
    out = make_dataset(outdir, cfg)
    log.info("wrote %d synthetic images to %s", len(out["images"]), outdir)
    return out


def demo_accuracy_step(outputs, inputs, truth, output):
    """The demo's proof: each output WCS against the synthetic truth (mas).

    ``relative_mas`` is the RMS over the detector after removing the one
    rigid shift + rotation common to all images (what an absolute fit would
    still fix); ``absolute_mas`` the RMS with nothing removed. Both are also
    given for the input WCSs.
    """
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ImageModel

    from .catalogs import write_catalog
    from .metrics import absolute_errors, relative_errors
    from .synthetic import load_truth

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
    log.warning(
        "demo accuracy against the truth: worst relative error %.3f mas (inputs: %.0f mas), worst absolute %.3f mas",
        float(np.max(tab["output_relative_mas"])), float(np.min(tab["input_relative_mas"])), float(np.max(tab["output_absolute_mas"])),
    )
    write_catalog(tab, output)


# ---------------------------------------------------------------------------
# per-image: detection
# ---------------------------------------------------------------------------


def detect_step(image, catalog_out, sidecar_out, *, detection, group_id=None, custom_catalog=None, fits=None, on_bad_input="fail"):
    """Detect sources in one image (or take its custom catalog) and write the sidecar.

    Parameters
    ----------
    image : str
        Input image.
    catalog_out : str
        The workflow's catalog (ECSV, always written).
    sidecar_out : str
        The image sidecar (JSON, see `tweakflow.io.write_image_sidecar`).
    detection : dict
        Source-finding parameters.
    group_id : str or None
        Group id from the association, overriding the image's own.
    custom_catalog : str or None
        A user catalog to use instead of detecting sources.
    on_bad_input : {"fail", "skip"}
        An image that cannot be read raises `InputError` (``fail``), or
        (``skip``) gets an empty catalog and an "unreadable" sidecar, which
        leave it out of the alignment (see `tweakflow.io.write_unreadable_sidecar`).
    fits : dict or None
        How plain FITS images are read (the ``fits`` configuration block).
        Their catalogs get a ``chip`` column (1-based chip number): one job
        and one catalog per file, whatever its number of chips.
    """
    from .catalogs import read_source_catalog, write_catalog
    from .detection import detect_sources
    from .io import read_image, write_image_sidecar, write_unreadable_sidecar

    # The GWCS is not deserialized here (that costs ~2 s of start-up per
    # job): its raw ASDF goes into the sidecar, and the gather step drops
    # sources outside the WCS bounding box.
    try:
        im = read_image(image, with_data=custom_catalog is None, with_wcs=False, fits=fits)
    except InputError as exc:
        if on_bad_input != "skip":
            raise
        log.error("%s; on_bad_input: skip: left out of the alignment", exc)
        from .detection import empty_catalog

        write_catalog(empty_catalog(), catalog_out, "ascii.ecsv")
        write_unreadable_sidecar(sidecar_out, image, str(exc), asn_group_id=group_id)
        return
    if custom_catalog:
        cat = read_source_catalog(custom_catalog)
        log.info("%s: using custom catalog %s (%d sources)", image, custom_catalog, len(cat))
    else:
        parts = []
        for k, chip in enumerate(im.chips or [im], 1):
            part, reason = detect_sources(chip.data, chip.dq, **detection)
            where = image if len(im.chips) < 2 else f"{image} chip {k}"
            if reason:
                log.warning("%s: empty catalog: %s", where, reason)
            else:
                log.info("%s: detected %d sources", where, len(part))
            if im.kind == "fits":
                part["chip"] = np.full(len(part), k, dtype=np.int64)
            parts.append(part)
        if len(parts) == 1:
            cat = parts[0]
        else:
            from astropy.table import vstack

            cat = vstack(parts, join_type="outer", metadata_conflicts="silent")
    cat.meta["image"] = im.meta["filename"]
    write_catalog(cat, catalog_out, "ascii.ecsv")
    write_image_sidecar(sidecar_out, im, asn_group_id=group_id)


def publish_catalog_step(catalog, output, *, catalog_format="ecsv"):
    """``save_catalogs``: publish an image's source catalog in ``catalog_format``.

    A rule of its own, so that changing only the published format never
    re-runs source detection.

    Parameters
    ----------
    catalog : str
        The workflow's catalog of the image (ECSV).
    output : str
        ``{output_dir}/<meta.filename without .fits>_cat.{ext}`` (`tweakflow.catalogs.published_catalog_name`).
    catalog_format : str
        ``ecsv`` or any astropy Table writer format.
    """
    from .catalogs import read_table, write_catalog

    cat = read_table(catalog)
    write_catalog(cat, output, catalog_format)
    log.info("wrote source catalog %s (%d sources)", output, len(cat))


# ---------------------------------------------------------------------------
# gather: relative alignment
# ---------------------------------------------------------------------------


def load_entries(catalogs, sidecars, on_bad_input="fail"):
    """Read catalogs + sidecars into the entries `tweakflow.align` works on.

    An image left out of the alignment (its sidecar is "unreadable", or,
    with ``on_bad_input="skip"``, its WCS cannot be deserialized) gives an
    entry with ``wcs=None``, an empty catalog and ``unreadable`` (the reason).
    """
    from astropy.table import Table

    entries = []
    for index, (cpath, spath) in enumerate(zip(catalogs, sidecars)):
        sc = _read_sidecar_or_unreadable(spath, on_bad_input)
        if sc["kind"] == "unreadable":
            entries.append(dict(_unreadable_entry(sc), index=index))
            continue
        cat = Table.read(cpath, format="ascii.ecsv")
        if sc["kind"] == "fits":
            entries.extend(fits_chip_entries(sc, cat, index))
            continue
        bbox = getattr(sc["wcs"], "bounding_box", None)
        if bbox is not None and len(cat):
            # sources outside the WCS's valid region cannot be placed on the sky
            (x0, x1), (y0, y1) = (tuple(float(v) for v in iv) for iv in bbox)
            inside = (cat["x"] >= x0) & (cat["x"] <= x1) & (cat["y"] >= y0) & (cat["y"] <= y1)
            if not np.all(inside):
                log.info("%s: %d sources outside the WCS bounding box dropped", sc["filename"], int(np.sum(~inside)))
                cat = cat[inside]
        entries.append(
            {
                "name": sc["filename"],
                "wcs": sc["wcs"],
                "wcsinfo": sc["wcsinfo"],
                "group_id": sc["group_id"],
                "catalog": cat,
                "shape": sc["shape"],
                "date": sc.get("date"),
                "sidecar": sc,
                "index": index,
            }
        )
    _fill_missing_weights(entries)
    return entries


def _fill_missing_weights(entries):
    """Give ``weight = 1`` to the catalogs without weights when some have them.

    A user catalog may carry a ``weight`` column into the fit; tweakwcs
    needs all the catalogs of a group to have one or none, so a catalog
    without weights weighs each of its sources 1.
    """
    if not any("weight" in e["catalog"].colnames for e in entries):
        return
    for e in entries:
        if "weight" not in e["catalog"].colnames:
            e["catalog"]["weight"] = np.ones(len(e["catalog"]))


def fits_chip_entries(sc, cat, index):
    """One alignment entry per chip of a plain FITS image, sharing its group id.

    The chip's sources are the catalog rows whose ``chip`` column is its
    number (a catalog without that column belongs to chip 1).
    """
    from .io import chip_label

    chips = sc["chips"]
    chipcol = np.asarray(cat["chip"]) if "chip" in cat.colnames else np.ones(len(cat), dtype=np.int64)
    out = []
    for k, (w, chip) in enumerate(zip(sc["wcs"], chips), 1):
        out.append(
            {
                "name": chip_label(sc["filename"], chip["extname"], chip["extver"], len(chips)),
                "wcs": w,
                "wcsinfo": {},
                "group_id": sc["group_id"],
                "catalog": cat[chipcol == k],
                "shape": tuple(chip["shape"]),
                "date": sc.get("date"),
                "sidecar": sc,
                "index": index,
                "chip": chip,
            }
        )
    return out


def _read_sidecar_or_unreadable(path, on_bad_input):
    """`read_sidecar`; with ``on_bad_input="skip"`` an image sidecar whose
    WCS cannot be read becomes an "unreadable" one instead of an error."""
    from .io import read_sidecar, unreadable_sidecar

    try:
        return read_sidecar(path)
    except InputError as exc:
        if on_bad_input != "skip" or not os.fspath(path).endswith(".json"):
            raise
        import json

        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        log.error("%s; on_bad_input: skip: left out of the alignment", exc)
        return unreadable_sidecar(doc, str(exc))


def _unreadable_entry(sc):
    """The alignment entry of an image left out of the alignment."""
    from .detection import empty_catalog

    return {
        "name": sc["filename"],
        "wcs": None,
        "wcsinfo": {},
        "group_id": sc["group_id"],
        "catalog": empty_catalog(),
        "shape": (),
        "date": None,
        "sidecar": sc,
        "unreadable": sc["extra"]["reason"],
    }


def align_readable(align_func, entries, **pars):
    """Run ``align_func(entries, **pars)`` on the readable entries only.

    Returns its ``(wcs_list, rows)`` for all entries, in order: an
    unreadable entry keeps ``wcs=None`` and gets a ``FAILED`` row whose
    reason says why it could not be read.
    """
    from .align import fit_row

    ok = [i for i, e in enumerate(entries) if not e.get("unreadable")]
    wcs_ok, rows_ok = align_func([entries[i] for i in ok], **pars) if ok else ([], [])
    wcs_list = [e["wcs"] for e in entries]
    rows = [fit_row(e["name"], e["group_id"], "relative", "FAILED", e.get("unreadable", "")) for e in entries]
    for i, w, r in zip(ok, wcs_ok, rows_ok):
        wcs_list[i], rows[i] = w, r
    return wcs_list, rows


def write_solution_sidecars(entries, wcs_list, rows, outputs):
    """Write one sidecar per image holding its (corrected) WCS and status.

    The chips of a plain FITS image (consecutive entries sharing an
    ``index``) go into one sidecar: the list of their WCSs, each chip's
    status and reason, and the file's status (``COMPLETE`` when any chip
    was aligned). ``wcs_list`` may be an iterator: each WCS is taken when
    its file is written, so a generator keeps one file's WCSs in memory at
    a time.
    """
    from itertools import groupby

    from .io import write_sidecar

    numbered = enumerate(zip(entries, wcs_list, rows))
    files = groupby(numbered, key=lambda kv: kv[1][0].get("index", ("entry", kv[0])))
    for (_, group), out in zip(files, outputs):
        items = [item for _, item in group]
        e, w, r = items[0]
        sc = e["sidecar"]
        chips = None
        if sc["kind"] == "fits":
            chips = [dict(ce["chip"], status=cr["status"], reason=cr["reason"]) for ce, _, cr in items]
            w = [cw for _, cw, _ in items]
            done = [cr for _, _, cr in items if cr["status"] == "COMPLETE"]
            if done and len(done) < len(items):
                skipped = "; ".join(f"{ce['name']}: {cr['reason']}" for ce, _, cr in items if cr["status"] != "COMPLETE")
                r = dict(done[0], reason=f"not aligned: {skipped}")
            elif done:
                r = done[0]
        write_sidecar(
            out,
            wcs=w,
            wcsinfo=sc["wcsinfo"],
            group_id=sc["group_id"],
            filename=sc["filename"],
            shape=sc["shape"],
            kind=sc["kind"],
            date=sc.get("date"),
            source=sc.get("source"),
            extra={"status": r["status"], "reason": r["reason"], "stage": r["stage"], "wcsname": r.get("wcsname", "")},
            chips=chips,
        )


def align_step(catalogs, sidecars, solutions_out, wcs_out, *, relative, on_bad_input="fail", quality=None, matches_out=None, attempts_out=None):
    """Relative alignment of all images; writes the solution table and per-image WCS sidecars.

    Images that could not be read (``on_bad_input: skip``) are left out and
    get a ``FAILED`` row and an "unreadable" WCS sidecar.

    Parameters
    ----------
    quality : dict or None
        The ``quality`` block: gates and recovery (`tweakflow.quality`).
    matches_out : str or None
        Where to write the matched source pairs of every fit
        (`tweakflow.qa.match_table`, ECSV).
    attempts_out : str or None
        Where to write every alignment attempt (one row per image and
        attempt, `tweakflow.align.ATTEMPT_COLUMNS`, ECSV).
    """
    import functools

    from .align import SerializedWCS, attempt_table, relative_align, rows_to_table
    from .catalogs import write_catalog
    from .qa import empty_match_table

    entries = load_entries(catalogs, sidecars, on_bad_input=on_bad_input)
    log.info("relative alignment of %d images in %d groups", len(entries), len({e["group_id"] for e in entries}))
    details = {}
    align = functools.partial(relative_align, quality=quality, details=details, serialized=True)
    wcs_list, rows = align_readable(align, entries, **relative)
    for r in rows:
        extra = f" (recovered: {r['recovery']})" if r.get("recovery") else ""
        log.info("%s [%s]: %s %s%s", r["image"], r["group_id"], r["status"], r["reason"], extra)
    # the corrected WCSs stay serialized until each is written
    loaded = (w.load() if isinstance(w, SerializedWCS) else w for w in wcs_list)
    write_solution_sidecars(entries, loaded, rows, wcs_out)
    write_catalog(rows_to_table(rows), solutions_out)
    if matches_out:
        matches = details.get("matches")
        write_catalog(matches if matches is not None else empty_match_table(), matches_out)
    if attempts_out:
        attempts = details.get("attempts")
        write_catalog(attempts if attempts is not None else attempt_table([]), attempts_out)


# ---------------------------------------------------------------------------
# scatter: write corrected images
# ---------------------------------------------------------------------------


def apply_step(image, wcs_sidecar, output, *, sip=None):
    """Write ``output``: the input image with its corrected WCS.

    ``COMPLETE`` when the alignment succeeded, ``SKIPPED`` otherwise, in
    which case the WCS is left unchanged. JWST ``ImageModel`` inputs get
    the corrected GWCS, ``meta.cal_step.tweakreg``, the FITS SIP
    approximation and ``s_region`` (`tweakflow.wcs_update.write_jwst_output`);
    plain FITS images a copy with corrected WCS keywords, ``WCSNAME`` and the
    original WCS kept as alternate ``O`` (`~tweakflow.wcs_update.write_fits_output`).

    Parameters
    ----------
    image : str
        Input image.
    wcs_sidecar : str
        The image's WCS sidecar from the last alignment stage.
    output : str
        Output image.
    sip : dict or None
        SIP-approximation parameters (`tweakflow.wcs_update.SIP_PARS`).
    """
    from .io import read_sidecar
    from .wcs_update import write_fits_output, write_jwst_output

    sc = read_sidecar(wcs_sidecar)
    if sc["kind"] == "unreadable":
        # on_bad_input: skip: the image was left out; there is nothing to write
        raise InputError(f"{image}: no output written: {sc['extra']['reason']}")
    if sc["kind"] == "fits":
        status = write_fits_output(image, output, sc)
    else:
        status = write_jwst_output(image, output, sc, sip)
    reason = sc["extra"].get("reason")
    log.info("%s -> %s (%s%s)", image, output, status, f": {reason}" if reason and status != "COMPLETE" else "")


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def summary_step(solution_tables, output):
    """Merge the per-stage solution tables into ``tweakreg_summary.ecsv``.

    One row per image: the final status and reason, the relative fit's
    statistics, and (with absolute alignment) the absolute fit's, prefixed
    ``abs_``.
    """
    from astropy.table import Table

    from .absolute import final_status
    from .catalogs import read_table, write_catalog

    tabs = [read_table(p) for p in solution_tables]
    rel = tabs[0]
    out = Table()
    out["image"] = rel["image"]
    out["group_id"] = rel["group_id"]
    status, reason = list(rel["status"]), list(rel["reason"])
    if len(tabs) > 1:
        ab = tabs[1]
        for k in range(len(rel)):
            status[k], reason[k] = final_status(rel["status"][k], rel["reason"][k], ab["status"][k], ab["reason"][k])
    out["status"] = np.array(status, dtype="U")
    out["reason"] = np.array(reason, dtype="U")
    for t in tabs:
        pre = "abs_" if str(t["stage"][0]) == "absolute" else ""
        if pre:
            out["abs_status"] = t["status"]
        for col in ("n_sources", "n_matches", "n_used", "rms_mas", "mae_mas", "xshift", "yshift", "rotation", "scale", "skew", "fitgeom"):
            if pre and col == "n_sources":
                continue
            out[pre + col] = t[col]
        # per-image fit statistics and recovery record (quality-gated alignment)
        for col in ("image_n_matches", "image_n_used", "image_rms_mas", "match_fraction", "fit_error_mas", "chance_log10p", "attempt", "n_attempts", "recovery", "grade"):
            if col in t.colnames:
                out[pre + col] = t[col]
    write_catalog(out, output)
    return out


# ---------------------------------------------------------------------------
# absolute alignment
# ---------------------------------------------------------------------------


def fetch_refcat_step(sidecars, output, *, catalog, url, timeout=30.0, retries=3):
    """Retrieve a Gaia reference catalog covering all images (``fetch_refcat`` rule)."""
    from .catalogs import write_catalog
    from .io import read_sidecar
    from .refcat import gaia_catalog_for_footprints

    footprints, dates = [], []
    for s in sidecars:
        sc = read_sidecar(s)
        if sc["kind"] == "unreadable":
            continue
        footprints.extend(sky_footprints(sc))
        if sc.get("date"):
            dates.append(sc["date"])
    tab = gaia_catalog_for_footprints(footprints, dates, catalog=catalog, url=url, timeout=timeout, retries=retries)
    log.info("retrieved %d %s sources", len(tab), catalog)
    write_catalog(tab, output)


def sky_footprints(sc):
    """The (N, 2) RA, Dec corner arrays (deg) of an image: one per chip of a plain FITS file.

    A GWCS's corners are those of its bounding box (``footprint``); an
    astropy WCS's those of its pixel grid, through its full distortion
    (``calc_footprint``, SIP and lookup tables included).
    """
    from .align import wcs_kind

    wcs = sc["wcs"] if isinstance(sc["wcs"], list) else [sc["wcs"]]
    return [np.asarray(w.calc_footprint() if wcs_kind(w) == "fits" else w.footprint(), dtype=float) for w in wcs]


def relative_result(entry):
    """``status``, ``reason`` and ``wcsname`` of an entry after the relative stage.

    A chip of a plain FITS file has its own status and reason (its sidecar's
    ``chips``); the WCS name is the file's.
    """
    extra = entry["sidecar"]["extra"]
    own = entry.get("chip") if "status" in (entry.get("chip") or {}) else extra
    return {"status": own.get("status", "SKIPPED"), "reason": own.get("reason", ""), "wcsname": extra.get("wcsname", "")}


def absolute_step(catalogs, sidecars, refcat, solutions_out, wcs_out, combined_out, *, absolute, refcat_name, quality=None, matches_out=None):
    """Fit the relatively aligned set to the reference catalog (``absolute_align`` rule).

    ``matches_out`` receives the matched pairs of the fit with their residuals
    (for the QA plots).
    """
    from .absolute import absolute_fit, apply_absolute, final_status, wcs_name
    from .align import rows_to_table
    from .catalogs import write_catalog
    from .refcat import read_reference_catalog

    entries = load_entries(catalogs, sidecars)
    ref = read_reference_catalog(refcat)
    statuses = [relative_result(e)["status"] for e in entries]
    details = {}
    solutions, rows, combined = absolute_fit(entries, [e["wcs"] for e in entries], statuses, ref, quality=quality, details=details, **absolute)
    solution_of = {i: sol for sol in solutions for i in sol["members"]}
    name = wcs_name(refcat_name)
    final_rows = []
    for e, r in zip(entries, rows):
        rel = relative_result(e)
        status, reason = final_status(rel["status"], rel["reason"], r["status"], r["reason"])
        wname = name if r["status"] == "COMPLETE" else rel["wcsname"]
        final_rows.append(dict(r, status=status, reason=reason, wcsname=wname))
        log.info("%s: absolute %s %s", r["image"], r["status"], r["reason"])
    # one corrected WCS at a time: built, written, released
    corrected = (apply_absolute(e, e["wcs"], solution_of[i]) if i in solution_of else e["wcs"] for i, e in enumerate(entries))
    write_solution_sidecars(entries, corrected, final_rows, wcs_out)
    tab = rows_to_table(rows)
    write_catalog(tab, solutions_out)
    write_catalog(combined, combined_out)
    if matches_out:
        from .qa import empty_match_table

        matches = details.get("matches")
        write_catalog(matches if matches is not None else empty_match_table(), matches_out)


def publish_refcat_step(refcat, output):
    """``save_abs_catalog``: publish the reference catalog used by the absolute fit."""
    from .catalogs import write_catalog
    from .refcat import read_reference_catalog

    write_catalog(read_reference_catalog(refcat), output)
