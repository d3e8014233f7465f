"""tweakflow.console: what a Snakemake run of the workflow prints."""

import logging

from snakemake_interface_logger_plugins.common import LogEvent

from tweakflow.console import ConciseConsole, first_error_line, use_concise_console


def _record(msg="", level=logging.INFO, **extra):
    rec = logging.LogRecord("snakemake.logging", level, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def _shown(console, rec):
    return console.format(rec) if console.filter(rec) else None


def test_chatter_and_job_blocks_are_hidden_warnings_are_not():
    console = ConciseConsole()
    for msg in ("Select jobs to execute...", "Execute 2 jobs...", "Building DAG of jobs...", "Complete log(s): x"):
        assert _shown(console, _record(msg)) is None
    assert _shown(console, _record("rule align:", event=LogEvent.JOB_INFO)) is None
    assert _shown(console, _record("Finished jobid: 3", event=LogEvent.JOB_FINISHED)) is None
    assert _shown(console, _record("tweakflow: x: not a FITS file", level=logging.WARNING)) == "tweakflow: x: not a FITS file"
    assert _shown(console, _record("Nothing to be done.")) == "Nothing to be done."


def test_jobs_to_run_in_one_line():
    stats = {"detect_sources": 8, "align": 1, "apply_wcs": 8, "total": 17}
    line = _shown(ConciseConsole(), _record("Job stats", event=LogEvent.RUN_INFO, stats=stats))
    assert line == "tweakflow: 17 jobs to run (detect_sources 8, apply_wcs 8, align 1)"


def test_progress_once_per_tenth():
    console = ConciseConsole()
    shown = [_shown(console, _record(event=LogEvent.PROGRESS, done=k, total=1000)) for k in range(1, 1001)]
    lines = [s for s in shown if s]
    assert len(lines) == 11  # 1 %, then every tenth, and the last
    assert lines[-1] == "progress: 1000 of 1000 jobs done (100%)"


def test_a_failed_job_is_one_line_with_its_error_and_log(tmp_path):
    console = ConciseConsole()
    log = tmp_path / "detect.log"
    trace = (
        "RuleException:\nInputError in file \"/w/common.smk\", line 43:\n/d/b_cal.fits: truncated file\n"
        '  File "/w/detect.smk", line 28, in __rule_detect_sources\n  File "/w/io.py", line 258, in _check\n'
    )
    assert _shown(console, _record(trace, logging.ERROR, event=LogEvent.ERROR, exception="RuleException")) is None
    line = _shown(console, _record("Error in rule", logging.ERROR, event=LogEvent.JOB_ERROR, rule_name="detect_sources", log=[str(log)]))
    assert line == f"error: detect_sources: /d/b_cal.fits: truncated file (log: {log})"
    # a job of another process (cluster): the message is the last ERROR line of its log
    log.write_text("2026-01-01 10:00:00,000 INFO tweakflow: reading\n2026-01-01 10:00:01,000 ERROR tweakflow: /d/c.fits: no WCS\n")
    line = _shown(console, _record("Error in rule", logging.ERROR, event=LogEvent.JOB_ERROR, rule_name="apply_wcs", log=[str(log)]))
    assert line == f"error: apply_wcs: /d/c.fits: no WCS (log: {log})"
    assert first_error_line([str(tmp_path / "missing.log")]) is None


def test_workflow_errors_keep_their_lines_and_lose_the_stack():
    text = 'WorkflowError:\ntweakflow: tweakreg.serchrad: unknown key\n  File "/w/Snakefile", line 20, in <module>\n'
    line = _shown(ConciseConsole(), _record(text, logging.ERROR, event=LogEvent.ERROR, exception="WorkflowError"))
    assert line == "error: tweakflow: tweakreg.serchrad: unknown key"


def test_only_snakemakes_console_handler_changes():
    logger = logging.getLogger("test_console_only")
    other = logging.StreamHandler()
    logger.addHandler(other)
    assert not use_concise_console(logger)
    console = logging.StreamHandler()
    console.name = "DefaultStreamHandler"
    logger.addHandler(console)
    try:
        assert use_concise_console(logger)
        assert isinstance(console.formatter, ConciseConsole) and not other.filters
    finally:
        logger.removeHandler(other)
        logger.removeHandler(console)
