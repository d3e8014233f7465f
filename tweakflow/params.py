"""Parameters: every configuration block's defaults, how a block is resolved,
and the rules between parameters that a schema cannot express.

The one home of the library's defaults: the workflow's schema
(``workflow/schemas/config.schema.yaml``) and ``config/config.yaml`` state
the same values, and a test holds them equal. A block given by a user or a
caller is resolved over its defaults by `resolve_block`, which refuses
unknown keys (with a close match suggested), so a configuration and a
library call are refused alike, before any job runs.
"""

from __future__ import annotations

import difflib
import math

from .errors import ConfigError

__all__ = [
    "DEFAULT_DETECTION_PARS",
    "RELATIVE_PARS",
    "ABSOLUTE_PARS",
    "SIP_PARS",
    "QUALITY_DEFAULTS",
    "FITS_DEFAULTS",
    "TRANSFER_DEFAULTS",
    "resolve_block",
    "close_match",
    "check_separation",
]

#: Source-finding parameters of the tweakreg step and their defaults.
DEFAULT_DETECTION_PARS = {
    "starfinder": "iraf",
    "snr_threshold": 10.0,
    "kernel_fwhm": 2.5,
    "bkg_boxsize": 400,
    "minsep_fwhm": 0.0,
    "sigma_radius": 2.5,
    "sharplo": 0.5,
    "sharphi": 2.0,
    "roundlo": 0.0,
    "roundhi": 0.2,
    "brightest": 200,
    "peakmax": None,
    "npixels": 10,
    "connectivity": 8,
    "nlevels": 32,
    "contrast": 0.001,
    "multithresh_mode": "exponential",
    "localbkg_width": 0,
    "apermask_method": "correct",
    "kron_params": None,
    "deblend": True,
}


#: Relative-alignment parameters of the tweakreg step and their defaults.
RELATIVE_PARS = {
    "enforce_user_order": False,
    "expand_refcat": False,
    "minobj": 15,
    "searchrad": 2.0,
    "use2dhist": True,
    "separation": 1.0,
    "tolerance": 0.7,
    "xoffset": 0.0,
    "yoffset": 0.0,
    "fitgeometry": "rshift",
    "nclip": 3,
    "sigma": 3.0,
}


#: Absolute-alignment parameters of the tweakreg step and their defaults.
ABSOLUTE_PARS = {
    "abs_minobj": 15,
    "abs_searchrad": 6.0,
    "abs_use2dhist": True,
    "abs_separation": 1.0,
    "abs_tolerance": 0.7,
    "abs_fitgeometry": "rshift",
    "abs_nclip": 3,
    "abs_sigma": 3.0,
}


#: SIP-approximation parameters of the tweakreg step and their defaults.
SIP_PARS = {
    "sip_approx": True,
    "sip_degree": None,
    "sip_max_pix_error": 0.01,
    "sip_inv_degree": None,
    "sip_max_inv_pix_error": 0.01,
    "sip_npoints": 12,
}


#: Defaults of the ``quality`` configuration block.
QUALITY_DEFAULTS = {
    "enabled": True,
    "max_rms_mas": None,
    "min_matches": 10,
    "min_match_fraction": 0.1,
    "max_shift_arcsec": None,
    "max_rotation_deg": 1.0,
    "matches_per_parameter": 3,
    "max_fit_error_mas": 5.0,
    "max_chance_log10p": -6.0,
    "max_rms_ratio": 5.0,
    "recovery": True,
    "recovery_searchrad": [6.0, 12.0],
    "recovery_fitgeometry": True,
    "refine": True,
    "report": True,
}


#: The ``fits`` configuration block: how plain FITS images are read.
FITS_DEFAULTS = {
    # EXTNAME of the science extensions (every 2-D image HDU with this name
    # is one chip); None: the first 2-D image HDU with a celestial WCS, and
    # the HDUs sharing its EXTNAME (e.g. all ``SCI`` chips of an HST file).
    "sci_ext": None,
    # EXTNAME of the data-quality extensions (matched to chips by EXTVER);
    # None, or a file without such extensions: no DQ.
    "dq_ext": None,
    # DQ bits that mark a pixel unusable; None: any non-zero value.
    "dq_bits": None,
    # Header keyword (primary header, then the chip's) whose value is the
    # group id; None: each file is its own group (its chips together).
    "group_keyword": None,
}


#: The ``transfer`` configuration block: a finished run's corrections applied
#: to other images of the same exposures (``snakemake transfer``,
#: `tweakflow.transfer`).
TRANSFER_DEFAULTS = {
    # Images to correct: an association JSON, or a list of files and globs.
    "images": [],
    # output_dir of the finished run whose corrections are applied; None:
    # this configuration's run (its output_dir).
    "from": None,
    # An image whose exposure the run did not align (SKIPPED or FAILED there):
    # "skip" writes it unchanged, SKIPPED, as the run wrote that exposure's
    # images; "fail" fails its job.
    "on_skipped": "skip",
}


def resolve_block(block, defaults, given=None):
    """A parameter block over its defaults; unknown keys refused.

    Parameters
    ----------
    block : str
        The block's name as a user writes it (``quality``, ``fits``,
        ``tweakreg``), for the message.
    defaults : dict
        Every key of the block with its default.
    given : dict or None
        The keys set by the user or the caller.

    Returns
    -------
    dict
        A new dict: ``defaults`` updated with ``given``.

    Raises
    ------
    ConfigError
        Naming the unknown keys and, for each, the closest known key.
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        hints = []
        for key in unknown:
            close = close_match(key, defaults)
            hints.append(f"{key} (did you mean {close}?)" if close else key)
        raise ConfigError(f"{block}: unknown key(s): {', '.join(hints)}")
    return {**defaults, **given}


def close_match(word, candidates):
    """The candidate a misspelt ``word`` most likely meant, or None.

    The one home of the "did you mean ...?" suggestions (`resolve_block`,
    `tweakflow.config`): `difflib.get_close_matches` with its default
    cutoff (0.6), which finds ``searchrad`` for ``serchrad`` or
    ``inputs`` for ``inptus`` and nothing for an unrelated word. Two
    candidates equally close (``nrca1`` and ``nrcb1`` for ``nrac1``) give
    none: a guess between them would mislead as often as help.

    Parameters
    ----------
    word : object
        What was given (a key or a value); only strings are matched.
    candidates : iterable
        The valid keys or values; only strings are considered.

    Returns
    -------
    str or None
    """
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, [c for c in candidates if isinstance(c, str)], n=2)
    if len(close) == 2 and _similarity(word, close[0]) == _similarity(word, close[1]):
        return None
    return close[0] if close else None


def _similarity(a, b):
    """The score `difflib.get_close_matches` ranks by."""
    return difflib.SequenceMatcher(None, a, b).ratio()


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
