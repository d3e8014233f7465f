"""The Snakemake process as the host of the jobs, and its worker processes.

Snakemake runs the jobs as threads of its own process (``force-use-threads``
in ``profiles/default``); each job thread runs its rule script
(``run_script`` in ``workflow/rules/common.smk``) through `run_job`:

- with more than one core, in a **worker process** of this module: Python
  processes that stay up for the whole run, started when a job finds none
  idle, at most one per core. A worker has astropy, photutils, gwcs,
  stdatamodels... imported once, not once per job as a process per job
  would (1-2 s, more than most jobs compute), and the jobs run side by
  side on the cores, where threads of one process would wait for its
  interpreter lock. The workers are forked from a **zygote** that imports
  those libraries while Snakemake starts (`start_zygote`, Linux);
- with one core, in the job thread itself.

Around the jobs, the workflow calls `start_zygote` as it reads the
Snakefile, `prepare_for_jobs` when the jobs start (``onstart``) and
`finish_jobs` when they are over (``onsuccess``, ``onerror``).
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import queue
import runpy
import signal
import socket
import subprocess
import sys
import threading
import traceback

from .errors import TweakflowError

__all__ = ["JobNames", "cancel_scheduler_timers", "finish_jobs", "prepare_for_jobs", "run_job", "serve", "start_zygote", "zygote"]

#: The worker processes of this run (None: jobs run in their threads).
_workers = None


class JobNames(list):
    """A job's input, output, params, log or wildcards, for a worker process.

    Snakemake's ``Namedlist`` without Snakemake: a list whose items may also
    have names (``job.input.images``, ``job.log[0]``, ``job.input.get(name)``),
    its file names plain strings, so that it pickles with only tweakflow to
    import in the worker.
    """

    def __init__(self, named):
        super().__init__(_plain(v) for v in named)
        self.__dict__.update((k, _plain(v)) for k, v in (named.items() if hasattr(named, "items") else ()))

    def get(self, name, default=None):
        return self.__dict__.get(name, default)

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()


def _plain(value):
    """``value`` with Snakemake's string and list types (file names) made plain."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _run_path(script, job):
    """Run the rule script ``script`` with ``job`` as its ``snakemake`` object."""
    runpy.run_path(script, init_globals={"snakemake": job}, run_name=f"tweakflow_rule_{os.path.basename(script)[:-3]}")


def _run_script(script, job):
    """Run a rule script as a job: None, or the failure ``(kind, text)``.

    The script runs in a thread of its own, as in the Snakemake process, so
    that `tweakflow.steps.run_rule` raises a `TweakflowError` (already
    logged to the job's log) rather than ending the process.
    """
    failure = []

    def target():
        try:
            _run_path(script, job)
        except TweakflowError as exc:
            failure.append(("error", str(exc)))
        except BaseException:  # noqa: BLE001 - reported to the job, with its traceback
            failure.append(("crash", traceback.format_exc()))

    thread = threading.Thread(target=target, name=os.path.basename(script))
    thread.start()
    thread.join()
    return failure[0] if failure else None


def _quit_on_interrupt():
    """Ctrl-C ends this process at once and quietly: Snakemake reports it.

    Outputs are written atomically, so a job stopped half-way leaves none.
    """
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def _serve(requests, results):
    """Run the jobs read from ``requests``, their results to ``results``, until the end of ``requests``."""
    _quit_on_interrupt()
    with requests, results:
        while True:
            try:
                script, job = pickle.load(requests)
            except EOFError:
                return
            pickle.dump(_run_script(script, job), results)
            results.flush()


def serve():
    """The loop of a worker process started on its own: jobs from standard input.

    Standard output becomes standard error, so that what a library prints
    cannot mix with the results; the process ends when its input does.
    """
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, results)


#: What the zygote imports before it forks workers: the libraries of the
#: first jobs of a run (detection) and of most others; asdf's extensions
#: follow (`_warm_up`). tweakwcs and matplotlib are left to the jobs that
#: need them (~0.3 s), not to delay the first fork.
_WARM_MODULES = ("tweakflow.steps", "photutils.detection", "photutils.background", "stdatamodels.jwst.datamodels")


def _warm_up():
    """Import the jobs' libraries, and let asdf load its extensions (~0.5 s on its first file)."""
    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # the job that needs it reports it
            pass
    import asdf

    asdf.AsdfFile()


def zygote(fd):
    """The loop of the zygote: warm up, then fork a worker for every request.

    A request on the socket ``fd`` carries a new worker's two pipe ends
    (jobs in, results out); the worker is forked with the libraries already
    imported. What the zygote holds is frozen out of the garbage collector
    first: the workers' collections would otherwise walk (and copy, page by
    page) all of it. The zygote ends when the host closes the socket. Its
    standard output is the host's standard error (`start_zygote`).
    """
    _quit_on_interrupt()
    host = socket.socket(fileno=fd)
    _warm_up()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(host, 16, 2)
        except OSError:
            return
        if not message or len(fds) != 2:
            return
        if os.fork() == 0:
            host.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve(os.fdopen(fds[0], "rb"), os.fdopen(fds[1], "wb"))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        for f in fds:
            os.close(f)


