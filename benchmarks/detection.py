"""Benchmark: tweakflow's per-image source detection against the JWST pipeline's.

On synthetic 2048x2048 NIRCam-like images (`tweakflow.synthetic`, one per
``--seeds``), for each star finder, this times

* ``detect``: `tweakflow.detection.detect_sources` on arrays in memory, vs
  ``jwst.tweakreg.tweakreg_catalog.make_tweakreg_catalog`` on an open
  ``ImageModel`` (with the keyword arguments the JWST step builds);
* ``read+detect``: the same, plus reading the file
  (`tweakflow.io.read_image` vs opening the ``ImageModel``),

all in one process (warm: after one untimed call of each), and compares the
centroid accuracy of both catalogs against the true star positions: the
median distance between detected and true positions of isolated stars
above a signal-to-noise ratio of 20 (``--min-snr``), matched within 1 pixel,
pooled over the images; also on the stars both catalogs found, and on those
only one of them found (tweakflow keeps stars with a masked pixel in their
core, which it fills, where the JWST function often loses them).

jwst is not a dependency of tweakflow: it lives in the benchmark's own
environment, created by ``bash benchmarks/jwst_env.sh`` in
``benchmarks/.jwst-venv``. Run the benchmark with any Python; when jwst is
not importable it re-runs itself with that environment's interpreter, with
this repository on ``PYTHONPATH`` so that both implementations run in the
same process with the same numpy/astropy/photutils::

    bash benchmarks/jwst_env.sh            # once
    python benchmarks/detection.py         # --help for options
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JWST_PYTHON = os.path.join(HERE, ".jwst-venv", "bin", "python")
_REEXEC_FLAG = "TWEAKFLOW_BENCH_IN_JWST_ENV"


def ensure_jwst():
    """Re-run this script with the benchmark's jwst environment if needed."""
    try:
        import jwst  # noqa: F401

        return
    except ImportError:
        pass
    if os.environ.get(_REEXEC_FLAG) or not os.path.exists(JWST_PYTHON):
        sys.exit(
            "jwst is not importable and benchmarks/.jwst-venv does not provide it: "
            "run `bash benchmarks/jwst_env.sh` first"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[_REEXEC_FLAG] = "1"
    os.execve(JWST_PYTHON, [JWST_PYTHON, os.path.abspath(__file__), *sys.argv[1:]], env)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="image size in pixels (square)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 11], help="one synthetic image per seed")
    ap.add_argument("--n-stars", type=int, default=500, help="stars per square arcminute")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per implementation (median reported)")
    ap.add_argument("--finders", nargs="+", default=["iraf", "dao", "segmentation"], choices=["iraf", "dao", "segmentation"])
    ap.add_argument("--min-snr", type=float, default=20.0, help="stars used for the accuracy comparison")
    ap.add_argument("--workdir", default=None, help="where the synthetic image is written (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="detection parameters for both implementations (YAML values), e.g. snr_threshold=5",
    )
    return ap.parse_args(argv)


def make_image(workdir, size, seed, n_stars):
    """One synthetic exposure of one detector; returns (image path, truth path)."""
    from tweakflow.synthetic import SyntheticConfig, make_dataset

    cfg = SyntheticConfig(n_exposures=1, detectors=["nrca1"], shape=(size, size), seed=seed, n_stars=n_stars)
    out = make_dataset(workdir, cfg)
    return out["images"][0], out["truth"]


def true_stars(image, truth, shape, data):
    """True pixel positions, SNR and isolation flag of the stars on the image.

    The SNR is that of a 3-pixel-radius aperture on the synthetic PSF
    (85% Gaussian core of FWHM 2 px + 15% halo of FWHM 6 px) with the
    background noise measured on the image (sigma-clipped standard
    deviation). A star is isolated when no other star brighter than a
    tenth of its flux lies within 4 pixels.
    """
    import numpy as np
    from astropy.stats import sigma_clipped_stats
    from scipy.spatial import cKDTree

    from tweakflow import synthetic

    wcs, _, stars = synthetic.load_truth(truth, stars=True)
    tw = wcs[os.path.basename(image)]
    x, y = synthetic.world_to_pixel_exact(tw, stars["ra"], stars["dec"])
    flux = 10 ** (-0.4 * (np.asarray(stars["mag"]) - 25.0)) * 400.0
    ny, nx = shape
    on = (x > -10) & (x < nx + 9) & (y > -10) & (y < ny + 9)
    x, y, flux = x[on], y[on], flux[on]
    _, _, sigma = sigma_clipped_stats(data[np.isfinite(data)][::7], sigma=3.0)
    r = 3.0
    ee = 0.85 * (1 - np.exp(-(r**2) / (2 * (2.0 / 2.3548) ** 2))) + 0.15 * (1 - np.exp(-(r**2) / (2 * (6.0 / 2.3548) ** 2)))
    fap = ee * flux
    snr = fap / np.sqrt(fap + np.pi * r**2 * sigma**2)
    tree = cKDTree(np.c_[x, y])
    isolated = np.ones(len(x), bool)
    for i, js in enumerate(tree.query_ball_point(np.c_[x, y], 4.0)):
        isolated[i] = not any(j != i and flux[j] > 0.1 * flux[i] for j in js)
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    return {"xy": np.c_[x, y], "snr": snr, "isolated": isolated & inside}


def centroid_errors(cat_xy, truth, min_snr):
    """Distances (px) to the true positions of matched isolated stars above ``min_snr``.

    Returns ``{true star index: distance}``.
    """
    from scipy.spatial import cKDTree

    if len(cat_xy) == 0:
        return {}
    d, idx = cKDTree(truth["xy"]).query(cat_xy)
    good = (d < 1.0) & truth["isolated"][idx] & (truth["snr"][idx] > min_snr)
    return {int(i): float(di) for i, di in zip(idx[good], d[good])}


def timed(func, repeat):
    """Median wall time (s) of ``repeat`` calls after one untimed call; the last result."""
    result = func()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def jwst_kwargs(pars, model):
    """The star-finder keyword arguments the JWST step (jwst >= 1.19) builds from its parameters."""
    from tweakflow.detection import min_separation_pixels

    return {
        "sigma_radius": pars["sigma_radius"],
        "min_separation": min_separation_pixels(pars["minsep_fwhm"], pars["kernel_fwhm"]),
        "sharpness_range": (pars["sharplo"], pars["sharphi"]),
        "roundness_range": (pars["roundlo"], pars["roundhi"]),
        "peak_max": pars["peakmax"],
        "n_brightest": pars["brightest"],
        "n_pixels": pars["npixels"],
        "connectivity": int(pars["connectivity"]),
        "n_levels": pars["nlevels"],
        "contrast": pars["contrast"],
        "mode": pars["multithresh_mode"],
        "error": model.err,
        "local_bkg_width": pars["localbkg_width"],
        "aperture_mask_method": pars["apermask_method"],
        "kron_params": pars["kron_params"],
        "deblend": pars["deblend"],
    }


def measure(image, finder, pars, repeat):
    """Times and catalogs of both implementations on one image, for one finder."""
    import numpy as np
    from jwst.tweakreg.tweakreg_catalog import make_tweakreg_catalog
    from stdatamodels.jwst.datamodels import ImageModel

    from tweakflow.detection import detect_sources
    from tweakflow.io import read_image

    im = read_image(image, with_wcs=False)
    ours_t, (cat, _) = timed(lambda: detect_sources(im.data, im.dq, **pars), repeat)

    def ours_full():
        img = read_image(image, with_wcs=False)
        return detect_sources(img.data, img.dq, **pars)

    ours_full_t, _ = timed(ours_full, repeat)

    def jwst_call(model):
        return make_tweakreg_catalog(
            model, pars["snr_threshold"], pars["kernel_fwhm"], bkg_boxsize=pars["bkg_boxsize"],
            starfinder_name=finder, starfinder_kwargs=jwst_kwargs(pars, model),
        )[0]

    with ImageModel(image) as model:
        jwst_t, jcat = timed(lambda: jwst_call(model), repeat)

    def jwst_full():
        with ImageModel(image) as m:
            return jwst_call(m)

    jwst_full_t, _ = timed(jwst_full, repeat)
    jx = "xcentroid" if "xcentroid" in jcat.colnames else "x_centroid"
    jy = "ycentroid" if "ycentroid" in jcat.colnames else "y_centroid"
    return {
        "times": (ours_t, ours_full_t, jwst_t, jwst_full_t),
        "ours_xy": np.c_[np.asarray(cat["x"], float), np.asarray(cat["y"], float)],
        "jwst_xy": np.c_[np.asarray(jcat[jx], float), np.asarray(jcat[jy], float)] if len(jcat) else np.zeros((0, 2)),
    }


def run(args):
    import inspect
    import warnings

    import jwst
    import numpy as np
    import photutils
    import yaml
    from jwst.tweakreg.tweakreg_catalog import make_tweakreg_catalog

    from tweakflow.io import read_image
    from tweakflow.params import DEFAULT_DETECTION_PARS
    from tweakflow.synthetic import PIXEL_SCALE

    if "kernel_fwhm" not in inspect.signature(make_tweakreg_catalog).parameters:
        sys.exit(f"jwst {jwst.__version__}: make_tweakreg_catalog has no kernel_fwhm argument; this benchmark needs jwst >= 1.19")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in DEFAULT_DETECTION_PARS:
            sys.exit(f"--set {item}: unknown detection parameter {key!r}")
        overrides[key] = yaml.safe_load(value)
    warnings.simplefilter("ignore")
    workdir = args.workdir or tempfile.mkdtemp(prefix="tweakflow-bench-")
    mas = PIXEL_SCALE * 1000.0

    per_finder = {f: {"times": [], "ours": {}, "jwst": {}, "n_ours": 0, "n_jwst": 0} for f in args.finders}
    n_ref = 0
    for seed in args.seeds:
        image, truth_path = make_image(os.path.join(workdir, f"seed{seed}"), args.size, seed, args.n_stars)
        im = read_image(image, with_wcs=False)
        truth = true_stars(image, truth_path, im.shape, im.data)
        n_ref += int(np.sum(truth["isolated"] & (truth["snr"] > args.min_snr)))
        for finder in args.finders:
            pars = dict(DEFAULT_DETECTION_PARS, starfinder=finder, **overrides)
            m = measure(image, finder, pars, args.repeat)
            acc = per_finder[finder]
            acc["times"].append(m["times"])
            acc["n_ours"] += len(m["ours_xy"])
            acc["n_jwst"] += len(m["jwst_xy"])
            for key in ("ours", "jwst"):
                for i, d in centroid_errors(m[f"{key}_xy"], truth, args.min_snr).items():
                    acc[key][(seed, i)] = d

    print(f"{len(args.seeds)} synthetic {args.size}x{args.size} NIRCam-like image(s) (seeds {', '.join(map(str, args.seeds))}); "
          f"{n_ref} isolated true stars with SNR > {args.min_snr:g}")
    print(f"jwst {jwst.__version__}, photutils {photutils.__version__}, numpy {np.__version__}; "
          f"times: median over images of the median of {args.repeat} warm calls")
    print(
        f"{'finder':13s} {'ours ms':>8s} {'jwst ms':>8s} {'ratio':>6s} | {'ours+read':>9s} {'jwst+read':>9s} {'ratio':>6s} | "
        f"{'n ours':>6s} {'n jwst':>6s} | {'err ours':>8s} {'err jwst':>8s} | {'both':>5s} {'ours':>6s} {'jwst':>6s} | "
        f"{'only':>4s} {'ours':>6s} {'only':>4s} {'jwst':>6s}"
    )
    print(f"{'':13s} {'':>8s} {'':>8s} {'':>6s} | {'':>9s} {'':>9s} {'':>6s} | {'':>6s} {'':>6s} | "
          f"{'(mas)':>8s} {'(mas)':>8s} | {'N':>5s} {'(mas)':>6s} {'(mas)':>6s} | {'ours':>4s} {'(mas)':>6s} {'jwst':>4s} {'(mas)':>6s}")
    results = {"size": args.size, "seeds": args.seeds, "jwst": jwst.__version__, "photutils": photutils.__version__, "finders": {}}

    def med(vals):
        return float(np.median(vals)) * mas if len(vals) else float("nan")

    for finder, acc in per_finder.items():
        t = np.median(np.array(acc["times"]), axis=0) * 1e3
        eo, ej = acc["ours"], acc["jwst"]
        both = sorted(set(eo) & set(ej))
        only_o = sorted(set(eo) - set(ej))
        only_j = sorted(set(ej) - set(eo))
        row = {
            "ours_ms": t[0], "ours_read_ms": t[1], "jwst_ms": t[2], "jwst_read_ms": t[3],
            "ratio": t[0] / t[2], "ratio_read": t[1] / t[3],
            "n_ours": acc["n_ours"], "n_jwst": acc["n_jwst"],
            "median_err_mas_ours": med(list(eo.values())), "median_err_mas_jwst": med(list(ej.values())),
            "n_both": len(both),
            "median_err_mas_both_ours": med([eo[k] for k in both]), "median_err_mas_both_jwst": med([ej[k] for k in both]),
            "n_only_ours": len(only_o), "median_err_mas_only_ours": med([eo[k] for k in only_o]),
            "n_only_jwst": len(only_j), "median_err_mas_only_jwst": med([ej[k] for k in only_j]),
        }
        results["finders"][finder] = row
        print(
            f"{finder:13s} {row['ours_ms']:8.0f} {row['jwst_ms']:8.0f} {row['ratio']:6.2f} | "
            f"{row['ours_read_ms']:9.0f} {row['jwst_read_ms']:9.0f} {row['ratio_read']:6.2f} | "
            f"{row['n_ours']:6d} {row['n_jwst']:6d} | {row['median_err_mas_ours']:8.2f} {row['median_err_mas_jwst']:8.2f} | "
            f"{row['n_both']:5d} {row['median_err_mas_both_ours']:6.2f} {row['median_err_mas_both_jwst']:6.2f} | "
            f"{row['n_only_ours']:4d} {row['median_err_mas_only_ours']:6.2f} {row['n_only_jwst']:4d} {row['median_err_mas_only_jwst']:6.2f}"
        )
    print("err: median distance to the true position of the matched isolated stars above the SNR cut, all images pooled;")
    print("both / only: the same on the stars both catalogs matched / that only one of them matched.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


def main(argv=None):
    args = parse_args(argv)
    ensure_jwst()
    run(args)


if __name__ == "__main__":
    main()
