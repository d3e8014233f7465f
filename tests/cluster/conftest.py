"""pytest session fixture ``slurm_cluster``: a real single-node SLURM cluster.

The cluster (slurmctld + slurmd + slurmdbd with MariaDB, so ``sacct`` works) is run by
``tests/cluster/slurm_cluster.sh``. Any test under ``tests/cluster/`` can use it::

    def test_my_workflow_on_slurm(slurm_cluster, tmp_path):
        proc = slurm_cluster.run_snakemake(
            ["--snakefile", "/path/to/Snakefile", "--directory", str(tmp_path)],
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout
        job_ids = slurm_cluster.job_ids_from_log(proc.stdout)
        records = slurm_cluster.sacct(job_ids)
        assert all(r["State"] == "COMPLETED" for r in records)

Tests that use the fixture get the ``slurm`` marker automatically (select or skip them
with ``-m slurm`` / ``-m "not slurm"``).

What the fixture yields (a ``SlurmCluster``):

* ``partition`` ("debug"), ``account`` ("tweakflow"), ``cluster_name``, ``node``,
  ``cpus``, ``mem_mb`` (the node's size), ``statedir`` (daemon state, logs under
  ``statedir/log``);
* ``profile``: path of ``profiles/slurm-ci`` (fast polling, this partition/account);
* ``snakemake_cmd(args, profile=None)``: the argv list ``python -m snakemake --profile
  <profile> --workflow-profile none *args`` (this interpreter, so jobs run with the
  same virtualenv); pass ``profile=`` for another profile directory;
* ``run_snakemake(args, cwd, timeout=600, profile=None)``: runs it, stdout and stderr
  merged into ``.stdout``; never raises on a non-zero exit;
* ``job_ids_from_log(text)``: the SLURM job ids the slurm plugin reported;
* ``sacct(job_ids)``: one dict per job (allocation only, ``sacct -X``) with keys
  JobIDRaw, JobName, State, ExitCode, Account, Partition, NodeList, Elapsed.

Lifecycle: on first use the fixture runs ``slurm_cluster.sh install`` (apt-get; skips
the tests only if that is impossible here: not root, no apt-get), then ``start
<statedir>``, and ``stop <statedir>`` at the end of the session. ``statedir`` is
``$TWEAKFLOW_SLURM_STATEDIR`` or ``/var/tmp/tweakflow-slurm``; it is kept between
sessions (MariaDB data, job id counter), which makes later starts take ~2 s. A cluster
that was already running from that statedir before the session is used and left
running; ``TWEAKFLOW_SLURM_KEEP=1`` leaves a cluster started by the fixture running too
(stop it with ``bash tests/cluster/slurm_cluster.sh stop <statedir>``).

Status polling: profiles/slurm-ci waits 8 s before the first ``sacct`` query after a
submission, and each query that finds no finished job adds 10 s (plugin behaviour). A
workflow whose jobs take much longer than ~7 s on this cluster may finish sooner with
e.g. ``--slurm-init-seconds-before-status-checks 15`` appended to the arguments.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
SCRIPT = HERE / "slurm_cluster.sh"
CI_PROFILE = PROJECT / "profiles" / "slurm-ci"
DEFAULT_STATEDIR = "/var/tmp/tweakflow-slurm"
SACCT_FIELDS = [
    "JobIDRaw",
    "JobName",
    "State",
    "ExitCode",
    "Account",
    "Partition",
    "NodeList",
    "Elapsed",
]
_JOBID_RE = re.compile(r"submitted with SLURM jobid (\d+)")


def _clean_env() -> dict[str, str]:
    """Environment for snakemake runs: no outer profile, no outer SLURM job context."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("SLURM_", "SBATCH_", "SRUN_")))
    }
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


