"""Source catalogs: user catalogs, custom-catalog resolution, writing catalogs.

A source catalog has 0-indexed pixel columns ``x``/``y`` (each axis may be
named ``x``/``xcentroid``/``x_centroid`` in a user catalog, in any case;
renamed on reading) and optionally ``weight``.

With ``use_custom_catalogs``, the catalog of each image is chosen as the
JWST tweakreg step chooses it (`resolve_custom_catalogs`): a ``catfile``
takes precedence over the association members' ``tweakreg_catalog``, which
takes precedence over the image's own ``meta.tweakreg_catalog``.
"""

from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_output
from .errors import ConfigError, InputError
from .io import fits_root

# astropy.table is imported by the functions that use it: the workflow imports
# this module when it reads the Snakefile, which needs no table (0.3-0.8 s of every
# snakemake start, dry runs included).
__all__ = [
    "read_source_catalog",
    "write_catalog",
    "read_table",
    "columns_any_case",
    "catalog_extension",
    "published_catalog_name",
    "published_catalog_names",
    "writer_format",
    "parse_catfile",
    "model_catalog_name",
    "resolve_custom_catalogs",
]

#: Names of each pixel axis in a user catalog, in the JWST step's order of
#: preference (jwst ``_rename_catalog_columns``: ``x`` if present, else
#: ``xcentroid``, else ``x_centroid``, each axis on its own).
_AXIS_NAMES = {"x": ("x", "xcentroid", "x_centroid"), "y": ("y", "ycentroid", "y_centroid")}


def read_source_catalog(path):
    """Read a user-provided source catalog.

    Parameters
    ----------
    path : str
        Any file `astropy.table.Table.read` recognises.

    Returns
    -------
    astropy.table.Table
        Columns ``x``, ``y`` (float, 0-indexed pixels), ``weight`` when
        present, plus the other columns of the file.

    Raises
    ------
    InputError
        If the file is missing or unreadable, has no (or ambiguous) x/y
        columns (`_axis_column`), or has non-numeric or non-finite
        coordinates.
    """
    from astropy.table import Table

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: source catalog does not exist")
    try:
        tab = Table.read(path)
    except Exception:
        try:
            tab = Table.read(path, format="ascii")
        except Exception as exc:
            raise InputError(f"{path}: cannot read source catalog ({type(exc).__name__}: {exc})") from None
    out = Table(tab, copy=True)
    for axis in ("x", "y"):
        name = _axis_column(path, tab.colnames, axis)
        if name != axis:
            out.rename_column(name, axis)
    for col in ("x", "y") + (("weight",) if "weight" in out.colnames else ()):
        try:
            vals = np.asarray(out[col], dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"{path}: column '{col}' of the source catalog is not numeric") from None
        if hasattr(out[col], "mask") and np.any(out[col].mask):
            raise InputError(f"{path}: column '{col}' of the source catalog has missing values")
        if not np.all(np.isfinite(vals)):
            raise InputError(f"{path}: column '{col}' of the source catalog has non-finite values")
        out[col] = vals
    return out


def _axis_column(path, colnames, axis):
    """The column of a user catalog that holds pixel axis ``axis`` (``"x"`` or ``"y"``).

    The first of `_AXIS_NAMES` present, as the JWST step takes it; when none
    is present as written, the first present in another case (``X``,
    ``XCENTROID``...), which the step would refuse. Two columns that are
    one name in different case, with none as written, are ambiguous.

    Raises
    ------
    InputError
        Naming the file and the columns, when there is no such column or it
        is ambiguous.
    """
    names = _AXIS_NAMES[axis]
    for name in names:
        if name in colnames:
            return name
    for name in names:
        found = columns_any_case(colnames, name)
        if len(found) > 1:
            raise InputError(f"{path}: source catalog columns {found} are one name in different case; keep one")
        if found:
            return found[0]
    raise InputError(
        f"{path}: source catalog needs a column {' or '.join(repr(n) for n in names[:2])} (any case) "
        f"for {axis}; it has {colnames}"
    )


def columns_any_case(colnames, name):
    """The names in ``colnames`` that are ``name`` regardless of case, in their order.

    User catalogs (source and reference) name their columns in any case;
    each caller decides what several matches mean.
    """
    return [c for c in colnames if c.lower() == name.lower()]


def read_table(path):
    """Read a table the workflow wrote (ECSV), with empty strings kept as ``""``.

    ECSV reads empty strings back as masked values; our tables use ``""``
    for "no reason", "no fit geometry", etc.
    """
    from astropy.table import Table

    tab = Table.read(path, format="ascii.ecsv")
    for name in tab.colnames:
        col = tab[name]
        if col.dtype.kind in "US" and hasattr(col, "filled"):
            tab[name] = col.filled("")
    return tab