class _Zygote:
    """The host's end of the zygote: a socket to ask it for workers."""

    def __init__(self):
        host, zygote_end = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from tweakflow.jobhost import zygote; zygote({zygote_end.fileno()})"],
            pass_fds=[zygote_end.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=2,
        )
        zygote_end.close()
        self.socket = host
        self.lock = threading.Lock()

    def fork_worker(self):
        """A new worker's pipes (jobs in, results out), or None when the zygote is gone."""
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.socket, [b"w"], [jobs_r, results_w])
        except OSError:  # it failed in its warm-up, or was killed
            for f in (jobs_r, jobs_w, results_r, results_w):
                os.close(f)
            return None
        os.close(jobs_r)
        os.close(results_w)
        return os.fdopen(jobs_w, "wb"), os.fdopen(results_r, "rb")

    def close(self):
        self.socket.close()


#: The zygote of this run (`start_zygote`), or None.
_zygote = None


def start_zygote():
    """Start importing the jobs' libraries in a zygote process, now.

    Called while Snakemake starts and reads the workflow, so that the
    imports (~2 s: astropy, photutils, gwcs, stdatamodels, and asdf's
    extensions) overlap its start-up rather than follow it; the workers
    are then forked from the zygote, ready (`prepare_for_jobs`). Only
    where a process can be forked and given file descriptors (Linux; not
    macOS, where forking a process that has loaded the system's frameworks
    is unsafe); elsewhere, or if the zygote is gone, each worker starts on
    its own.
    """
    global _zygote
    if _zygote is None and sys.platform.startswith("linux") and hasattr(socket, "send_fds"):
        _zygote = _Zygote()


class _Worker:
    """One worker process and its pipes: forked from the zygote, or started on its own."""

    def __init__(self):
        self.process = None
        pipes = _zygote.fork_worker() if _zygote is not None else None
        if pipes is None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from tweakflow.jobhost import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            pipes = self.process.stdin, self.process.stdout
        self.jobs, self.results = pipes

    def run(self, script, job):
        pickle.dump((script, job), self.jobs)
        self.jobs.flush()
        return pickle.load(self.results)

    def ended(self):
        """How the worker ended, for a message (a forked worker's status is its zygote's to know)."""
        if self.process is None:
            return "ended"
        return f"ended with status {self.process.wait()}"

    def close(self):
        # not waited for: it ends at the end of its input, on its own
        # (tearing down its modules takes a few tenths of a second)
        self.jobs.close()

    def discard(self):
        """Close both pipes of a worker that died."""
        for pipe in (self.jobs, self.results):
            try:
                pipe.close()
            except OSError:  # what was left to flush to the dead worker
                pass


class _Workers:
    """At most ``size`` worker processes, each running one job at a time."""

    def __init__(self, size):
        self.size = size
        self._idle = queue.SimpleQueue()
        self._all = []
        self._lock = threading.Lock()

    def _take(self):
        """An idle worker, a new one if there is room, or the next to be free.

        A None in the idle queue is the room a dead worker left.
        """
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                with self._lock:
                    if len(self._all) < self.size:
                        worker = _Worker()
                        self._all.append(worker)
                        return worker
                worker = self._idle.get()
            if worker is not None:
                return worker

    def run(self, script, job):
        worker = self._take()
        try:
            failure = worker.run(script, job)
        except (EOFError, OSError, pickle.UnpicklingError):
            # the worker died in the job (killed, out of memory, a crash in C)
            with self._lock:
                self._all.remove(worker)
            worker.discard()
            self._idle.put(None)
            raise TweakflowError(f"{os.path.basename(script)}: its worker process {worker.ended()} in the job") from None
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
        _run_path(script, job)
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
    """End the run's worker processes, its zygote and the scheduler's leftover timers."""
    global _workers, _zygote
    if _workers is not None:
        _workers.close()
        _workers = None
    if _zygote is not None:
        _zygote.close()
        _zygote = None
    cancel_scheduler_timers()


def prepare_for_jobs(cores=1):
    """Start the run: worker processes for more than one core, and the
    garbage collector kept off what the Snakemake process holds already.

    By the time the jobs start, the heap holds the DAG, the config and
    every imported module: each full collection walks all of it, and jobs
    that run in the process's threads (one core; a cluster job's Snakemake
    process) set one off every few jobs with their astropy and asdf
    objects. Frozen, what is there now is left out of every collection
    (still freed by reference counting), and a full collection comes after
    100 rather than 10 collections of the middle generation. On the benchmark data (8 NIRCam
    images) the run's full collections took 1.35-1.40 s (9 of them),
    0.29-0.33 s (2) with both, 0.8 s with the freeze alone, 0.4 s with the
    threshold alone.

    Parameters
    ----------
    cores : int
        The cores the run may use: with more than one, jobs run in up to
        that many worker processes (`run_job`); with one, in their
        threads, and the zygote, if any, is ended.
    """
    global _workers, _zygote
    if cores > 1 and _workers is None:
        _workers = _Workers(cores)
    elif cores <= 1 and _zygote is not None:  # jobs in their threads: no worker to fork
        _zygote.close()
        _zygote = None
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
