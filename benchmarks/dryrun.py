"""Dry runs at scale and start-up: where the time goes before the first job.

    python benchmarks/dryrun.py [--workdir DIR] [--sizes 1000 5000 10000] [--repeat 2]
                                [--compare REV] [--skip-startup] [--listing]

Sections:

  scale     ``snakemake -n --quiet`` of the workflow on N fake inputs (a bare
            FITS primary header each, with FILENAME: all a dry run reads of
            an input), wall and CPU time; and the same for Snakemake's floor:
            a trivial workflow with the same jobs and the same files per job
            (inputs, outputs, log, benchmark) and nothing else (no
            configuration, no input checks, no parameters, ``run: pass``).
            Both with tweakflow as the README's first command installs it
            (``pip install -e .``, in benchmarks/.default-venv, made on
            first use; ``--this-env``: this Python's environment).
            ``--listing`` also times ``snakemake -n`` without ``--quiet``,
            which lists every job.
  compare   with ``--compare REV`` (a git revision), the workflow of REV
            (``git archive`` into the work dir, its own ``tweakflow`` first
            on PYTHONPATH) and this tree's, run alternately ``--repeat``
            times each: median times and the ratio, robust to the other
            load of a shared machine.
  startup   what a `snakemake` start costs before the DAG: Snakemake's
            imports (``snakemake --version``), the tweakflow modules the
            Snakefile imports (and whether gwcs, stdatamodels, matplotlib,
            astropy.modeling or astropy.table come with them), the demo's
            dry run (8 images); and, when ``scontrol`` and
            snakemake-executor-plugin-slurm are installed, the same start with
            a slurm.conf whose controller does not run (the plugin runs
            ``scontrol show config`` at import, which then waits ~9 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")

#: the Snakefile's parse path: the tweakflow modules it and workflow/rules/*.smk import
PARSE_MODULES = [
    "tweakflow.config", "tweakflow.console", "tweakflow.errors", "tweakflow.inputs", "tweakflow.io",
    "tweakflow.params", "tweakflow.refcat", "tweakflow.verdict", "tweakflow.catalogs",
]
#: what the parse path must not import (the jobs do)
HEAVY = ["gwcs", "stdatamodels", "matplotlib", "astropy.modeling", "astropy.table", "tweakwcs", "scipy", "photutils"]

#: a trivial workflow with the jobs and files of tweakflow's (relative alignment,
#: QA report on): per image detect_sources (image -> catalog + sidecar) and
#: apply_wcs (image + final_wcs -> output), each with a log and a benchmark; the
#: gathers (align, final_wcs, summary, verdict, qa_plots, qa_tables, all)
FLOOR_SNAKEFILE = '''
import glob, os
IMAGES = sorted(config["inputs"])
BY_STEM = {os.path.basename(p)[: -len("_cal.fits")]: p for p in IMAGES}
STEMS = list(BY_STEM)
OUT, WORK = "out", "out/work"

rule all:
    input: expand(OUT + "/{stem}_tweakreg.fits", stem=STEMS), OUT + "/tweakreg_summary.ecsv", OUT + "/verdict.txt",
        OUT + "/qa/images", OUT + "/qa/footprints.png", OUT + "/qa/residuals_overview.png", OUT + "/qa/summary.html"

rule detect_sources:
    input: image=lambda wc: BY_STEM[wc.stem]
    output: catalog=WORK + "/catalogs/{stem}_cat.ecsv", sidecar=WORK + "/sidecars/{stem}_meta.json"
    log: OUT + "/logs/detect_sources/{stem}.log"
    benchmark: OUT + "/benchmarks/detect_sources/{stem}.tsv"
    run: pass

rule align:
    input: catalogs=expand(WORK + "/catalogs/{stem}_cat.ecsv", stem=STEMS), sidecars=expand(WORK + "/sidecars/{stem}_meta.json", stem=STEMS)
    output: solutions=WORK + "/relative/solutions.ecsv", wcs=directory(WORK + "/relative/wcs"), matches=WORK + "/relative/matches.ecsv",
        attempts=WORK + "/relative/attempts.ecsv", reference=WORK + "/relative/reference.ecsv"
    log: OUT + "/logs/align.log"
    benchmark: OUT + "/benchmarks/align.tsv"
    run: pass

rule final_wcs:
    input: WORK + "/relative/wcs"
    output: directory(WORK + "/final_wcs")
    log: OUT + "/logs/final_wcs.log"
    run: pass

rule apply_wcs:
    input: image=lambda wc: BY_STEM[wc.stem], wcs=WORK + "/final_wcs"
    output: OUT + "/{stem}_tweakreg.fits"
    log: OUT + "/logs/apply_wcs/{stem}.log"
    benchmark: OUT + "/benchmarks/apply_wcs/{stem}.tsv"
    run: pass

rule summary:
    input: WORK + "/relative/solutions.ecsv"
    output: OUT + "/tweakreg_summary.ecsv"
    log: OUT + "/logs/summary.log"
    run: pass

rule verdict:
    input: OUT + "/tweakreg_summary.ecsv"
    output: OUT + "/verdict.txt"
    log: OUT + "/logs/verdict.log"
    run: pass

rule qa_plots:
    input: WORK + "/relative/solutions.ecsv", WORK + "/relative/matches.ecsv", WORK + "/final_wcs"
    output: directory(OUT + "/qa/images"), OUT + "/qa/footprints.png", OUT + "/qa/residuals_overview.png"
    log: OUT + "/logs/qa_plots.log"
    benchmark: OUT + "/benchmarks/qa_plots.tsv"
    run: pass

rule qa_tables:
    input: expand(OUT + "/{stem}_tweakreg.fits", stem=STEMS), OUT + "/tweakreg_summary.ecsv", OUT + "/verdict.txt",
        OUT + "/qa/images", OUT + "/qa/footprints.png", OUT + "/qa/residuals_overview.png"
    output: OUT + "/qa/summary.html"
    log: OUT + "/logs/qa_tables.log"
    run: pass
'''


def make_fake_inputs(folder, n):
    """``n`` fake inputs in ``folder`` (made once): a bare FITS primary header each, with FILENAME."""
    from astropy.io import fits

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"img{i:05d}_cal.fits") for i in range(n)]
    for p in paths:
        if not os.path.exists(p):
            hdr = fits.Header()
            hdr["FILENAME"] = os.path.basename(p)
            fits.PrimaryHDU(header=hdr).writeto(p)
    return paths


def timed(cmd, env=None, cwd=None):
    """Run ``cmd``; its wall time and the CPU time (user + system) of it and its children (s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def default_install():
    """The ``snakemake`` of tweakflow as the README's first command installs it
    (``pip install -e .`` in benchmarks/.default-venv, made on first use): no
    executor plugins, whose imports add ~0.3 s to every Snakemake start."""
    venv = os.path.join(HERE, ".default-venv")
    exe = os.path.join(venv, "bin", "snakemake")
    if not os.path.exists(exe):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "-e", ROOT], check=True)
    return exe


