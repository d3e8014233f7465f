"""Quality gates for alignment fits, and the recovery chain of attempts.

The JWST ``tweakreg`` step accepts any fit tweakwcs completes: when the true
offset between two exposures exceeds ``searchrad``, the 2-D histogram peaks
on a chance coincidence, ``xyxymatch`` pairs unrelated stars within
``tolerance``, and the step reports ``COMPLETE`` with an arcsecond error.
Such a fit is recognisable: its residuals are as large as the matching
tolerance (a few hundred mas, where a correct fit has a few mas), and only a
small fraction of the stars the two catalogs share in their overlap is
matched. The gates below test exactly that, with limits far from what a
correct fit gives, so that a correct fit always passes:

* ``max_rms_mas``: RMS of the fit residuals (``null``: a third of the
  matching tolerance; chance pairs are spread over the whole tolerance
  disc, RMS about 0.7 x tolerance);
* ``min_matches``: sources used in the fit after clipping;
* ``min_match_fraction``: of the sources both catalogs have in their
  overlap (on the fitted WCS), the fraction used in the fit;
* ``max_shift_arcsec`` and ``max_rotation_deg``: size of the correction
  (``null``: no limit).

A fit that fails a gate, or that tweakwcs could not make, is retried by the
recovery chain (`recovery_plan`): first with wider search radii and the
2-D histogram offset search, then with fewer degrees of freedom
(``general`` -> ``rscale`` -> ``rshift`` -> ``shift``).

With ``refine`` every fit tweakwcs completes is refined before it is
judged: its sources are re-paired as mutual nearest neighbours and fitted
again (see `tweakflow.align`), which removes the false pairs that bias
tweakwcs fits by a few mas.
"""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = [
    "QUALITY_DEFAULTS",
    "FITGEOM_CHAIN",
    "resolve_quality",
    "gate_limits",
    "check_fit",
    "check_image",
    "recovery_plan",
    "attempt_label",
]

#: Defaults of the ``quality`` configuration block.
QUALITY_DEFAULTS = {
    "enabled": True,
    "max_rms_mas": None,
    "min_matches": 10,
    "min_match_fraction": 0.1,
    "max_shift_arcsec": None,
    "max_rotation_deg": 1.0,
    "recovery": True,
    "recovery_searchrad": [6.0, 12.0],
    "recovery_fitgeometry": True,
    "refine": True,
    "report": True,
}

#: Fit geometries from most to fewest degrees of freedom.
FITGEOM_CHAIN = ("general", "rscale", "rshift", "shift")


def resolve_quality(quality=None):
    """The ``quality`` block over `QUALITY_DEFAULTS`, checked.

    Parameters
    ----------
    quality : dict or None
        User settings (``None``: the defaults, gates and recovery on).

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        For an unknown key or a value out of range, naming the key.
    """
    q = dict(QUALITY_DEFAULTS)
    quality = dict(quality or {})
    unknown = set(quality) - set(q)
    if unknown:
        raise ConfigError(f"quality: unknown key(s) {sorted(unknown)}")
    q.update(quality)
    for key in ("max_rms_mas", "max_shift_arcsec", "max_rotation_deg"):
        if q[key] is not None and not float(q[key]) > 0:
            raise ConfigError(f"quality.{key}: must be positive or null, got {q[key]!r}")
    if int(q["min_matches"]) < 0:
        raise ConfigError(f"quality.min_matches: must be >= 0, got {q['min_matches']!r}")
    if not 0.0 <= float(q["min_match_fraction"]) <= 1.0:
        raise ConfigError(f"quality.min_match_fraction: must be in [0, 1], got {q['min_match_fraction']!r}")
    radii = [float(r) for r in (q["recovery_searchrad"] or [])]
    if any(not r > 0 for r in radii):
        raise ConfigError(f"quality.recovery_searchrad: radii must be positive, got {q['recovery_searchrad']!r}")
    q["recovery_searchrad"] = radii
    return q


def gate_limits(quality, tolerance):
    """Numeric limits of the gates.

    Parameters
    ----------
    quality : dict
        Resolved ``quality`` block (`resolve_quality`).
    tolerance : float
        Matching tolerance of the fit (arcsec); sets ``max_rms_mas`` when
        that is ``null``.

    Returns
    -------
    dict
        ``max_rms_mas``, ``min_matches``, ``min_match_fraction``,
        ``max_shift_arcsec`` and ``max_rotation_deg`` (``inf`` for no limit).
    """
    rms = quality["max_rms_mas"]
    return {
        "max_rms_mas": float(rms) if rms is not None else 1000.0 * float(tolerance) / 3.0,
        "min_matches": int(quality["min_matches"]),
        "min_match_fraction": float(quality["min_match_fraction"]),
        "max_shift_arcsec": math.inf if quality["max_shift_arcsec"] is None else float(quality["max_shift_arcsec"]),
        "max_rotation_deg": math.inf if quality["max_rotation_deg"] is None else float(quality["max_rotation_deg"]),
    }


