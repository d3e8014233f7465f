"""Sparse mosaics: the global relative solve against the sequential one, and at scale.

    python benchmarks/mosaic.py [--workdir DIR] [--seeds 1 2] [--tiles 1000] [--skip-eight] [--skip-accuracy] [--skip-scale] [--pixels]

Sections (all on `tweakflow.synthetic` data with its truth, default
parameters unless said):

  eight     the demo's 8 images through the whole workflow with each solver,
            without and with its 5 mas reference catalog (the existing
            scenario: the global solve must be no worse there)
  accuracy  7 x 7 tiles of 1024^2 px (~40 sources each, 6-12 shared with a
            neighbour), catalogs as the detection jobs write them
            (`make_catalog_mosaic`), per seed: tiles COMPLETE and worst /
            RMS relative and absolute error of each solver, with and without
            a 5 mas reference catalog. The gather steps run in-process.
  pixels    (--pixels) the 7 x 7 mosaics rendered, through the whole workflow
            (detection included): catalog noise as detected, not modelled.
  scale     ``--tiles`` catalog-only tiles: wall time of the global gather
            (pair listing, pair jobs two at a time, solve), peak memory of
            every job (each its own process), and the error of near and
            far-corner tiles (drift).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _mosaic(work, columns, rows, seed):
    from tweakflow import synthetic

    out = os.path.join(work, f"mosaic_{columns}x{rows}_s{seed}")
    index = os.path.join(out, "index.json")
    if not os.path.exists(index):
        shutil.rmtree(out, ignore_errors=True)
        made = synthetic.make_catalog_mosaic(out, synthetic.SyntheticConfig.mosaic(columns, rows, seed=seed))
        with open(index, "w") as f:
            json.dump({k: made[k] for k in ("catalogs", "sidecars", "names", "truth", "refcat")}, f)
    with open(index) as f:
        return json.load(f)


def _errors(m, wcs_paths):
    """Per tile: status, relative and absolute RMS error (mas) over the detector, against the truth."""
    from tweakflow import metrics, synthetic
    from tweakflow.io import read_sidecar

    truth = synthetic.load_catalog_mosaic_truth(m["truth"])
    scs = [read_sidecar(p) for p in wcs_paths]
    ws, tl = [sc["wcs"] for sc in scs], [truth["wcs"][n] for n in m["names"]]
    shapes = [sc["shape"] for sc in scs]
    status = np.array([sc["extra"].get("status", "") for sc in scs])
    ok = np.flatnonzero(status == "COMPLETE")
    rel = np.full(len(scs), np.nan)
    if len(ok):  # among the aligned tiles only: the others keep their pointing errors
        rel[ok] = metrics.relative_errors([ws[i] for i in ok], [tl[i] for i in ok], [shapes[i] for i in ok])
    return status, rel, metrics.absolute_errors(ws, tl, shapes)


def run_sequential(m, outdir, refcat=None):
    from tweakflow.params import ABSOLUTE_PARS, RELATIVE_PARS
    from tweakflow.steps import absolute_step, align_step

    os.makedirs(outdir, exist_ok=True)
    rel = [os.path.join(outdir, f"{k}_rel_wcs.asdf") for k in range(len(m["names"]))]
    align_step(m["catalogs"], m["sidecars"], os.path.join(outdir, "rel.ecsv"), rel, relative=dict(RELATIVE_PARS, expand_refcat=refcat is not None))
    if refcat is None:
        return rel
    ab = [os.path.join(outdir, f"{k}_abs_wcs.asdf") for k in range(len(m["names"]))]
    absolute_step(m["catalogs"], rel, refcat, os.path.join(outdir, "abs.ecsv"), ab, os.path.join(outdir, "combined.ecsv"),
                  absolute=dict(ABSOLUTE_PARS), refcat_name=refcat)
    return ab


def run_global(m, outdir, refcat=None, n_batches=2, processes=False):
    """The global gather (+ the per-image WCS sidecars); returns their paths and per-step (wall s, peak MB)."""
    os.makedirs(outdir, exist_ok=True)
    spec = {"m": m, "out": outdir, "refcat": refcat, "n_batches": n_batches}
    steps = {}
    for step in ["pairs", *[f"batch {k}" for k in range(n_batches)], "solve"]:
        if step.startswith("batch") and processes and step != "batch 0":
            continue
        if step == "batch 0" and processes:
            procs = [_start(spec, f"batch {k}") for k in range(n_batches)]
            for k, (p, t0) in enumerate(procs):
                steps[f"batch {k}"] = _finish(p, t0)
            continue
        steps[step] = _finish(*_start(spec, step)) if processes else _run_step(spec, step)
    wcs = [os.path.join(outdir, f"{k}_wcs.asdf") for k in range(len(m["names"]))]
    if os.environ.get("MOSAIC_NO_WCS") != "1":
        from tweakflow.steps import global_wcs_step

        for side, out in zip(m["sidecars"], wcs):
            global_wcs_step(side, os.path.join(outdir, "corrections.ecsv"), out)
    return wcs, steps


def _run_step(spec, step):
    from tweakflow.params import ABSOLUTE_PARS, QUALITY_DEFAULTS, RELATIVE_PARS
    from tweakflow.steps import global_solve_step, match_pairs_step, overlap_pairs_step

    m, out, n = spec["m"], spec["out"], spec["n_batches"]
    t0 = time.perf_counter()
    if step == "pairs":
        overlap_pairs_step(m["sidecars"], m["catalogs"], f"{out}/pairs.ecsv", f"{out}/images.json", n_batches=n, with_refcat=spec["refcat"] is not None)
    elif step.startswith("batch"):
        k = int(step.split()[1])
        match_pairs_step(f"{out}/pairs.ecsv", f"{out}/images.json", k, f"{out}/batch_{k}.ecsv", f"{out}/pairs_{k}.ecsv",
                         relative=dict(RELATIVE_PARS), quality=dict(QUALITY_DEFAULTS), refcat=spec["refcat"], absolute=dict(ABSOLUTE_PARS))
    else:
        global_solve_step(f"{out}/pairs.ecsv", f"{out}/images.json", [f"{out}/batch_{k}.ecsv" for k in range(n)], [f"{out}/pairs_{k}.ecsv" for k in range(n)],
                          f"{out}/solutions.ecsv", f"{out}/corrections.ecsv", f"{out}/pair_summary.ecsv", f"{out}/matches.ecsv", f"{out}/attempts.ecsv",
                          relative=dict(RELATIVE_PARS), quality=dict(QUALITY_DEFAULTS), refcat_name=spec["refcat"] or "")
    return time.perf_counter() - t0, _peak_mb()


def _peak_mb():
    """This process's peak resident memory (MB): VmHWM, which exec resets (ru_maxrss keeps the parent's)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _start(spec, step):
    path = os.path.join(spec["out"], f"spec_{step.replace(' ', '_')}.json")
    with open(path, "w") as f:
        json.dump([spec, step], f)
    code = f"import sys, json; sys.path.insert(0, {HERE!r}); import mosaic; s, st = json.load(open(sys.argv[1])); print(json.dumps(mosaic._run_step(s, st)))"
    return subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True), time.perf_counter()


