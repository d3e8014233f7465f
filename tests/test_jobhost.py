"""tweakflow.jobhost: the Snakemake process around the jobs' threads."""

import gc
import inspect
import threading
import time

from snakemake.scheduling.job_scheduler import JobScheduler

from tweakflow.jobhost import cancel_scheduler_timers, prepare_for_jobs


class _Scheduler:
    """Starts a timer the way Snakemake's job scheduler does."""

    def __init__(self):
        self.woken = threading.Event()

    def _schedule_reevalutation(self, delay):
        timer = threading.Timer(delay, lambda: self.woken.set())
        timer.start()
        return timer


def test_the_schedulers_leftover_timers_are_cancelled_and_no_other():
    scheduler = _Scheduler()
    leftover = scheduler._schedule_reevalutation(30)
    other_woken = threading.Event()
    other = threading.Timer(30, other_woken.set)
    other.start()
    try:
        t0 = time.perf_counter()
        assert cancel_scheduler_timers() == 1
        leftover.join(timeout=10)
        assert not leftover.is_alive()
        assert time.perf_counter() - t0 < 10  # joined because cancelled, not timed out
        assert not scheduler.woken.is_set()
        assert other.is_alive()
    finally:
        other.cancel()
        other.join()
    assert not other_woken.is_set()


def test_snakemake_still_leaves_such_timers():
    # the name the cancellation looks for: if Snakemake renames or drops it,
    # this fails rather than the cancellation silently doing nothing
    source = inspect.getsource(JobScheduler._schedule_reevalutation)
    assert "threading.Timer(" in source


def test_prepare_for_jobs_freezes_what_exists():
    threshold = gc.get_threshold()
    try:
        prepare_for_jobs()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (700, 10, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