def _wrap_angle(deg):
    """An angle in degrees folded into [-180, 180)."""
    return (float(deg) + 180.0) % 360.0 - 180.0


def check_fit(stats, limits):
    """The gates a fit fails.

    Parameters
    ----------
    stats : dict
        ``n_used`` (sources used in the fit), ``rms_mas``,
        ``match_fraction`` (NaN when the catalogs do not overlap),
        ``shift_arcsec`` (length of the shift) and ``rotation_deg``.
    limits : dict
        `gate_limits`.

    Returns
    -------
    list of str
        One message per failed gate (empty: the fit passes).
    """
    fails = []
    if stats["n_used"] < limits["min_matches"]:
        fails.append(f"{stats['n_used']} sources used in the fit < min_matches {limits['min_matches']}")
    rms = float(stats["rms_mas"])
    if not math.isfinite(rms) or rms > limits["max_rms_mas"]:
        fails.append(f"fit RMS {rms:.1f} mas > max_rms_mas {limits['max_rms_mas']:.1f}")
    frac = float(stats["match_fraction"])
    if not math.isfinite(frac):
        fails.append("no source of either catalog lies in their overlap")
    elif frac < limits["min_match_fraction"]:
        fails.append(f"match fraction {frac:.2f} < min_match_fraction {limits['min_match_fraction']:.2f}")
    if float(stats["shift_arcsec"]) > limits["max_shift_arcsec"]:
        fails.append(f"shift {stats['shift_arcsec']:.3f} arcsec > max_shift_arcsec {limits['max_shift_arcsec']:g}")
    rot = abs(_wrap_angle(stats["rotation_deg"]))
    if rot > limits["max_rotation_deg"]:
        fails.append(f"rotation {rot:.4f} deg > max_rotation_deg {limits['max_rotation_deg']:g}")
    return fails


def check_image(stats, limits):
    """The gates one image of a group fails, judged on its own sources.

    An image shares its group's fit; it fails only on evidence that its
    catalog contradicts that fit: enough of its sources lie in the overlap
    with the reference (``n_possible >= min_matches``) but too few of them
    are used by the fit, or the residuals of its used sources are too large.
    An image with too few sources in the overlap to judge passes.

    Parameters
    ----------
    stats : dict
        ``n_used``, ``n_possible`` (sources both catalogs have in the
        overlap), ``match_fraction`` and ``rms_mas`` of the image's sources.
    limits : dict
        `gate_limits`.

    Returns
    -------
    list of str
    """
    fails = []
    if stats["n_possible"] < max(limits["min_matches"], 1):
        return fails
    frac = float(stats["match_fraction"])
    if frac < limits["min_match_fraction"]:
        fails.append(
            f"{stats['n_used']} of {stats['n_possible']} sources in the overlap used "
            f"(match fraction {frac:.2f} < min_match_fraction {limits['min_match_fraction']:.2f})"
        )
    rms = float(stats["rms_mas"])
    if stats["n_used"] >= 3 and math.isfinite(rms) and rms > limits["max_rms_mas"]:
        fails.append(f"RMS of its sources {rms:.1f} mas > max_rms_mas {limits['max_rms_mas']:.1f}")
    return fails


def recovery_plan(searchrad, use2dhist, fitgeometry, quality):
    """The attempts of the recovery chain, in tiers.

    Tier 0 is the configured fit. With ``recovery`` on, tier 1 retries the
    configured geometry with each wider ``recovery_searchrad`` and the 2-D
    histogram offset search; then (``recovery_fitgeometry``) one tier per
    geometry with fewer degrees of freedom, each with the configured and
    the wider radii. A tier is tried only when no attempt of the previous
    tiers passed the gates.

    Returns
    -------
    list of list of dict
        Each attempt: ``searchrad`` (arcsec), ``use2dhist``, ``fitgeometry``.
    """
    searchrad = float(searchrad)
    tiers = [[{"searchrad": searchrad, "use2dhist": bool(use2dhist), "fitgeometry": fitgeometry}]]
    if not (quality["enabled"] and quality["recovery"]):
        return tiers
    wider = [r for r in quality["recovery_searchrad"] if r > searchrad]
    tiers.append([{"searchrad": r, "use2dhist": True, "fitgeometry": fitgeometry} for r in wider])
    if quality["recovery_fitgeometry"] and fitgeometry in FITGEOM_CHAIN:
        radii = [searchrad, *wider]
        for geom in FITGEOM_CHAIN[FITGEOM_CHAIN.index(fitgeometry) + 1 :]:
            tiers.append([{"searchrad": r, "use2dhist": True if r != searchrad else bool(use2dhist), "fitgeometry": geom} for r in radii])
    return [t for t in tiers if t]


def attempt_label(attempt):
    """Short description of an attempt: ``rshift, searchrad 6 arcsec, 2D histogram``."""
    hist = ", 2D histogram" if attempt["use2dhist"] else ""
    return f"{attempt['fitgeometry']}, searchrad {attempt['searchrad']:g} arcsec{hist}"
