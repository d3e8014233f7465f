"""The tweakflow workflow itself on a real SLURM cluster, and job grouping at scale.

``test_dry_run_groups_per_image_jobs`` needs no cluster: a dry run of 1,000 input
images with ``profiles/slurm`` (as a cluster user runs it, with the workflow profile
``profiles/default``) must pack the per-image jobs into group jobs of the size the
profile's ``group-components`` sets (``detect_sources`` in group ``detect``,
``apply_wcs`` in group ``apply``), and nothing per-image may be left outside a group.

``test_workflow_on_slurm_matches_local`` runs the real workflow through
``profiles/slurm-ci`` on the local single-node cluster (fixture ``slurm_cluster``) on
two synthetic 512x512 images, and a local run of the same inputs. SLURM accounting
must show every submitted job COMPLETED under the test account, each group (two
detections, two output images) must have been one SLURM job, and the products must
agree: byte-identical source catalogs, corrected WCSs within 1e-9 deg over a grid of
pixels, the same summary (statuses, reasons, match counts, fit values).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

from workflow_runner import run_workflow

PROJECT = Path(__file__).resolve().parents[2]
SNAKEFILE = PROJECT / "Snakefile"
SLURM_PROFILE = PROJECT / "profiles" / "slurm"

#: Two exposures of one 512x512 detector: enough stars to align, small enough that
#: every job takes a few seconds.
TINY = {"n_exposures": 2, "detectors": ["nrca1"], "shape": [512, 512], "n_stars": 2000, "seed": 11}

#: Images of the dry run.
N_DRY = 1000

_GROUP_RE = re.compile(r"Group job (\S+) \(jobs")
_GROUPED_RULE_RE = re.compile(r"^    (?:local)?rule (\w+):")  # a rule inside a group job is indented
_RULE_RE = re.compile(r"^(?:local)?rule (\w+):")
_SUBMIT_RE = re.compile(r"submitted with SLURM jobid (\d+) \(log: .*?/slurm_logs/([^/]+)/")


def _group_jobs(dry_run_output):
    """Group jobs of a dry run: ``{group: [Counter(rule -> jobs), ...]}``, and the
    number of jobs of each rule outside any group."""
    groups, alone, current = {}, Counter(), None
    for line in dry_run_output.splitlines():
        m = _GROUP_RE.search(line)
        if m:
            current = Counter()
            groups.setdefault(m.group(1), []).append(current)
        elif (m := _GROUPED_RULE_RE.match(line)) and current is not None:
            current[m.group(1)] += 1
        elif m := _RULE_RE.match(line):
            current = None
            alone[m.group(1)] += 1
    return groups, alone


@pytest.fixture(scope="module")
def thousand_inputs(tmp_path_factory):
    """A directory with ``data/img0000_cal.fits`` ... : tiny FITS files (a primary
    header only), which is all a dry run reads of its inputs."""
    from astropy.io import fits

    root = tmp_path_factory.mktemp("dry1000")
    (root / "data").mkdir()
    fits.PrimaryHDU().writeto(root / "data" / "img0000_cal.fits")
    raw = (root / "data" / "img0000_cal.fits").read_bytes()
    for i in range(1, N_DRY):
        (root / "data" / f"img{i:04d}_cal.fits").write_bytes(raw)
    return root


@pytest.mark.slow
def test_dry_run_groups_per_image_jobs(thousand_inputs, executor_plugins):
    sizes = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())["group-components"]
    assert sizes == {"detect": 50, "apply": 50, "match_pairs": 20}, sizes
    cfg = thousand_inputs / "config.yaml"
    cfg.write_text(yaml.safe_dump({"inputs": ["data/*_cal.fits"], "output_dir": "results"}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(SLURM_PROFILE), "--dry-run",
         "--snakefile", str(SNAKEFILE), "--directory", str(thousand_inputs), "--configfile", str(cfg)],
        cwd=thousand_inputs,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "workflow specific profile" in proc.stdout  # profiles/default applied, as for a user

    groups, alone = _group_jobs(proc.stdout)
    for group, rule in (("detect", "detect_sources"), ("apply", "apply_wcs")):
        k = sizes[group]
        expected = [k] * (N_DRY // k) + ([N_DRY % k] if N_DRY % k else [])
        got = sorted((sum(c.values()) for c in groups[group]), reverse=True)
        assert got == expected, f"group {group}: {got}"
        assert all(set(c) == {rule} for c in groups[group]), groups[group]
        assert alone[rule] == 0, f"{alone[rule]} {rule} jobs outside a group"
    assert set(groups) == {"detect", "apply"}, set(groups)
    # the gather steps stay single jobs
    assert alone["align"] == 1 and alone["summary"] == 1, alone


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from tweakflow.synthetic import SyntheticConfig, make_dataset

    return make_dataset(str(tmp_path_factory.mktemp("tiny_dataset")), SyntheticConfig.from_dict(TINY))


def _corrected_wcs(path):
    from tweakflow.io import read_image

    im = read_image(str(path), with_data=False)
    return im.wcs, im.shape


def _group_resources(log, group):
    """mem_mb and runtime of each job of the first group job ``group`` in a run's log."""
    block = log.split(f"Group job {group} (jobs", 1)[1].split("\n[", 1)[0]
    jobs = []
    for line in block.splitlines():
        if line.strip().startswith("resources:"):
            res = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))
            jobs.append({"mem_mb": int(res["mem_mb"]), "runtime": int(res["runtime"])})
    return jobs


