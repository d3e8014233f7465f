"""A concise console for Snakemake runs of the workflow.

Snakemake's own console prints every job's inputs, outputs and reasons, and a
failed job as a block followed by a Python stack: readable for 20 jobs,
unreadable for 2,000. `use_concise_console` changes what Snakemake's console
handler shows (its log file, ``.snakemake/log/``, keeps everything):

- the jobs to run, as one line of counts per rule;
- progress: one line per tenth of the jobs done, and at least one a minute;
- warnings, one line each;
- a failed job as one line: the rule, the error message and the job's log;
- nothing of Snakemake's scheduling chatter (``Select jobs to execute...``).

The Snakefile ends a successful run with the verdict (`tweakflow.verdict`).
``console: snakemake`` in the configuration keeps Snakemake's own console.
"""

from __future__ import annotations

import logging
import os
import time

from snakemake_interface_logger_plugins.common import LogEvent

__all__ = ["ConciseConsole", "use_concise_console", "first_error_line"]

#: Snakemake's messages that say nothing a user acts on.
_CHATTER = (
    "Select jobs to execute",
    "Execute ",
    "Using shell:",
    "Provided cores:",
    "Rules claiming more threads",
    "Assuming unrestricted shared filesystem",
    "Building DAG of jobs",
    "Complete log(s):",
    "Elapsed time:",
    "Shutting down, this might take some time",
    "Exiting because a job execution failed",
    "Using workflow specific profile",
    "Config file ",
    "Job stats:",
    "host:",
)

#: Events shown in Snakemake's console that the concise console leaves to the log file.
_HIDDEN_EVENTS = {
    LogEvent.JOB_INFO,
    LogEvent.JOB_FINISHED,
    LogEvent.JOB_STARTED,
    LogEvent.SHELLCMD,
    LogEvent.GROUP_INFO,
    LogEvent.RESOURCES_INFO,
    LogEvent.WORKFLOW_STARTED,
}

#: Seconds between two progress lines at most.
PROGRESS_INTERVAL = 60.0


def first_error_line(log_paths):
    """The last ``ERROR`` line of a job's log files, without its time stamp, or None."""
    for path in log_paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln.rstrip() for ln in f if " ERROR " in ln]
        except OSError:
            continue
        if lines:
            return lines[-1].split(" ERROR ", 1)[1].split(": ", 1)[-1]
    return None


def _exception_message(text, sep="\n"):
    """An exception as Snakemake formats it, without its stack and its headers.

    ``RuleException:`` / ``InputError in file ..., line N:`` headers and
    ``File ...`` frames go; the message lines stay, joined by ``sep``.
    """
    keep = []
    for line in str(text).splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith('File "') or stripped.endswith("Exception:"):
            continue
        if " in file " in stripped and stripped.endswith(":") and ", line " in stripped:
            continue
        if stripped in ("WorkflowError:", "RuleException:"):
            continue
        keep.append(stripped)
    return sep.join(keep)


def _shown_path(path):
    """``path`` relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


class ConciseConsole(logging.Filter):
    """Filter and formatter of Snakemake's console handler (see the module)."""

    def __init__(self):
        super().__init__()
        self._decile = -1
        self._last_progress = 0.0
        self._pending_error = None

    # --- logging.Filter -----------------------------------------------------
    def filter(self, record):
        event = getattr(record, "event", None)
        if event in _HIDDEN_EVENTS:
            return False
        if event == LogEvent.DEBUG_DAG:
            return False
        if event == LogEvent.PROGRESS:
            return self._progress_due(record.done, record.total)
        if event == LogEvent.ERROR and getattr(record, "exception", "") == "RuleException":
            # the job's error: shown with the JOB_ERROR record that follows
            self._pending_error = _exception_message(record.getMessage(), sep=" ")
            return False
        if event is None:
            return not str(record.msg).lstrip().startswith(_CHATTER)
        return True

    def _progress_due(self, done, total):
        decile = int(10 * done / max(total, 1))
        now = time.monotonic()
        due = decile != self._decile or now - self._last_progress >= PROGRESS_INTERVAL or done == total
        if due:
            self._decile, self._last_progress = decile, now
        return due

    # --- formatting ---------------------------------------------------------
    def format(self, record):
        """The console line(s) of ``record``."""
        event = getattr(record, "event", None)
        if event == LogEvent.RUN_INFO and hasattr(record, "stats"):
            return self._jobs_line(record.stats)
        if event == LogEvent.PROGRESS:
            return f"progress: {record.done} of {record.total} jobs done ({100 * record.done // max(record.total, 1)}%)"
        if event == LogEvent.JOB_ERROR:
            return self._job_error_line(record)
        if event == LogEvent.GROUP_ERROR:
            return "error: " + "; ".join(self._job_error_line_of(info) for info in record.job_error_info)
        if event == LogEvent.ERROR:
            return "error: " + _exception_message(record.getMessage())
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return message.strip()
        return message

    @staticmethod
    def _jobs_line(stats):
        counts = {str(k): int(v) for k, v in dict(stats).items() if str(k) != "total"}
        total = sum(counts.values())
        parts = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        return f"tweakflow: {total} jobs to run ({parts})"

    def _job_error_line(self, record):
        info = {"rule_name": record.rule_name, "log": record.log, "wildcards": getattr(record, "wildcards", {})}
        line = self._job_error_line_of(info)
        self._pending_error = None
        return "error: " + line

    def _job_error_line_of(self, info):
        logs = list(info.get("log") or [])
        message = self._pending_error or first_error_line(logs) or "failed"
        where = f" (log: {_shown_path(logs[0])})" if logs else ""
        return f"{info['rule_name']}: {message}{where}"


def use_concise_console(logger):
    """Make Snakemake's console handler concise (`ConciseConsole`).

    Parameters
    ----------
    logger : logging.Logger
        Snakemake's logger (``snakemake.logging.logger``). Its handler named
        ``DefaultStreamHandler`` gets the concise filter and formatter; a run
        whose console is a logger plugin's is left as it is.

    Returns
    -------
    bool
        Whether the console was changed.
    """
    for handler in logger.handlers:
        if handler.name == "DefaultStreamHandler":
            console = ConciseConsole()
            handler.filters = [console]
            handler.setFormatter(console)
            return True
    return False
