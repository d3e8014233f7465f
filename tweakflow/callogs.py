"""The step's log in its products, as the JWST pipeline keeps it (``cal_logs``).

The JWST pipeline keeps the log of each step in the step's products: a list
of lines under ``cal_logs.<step>`` at the top level of the ASDF tree
(``cal_logs.tweakreg`` for the tweakreg step), each line
``<UTC date>T<time>.<ms> - <logger> - <LEVEL> - <message>``, with absolute
paths reduced to their file names and no line that names the user or the
host. `capture_lines` collects the records a job logs into such lines, for
`tweakflow.wcs_update.write_jwst_output` to write.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import re
import socket
import threading
import time

__all__ = ["CAL_LOGS_KEY", "LINE_PATTERN", "cal_log_line", "scrub", "capture_lines"]

#: The key of the step's lines under ``cal_logs`` (the step's alias in the JWST pipeline).
CAL_LOGS_KEY = "tweakreg"

#: What every line looks like (the message may span several lines).
LINE_PATTERN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} - [\w.]+ - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ", re.ASCII)

#: An absolute path: ``/`` and at least one folder, up to white space or a quote.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^/\s'\"]+/)+([^/\s'\"]+)")


def _identities():
    """Words that would identify the machine or its user in a published product."""
    names = set()
    for get in (getpass.getuser, socket.gethostname):
        try:
            names.add(str(get()))
        except Exception:  # no user name or host name to hide
            continue
    return [re.compile(rf"(?<![\w.-]){re.escape(n)}(?![\w-])") for n in names if n]


_PRIVATE = _identities()


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


_FORMATTER = _UTCFormatter("%(asctime)s.%(msecs)03d - %(name)s - %(levelname)s - %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")


def scrub(text):
    """``text`` with absolute paths reduced to file names; None when it names the user or the host."""
    text = _ABSOLUTE_PATH.sub(r"\1", text)
    if any(p.search(text) for p in _PRIVATE):
        return None
    return text


def cal_log_line(record):
    """The ``cal_logs`` line of a log record (`scrub`-bed), or None when it is left out."""
    return scrub(_FORMATTER.format(record))


@contextlib.contextmanager
def capture_lines(loggers=("tweakflow", "tweakwcs"), level=logging.INFO):
    """Collect the records the calling thread logs while in the context.

    Jobs run side by side as threads of one process: only the records made
    by the thread that entered the context are kept (as
    `tweakflow.steps.jobs.job_logging` keeps each job's). Loggers among
    ``loggers`` that would drop ``level`` records are set to ``level``, as
    a job's logging does.

    Yields
    ------
    list of str
        Filled with the `cal_log_line` of each record, in order.
    """
    ident = threading.get_ident()
    lines = []

    class _Collect(logging.Handler):
        def emit(self, record):
            line = cal_log_line(record)
            if line is not None:
                lines.append(line)

    handler = _Collect(level)
    handler.addFilter(lambda record: record.thread == ident and record.name.split(".")[0] in loggers)
    for name in loggers:
        if logging.getLogger(name).getEffectiveLevel() > level:
            logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
