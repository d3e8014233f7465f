"""Proof that the cluster profiles really run jobs on the local SLURM cluster.

A tiny self-contained workflow (3 jobs: ``make_demo`` and two ``detect_sources`` jobs in
group ``detect``) runs through ``profiles/slurm-ci`` (snakemake-executor-plugin-slurm)
and ``profiles/cluster-generic`` (sbatch + status.py). With ``group-components:
detect=50`` both grouped jobs must go into one SLURM job, so each run makes exactly two
SLURM jobs, and accounting (``sacct``) must show them COMPLETED under the test account.

``test_profile_dry_run`` needs no cluster: it checks that every profile parses (an
unknown key would fail the argument parser) with a dry run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: expand("detect/{i}.txt", i=[1, 2])

    rule make_demo:
        output: "demo.txt"
        shell: "echo make_demo $SLURM_JOB_ID > {output}"

    rule detect_sources:
        input: "demo.txt"
        output: "detect/{i}.txt"
        group: "detect"
        shell: "echo detect_sources $SLURM_JOB_ID > {output}"
    """
)


def _write_workflow(path: Path) -> Path:
    snakefile = path / "Snakefile"
    snakefile.write_text(SNAKEFILE)
    return snakefile


def _job_id_in(path: Path) -> str:
    words = path.read_text().split()
    assert len(words) == 2 and words[1].isdigit(), f"{path} has no SLURM job id: {words}"
    return words[1]


def _check_outputs(workdir: Path) -> tuple[str, str]:
    demo = _job_id_in(workdir / "demo.txt")
    detect = {_job_id_in(workdir / "detect" / f"{i}.txt") for i in (1, 2)}
    assert len(detect) == 1, f"grouped jobs ran in different SLURM jobs: {detect}"
    (group,) = detect
    assert demo != group
    return demo, group


def _check_sacct(slurm_cluster, job_ids) -> None:
    records = slurm_cluster.sacct(job_ids)
    assert sorted(r["JobIDRaw"] for r in records) == sorted(job_ids), records
    for r in records:
        assert r["State"] == "COMPLETED", r
        assert r["ExitCode"] == "0:0", r
        assert r["Account"] == slurm_cluster.account, r
        assert r["Partition"] == slurm_cluster.partition, r


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_plugin_profile(slurm_cluster, tmp_path):
    snakefile = _write_workflow(tmp_path)
    proc = slurm_cluster.run_snakemake(
        ["--snakefile", snakefile, "--directory", tmp_path], cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stdout

    # the plugin reports one submission per SLURM job: make_demo, then the group
    job_ids = slurm_cluster.job_ids_from_log(proc.stdout)
    assert len(job_ids) == 2, proc.stdout
    assert _check_outputs(tmp_path) == tuple(job_ids)
    _check_sacct(slurm_cluster, job_ids)

    # slurm-keep-successful-logs: the SLURM logs of successful jobs are kept
    logs = sorted(p.name for p in (tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert logs == sorted(f"{j}.log" for j in job_ids), logs


@pytest.mark.slow
@pytest.mark.slurm
def test_cluster_generic_profile(slurm_cluster, tmp_path):
    snakefile = _write_workflow(tmp_path)
    proc = slurm_cluster.run_snakemake(
        [
            "--snakefile",
            snakefile,
            "--directory",
            tmp_path,
            # the profile's partition/account are EDIT_ME placeholders
            "--default-resources",
            f"slurm_partition={slurm_cluster.partition}",
            f"slurm_account={slurm_cluster.account}",
            "runtime=10",
            "mem_mb=1000",
            "--seconds-between-status-checks",
            "1",
        ],
        cwd=tmp_path,
        timeout=300,
        profile=PROJECT / "profiles" / "cluster-generic",
    )
    assert proc.returncode == 0, proc.stdout
    demo, group = _check_outputs(tmp_path)
    _check_sacct(slurm_cluster, [demo, group])
    # the submit template's --output lands in logs/slurm/<name>-<jobid>.out
    outs = sorted(p.name for p in (tmp_path / "logs" / "slurm").iterdir())
    assert outs == sorted([f"make_demo-{demo}.out", f"detect_detect_sources-{group}.out"]), outs


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["default", "slurm", "slurm-ci", "cluster-generic"])
def test_profile_dry_run(profile, tmp_path, request):
    if profile != "default":
        request.getfixturevalue("executor_plugins")
    snakefile = _write_workflow(tmp_path)
    args = ["--profile", PROJECT / "profiles" / profile, "--workflow-profile", "none"]
    if profile == "default":  # it is a workflow profile
        args = ["--workflow-profile", PROJECT / "profiles" / profile]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args), "-n",
         "--snakefile", str(snakefile), "--directory", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout
    assert "make_demo" in proc.stdout and "detect_sources" in proc.stdout, proc.stdout
