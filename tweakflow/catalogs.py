"""Source catalogs: reading user catalogs, writing the workflow's catalogs.

A source catalog has 0-indexed pixel columns ``x``/``y`` (or
``xcentroid``/``ycentroid``, renamed on reading) and optionally ``weight``.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.table import Table

from .atomic import atomic_output
from .errors import InputError

__all__ = ["read_source_catalog", "write_catalog", "read_table", "catalog_extension"]

_ALIASES = (("x", "y"), ("xcentroid", "ycentroid"), ("x_centroid", "y_centroid"))


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
        If the file is missing or unreadable, has no x/y columns, or has
        non-numeric or non-finite coordinates.
    """
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
    for xn, yn in _ALIASES:
        if xn in tab.colnames and yn in tab.colnames:
            break
    else:
        raise InputError(
            f"{path}: source catalog needs columns 'x' and 'y' (or 'xcentroid' and 'ycentroid'); "
            f"it has {tab.colnames}"
        )
    out = Table(tab, copy=True)
    if (xn, yn) != ("x", "y"):
        for old, new in ((xn, "x"), (yn, "y")):
            if new in out.colnames:
                out.remove_column(new)
            out.rename_column(old, new)
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


def read_table(path):
    """Read a table the workflow wrote (ECSV), with empty strings kept as ``""``.

    ECSV reads empty strings back as masked values; our tables use ``""``
    for "no reason", "no fit geometry", etc.
    """
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


def write_catalog(table, path, fmt="ascii.ecsv"):
    """Write a catalog atomically with an astropy Table writer format."""
    if fmt == "ecsv":
        fmt = "ascii.ecsv"
    with atomic_output(path) as tmp:
        table.write(tmp, format=fmt, overwrite=True)
