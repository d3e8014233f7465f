"""End-to-end benchmark: tweakflow (snakemake --cores 2) against the JWST TweakRegStep.

One command prints one table; every figure is measured in this session on the
same synthetic data (generated here, seeded), and speed figures are ratios
against a baseline measured in the same run:

    python benchmarks/run.py [--workdir DIR] [--cores 2] [--skip-jwst] [--skip-scale] [--skip-mosaic]

Sections:
  e2e       wall time of the whole alignment (relative + absolute, default
            parameters) on 8 images of 2048x2048 in 4 exposure groups, and
            the accuracy of both against the truth (mas); the JWST step and
            tweakflow run alternately, --rounds times, medians reported
  retune    time to re-run after changing one alignment parameter
  overhead  per-job cost of a detect_sources job: in the Snakemake process
            (job wall time minus the in-process compute of the same image),
            as a process of its own, and on a cluster node one submitted job
            per image against one group job of all (what `group:` saves)
  scale     dry-run DAG construction for 1,000, 5,000 and 10,000 inputs (fake
            files) and Snakemake's floor for the same jobs
            (benchmarks/dryrun.py, which also measures start-up), and the
            peak memory and time of the gather steps (align, align with
            expand_refcat, absolute_align) with 1,000 catalogs
  mosaic    benchmarks/mosaic.py: the demo with each relative solver, 7 x 7
            sparse mosaics (2 seeds), and the global gather at 1,024 tiles

The JWST pipeline runs in the benchmark's own environment
(benchmarks/jwst_env.sh creates it); it is never a dependency of tweakflow.
tweakflow's end-to-end runs and retunes use tweakflow as the README's first
command installs it (`pip install -e .`, in benchmarks/.default-venv, made on
first use): without the executor plugins of the `test` extra, whose imports
add ~0.3 s to every Snakemake start; `--this-env` runs them with this
Python's environment instead. The cluster section needs those plugins and
always uses this environment.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")


def sh(cmd, **kw):
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}")
    return dt, proc.stdout


def snakemake(workdir, config, cores, *extra, exe=SNAKEMAKE):
    cfg = os.path.join(workdir, "bench_config.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    return sh([exe, "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", workdir,
               "--configfile", cfg, "--cores", str(cores), "--quiet", *extra])


def wcs_of(paths):
    from stdatamodels.jwst.datamodels import ImageModel

    out = []
    for p in paths:
        with ImageModel(p) as m:
            out.append((m.meta.wcs, m.data.shape))
    return out


def accuracy(out_paths, names, truth):
    from tweakflow import metrics

    ws = wcs_of(out_paths)
    tl = [truth[n] for n in names]
    rel = metrics.relative_errors([w for w, _ in ws], tl, [s for _, s in ws])
    ab = metrics.absolute_errors([w for w, _ in ws], tl, [s for _, s in ws])
    return float(np.sqrt(np.mean(rel**2))), float(np.sqrt(np.mean(ab**2))), float(ab.max())


def jwst_python():
    py = os.path.join(HERE, ".jwst-venv", "bin", "python")
    if not os.path.exists(py):
        subprocess.run(["bash", os.path.join(HERE, "jwst_env.sh")], check=True)
    return py


def _fresh(work, name):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def bench_e2e(work, cores, skip_jwst, rounds=2, exe=SNAKEMAKE):
    """Alternating runs of the JWST step, tweakflow without and with the QA
    report, each from scratch, then retunes of one parameter; ``rounds``
    times. Times are medians over the rounds; accuracy from the last."""
    from tweakflow import synthetic

    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "truth.asdf")):
        synthetic.make_dataset(data, synthetic.SyntheticConfig())  # 4 exposures x 2 detectors, 2048^2
    truth, _ = synthetic.load_truth(os.path.join(data, "truth.asdf"))
    names = sorted(truth)
    asn = os.path.join(data, "asn.json")
    refcat = os.path.join(data, "refcat.ecsv")
    times, acc = {}, {}
    products = [n.replace("_cal.fits", "_tweakreg.fits") for n in names]
    configs = {
        "tweakflow (no QA report)": {"inputs": asn, "output_dir": "out", "tweakreg": {"abs_refcat": refcat}, "quality": {"report": False}},
        "tweakflow (default, with QA report)": {"inputs": asn, "output_dir": "out", "tweakreg": {"abs_refcat": refcat}},
    }
    for _round in range(rounds):
        if not skip_jwst:
            jout = _fresh(work, "jwst_out")
            t, _log = sh([jwst_python(), os.path.join(HERE, "jwst_tweakreg.py"), asn, jout, refcat])
            times.setdefault("jwst", []).append(t)
            acc["jwst"] = accuracy([os.path.join(jout, n.replace("_cal.fits", "_tweakregstep.fits")) for n in names], names, truth)
        for label, config in configs.items():
            tw = _fresh(work, "tweakflow_run")
            t, _ = snakemake(tw, config, cores, exe=exe)
            times.setdefault(label, []).append(t)
            acc[label] = accuracy([os.path.join(tw, "out", p) for p in products], names, truth)
        # retune: one alignment parameter changed, nothing else (the last run is the default one)
        jobs_full, started = job_times(os.path.join(tw, "out", "benchmarks")), time.time()
        config = json.loads(json.dumps(config))
        config["tweakreg"]["sigma"] = 2.9
        times.setdefault("retune sigma", []).append(snakemake(tw, config, cores, exe=exe)[0])
        jobs_retune = job_times(os.path.join(tw, "out", "benchmarks"), since=started)
        config["tweakreg"]["abs_sigma"] = 2.9
        times.setdefault("retune abs_sigma", []).append(snakemake(tw, config, cores, exe=exe)[0])
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = {k: (med[k], *acc[k]) for k in acc}
    t_full = med["tweakflow (default, with QA report)"]
    t_retune, t_retune_abs = med["retune sigma"], med["retune abs_sigma"]
    print(f"rounds: {rounds}; wall times per round: " + "; ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)}" for k, v in times.items()))
    print(f"job wall times of the last default run, per rule: {jobs_full}")
    print(f"job wall times of its retune of tweakreg.sigma, per rule: {jobs_retune}")
    # per-job overhead of detect_sources: job wall time minus in-process compute
    bench = sorted(glob.glob(os.path.join(tw, "out", "benchmarks", "detect_sources", "*.tsv")))
    job_s = float(np.median([float(open(b).read().splitlines()[-1].split("\t")[0]) for b in bench]))
    from tweakflow.params import DEFAULT_DETECTION_PARS
    from tweakflow.steps import detect_step

    img = os.path.join(data, names[0])
    args = (img, os.path.join(work, "warm_cat.ecsv"), os.path.join(work, "warm.json"))
    detect_step(*args, detection=dict(DEFAULT_DETECTION_PARS))
    t = time.perf_counter()
    for _ in range(3):
        detect_step(*args, detection=dict(DEFAULT_DETECTION_PARS))
    compute_s = (time.perf_counter() - t) / 3
    # the same job as a Python process of its own (what a `script:` job costs)
    code = (
        "from tweakflow.params import DEFAULT_DETECTION_PARS\n"
        "from tweakflow.steps import detect_step\n"
        f"detect_step(*{args!r}, detection=dict(DEFAULT_DETECTION_PARS))\n"
    )
    process_s = float(np.median([sh([sys.executable, "-c", code])[0] for _ in range(3)]))
    overhead = {"job_s": job_s, "compute_s": compute_s, "process_s": process_s}
    overhead.update(bench_grouping(work, asn, [n.replace("_cal.fits", "") for n in names], cores))
    return rows, t_full, t_retune, t_retune_abs, overhead


def job_times(bench_dir, since=None):
    """Each rule's jobs and the sum of their wall times (s), from Snakemake's
    ``benchmark:`` files (those written after ``since``, a time stamp);
    two jobs run at a time."""
    per_rule = {}
    for path in glob.glob(os.path.join(bench_dir, "**", "*.tsv"), recursive=True):
        if since is not None and os.path.getmtime(path) < since:
            continue
        rel = os.path.relpath(path, bench_dir)
        rule = rel.split(os.sep)[0] if os.sep in rel else rel[: -len(".tsv")]
        per_rule.setdefault(rule, []).append(float(open(path).read().splitlines()[-1].split("\t")[0]))
    return "; ".join(f"{rule} {len(v)} x {np.median(v):.2f} = {sum(v):.1f} s" for rule, v in sorted(per_rule.items()))


def bench_grouping(work, asn, stems, cores):
    """Cluster-node cost of the detect_sources jobs, one job each vs one group job.

    Each submitted job is a Snakemake process of its own on a node (it parses
    the workflow, imports the libraries, then runs its job or its group's
    jobs). The jobs go through the cluster-generic executor with a "submit"
    command that runs the job script here and records its wall time; the sum
    of those times is what the node spends, without any queueing.
    """
    out = {}
    wrapper = os.path.join(work, "timed_submit.py")
    with open(wrapper, "w") as f:
        f.write(
            "import subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "subprocess.run(['bash', sys.argv[2]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "open(sys.argv[1], 'a').write(f'{time.perf_counter() - t}\\n')\n"
            "print('local')\n"
        )
    targets = [f"out/work/catalogs/{s}_cat.ecsv" for s in stems]
    # the groups as the cluster profiles set them (profiles/slurm: `groups`, `group-components`)
    grouped = ["--groups", "detect_sources=detect", "--group-components", f"detect={len(stems)}"]
    for label, extra in (("per_image", []), ("grouped", grouped)):
        d = os.path.join(work, f"cluster_{label}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        times = os.path.join(d, "job_times.txt")
        snakemake(
            d, {"inputs": asn, "output_dir": "out"}, cores,
            "--executor", "cluster-generic", "--cluster-generic-submit-cmd", f"{sys.executable} {wrapper} {times}",
            "--jobs", str(len(stems)), "--seconds-between-status-checks", "1", "--latency-wait", "0",
            *extra, "--", *targets,
        )
        jobs = [float(x) for x in open(times).read().split()]
        out[label] = (len(jobs), sum(jobs))
    return out


def bench_scale(work):
    """Dry runs of 1,000, 5,000 and 10,000 fake inputs, and Snakemake's floor
    (`dryrun.bench_scale`); the gather steps' memory and time at 1,000 images."""
    import dryrun  # (same folder)

    out = {"dry": dryrun.bench_scale(work, (1000, 5000, 10000), exe=dryrun.default_install())}
    out["gather"] = gather_memory(os.path.join(work, "gather1000"), 1000)
    return out