def _finish(proc, t0):
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"step failed ({proc.returncode})")
    _, mb = json.loads(out.strip().splitlines()[-1])
    return time.perf_counter() - t0, mb


def _fmt(err, ok):
    """RMS / worst of the COMPLETE tiles' errors."""
    return f"{np.sqrt(np.mean(err[ok] ** 2)):.2f} / {np.max(err[ok]):.2f}" if ok.any() else "n/a"


def bench_accuracy(work, seeds, columns=7, rows=7, solvers=("sequential", "global")):
    print(f"| {columns} x {rows} mosaic, seed | solver | reference catalog | COMPLETE | relative RMS / worst (mas) | absolute RMS / worst (mas) | gather (s) |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        m = _mosaic(work, columns, rows, seed)
        for solver in solvers:
            for refcat in (None, m["refcat"]):
                out = os.path.join(work, f"run_{columns}x{rows}_s{seed}_{solver}_{'abs' if refcat else 'rel'}")
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                wcs = run_sequential(m, out, refcat) if solver == "sequential" else run_global(m, out, refcat)[0]
                t = time.perf_counter() - t0
                status, rel, ab = _errors(m, wcs)
                ok = status == "COMPLETE"
                rel_txt, ab_txt = _fmt(rel, ok), (_fmt(ab, ok) if refcat else "(not aligned)")
                print(f"| {seed} | {solver} | {'5 mas' if refcat else 'none'} | {ok.sum()} of {len(ok)} | {rel_txt} | {ab_txt} | {t:.1f} |", flush=True)


def _run_workflow(run, inputs, solver, refcat):
    """The whole workflow in ``run`` (2 cores, no QA report); its wall time (s)."""
    import yaml

    cfg = {"inputs": inputs, "output_dir": "out", "relative_solver": solver, "quality": {"report": False}}
    if refcat:
        cfg["tweakreg"] = {"abs_refcat": refcat}
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    t0 = time.perf_counter()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "snakemake"), "-s", os.path.join(ROOT, "Snakefile"), "-d", run,
                    "--configfile", os.path.join(run, "config.yaml"), "--cores", "2", "-q"], check=True, capture_output=True)
    return time.perf_counter() - t0


