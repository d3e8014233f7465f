"""The Snakemake process as the host of the jobs' threads.

The rules run their scripts as threads of the Snakemake process
(``run_script`` in ``workflow/rules/common.smk``, ``force-use-threads`` in
``profiles/default``), so what that process does around the jobs is part of
every run's time: its garbage collector, and its exit. The workflow calls
`prepare_for_jobs` when the jobs start (``onstart``) and
`cancel_scheduler_timers` when they are over (``onsuccess``, ``onerror``).
"""

from __future__ import annotations

import gc
import threading

__all__ = ["prepare_for_jobs", "cancel_scheduler_timers"]


def prepare_for_jobs():
    """Keep the cyclic garbage collector off what the process holds already.

    By the time the jobs start, the heap holds the DAG, the config and
    every imported module: each full collection walks all of it, and the
    jobs' astropy and asdf objects set one off every few jobs. Frozen, what
    is there now is left out of every collection (still freed by reference
    counting), and a full collection comes after 100 rather than 10
    collections of the middle generation. On the benchmark data (8 NIRCam
    images) the run's full collections took 1.35-1.40 s (9 of them),
    0.29-0.33 s (2) with both, 0.8 s with the freeze alone, 0.4 s with the
    threshold alone.
    """
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
