"""Rules between step parameters that a schema cannot express.

Checked by the workflow when it reads its configuration (before any job
runs) and by the library functions that take the parameters, so that a
configuration and a library call are refused alike.
"""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["check_separation"]


def check_separation(pars, prefix=""):
    """Refuse a ``separation`` smaller than sqrt(2) x ``tolerance``.

    The spec: ``separation`` (``abs_separation``) "must be at least sqrt(2)
    times larger than" ``tolerance`` (``abs_tolerance``): sources of one
    catalog closer than that could both fall within ``tolerance`` of one
    source of the other, and ``xyxymatch`` would confuse them. The JWST
    step refuses such values (stcal raises before matching, and the step
    then skips the alignment); here they are refused before any job runs.

    Parameters
    ----------
    pars : dict
        Parameters holding ``{prefix}separation`` and ``{prefix}tolerance``
        (arcsec).
    prefix : str
        ``""`` for the relative alignment, ``"abs_"`` for the absolute one.

    Raises
    ------
    ConfigError
        Naming both keys, their values and the smallest ``separation``
        allowed.
    """
    sep, tol = float(pars[f"{prefix}separation"]), float(pars[f"{prefix}tolerance"])
    if sep < math.sqrt(2.0) * tol:
        raise ConfigError(
            f"tweakreg.{prefix}separation ({sep:g}) must be at least sqrt(2) x tweakreg.{prefix}tolerance "
            f"({tol:g}), i.e. >= {math.sqrt(2.0) * tol:.4g} arcsec, so that matching cannot confuse sources"
        )