def dry_run(snakefile, workdir, inputs, *extra, tree=None, exe=SNAKEMAKE):
    """``snakemake -n`` of ``snakefile`` on ``inputs`` in a fresh ``workdir``: (wall, cpu).

    ``tree``: the source tree whose ``tweakflow`` the run imports (first on PYTHONPATH).
    """
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    cfg = os.path.join(workdir, "config.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump({"inputs": list(inputs), "output_dir": "out"}, f)
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    return timed([exe, "--snakefile", snakefile, "--directory", workdir, "--configfile", cfg,
                  "--cores", "2", "-n", *extra], env=env, cwd=workdir)


def floor_snakefile(work):
    path = os.path.join(work, "floor", "Snakefile")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(FLOOR_SNAKEFILE)
    return path


def bench_scale(work, sizes=(1000, 5000, 10000), repeat=1, listing=False, exe=SNAKEMAKE):
    """``{n: {"tweakflow": (wall, cpu), "floor": (wall, cpu)[, "listing": (wall, cpu)]}}``, medians of ``repeat``."""
    fake = make_fake_inputs(os.path.join(work, "fake"), max(sizes))
    floor = floor_snakefile(work)
    out = {}
    for n in sizes:
        runs = {"tweakflow": [], "floor": [], "listing": []}
        for _ in range(repeat):
            runs["tweakflow"].append(dry_run(os.path.join(ROOT, "Snakefile"), os.path.join(work, f"dry{n}"), fake[:n], "--quiet", exe=exe))
            runs["floor"].append(dry_run(floor, os.path.join(work, f"floor{n}"), fake[:n], "--quiet", exe=exe))
            if listing:
                runs["listing"].append(dry_run(os.path.join(ROOT, "Snakefile"), os.path.join(work, f"dry{n}"), fake[:n], exe=exe))
        out[n] = {k: _median(v) for k, v in runs.items() if v}
    return out


def _median(runs):
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def bench_compare(work, rev, sizes, repeat, exe=SNAKEMAKE):
    """The workflow of git revision ``rev`` against this tree's, alternately: ``{n: (old, new)}`` of (wall, cpu)."""
    # named by commit, not by ``rev``: a name such as HEAD moves
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", rev], check=True, capture_output=True, text=True).stdout.strip()
    old = os.path.join(work, f"tree-{sha}")
    if not os.path.exists(os.path.join(old, "Snakefile")):
        os.makedirs(old, exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
    fake = make_fake_inputs(os.path.join(work, "fake"), max(sizes))
    out = {}
    for n in sizes:
        runs = {"old": [], "new": []}
        for _ in range(repeat):
            runs["old"].append(dry_run(os.path.join(old, "Snakefile"), os.path.join(work, f"old{n}"), fake[:n], "--quiet", tree=old, exe=exe))
            runs["new"].append(dry_run(os.path.join(ROOT, "Snakefile"), os.path.join(work, f"new{n}"), fake[:n], "--quiet", tree=ROOT, exe=exe))
        out[n] = (_median(runs["old"]), _median(runs["new"]))
    return out


IMPORT_PROBE = """
import sys, time
t = time.perf_counter()
import snakemake.api
t_snakemake = time.perf_counter() - t
t = time.perf_counter()
for name in sys.argv[1].split(","):
    __import__(name)
t_ours = time.perf_counter() - t
heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
print(t_snakemake, t_ours, ",".join(heavy))
"""


def bench_startup(work, repeat=3):
    """Start-up figures (s), medians of ``repeat``; see the module docstring."""
    out = {}
    probes = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-c", IMPORT_PROBE, ",".join(PARSE_MODULES), ",".join(HEAVY)],
                           capture_output=True, text=True, check=True, cwd=work)
        a, b, heavy = (p.stdout.split() + [""])[:3]
        probes.append((float(a), float(b), heavy))
    out["import_snakemake"] = statistics.median(p[0] for p in probes)
    out["import_tweakflow"] = statistics.median(p[1] for p in probes)
    out["heavy_imported"] = probes[0][2]
    out["version"] = statistics.median(timed([SNAKEMAKE, "--version"])[0] for _ in range(repeat))
    demo = os.path.join(work, "demo_dry")
    os.makedirs(demo, exist_ok=True)
    cmd = [SNAKEMAKE, "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", demo, "-n", "--quiet"]
    out["demo_dry_run"] = statistics.median(timed(cmd, cwd=demo)[0] for _ in range(repeat))
    out["slurm_trap"] = slurm_trap(work)
    return out


def slurm_trap(work):
    """``snakemake --version`` with a slurm.conf whose controller does not run, against without
    (s); None when scontrol or the slurm executor plugin is not installed here."""
    import importlib.util

    if shutil.which("scontrol") is None or importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return None
    host = os.uname().nodename.split(".")[0]
    conf = os.path.join(work, "no_controller_slurm.conf")
    with open(conf, "w") as f:
        # a port nothing listens on: scontrol tries to reach the controller until its timeout
        f.write(f"ClusterName=none\nSlurmctldHost={host}\nSlurmctldPort=6899\nNodeName={host} CPUs=1\nPartitionName=p Nodes=ALL Default=YES\n")
    env = dict(os.environ, SLURM_CONF=conf)
    with_trap = timed([SNAKEMAKE, "--version"], env=env)[0]
    without = timed([SNAKEMAKE, "--version"])[0]
    return with_trap, without


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(HERE, ".work", "dryrun"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compare", metavar="REV", help="a git revision to compare with, alternately")
    ap.add_argument("--listing", action="store_true", help="also time `snakemake -n` without --quiet")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--this-env", action="store_true", help="dry runs with this Python's environment, not the default install")
    args = ap.parse_args()
    exe = SNAKEMAKE if args.this_env else default_install()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; wall / CPU seconds, medians of {args.repeat}; dry runs: {exe}")
    print()
    print("| dry run (`snakemake -n --quiet`) | tweakflow | Snakemake's floor (same jobs, trivial rules) | tweakflow / floor |")
    print("|---|---|---|---|")
    sc = bench_scale(work, args.sizes, args.repeat, args.listing, exe)
    for n, r in sc.items():
        (tw, tc), (fw, fc) = r["tweakflow"], r["floor"]
        print(f"| {n:,} inputs | {tw:.1f} s ({tc:.1f} s CPU) | {fw:.1f} s ({fc:.1f} s CPU) | {tc / fc:.2f} (CPU) |")
    if args.listing:
        for n, r in sc.items():
            print(f"| {n:,} inputs, listing every job (`snakemake -n`) | {r['listing'][0]:.1f} s ({r['listing'][1]:.1f} s CPU) | | |")
    if args.compare:
        print()
        print(f"| dry run, alternately | {args.compare} | this tree | this / {args.compare} (wall, CPU) |")
        print("|---|---|---|---|")
        for n, ((ow, oc), (nw, nc)) in bench_compare(work, args.compare, args.sizes, args.repeat, exe).items():
            print(f"| {n:,} inputs | {ow:.1f} s ({oc:.1f} s CPU) | {nw:.1f} s ({nc:.1f} s CPU) | {nw / ow:.2f}, {nc / oc:.2f} |")
    if not args.skip_startup:
        st = bench_startup(work)
        print()
        print("| start-up | s |")
        print("|---|---|")
        print(f"| `snakemake --version` (Snakemake's imports and plugins) | {st['version']:.2f} |")
        print(f"| `import snakemake.api` | {st['import_snakemake']:.2f} |")
        heavy = st["heavy_imported"] or "none of " + ", ".join(HEAVY)
        print(f"| the tweakflow modules the Snakefile imports, after Snakemake's (heavy modules imported: {heavy}) | {st['import_tweakflow']:.2f} |")
        print(f"| dry run of the demo (8 images, `snakemake -n --quiet`) | {st['demo_dry_run']:.2f} |")
        if st["slurm_trap"]:
            w, wo = st["slurm_trap"]
            print(f"| `snakemake --version` with the slurm plugin and a slurm.conf whose controller does not run / without | {w:.2f} / {wo:.2f} |")


if __name__ == "__main__":
    main()