@dataclasses.dataclass
class SlurmCluster:
    partition: str
    account: str
    cluster_name: str
    node: str
    cpus: int
    mem_mb: int
    statedir: Path
    profile: Path = CI_PROFILE
    script: Path = SCRIPT

    def snakemake_cmd(self, args=(), profile: os.PathLike | str | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            str(profile or self.profile),
            "--workflow-profile",
            "none",
            *map(str, args),
        ]

    def run_snakemake(
        self,
        args=(),
        cwd: os.PathLike | str | None = None,
        timeout: float = 600,
        profile: os.PathLike | str | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.snakemake_cmd(args, profile=profile),
            cwd=cwd,
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def job_ids_from_log(text: str) -> list[str]:
        return _JOBID_RE.findall(text)

    def sacct(self, job_ids, settle: float = 15.0) -> list[dict[str, str]]:
        """Accounting records of ``job_ids``. slurmdbd completes a job's record a
        moment after the job ends (until then sacct may show it as JobName
        "allocation" with no partition): wait up to ``settle`` seconds for every
        record to have its partition and account."""
        job_ids = [str(j) for j in job_ids]
        if not job_ids:
            return []
        deadline = time.monotonic() + settle
        while True:
            out = subprocess.run(
                [
                    "sacct",
                    "-X",
                    "--parsable2",
                    "--noheader",
                    "--format=" + ",".join(SACCT_FIELDS),
                    "-j",
                    ",".join(job_ids),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            rows = csv.reader(io.StringIO(out), delimiter="|")
            records = [dict(zip(SACCT_FIELDS, row)) for row in rows if row]
            complete = len(records) == len(set(job_ids)) and all(r["Partition"] and r["Account"] for r in records)
            if complete or time.monotonic() > deadline:
                return records
            time.sleep(0.5)


def require_executor_plugins() -> None:
    """Fail (not skip) with the fix when the snakemake executor plugins are missing."""
    import importlib.util

    missing = [
        name
        for name in (
            "snakemake_executor_plugin_slurm",
            "snakemake_executor_plugin_cluster_generic",
        )
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed in {sys.executable}: "
            'pip install -e ".[slurm]" (the "slurm" extra of pyproject.toml)',
            pytrace=False,
        )


@pytest.fixture
def executor_plugins() -> None:
    """Fails the test with the fix when the slurm/cluster-generic plugins are missing."""
    require_executor_plugins()


def _sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _read_env(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip()
    return info


@pytest.fixture(scope="session")
def slurm_cluster():
    require_executor_plugins()
    if not sys.platform.startswith("linux") or shutil.which("bash") is None:
        pytest.skip("a local SLURM cluster needs Linux with bash")
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (to install and run the daemons)")

    inst = _sh("install", timeout=900)
    if inst.returncode == 3:
        pytest.skip(f"cannot install the SLURM packages here:\n{inst.stdout}")
    if inst.returncode != 0:
        pytest.fail(f"slurm_cluster.sh install failed:\n{inst.stdout}", pytrace=False)

    statedir = Path(os.environ.get("TWEAKFLOW_SLURM_STATEDIR", DEFAULT_STATEDIR))
    was_running = _sh("status", str(statedir), timeout=60).returncode == 0
    start = _sh("start", str(statedir), timeout=300)
    if start.returncode != 0:
        _sh("stop", str(statedir), timeout=120)
        pytest.fail(f"slurm_cluster.sh start failed:\n{start.stdout}", pytrace=False)

    info = _read_env(statedir / "cluster.env")
    cluster = SlurmCluster(
        partition=info["SLURM_PARTITION"],
        account=info["SLURM_ACCOUNT"],
        cluster_name=info["SLURM_CLUSTER_NAME"],
        node=info["SLURM_NODE"],
        cpus=int(info["SLURM_CPUS"]),
        mem_mb=int(info["SLURM_MEM_MB"]),
        statedir=Path(info["SLURM_STATEDIR"]),
    )
    try:
        yield cluster
    finally:
        if not was_running and os.environ.get("TWEAKFLOW_SLURM_KEEP") != "1":
            stop = _sh("stop", str(statedir), timeout=120)
            if stop.returncode != 0:
                print(f"slurm_cluster.sh stop failed:\n{stop.stdout}", file=sys.stderr)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