def catalog_extension(fmt):
    """File extension for an astropy Table writer format (``ascii.ecsv`` -> ``ecsv``)."""
    fmt = str(fmt)
    return fmt.split(".")[-1] if fmt.startswith("ascii.") else fmt


def published_catalog_name(filename, fmt):
    """File name of a ``save_catalogs`` catalog, as the JWST step names it.

    The step writes ``meta.filename`` with ``.fits`` replaced by
    ``_cat.<catalog_format>``: ``jw..._nrca1_cal.fits`` ->
    ``jw..._nrca1_cal_cat.ecsv`` (the ``_cal`` suffix is kept, unlike the
    output images' stem).

    Parameters
    ----------
    filename : str
        The image's ``meta.filename`` (`tweakflow.io.model_filename`).
    fmt : str
        ``catalog_format`` (`catalog_extension` gives the extension).
    """
    return f"{fits_root(filename)}_cat.{catalog_extension(fmt)}"


def published_catalog_names(images, fmt):
    """``save_catalogs``' file names of the images, refusing two alike.

    Parameters
    ----------
    images : list of dict
        ``stem``, ``path``, ``filename`` (`tweakflow.inputs.resolve_inputs`).
    fmt : str
        ``catalog_format``.

    Returns
    -------
    dict
        ``{published file name: stem}``.

    Raises
    ------
    ConfigError
        When two images have one ``meta.filename`` (possible with
        ``output_use_model: false``), naming both.
    """
    names, paths = {}, {}
    for it in images:
        name = published_catalog_name(it["filename"], fmt)
        if name in names:
            raise ConfigError(
                f"tweakreg.save_catalogs: '{paths[name]}' and '{it['path']}' would both publish their catalog as '{name}'"
            )
        names[name], paths[name] = it["stem"], it["path"]
    return names


def writer_format(fmt):
    """The astropy Table writer format for ``catalog_format``.

    ``ecsv`` (the step's default) means ``ascii.ecsv``; any other name must
    be a format `astropy.table.Table.write` knows.

    Raises
    ------
    ConfigError
        Naming ``tweakreg.catalog_format`` and the known formats.
    """
    from astropy.io import registry
    from astropy.table import Table

    fmt = str(fmt).strip()
    if fmt == "ecsv":
        return "ascii.ecsv"
    known = set(registry.get_formats(Table, "Write")["Format"])
    if fmt not in known:
        raise ConfigError(
            f"tweakreg.catalog_format: '{fmt}' is not an astropy Table writer format "
            f"(e.g. ecsv, fits, ascii.commented_header, votable)"
        )
    return fmt


def write_catalog(table, path, fmt="ascii.ecsv"):
    """Write a catalog atomically with an astropy Table writer format (`writer_format`)."""
    fmt = writer_format(fmt)
    with atomic_output(path) as tmp:
        table.write(tmp, format=fmt, overwrite=True)


# ---------------------------------------------------------------------------
# custom catalogs
# ---------------------------------------------------------------------------


