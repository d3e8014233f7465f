#!/usr/bin/env python3
"""Job status for snakemake-executor-plugin-cluster-generic on SLURM.

Called as ``status.py <jobid>``; prints exactly one of ``running``, ``success`` or
``failed``. Asks ``sacct`` (accounting) first and falls back to ``scontrol show job``
(finished jobs stay there for MinJobAge seconds), so it also works on clusters
without accounting. Standard library only.
"""
import subprocess
import sys
import time

RUNNING = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
    "RESV_DEL_HOLD", "SPECIAL_EXIT", "PREEMPTED",
}
SUCCESS = {"COMPLETED"}
# everything else (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL,
# DEADLINE, REVOKED) counts as failed


def _run(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def sacct_state(jobid):
    out = _run(["sacct", "-X", "-n", "-P", "-j", jobid, "-o", "State"])
    if not out or not out.strip():
        return None
    # "CANCELLED by 0" -> "CANCELLED"; the last line is the latest requeue
    return out.strip().splitlines()[-1].split()[0].rstrip("+")


def scontrol_state(jobid):
    out = _run(["scontrol", "-o", "show", "job", jobid])
    if not out:
        return None
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def classify(state):
    if state in RUNNING:
        return "running"
    if state in SUCCESS:
        return "success"
    return "failed"


def main(argv):
    if len(argv) != 2:
        print("usage: status.py <jobid>", file=sys.stderr)
        return 2
    jobid = argv[1].split(";")[0].strip()
    for attempt in range(3):
        state = sacct_state(jobid) or scontrol_state(jobid)
        if state:
            print(classify(state))
            return 0
        time.sleep(1 + attempt)
    # unknown to both accounting and the controller: it is gone
    print("failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
