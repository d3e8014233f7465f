"""Fan-out steps: one job per image (and the demo data, the Gaia catalog)."""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import vstack

from ..catalogs import read_source_catalog, read_table, write_catalog
from ..detection import detect_sources, empty_catalog
from ..entries import sky_footprints
from ..errors import InputError
from ..geometry import det_to_world, footprint_world
from ..io import (
    image_sidecar_doc,
    image_sidecar_from_doc,
    read_image,
    read_sidecar,
    write_image_sidecar,
    write_unreadable_sidecar,
)
from ..refcat import gaia_catalog_for_footprints
from ..synthetic import SyntheticConfig, make_dataset

__all__ = ["demo_step", "detect_step", "publish_catalog_step", "fetch_refcat_step"]

log = logging.getLogger("tweakflow")


def demo_step(outdir, demo_config):
    """Generate the built-in synthetic dataset into ``outdir``."""
    cfg = SyntheticConfig.from_dict(demo_config)
    out = make_dataset(outdir, cfg)
    log.info("wrote %d synthetic images to %s", len(out["images"]), outdir)
    return out


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
    try:
        im = read_image(image, with_data=custom_catalog is None, with_wcs=False, fits=fits)
    except InputError as exc:
        if on_bad_input != "skip":
            raise
        log.error("%s; on_bad_input: skip: left out of the alignment", exc)
        write_catalog(empty_catalog(), catalog_out, "ascii.ecsv")
        write_unreadable_sidecar(sidecar_out, image, str(exc), asn_group_id=group_id)
        return
    if custom_catalog:
        cat = read_source_catalog(custom_catalog)
        log.info("%s: using custom catalog %s (%d sources)", image, custom_catalog, len(cat))
    else:
        cat = _detected_catalog(im, image, detection)
    cat.meta["image"] = im.meta["filename"]
    doc = image_sidecar_doc(im, group_id)
    sky = _sky_positions(doc, cat, image)
    write_catalog(cat, catalog_out, "ascii.ecsv")
    write_image_sidecar(sidecar_out, doc, sky=sky)


def _detected_catalog(im, image, detection):
    """Sources detected in every chip of an image (a ``chip`` column for plain FITS files)."""
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
        return parts[0]
    return vstack(parts, join_type="outer", metadata_conflicts="silent")


def _sky_positions(doc, cat, image):
    """Add ``ra``, ``dec`` (deg, input WCS) to ``cat``; the image's group id and
    per-chip footprints (the sidecar's ``sky``: what the global solve's pair
    listing and matching read instead of the WCS).

    The WCS is deserialized as the gather steps do (`image_sidecar_from_doc`);
    when it cannot be, the sidecar goes without ``sky`` and the gather step
    reports the problem (or, with ``on_bad_input: skip``, leaves the image out).
    """
    try:
        sc = image_sidecar_from_doc(doc, image)
    except Exception as exc:  # reported by the gather step, which reads the same WCS
        log.warning("%s: WCS not readable here (%s: %s)", image, type(exc).__name__, exc)
        return None
    pairs = _chip_wcs(sc)
    cat["ra"], cat["dec"] = _world_positions(pairs, cat)
    cat["ra"].unit = cat["dec"].unit = "deg"
    return {"group_id": sc["group_id"], "footprints": [np.column_stack(footprint_world(w, shape, edges=True)) for w, shape in pairs]}


def _chip_wcs(sc):
    """(WCS, shape) of each chip of a sidecar's image (one for a JWST image)."""
    if sc["kind"] == "fits":
        return [(w, tuple(c["shape"])) for w, c in zip(sc["wcs"], sc["chips"])]
    return [(sc["wcs"], tuple(sc["shape"]))]


def _world_positions(pairs, cat):
    """RA, Dec (deg) of a catalog's ``x``, ``y`` through the WCS of their chip (``chip`` column, 1-based; else chip 1)."""
    chip = np.asarray(cat["chip"], int) if "chip" in cat.colnames else np.ones(len(cat), int)
    ra, dec = np.full(len(cat), np.nan), np.full(len(cat), np.nan)
    for k, (w, _) in enumerate(pairs, 1):
        sel = chip == k
        if np.any(sel):
            ra[sel], dec[sel] = det_to_world(w, np.asarray(cat["x"], float)[sel], np.asarray(cat["y"], float)[sel])
    return ra, dec


def publish_catalog_step(catalog, output, *, catalog_format="ecsv", wcs_sidecar=None):
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
    wcs_sidecar : str or None
        The image's WCS sidecar from the last alignment stage: the published
        catalog gets ``RA``, ``DEC`` (deg) of each source through the
        corrected WCS (the input WCS when the image was not aligned;
        ``meta`` says which: ``wcsname``, ``tweakreg_status``), in place of
        the workflow's ``ra``, ``dec`` through the input WCS. The JWST step
        publishes its catalogs before the alignment, without sky positions.
    """
    cat = read_table(catalog)
    if wcs_sidecar is not None:
        sc = read_sidecar(wcs_sidecar)
        cat.remove_columns([c for c in ("ra", "dec") if c in cat.colnames])
        if sc["kind"] != "unreadable":
            cat["RA"], cat["DEC"] = _world_positions(_chip_wcs(sc), cat)
            cat["RA"].unit = cat["DEC"].unit = "deg"
            cat.meta.update(wcsname=sc["extra"].get("wcsname", ""), tweakreg_status=sc["extra"].get("status", ""))
    write_catalog(cat, output, catalog_format)
    log.info("wrote source catalog %s (%d sources)", output, len(cat))


def fetch_refcat_step(sidecars, output, *, catalog, url, timeout=30.0, retries=3, hygiene=None):
    """Retrieve a Gaia reference catalog covering all images (``fetch_refcat`` rule).

    ``hygiene``: the ``refcat`` block's magnitude limits, proper-motion policy
    and weights (`tweakflow.refcat.resolve_hygiene`; None: the JWST step's).
    """
    footprints, dates = [], []
    for s in sidecars:
        sc = read_sidecar(s)
        if sc["kind"] == "unreadable":
            continue
        footprints.extend(sky_footprints(sc))
        if sc.get("date"):
            dates.append(sc["date"])
    tab = gaia_catalog_for_footprints(footprints, dates, catalog=catalog, url=url, timeout=timeout, retries=retries, hygiene=hygiene)
    log.info("retrieved %d %s sources", len(tab), catalog)
    write_catalog(tab, output)