def parse_catfile(path):
    """Read a ``catfile``: image names and their catalogs.

    One entry per line: an image file name, then (optionally) a catalog
    file name, separated by white space; blank lines and lines starting
    with ``#`` are ignored. Catalog names are relative to the catfile's
    folder. A missing catalog name means "detect sources for this image".

    Parameters
    ----------
    path : str
        The catfile.

    Returns
    -------
    dict
        ``{image name: absolute catalog path, or "" (detect)}``, in file
        order; empty when the file lists nothing.

    Raises
    ------
    InputError
        If the file is missing or unreadable, or a line has more than two
        columns.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: catfile does not exist (tweakreg.catfile)")
    folder = os.path.dirname(os.path.abspath(path))
    entries = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read catfile ({type(exc).__name__}: {exc})") from None
    for lineno, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) > 2:
            raise InputError(
                f"{path}, line {lineno}: a catfile line has two columns (image, catalog); found {len(words)}"
            )
        entries[words[0]] = os.path.normpath(os.path.join(folder, words[1])) if len(words) == 2 else ""
    return entries


def model_catalog_name(path):
    """``meta.filename`` and ``meta.tweakreg_catalog`` of an image, from its primary header.

    Reads only the primary header (keywords ``FILENAME`` and ``TCATFILE``).
    A file that does not exist yet (the demo's images, made by the
    workflow) has no catalog.

    Returns
    -------
    filename : str
        ``FILENAME``, or the file's base name when absent.
    catalog : str
        ``TCATFILE`` stripped (``""`` when absent).

    Raises
    ------
    InputError
        If the file cannot be read as FITS.
    """
    from astropy.io import fits

    path = os.fspath(path)
    if not os.path.exists(path):
        return os.path.basename(path), ""
    try:
        hdr = fits.getheader(path, 0)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the primary header ({type(exc).__name__}: {exc})") from None
    filename = os.path.basename(str(hdr.get("FILENAME", "") or "").strip()) or os.path.basename(path)
    return filename, str(hdr.get("TCATFILE", "") or "").strip()


def resolve_custom_catalogs(images, catfile=None):
    """Which images take a user catalog instead of detecting sources.

    The precedence of the JWST tweakreg step (``use_custom_catalogs``
    on), image by image:

    1. A non-empty ``catfile`` is used alone: the association's catalogs
       are then ignored altogether. A listed image takes the listed
       catalog, or detects sources when the catalog column is empty. A
       catfile listing no image at all turns custom catalogs off (every
       image detects sources) with a warning.
    2. Without a catfile, an association member's ``tweakreg_catalog``
       is used: a file name (relative to the association's folder), or
       ``""`` to detect sources.
    3. An image not listed by either takes its ``meta.tweakreg_catalog``
       (primary-header keyword ``TCATFILE``, relative to the image's
       folder) when non-empty, else detects sources.

    Catfile entries name images by file name: an entry's base name is
    compared with the image's ``meta.filename`` and its file's base name.

    Parameters
    ----------
    images : list of dict
        As returned by `tweakflow.inputs.resolve_inputs`: ``stem``,
        ``path`` and ``tweakreg_catalog`` (absolute path, ``""`` or None).
    catfile : str or None
        ``tweakreg.catfile`` (``""``/None: none).

    Returns
    -------
    catalogs : dict
        ``{stem: absolute catalog path or None (detect)}``.
    warnings : list of str
        Messages for the user (catfile without catalogs, catfile entries
        naming no input image).

    Raises
    ------
    InputError
        If the catfile is unusable, or a chosen catalog file does not
        exist (naming where it was given).
    """
    catfile = (catfile or "").strip()
    if not catfile:
        return {it["stem"]: _existing_catalog(it["path"], *_catalog_without_catfile(it)) for it in images}, []
    listed = parse_catfile(catfile)
    if not listed:
        notes = [
            (f"tweakreg.catfile '{catfile}' lists no catalogs: custom catalogs are turned off "
            "and sources are detected in every image")
        ]
        return {it["stem"]: None for it in images}, notes
    by_name = {os.path.basename(k): k for k in listed}
    out, used = {}, set()
    for it in images:
        key, chosen, where = _catalog_with_catfile(it["path"], listed, by_name, catfile)
        if key is not None:
            used.add(key)
        out[it["stem"]] = _existing_catalog(it["path"], chosen, where)
    notes = [f"tweakreg.catfile '{catfile}': '{key}' is not an input image; ignored" for key in listed if key not in used]
    return out, notes


#: Where a catalog named by ``meta.tweakreg_catalog`` comes from (relative to the image's folder).
_FROM_MODEL = "meta.tweakreg_catalog"


def _catalog_with_catfile(path, listed, by_name, catfile):
    """An image's catalog when a non-empty catfile is given (`resolve_custom_catalogs`, rule 1).

    Returns
    -------
    key : str or None
        The catfile entry naming the image (by ``meta.filename``, else the
        file's base name), or None.
    catalog : str or None
        The entry's catalog (None: detect), else ``meta.tweakreg_catalog``
        when non-empty, else None.
    where : str or None
        Who gave the catalog, for messages.
    """
    filename, tcat = model_catalog_name(path)
    key = next((by_name[n] for n in (filename, os.path.basename(path)) if n in by_name), None)
    if key is not None:
        return key, listed[key] or None, f"catfile '{catfile}'"
    if tcat:
        return None, tcat, _FROM_MODEL
    return None, None, None


def _catalog_without_catfile(image):
    """``(catalog or None, where)`` of an image without a catfile (rules 2 and 3)."""
    if image.get("tweakreg_catalog") is not None:
        return image["tweakreg_catalog"] or None, "the association (member tweakreg_catalog)"
    _, tcat = model_catalog_name(image["path"])
    if tcat:
        return tcat, _FROM_MODEL
    return None, None


def _existing_catalog(path, catalog, where):
    """The chosen catalog of image ``path``, made absolute if relative to it, which must exist.

    None (detect sources) stays None.

    Raises
    ------
    InputError
        Naming the catalog, the image and ``where`` it was given, when the
        file does not exist.
    """
    if catalog and where == _FROM_MODEL:
        catalog = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), catalog))
    if catalog and not os.path.isfile(catalog):
        raise InputError(f"{catalog}: custom catalog of {path} (given by {where}) does not exist")
    return catalog