def gather_memory(work, n_images):
    """Peak RSS (MB) and time (s) of the gather steps on ``n_images`` synthetic catalogs + sidecars.

    Each step runs in a process of its own: ``align`` with default
    parameters, ``align`` with ``expand_refcat`` (what absolute alignment
    forces), then ``absolute_align`` on that alignment's WCS sidecars.
    """
    from benchmarks_mosaic import make_catalog_mosaic  # (same folder)

    refcat = os.path.join(work, "refcat.ecsv")
    cats, sides = make_catalog_mosaic(work, n_images, refcat=refcat)
    script = (
        "import sys, json, resource\n"
        "from tweakflow.steps import align_step, absolute_step\n"
        "from tweakflow.params import RELATIVE_PARS\n"
        "from tweakflow.params import ABSOLUTE_PARS\n"
        "step, cats, sides, out, refcat = json.load(open(sys.argv[1]))\n"
        "wcs = [out + f'/{i}_wcs.asdf' for i in range(len(cats))]\n"
        "if step == 'absolute':\n"
        "    absolute_step(cats, sides, refcat, out + '/solutions.ecsv', wcs, out + '/combined.ecsv', absolute=dict(ABSOLUTE_PARS), refcat_name=refcat)\n"
        "else:\n"
        "    align_step(cats, sides, out + '/solutions.ecsv', wcs, relative=dict(RELATIVE_PARS, expand_refcat=step == 'expand'))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = {}
    for step, inputs in (("default", sides), ("expand", sides), ("absolute", None)):
        outdir = os.path.join(work, f"{step}_out")
        os.makedirs(outdir, exist_ok=True)
        if inputs is None:  # the absolute fit starts from the expand_refcat alignment
            inputs = [os.path.join(work, "expand_out", f"{i}_wcs.asdf") for i in range(len(cats))]
        spec = os.path.join(work, f"{step}.json")
        with open(spec, "w") as f:
            json.dump([step, cats, inputs, outdir, refcat], f)
        t, log = sh([sys.executable, "-c", script, spec])
        out[step] = (float(log.strip().splitlines()[-1]), t)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(HERE, ".work"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-jwst", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the end-to-end runs (medians reported)")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--this-env", action="store_true", help="run tweakflow from this Python's environment, not from the default install")
    ap.add_argument("--skip-mosaic", action="store_true", help="skip the sparse-mosaic section (benchmarks/mosaic.py)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    sys.path.insert(0, HERE)

    from dryrun import default_install  # (same folder)

    exe = SNAKEMAKE if args.this_env else default_install()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; snakemake --cores {args.cores}; tweakflow runs: {exe}")
    rows, t_full, t_retune, t_retune_abs, ov = bench_e2e(args.workdir, args.cores, args.skip_jwst, args.rounds, exe)
    print()
    print("| 8 images 2048x2048, 4 groups, relative + absolute | wall (s) | vs JWST | relative RMS (mas) | absolute RMS (mas) | absolute max (mas) |")
    print("|---|---|---|---|---|---|")
    base = rows.get("jwst", (None,))[0]
    for name, (t, rel, ab, abmax) in rows.items():
        ratio = f"{t / base:.2f}x" if base else "n/a"
        print(f"| {name} | {t:.1f} | {ratio} | {rel:.3f} | {ab:.3f} | {abmax:.3f} |")
    print()
    print("| tweakflow | figure |")
    print("|---|---|")
    print(f"| retune `tweakreg.sigma` (re-runs align, absolute, apply, QA) | {t_retune:.1f} s = {t_retune / t_full:.2f}x the full run |")
    print(f"| retune `tweakreg.abs_sigma` (re-runs absolute, apply, QA) | {t_retune_abs:.1f} s = {t_retune_abs / t_full:.2f}x the full run |")
    print(f"| detect_sources job of the run (in a worker process): wall / the same compute in-process | {ov['job_s']:.2f} s / {ov['compute_s']:.2f} s: overhead {ov['job_s'] - ov['compute_s']:.2f} s per job |")
    print(f"| the same job as a Python process of its own (a `script:` job) | {ov['process_s']:.2f} s: start-up and imports {ov['process_s'] - ov['compute_s']:.2f} s per job |")
    (n1, t1), (_, t2) = ov["per_image"], ov["grouped"]
    print(f"| cluster: {n1} detect_sources jobs, one submitted job each / one group job (`group-components`) | node time {t1:.1f} s / {t2:.1f} s: grouping saves {(t1 - t2) / n1:.2f} s per image ({t2 / t1:.2f}x) |")
    if not args.skip_scale:
        sc = bench_scale(args.workdir)
        for n, r in sc["dry"].items():
            (t, _), (t_floor, _) = r["tweakflow"], r["floor"]
            print(f"| dry run (`snakemake -n --quiet`), {n:,} inputs / Snakemake's floor (a trivial workflow of the same jobs) | {t:.1f} s / {t_floor:.1f} s |")
        labels = {"default": "align (default parameters)", "expand": "align with `expand_refcat` (forced by absolute alignment)", "absolute": "absolute_align"}
        for step, (mb, t) in sc["gather"].items():
            print(f"| {labels[step]} on 1,000 catalogs + sidecars: peak memory / time | {mb:.0f} MB / {t:.0f} s |")
    if not args.skip_mosaic:
        import mosaic  # (same folder)

        print()
        mosaic.bench_eight(args.workdir)
        print()
        mosaic.bench_accuracy(args.workdir, [1, 2])
        if not args.skip_scale:
            print()
            mosaic.bench_scale(args.workdir, 1024)

if __name__ == "__main__":
    main()