def _requested(job_id):
    """CPUs, memory (MB) and time limit (minutes) a SLURM job asked for (sacct)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", str(job_id), "--format=ReqCPUS,ReqMem,Timelimit"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip().splitlines()[0]
    cpus, mem, limit = out.split("|")
    assert mem.endswith("M"), mem
    h, m, s = (int(x) for x in limit.split("-")[-1].split(":"))
    return {"cpus": int(cpus), "mem_mb": int(mem[:-1]), "minutes": 60 * h + m + (s > 0)}


def _run_on_slurm(slurm_cluster, remote, config):
    """The workflow on ``config`` through profiles/slurm-ci in ``remote``; its CompletedProcess."""
    remote.mkdir()
    cfg = remote / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = slurm_cluster.run_snakemake(
        # --cores: a group job may use every CPU of the node, not more. Jobs of this
        # workflow take 5-11 s from submission to end on a 2-core node: a first status
        # check 12 s after a submission finds them done.
        ["--snakefile", SNAKEFILE, "--directory", remote, "--configfile", cfg,
         "--cores", slurm_cluster.cpus, "--slurm-init-seconds-before-status-checks", 12],
        cwd=remote,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc


def _check_sacct(slurm_cluster, job_ids):
    records = slurm_cluster.sacct(job_ids)
    assert sorted(r["JobIDRaw"] for r in records) == sorted(job_ids), records
    for r in records:
        assert r["State"] == "COMPLETED" and r["ExitCode"] == "0:0", r
        assert r["Account"] == slurm_cluster.account, r
        assert r["Partition"] == slurm_cluster.partition, r


@pytest.mark.slow
def test_workflow_on_slurm_matches_local(slurm_cluster, tiny_dataset, tmp_path):
    from tweakflow.metrics import wcs_offsets

    # (no QA report: its plots would be one more SLURM job, and compete for the
    # node's CPUs with the apply group)
    config = {"inputs": list(tiny_dataset["images"]), "output_dir": "results", "quality": {"report": False}}
    local, remote = tmp_path / "local", tmp_path / "slurm"
    run_workflow(local, config)
    proc = _run_on_slurm(slurm_cluster, remote, config)

    # jobs went to slurmctld: one SLURM job per group (both detections in one, both
    # output images in one), one for align; summary is a local rule
    submitted = _SUBMIT_RE.findall(proc.stdout)
    job_ids = slurm_cluster.job_ids_from_log(proc.stdout)
    assert sorted(j for j, _ in submitted) == sorted(job_ids), proc.stdout[-6000:]
    per_kind = Counter(kind for _, kind in submitted)
    assert per_kind["group_detect_detect_sources"] == 1, per_kind
    assert per_kind["group_apply_apply_wcs"] == 1, per_kind
    assert per_kind["rule_align"] == 1, per_kind
    assert not {"rule_detect_sources", "rule_apply_wcs", "rule_summary"} & set(per_kind), per_kind
    _check_sacct(slurm_cluster, job_ids)
    # a group job asks for its jobs side by side: --cores CPUs (both jobs here), the
    # sum of their memory, the longest of their runtimes
    detect_id = next(j for j, kind in submitted if kind == "group_detect_detect_sources")
    # (from Snakemake's own log of the run: the concise console shows no job blocks)
    snakemake_log = max((remote / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    per_job = _group_resources(snakemake_log, "detect")
    assert len(per_job) == 2, per_job
    assert _requested(detect_id) == {
        "cpus": min(slurm_cluster.cpus, 2),
        "mem_mb": sum(r["mem_mb"] for r in per_job),
        "minutes": max(r["runtime"] for r in per_job),
    }

    # same catalogs, byte for byte
    cats = sorted(p.name for p in (local / "results" / "work" / "catalogs").glob("*_cat.ecsv"))
    assert len(cats) == len(tiny_dataset["images"]), cats
    assert sorted(p.name for p in (remote / "results" / "work" / "catalogs").glob("*_cat.ecsv")) == cats
    for name in cats:
        a = (local / "results" / "work" / "catalogs" / name).read_bytes()
        b = (remote / "results" / "work" / "catalogs" / name).read_bytes()
        assert a == b, f"{name} differs between the local and the SLURM run"

    # same summary: statuses, reasons, counts exactly; fit values to 1e-9
    s_local = Table.read(local / "results" / "tweakreg_summary.ecsv")
    s_remote = Table.read(remote / "results" / "tweakreg_summary.ecsv")
    assert s_local.colnames == s_remote.colnames
    assert list(s_local["status"]) == ["COMPLETE"] * len(cats), s_local
    for col in s_local.colnames:
        if s_local[col].dtype.kind == "f":
            np.testing.assert_allclose(s_remote[col], s_local[col], rtol=0, atol=1e-9, err_msg=col)
        else:
            assert list(s_remote[col]) == list(s_local[col]), col

    # same corrections: the corrected WCSs agree within 1e-9 deg on a 16x16 pixel grid
    for image in tiny_dataset["images"]:
        out = Path(image).name.replace("_cal.fits", "_tweakreg.fits")
        w_local, shape = _corrected_wcs(local / "results" / out)
        w_remote, _ = _corrected_wcs(remote / "results" / out)
        got, ref = wcs_offsets(w_remote, w_local, shape, n=16)
        worst = float(np.max(np.hypot(*(got - ref).T)))  # arcsec
        assert worst < 1e-9 * 3600, f"{out}: corrected WCSs differ by {worst * 1e3:.3g} mas"


@pytest.mark.slow
def test_global_solve_pair_jobs_on_slurm_match_local(slurm_cluster, tiny_dataset, tmp_path):
    """relative_solver: global: the pair jobs (two batches) run as one SLURM group job,
    the solve as its own job, and the solution equals a local run's."""
    config = {"inputs": list(tiny_dataset["images"]), "output_dir": "results", "quality": {"report": False},
              "relative_solver": "global", "pair_batch_size": 1}
    local, remote = tmp_path / "local", tmp_path / "slurm"
    run_workflow(local, config)
    proc = _run_on_slurm(slurm_cluster, remote, config)
    submitted = _SUBMIT_RE.findall(proc.stdout)
    per_kind = Counter(kind for _, kind in submitted)
    assert per_kind["group_match_pairs_match_pairs"] == 1, per_kind  # both batches in one submission
    assert per_kind["rule_overlap_pairs"] == 1 and per_kind["rule_global_solve"] == 1, per_kind
    assert not {"rule_match_pairs", "rule_align"} & set(per_kind), per_kind
    _check_sacct(slurm_cluster, slurm_cluster.job_ids_from_log(proc.stdout))
    work_local, work_remote = local / "results" / "work" / "global", remote / "results" / "work" / "global"
    assert sorted(p.name for p in (work_remote / "matches").iterdir()) == ["batch_0.ecsv", "batch_1.ecsv", "pairs_0.ecsv", "pairs_1.ecsv"]
    c_local, c_remote = Table.read(work_local / "corrections.ecsv"), Table.read(work_remote / "corrections.ecsv")
    assert list(c_local["status"]) == list(c_remote["status"]) == ["COMPLETE"] * 2
    for col in ("m00", "m01", "m10", "m11", "shift_x", "shift_y"):
        np.testing.assert_allclose(c_remote[col], c_local[col], rtol=0, atol=1e-12, err_msg=col)