def bench_eight(work):
    """The demo's 8 images (2048^2, 4 exposures of 2 detectors) through the workflow, with each solver."""
    from astropy.table import Table

    print("| 8 images 2048x2048 (the demo) | solver | reference catalog | worst relative (mas) | worst absolute (mas) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for solver in ("sequential", "global"):
        run = os.path.join(work, f"eight_{solver}")
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run)
        for refcat in (None, os.path.join(run, "out", "demo", "refcat.ecsv")):
            t = _run_workflow(run, "demo", solver, refcat)
            acc = Table.read(os.path.join(run, "out", "demo_accuracy.ecsv"))
            ab = f"{np.max(acc['output_absolute_mas']):.3f}" if refcat else "(not aligned)"
            print(f"| | {solver} | {'5 mas' if refcat else 'none'} | {np.max(acc['output_relative_mas']):.3f} | {ab} | {t:.1f} |", flush=True)


def bench_pixels(work, seeds, columns=7, rows=7, solvers=("sequential", "global")):
    """The 7 x 7 mosaic rendered (1024^2 px tiles) through the whole workflow, detection included."""
    from astropy.table import Table

    from tweakflow import metrics, synthetic
    from tweakflow.io import read_image

    print(f"| {columns} x {rows} rendered mosaic, seed | solver | reference catalog | COMPLETE | relative RMS / worst (mas) | absolute RMS / worst (mas) | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        data = os.path.join(work, f"pixels_{columns}x{rows}_s{seed}")
        if not os.path.exists(os.path.join(data, "truth.asdf")):
            synthetic.make_dataset(data, synthetic.SyntheticConfig.mosaic(columns, rows, seed=seed))
        images = sorted(p for p in os.listdir(data) if p.endswith("_cal.fits"))
        truth, _ = synthetic.load_truth(os.path.join(data, "truth.asdf"))
        for solver in solvers:
            for refcat in (None, os.path.join(data, "refcat.ecsv")):
                run = os.path.join(work, f"pixrun_s{seed}_{solver}_{'abs' if refcat else 'rel'}")
                shutil.rmtree(run, ignore_errors=True)
                os.makedirs(run)
                t = _run_workflow(run, [os.path.join(data, p) for p in images], solver, refcat)
                summ = Table.read(os.path.join(run, "out", "tweakreg_summary.ecsv"))
                ok = np.asarray(summ["status"]) == "COMPLETE"
                outs = [read_image(os.path.join(run, "out", p.replace("_cal.fits", "_tweakreg.fits")), with_data=False) for p in images]
                ws, tl, shapes = [o.wcs for o in outs], [truth[p] for p in images], [o.shape for o in outs]
                rel = np.full(len(ws), np.nan)
                if ok.any():
                    rel[ok] = metrics.relative_errors([w for w, k in zip(ws, ok) if k], [w for w, k in zip(tl, ok) if k], [s for s, k in zip(shapes, ok) if k])
                ab = metrics.absolute_errors(ws, tl, shapes)
                ab_txt = _fmt(ab, ok) if refcat else "(not aligned)"
                print(f"| {seed} | {solver} | {'5 mas' if refcat else 'none'} | {ok.sum()} of {len(ok)} | {_fmt(rel, ok)} | {ab_txt} | {t:.1f} |", flush=True)


def bench_scale(work, n_tiles, n_batches=4):
    side = round(float(np.sqrt(n_tiles)))
    m = _mosaic(work, side, side, 1)
    out = os.path.join(work, f"scale_{side}x{side}")
    shutil.rmtree(out, ignore_errors=True)
    os.environ["MOSAIC_NO_WCS"] = "1"
    try:
        _, steps = run_global(m, out, m["refcat"], n_batches=n_batches, processes=True)
    finally:
        os.environ.pop("MOSAIC_NO_WCS")
    wall = steps["pairs"][0] + max(steps[f"batch {k}"][0] for k in range(0, n_batches, 2)) + max(
        steps[f"batch {k}"][0] for k in range(1, n_batches, 2)) + steps["solve"][0]
    print(f"| global gather, {side * side} catalog-only tiles ({n_batches} pair jobs, 2 at a time) | {wall:.1f} s |")
    for step, (t, mb) in steps.items():
        print(f"| {step}: time / peak memory | {t:.1f} s / {mb:.0f} MB |")
    _drift(m, out, side)


def _drift(m, out, side):
    """Relative error of the catalog sources of near-centre and far-corner tiles (no drift: the same)."""
    from astropy.table import Table

    from tweakflow import synthetic
    from tweakflow.catalogs import read_table
    from tweakflow.steps.mosaic import reference_plane

    truth = synthetic.load_catalog_mosaic_truth(m["truth"])
    corr = read_table(os.path.join(out, "corrections.ecsv"))
    with open(os.path.join(out, "images.json")) as f:
        ims = json.load(f)["images"]
    tp = reference_plane(corr.meta["reference_sidecar"])
    by_group = {str(r["group_id"]): r for r in corr}
    complete = np.array([str(by_group[im["group"]]["status"]) == "COMPLETE" for im in ims])
    print(f"| tiles COMPLETE | {complete.sum()} of {len(ims)} |")
    err = []
    for im in ims:
        cat = Table.read(im["catalog"])
        r = by_group[im["group"]]
        p = np.c_[tp.world_to_tanp(np.asarray(cat["ra"]), np.asarray(cat["dec"]))]
        q = p @ np.array([[r["m00"], r["m01"]], [r["m10"], r["m11"]]]).T + [r["shift_x"], r["shift_y"]]
        ra, dec = tp.tanp_to_world(q[:, 0], q[:, 1])
        st = truth["stars"][truth["star_index"][im["name"]]]
        d = np.hypot((np.asarray(ra) - st["ra"]) * np.cos(np.deg2rad(st["dec"])), np.asarray(dec) - st["dec"]) * 3.6e6
        err.append(float(np.sqrt(np.mean(d**2))))
    err = np.array(err)
    gx, gy = np.arange(len(ims)) % side, np.arange(len(ims)) // side
    dist = np.hypot(gx - (side - 1) / 2, gy - (side - 1) / 2)
    print("| tiles by distance from the centre (tile steps) | sources' RMS error after the solve, with the 5 mas catalog (mas): median / worst |")
    print("|---|---|")
    for lo, hi in ((0, 3), (3, side / 4), (side / 4, side / 2 - 1), (side / 2 - 1, side)):
        sel = (dist >= lo) & (dist < hi) & complete
        if sel.any():
            print(f"| {lo:.0f}-{hi:.0f} ({sel.sum()} tiles) | {np.median(err[sel]):.2f} / {np.max(err[sel]):.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(HERE, ".work"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-eight", action="store_true")
    ap.add_argument("--pixels", action="store_true", help="also the rendered 7 x 7 mosaics through the whole workflow (minutes)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    if not args.skip_eight:
        bench_eight(args.workdir)
        print()
    if not args.skip_accuracy:
        bench_accuracy(args.workdir, args.seeds)
    if args.pixels:
        print()
        bench_pixels(args.workdir, args.seeds)
    if not args.skip_scale:
        print()
        bench_scale(args.workdir, args.tiles)


if __name__ == "__main__":
    main()
