"""Running a step as a job: its log file, and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from ..errors import TweakflowError

__all__ = ["job_logging", "run_rule", "JOB_LOGGERS"]

log = logging.getLogger("tweakflow")


#: Loggers whose INFO records go to a job's log (tweakwcs reports its fits).
JOB_LOGGERS = ("tweakflow", "tweakwcs")


_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def job_logging(log_path=None):
    """Send the log records of the calling thread to a job's log file.

    Jobs run side by side as threads of one process (the Snakemake process,
    see ``workflow/rules/common.smk``), so the handlers added here keep only
    the records made by the thread that entered the context: each job's log
    holds its own messages, whatever else runs at the same time. INFO and
    above go to ``log_path``; tweakflow's warnings (everything below
    ERROR without a log file) also go to standard error, where Snakemake
    shows them; an error reaches the console once, with the failed job.

    Parameters
    ----------
    log_path : str or None
        The job's log file, truncated first.
    """
    ident = threading.get_ident()
    in_job_thread = threading.current_thread() is not threading.main_thread()

    def this_thread(record):
        return record.thread == ident

    def tweakflow_warning(record):
        # in a job thread, an error reaches the console with the failed job
        # (the concise console reads it from the log); other libraries'
        # warnings stay in the log
        shown_with_job = log_path and record.levelno >= logging.ERROR and in_job_thread
        return not shown_with_job and record.name.split(".")[0] == "tweakflow"

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if log_path else logging.INFO)
    console.addFilter(tweakflow_warning)
    handlers = [console]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(_FORMAT)
        h.addFilter(this_thread)
        root.addHandler(h)
    for name in JOB_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()


def run_rule(func, log_path=None, **kwargs):
    """Run a step with logging to ``log_path`` and clean error reporting.

    A `TweakflowError` is logged as one line naming the file and the problem.
    In a job thread of the Snakemake process the error is then raised again,
    and Snakemake reports the job as failed with that message; as the main
    program of a process of its own (a ``script:`` job) the process exits
    with status 1 instead of printing a traceback.
    """
    with job_logging(log_path):
        try:
            return func(**kwargs)
        except TweakflowError as exc:
            log.error("%s", exc)
            if threading.current_thread() is not threading.main_thread():
                raise
    sys.exit(1)
