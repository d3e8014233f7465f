"""The Snakemake process as the host of the jobs, and its worker processes.

Snakemake runs the jobs as threads of its own process (``force-use-threads``
in ``profiles/default``); each job thread runs its rule script
(``run_script`` in ``workflow/rules/common.smk``) through `run_job`:

- with more than one core, in a **worker process** of this module: Python
  processes that stay up for the whole run, started when a job finds none
  idle, at most one per core. A worker imports astropy, photutils, gwcs,
  stdatamodels... once, not once per job as a process per job would (1-2 s,
  more than most jobs compute), and the jobs run side by side on the cores,
  where threads of one process would wait for its interpreter lock;
- with one core, in the job thread itself.

Around the jobs, the workflow calls `prepare_for_jobs` when they start
(``onstart``) and `finish_jobs` when they are over (``onsuccess``,
``onerror``).
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import runpy
import subprocess
import sys
import threading
import traceback

from .errors import TweakflowError

__all__ = ["JobNames", "cancel_scheduler_timers", "finish_jobs", "prepare_for_jobs", "run_job", "serve"]

#: The worker processes of this run (None: jobs run in their threads).
_workers = None


class JobNames(list):
    """A job's input, output, params, log or wildcards, for a worker process.

    Snakemake's ``Namedlist`` without Snakemake: a list whose items may also
    have names (``job.input.images``, ``job.log[0]``, ``job.input.get(name)``),
    which pickles with only tweakflow to import.
    """

    def __init__(self, named):
        super().__init__(named)
        self.__dict__.update(named.items() if hasattr(named, "items") else ())

    def get(self, name, default=None):
        return self.__dict__.get(name, default)

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()


def _run_script(script, job):
    """Run a rule script as a job: None, or the failure ``(kind, text)``.

    The script runs in a thread of its own, as in the Snakemake process, so
    that `tweakflow.steps.run_rule` raises a `TweakflowError` (already
    logged to the job's log) rather than ending the process.
    """
    failure = []

    def target():
        try:
            runpy.run_path(script, init_globals={"snakemake": job}, run_name=f"tweakflow_rule_{os.path.basename(script)[:-3]}")
        except TweakflowError as exc:
            failure.append(("error", str(exc)))
        except BaseException:  # noqa: BLE001 - reported to the job, with its traceback
            failure.append(("crash", traceback.format_exc()))

    thread = threading.Thread(target=target, name=os.path.basename(script))
    thread.start()
    thread.join()
    return failure[0] if failure else None


def serve():
    """The loop of a worker process: jobs from standard input, results to the host.

    Standard output becomes standard error, so that what a library prints
    cannot mix with the results; the process ends when its input does.
    """
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            script, job = pickle.load(requests)
        except EOFError:
            return
        pickle.dump(_run_script(script, job), results)
        results.flush()


class _Worker:
    """One worker process and its pipes."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tweakflow.jobhost import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(self, script, job):
        pickle.dump((script, job), self.process.stdin)
        self.process.stdin.flush()
        return pickle.load(self.process.stdout)

    def close(self):
        # not waited for: it ends at the end of its input, on its own
        # (tearing down its modules takes a few tenths of a second)
        self.process.stdin.close()


class _Workers:
    """At most ``size`` worker processes, each running one job at a time."""

    def __init__(self, size):
        self.size = size
        self._idle = queue.SimpleQueue()
        self._all = []
        self._lock = threading.Lock()

    def _take(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.size:
                worker = _Worker()
                self._all.append(worker)
                return worker
        return self._idle.get()

    def run(self, script, job):
        worker = self._take()
        try:
            failure = worker.run(script, job)
        except (EOFError, OSError, pickle.UnpicklingError):
            # the worker died in the job (killed, out of memory, a crash in C)
            with self._lock:
                self._all.remove(worker)
            code = worker.process.wait()
            raise TweakflowError(f"{os.path.basename(script)}: its worker process ended with status {code} in the job") from None
        self._idle.put(worker)
        return failure

    def close(self):
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()


def run_job(script, job):
    """Run the rule script ``script`` on ``job`` (input, output, params, wildcards, log).

    In a worker process when the run has them (`prepare_for_jobs`), in the
    calling thread otherwise. A `TweakflowError` of the job is raised again
    here with its one-line message (the job's log has it already); any
    other failure of a worker's job raises a RuntimeError with its
    traceback.
    """
    if _workers is None:
        runpy.run_path(script, init_globals={"snakemake": job}, run_name=f"tweakflow_rule_{os.path.basename(script)[:-3]}")
        return
    plain = {k: JobNames(getattr(job, k)) for k in ("input", "output", "params", "wildcards", "log")}
    failure = _workers.run(script, type(job)(**plain))
    if failure is None:
        return
    kind, text = failure
    if kind == "error":
        raise TweakflowError(text)
    raise RuntimeError(f"{os.path.basename(script)} failed in a worker process:\n{text}")


def finish_jobs():
    """End the run's worker processes and the scheduler's leftover timers."""
    global _workers
    if _workers is not None:
        _workers.close()
        _workers = None
    cancel_scheduler_timers()


def prepare_for_jobs(cores=1):
    """Start the run: worker processes for more than one core, and the
    garbage collector kept off what the Snakemake process holds already.

    By the time the jobs start, the heap holds the DAG, the config and
    every imported module: each full collection walks all of it, and the
    jobs' astropy and asdf objects set one off every few jobs. Frozen, what
    is there now is left out of every collection (still freed by reference
    counting), and a full collection comes after 100 rather than 10
    collections of the middle generation. On the benchmark data (8 NIRCam
    images) the run's full collections took 1.35-1.40 s (9 of them),
    0.29-0.33 s (2) with both, 0.8 s with the freeze alone, 0.4 s with the
    threshold alone.

    Parameters
    ----------
    cores : int
        The cores the run may use: with more than one, jobs run in up to
        that many worker processes (`run_job`).
    """
    global _workers
    if cores > 1 and _workers is None:
        _workers = _Workers(cores)
    gc.freeze()
    gc.set_threshold(700, 10, 100)


def cancel_scheduler_timers():
    """Cancel the timers Snakemake's job scheduler leaves when a run is over.

    After every round of job selection the scheduler starts a one-second
    `threading.Timer` (the re-evaluation of its job rate limit), and the
    interpreter waits for every such thread before it exits: a finished run
    lingered up to a second after its last job (0.9 s of 13.8 s on the
    benchmark, alternating runs). Once the run is over those timers have
    nothing left to wake; any other timer is left alone.

    Returns
    -------
    int
        How many timers were cancelled.
    """
    cancelled = 0
    for thread in threading.enumerate():
        wakes = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and "_schedule_reevalutation" in getattr(wakes, "__qualname__", ""):
            thread.cancel()
            cancelled += 1
    return cancelled
