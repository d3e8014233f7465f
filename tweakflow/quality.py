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
again (`tweakflow.fitting.refine_fit`), which removes the false pairs that bias
tweakwcs fits by a few mas.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError
from .fitting import N_PARAMS, design_matrix
from .params import QUALITY_DEFAULTS, resolve_block

__all__ = [
    "FITGEOM_CHAIN",
    "resolve_quality",
    "gate_limits",
    "check_fit",
    "check_image",
    "recovery_plan",
    "attempt_label",
    "fit_uncertainty",
    "chance_log10p",
    "fit_significance",
    "consistent_rms_limit",
]


#: Fit geometries from most to fewest degrees of freedom.
FITGEOM_CHAIN = ("general", "rscale", "rshift", "shift")

def resolve_quality(quality=None):
    """The ``quality`` block over `QUALITY_DEFAULTS`, checked.

    Parameters
    ----------
    quality : dict or None
        User settings over `tweakflow.params.QUALITY_DEFAULTS` (``None``: the defaults, gates and recovery on).

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        For an unknown key or a value out of range, naming the key.
    """
    q = resolve_block("quality", QUALITY_DEFAULTS, quality)
    for key in ("max_rms_mas", "max_shift_arcsec", "max_rotation_deg", "max_fit_error_mas", "max_rms_ratio"):
        if q[key] is not None and not float(q[key]) > 0:
            raise ConfigError(f"quality.{key}: must be positive or null, got {q[key]!r}")
    if int(q["min_matches"]) < 0:
        raise ConfigError(f"quality.min_matches: must be >= 0, got {q['min_matches']!r}")
    if float(q["matches_per_parameter"]) < 0:
        raise ConfigError(f"quality.matches_per_parameter: must be >= 0, got {q['matches_per_parameter']!r}")
    if q["max_chance_log10p"] is not None and not float(q["max_chance_log10p"]) <= 0:
        raise ConfigError(f"quality.max_chance_log10p: must be <= 0 or null, got {q['max_chance_log10p']!r}")
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
        ``max_shift_arcsec``, ``max_rotation_deg``, ``matches_per_parameter``,
        ``max_fit_error_mas`` and ``max_chance_log10p`` (``inf`` for no limit).
    """
    rms = quality["max_rms_mas"]

    def limit(key):
        return math.inf if quality[key] is None else float(quality[key])

    return {
        "max_rms_mas": float(rms) if rms is not None else 1000.0 * float(tolerance) / 3.0,
        "min_matches": int(quality["min_matches"]),
        "min_match_fraction": float(quality["min_match_fraction"]),
        "max_shift_arcsec": limit("max_shift_arcsec"),
        "max_rotation_deg": limit("max_rotation_deg"),
        "matches_per_parameter": float(quality["matches_per_parameter"]),
        "max_fit_error_mas": limit("max_fit_error_mas"),
        "max_chance_log10p": limit("max_chance_log10p"),
    }


def _wrap_angle(deg):
    """An angle in degrees folded into [-180, 180)."""
    return (float(deg) + 180.0) % 360.0 - 180.0


def check_fit(stats, limits):
    """The gates a fit fails.

    Parameters
    ----------
    stats : dict
        ``n_used`` (sources used in the fit), ``fitgeom``, ``rms_mas``,
        ``match_fraction`` (NaN when the catalogs do not overlap),
        ``shift_arcsec`` (length of the shift), ``rotation_deg``,
        ``fit_error_mas`` (`fit_uncertainty` over the images) and
        ``chance_log10p`` (`chance_log10p`); the last two may be absent.
    limits : dict
        `gate_limits`.

    Returns
    -------
    list of str
        One message per failed gate (empty: the fit passes).
    """
    fails = []
    n_min = max(limits["min_matches"], math.ceil(limits["matches_per_parameter"] * N_PARAMS.get(stats.get("fitgeom"), 0)))
    if stats["n_used"] < n_min:
        why = f"min_matches {limits['min_matches']}" if n_min == limits["min_matches"] else f"{n_min} needed for a {stats['fitgeom']} fit"
        fails.append(f"{stats['n_used']} sources used in the fit < {why}")
    rms = float(stats["rms_mas"])
    if not math.isfinite(rms) or rms > limits["max_rms_mas"]:
        fails.append(f"fit RMS {rms:.1f} mas > max_rms_mas {limits['max_rms_mas']:.1f}")
    frac = float(stats["match_fraction"])
    if not math.isfinite(frac):
        fails.append("no source of either catalog lies in their overlap")
    elif frac < limits["min_match_fraction"]:
        fails.append(f"match fraction {frac:.2f} < min_match_fraction {limits['min_match_fraction']:.2f}")
    err = float(stats.get("fit_error_mas", 0.0))
    if not err <= limits["max_fit_error_mas"]:
        fails.append(f"fit poorly constrained: {err:.1f} mas predicted error on the images > max_fit_error_mas {limits['max_fit_error_mas']:g}")
    lp = float(stats.get("chance_log10p", -math.inf))
    if not lp <= limits["max_chance_log10p"]:
        fails.append(f"matches no better than chance: probability 10^{lp:.1f} > 10^{limits['max_chance_log10p']:g}")
    if float(stats["shift_arcsec"]) > limits["max_shift_arcsec"]:
        fails.append(f"shift {stats['shift_arcsec']:.3f} arcsec > max_shift_arcsec {limits['max_shift_arcsec']:g}")
    rot = abs(_wrap_angle(stats["rotation_deg"]))
    if rot > limits["max_rotation_deg"]:
        fails.append(f"rotation {rot:.4f} deg > max_rotation_deg {limits['max_rotation_deg']:g}")
    return fails


def fit_uncertainty(xy, residuals, fitgeom, at):
    """Largest predicted 1-sigma position error of a linear fit at points ``at``.

    The fit's parameters are known as well as its pairs constrain them: with
    per-axis noise estimated from the residuals, their covariance is
    sigma^2 (A^T A)^-1 for the design matrix A of the pairs' positions
    (about their centroid, rotations linearised). Propagated to ``at`` (the
    corners of the images the fit is applied to), it says how far the
    corrected WCS may be wrong where the matches do not reach: a
    ``general`` fit to a few stars in one corner of a two-detector group is
    poorly constrained on the far detector, whatever its RMS.

    Parameters
    ----------
    xy : (N, 2) array
        Positions of the pairs used in the fit (any linear unit).
    residuals : (N, 2) array
        Their residuals, in the unit of the result.
    fitgeom : str
        ``shift``, ``rshift``, ``rscale`` or ``general``.
    at : (M, 2) array
        Points (same unit as ``xy``) where the error is predicted.

    Returns
    -------
    float
        The largest predicted 2-D error at ``at`` (``inf`` when the fit has
        no redundancy or the pairs cannot constrain the geometry).
    """
    xy = np.asarray(xy, float)
    n, k = len(xy), N_PARAMS[fitgeom]
    if 2 * n <= k:
        return math.inf
    center = xy.mean(axis=0)
    ax, ay = design_matrix(xy - center, fitgeom)
    a = np.vstack([ax, ay])
    sigma2 = float(np.sum(np.asarray(residuals, float) ** 2)) / (2 * n - k)
    normal = a.T @ a
    if np.linalg.cond(normal) > 1e12:
        return math.inf
    cov = sigma2 * np.linalg.inv(normal)
    jx, jy = design_matrix(np.asarray(at, float) - center, fitgeom)
    var = np.einsum("ij,jk,ik->i", jx, cov, jx) + np.einsum("ij,jk,ik->i", jy, cov, jy)
    return float(np.sqrt(np.max(var)))


def chance_log10p(n_pairs, n_trials, density, radius, searchrad, fitgeom):
    """log10 of the probability that ``n_pairs`` matches arise by chance.

    Unrelated catalogs still pair: each of the ``n_trials`` sources of one
    catalog that lie where the other has sources finds one within
    ``radius`` with probability ``density * pi * radius**2``, so the number
    of chance pairs is Poisson-distributed with that mean. The offset
    search makes it ``(searchrad / radius)**2`` tries at finding the best
    such coincidence, and each free parameter beyond the shift one more
    factor of ten; these multiply the Poisson tail probability of
    ``n_pairs`` or more. A correct fit's pairs lie within a few noise
    sigmas (a few mas), where chance pairs are rare: its probability is
    10^-20 or smaller; a fit to chance pairs spreads them over the matching
    tolerance, and its probability is near one.

    Parameters
    ----------
    n_pairs : int
        Pairs used by the fit, all within ``radius`` of their counterpart.
    n_trials : int
        Sources that could have been paired (in the overlap).
    density : float
        Surface density of the other catalog's sources (per unit area of
        ``radius``).
    radius, searchrad : float
        Largest residual of the pairs, and the offset search radius.
    fitgeom : str

    Returns
    -------
    float
    """
    from scipy.stats import poisson

    if n_pairs <= 0:
        return 0.0
    radius = max(float(radius), 1e-12)
    lam = max(float(n_trials), float(n_pairs)) * float(density) * math.pi * radius**2
    if lam <= 0:
        return -math.inf
    tail = float(poisson.logsf(int(n_pairs) - 1, lam)) / math.log(10.0)
    looks = 2.0 * math.log10(max(float(searchrad) / radius, 1.0)) + (N_PARAMS.get(fitgeom, 2) - 2)
    return min(tail + looks, 0.0)


def fit_significance(im_xy, fitted_xy, residuals_mas, ref_xy, polygons, n_trials, fitgeom, searchrad, tolerance, tp_scale):
    """``fit_error_mas`` and ``chance_log10p`` of a fit, for `check_fit`.

    Parameters
    ----------
    im_xy, fitted_xy : (N, 2) array
        The used sources before and after the fit (tangent-plane units).
    residuals_mas : (N, 2) array
        Their residuals (mas).
    ref_xy : (M, 2) array
        Every source of the other catalog (tangent-plane units); its
        density is measured around the used sources, within five matching
        tolerances.
    polygons : list of (K, 2) array
        Footprints of the images the fit is applied to (tangent-plane units).
    n_trials : int
        Sources that could have been paired (`chance_log10p`).
    fitgeom : str
    searchrad, tolerance : float
        Offset search radius and matching tolerance (arcsec).
    tp_scale : float
        Arcsec per tangent-plane unit.
    """
    from scipy.spatial import cKDTree

    if len(im_xy) == 0:
        return {"fit_error_mas": math.inf, "chance_log10p": 0.0}
    fit_error = fit_uncertainty(im_xy, residuals_mas, fitgeom, np.vstack(polygons))
    r_big = 5.0 * float(tolerance) / tp_scale
    counts = cKDTree(ref_xy).query_ball_point(fitted_xy, r_big, return_length=True) if len(ref_xy) else np.zeros(len(fitted_xy))
    density = max(float(np.mean(counts)) - 1.0, 0.0) / (math.pi * r_big**2)
    radius = float(np.max(np.hypot(*np.asarray(residuals_mas, float).T))) / (1000.0 * tp_scale)
    log10p = chance_log10p(len(im_xy), n_trials, density, radius, float(searchrad) / tp_scale, fitgeom)
    return {"fit_error_mas": fit_error, "chance_log10p": log10p}


def consistent_rms_limit(rms_values, ratio):
    """Largest fit RMS consistent with the run's other fits, or ``inf``.

    Correct fits of one run share the catalogs' centroid noise, so their
    RMS values are alike; a fit several times worse than their median has
    false pairs in it (or a geometry that does not fit), though it may stay
    far below the tolerance-based ``max_rms_mas``. Needs three fits to
    judge; the limit is never below 5 mas, so that noise-free data cannot
    make every fit look inconsistent.
    """
    vals = [float(v) for v in rms_values if math.isfinite(float(v))]
    if ratio is None or len(vals) < 3:
        return math.inf
    return max(float(ratio) * float(np.median(vals)), 5.0)


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
