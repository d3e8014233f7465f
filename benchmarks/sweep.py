"""Accuracy sweep: parameter sets x seeds against the synthetic truth.

The promise checked: an image marked COMPLETE is right. For each seed a
demo-shaped dataset is generated (NIRCam-like, 4 exposures x 2 detectors by
default), sources are detected with each parameter set's finder settings
(cached per seed and finder settings), and the library's relative and
absolute alignment run with the set's parameters. Printed per set and seed:
images COMPLETE / SKIPPED, the worst relative error of the COMPLETE images
(mas, after removing one common rigid transformation) and the worst absolute
error of the images the absolute fit was applied to (mas, against the true
WCS). A relative error above 10 mas or an absolute one above 20 mas under
COMPLETE is a failure of the quality gates, flagged ``WRONG``.

    python benchmarks/sweep.py [--seeds 1 2 3] [--sets default dao_general ...] [--shape 2048 2048]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

#: Parameter sets: ``tweakreg`` keys (detection, relative and absolute) and
#: an optional ``quality`` block and ``dataset`` overrides.
SETS = {
    "default": {},
    "dao_general_sr3": {"starfinder": "dao", "fitgeometry": "general", "searchrad": 3.0},
    "seg_rscale": {"starfinder": "segmentation", "fitgeometry": "rscale"},
    "dao_shift_abs_general": {"starfinder": "dao", "fitgeometry": "shift", "abs_fitgeometry": "general"},
    "general_expand": {"fitgeometry": "general", "expand_refcat": True},
    "tight_matching": {"searchrad": 1.0, "tolerance": 0.3, "separation": 0.5, "abs_tolerance": 0.3, "abs_separation": 0.5},
    "no2dhist_sr5": {"use2dhist": False, "searchrad": 5.0, "abs_use2dhist": False, "abs_searchrad": 3.0},
    "snr5_all_rscale": {"snr_threshold": 5.0, "brightest": None, "fitgeometry": "rscale", "abs_fitgeometry": "rscale"},
    "minobj5_loose_clip": {"minobj": 5, "nclip": 1, "sigma": 5.0, "fitgeometry": "general", "abs_minobj": 5},
    "user_order_dao_bright50": {"enforce_user_order": True, "starfinder": "dao", "brightest": 50},
    "large_errors": {"dataset": {"shift_error": [1.5, 3.0]}},
}


def _split(pars):
    from tweakflow.params import ABSOLUTE_PARS, DEFAULT_DETECTION_PARS, RELATIVE_PARS

    det = {k: v for k, v in pars.items() if k in DEFAULT_DETECTION_PARS}
    rel = {k: v for k, v in pars.items() if k in RELATIVE_PARS}
    ab = {k: v for k, v in pars.items() if k in ABSOLUTE_PARS}
    return det, rel, ab


def dataset(workdir, seed, shape, overrides):
    """Paths of a generated dataset (made once per seed, shape and overrides)."""
    from tweakflow import synthetic

    key = hashlib.sha1(json.dumps([seed, shape, overrides], sort_keys=True).encode()).hexdigest()[:10]
    out = os.path.join(workdir, f"data_{key}")
    done = os.path.join(out, "paths.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    cfg = synthetic.SyntheticConfig.from_dict({"seed": seed, "shape": shape, **overrides})
    paths = synthetic.make_dataset(out, cfg)
    with open(done, "w") as f:
        json.dump(paths, f)
    return paths


def entries_for(paths, det, cache_dir):
    """Alignment entries with catalogs detected with ``det`` (cached as ECSV)."""
    from astropy.table import Table

    from tweakflow.detection import detect_sources
    from tweakflow.grouping import resolve_group_id
    from tweakflow.io import read_image

    key = hashlib.sha1(json.dumps(det, sort_keys=True).encode()).hexdigest()[:10]
    os.makedirs(cache_dir, exist_ok=True)
    out = []
    for p in paths["images"]:
        im = read_image(p)
        cpath = os.path.join(cache_dir, f"{os.path.basename(p)}.{key}.ecsv")
        if os.path.exists(cpath):
            cat = Table.read(cpath)
        else:
            cat, _ = detect_sources(im.data, im.dq, **det)
            cat.write(cpath)
        gid = resolve_group_id(im.meta["observation"], im.meta["group_id"])
        out.append(
            {
                "name": os.path.basename(p),
                "wcs": im.wcs,
                "wcsinfo": im.wcsinfo,
                "catalog": cat,
                "group_id": gid,
                "shape": im.shape,
            }
        )
    return out


def run_case(entries, truth, refcat, rel, ab, quality):
    """Relative then absolute alignment of one case; errors against the truth."""
    from tweakflow import metrics
    from tweakflow.absolute import absolute_align
    from tweakflow.align import relative_align

    wcs, rows = relative_align(entries, quality=quality, **rel)
    status = [r["status"] for r in rows]
    ok = [i for i, s in enumerate(status) if s == "COMPLETE"]
    rel_err = np.full(len(entries), np.nan)
    if len(ok) > 1:
        rel_err[ok] = metrics.relative_errors([wcs[i] for i in ok], [truth[entries[i]["name"]] for i in ok], [entries[i]["shape"] for i in ok])
    abs_wcs, abs_rows, _ = absolute_align(entries, wcs, status, refcat, quality=quality, **ab)
    applied = [i for i, r in enumerate(abs_rows) if r["status"] == "COMPLETE"]
    abs_err = np.full(len(entries), np.nan)
    if applied:
        abs_err[applied] = metrics.absolute_errors([abs_wcs[i] for i in applied], [truth[entries[i]["name"]] for i in applied], [entries[i]["shape"] for i in applied])
    reasons = sorted({r["reason"] for r in rows if r["status"] != "COMPLETE"} | {r["reason"] for r in abs_rows if r["status"] == "FAILED"})
    return {
        "complete": len(ok),
        "skipped": len(entries) - len(ok),
        "rel_worst": float(np.nanmax(rel_err)) if len(ok) > 1 else float("nan"),
        "rel_wrong": int(np.sum(rel_err > 10.0)),
        "abs_applied": len(applied),
        "abs_worst": float(np.nanmax(abs_err)) if applied else float("nan"),
        "abs_wrong": int(np.sum(abs_err > 20.0)),
        "reasons": reasons,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--shape", type=int, nargs=2, default=[2048, 2048])
    ap.add_argument("--workdir", default=os.path.join(HERE, ".work", "sweep"))
    ap.add_argument("--quality", default=None, help="JSON of the quality block (default: the defaults)")
    args = ap.parse_args(argv)

    from tweakflow import synthetic
    from tweakflow.refcat import read_reference_catalog

    quality = json.loads(args.quality) if args.quality else None
    print("| set | seed | COMPLETE | SKIPPED | worst rel (mas) | abs applied | worst abs (mas) | verdict | reasons |")
    print("|---|---|---|---|---|---|---|---|---|")
    n_wrong = 0
    for name in args.sets:
        pars = dict(SETS[name])
        overrides = pars.pop("dataset", {})
        det, rel, ab = _split(pars)
        for seed in args.seeds:
            paths = dataset(args.workdir, seed, args.shape, overrides)
            truth, _ = synthetic.load_truth(paths["truth"])
            entries = entries_for(paths, det, os.path.join(os.path.dirname(paths["truth"]), "catalogs"))
            refcat = read_reference_catalog(paths["refcat"])
            t = time.perf_counter()
            r = run_case(entries, truth, refcat, rel, ab, quality)
            wrong = r["rel_wrong"] + r["abs_wrong"]
            n_wrong += wrong
            verdict = "WRONG" if wrong else "ok"
            print(
                f"| {name} | {seed} | {r['complete']} | {r['skipped']} | {r['rel_worst']:.2f} | {r['abs_applied']} | "
                f"{r['abs_worst']:.2f} | {verdict} | {'; '.join(r['reasons'])[:160]} |  <!-- {time.perf_counter() - t:.1f} s -->",
                flush=True,
            )
    print(f"images COMPLETE beyond 10 mas (relative) or 20 mas (absolute): {n_wrong}")
    return 1 if n_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
