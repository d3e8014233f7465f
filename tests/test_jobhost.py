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


# --- worker processes ----------------------------------------------------------

import os  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
from snakemake.iocontainers import Namedlist  # noqa: E402

from tweakflow import jobhost  # noqa: E402
from tweakflow.errors import TweakflowError  # noqa: E402


@pytest.fixture
def workers():
    """Two worker processes, as a run on two cores has them."""
    threshold = gc.get_threshold()
    prepare_for_jobs(cores=2)
    yield
    jobhost.finish_jobs()
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _job(tmp_path, output, **params):
    """A job as Snakemake gives it to a rule: named lists."""
    return SimpleNamespace(
        input=Namedlist(fromdict={"image": str(tmp_path / "in.txt")}),
        output=Namedlist(fromdict={"result": str(output)}),
        params=Namedlist(fromdict=params),
        wildcards=Namedlist(fromdict={"stem": "a"}),
        log=Namedlist([str(tmp_path / "job.log")]),
    )


_PID_SCRIPT = """
    import os, time
    print("stray output of a library")  # must not disturb the worker's results
    wait_for = snakemake.params.get("wait_for")
    if wait_for:  # a rendezvous: both jobs must run at the same time
        open(snakemake.params.here, "w").close()
        t = time.monotonic()
        while not os.path.exists(wait_for):
            assert time.monotonic() - t < 60, "the other job never ran beside this one"
            time.sleep(0.01)
    with open(snakemake.output.result, "w") as f:
        f.write(f"{os.getpid()} {snakemake.wildcards.stem} {snakemake.input[0]} {snakemake.log[0]}")
"""


def test_jobs_run_in_worker_processes_that_stay_up(tmp_path, workers):
    script = _script(tmp_path, "pid.py", _PID_SCRIPT)
    pids = []
    for k in range(3):
        out = tmp_path / f"out{k}.txt"
        jobhost.run_job(script, _job(tmp_path, out))
        pid, stem, image, log = out.read_text().split()
        assert (stem, image, log) == ("a", str(tmp_path / "in.txt"), str(tmp_path / "job.log"))
        pids.append(int(pid))
    assert os.getpid() not in pids
    assert len(set(pids)) == 1  # one worker, reused: its imports are paid once


def test_two_jobs_run_side_by_side_in_two_workers(tmp_path, workers):
    script = _script(tmp_path, "pid.py", _PID_SCRIPT)
    a, b = tmp_path / "a.flag", tmp_path / "b.flag"
    jobs = [
        _job(tmp_path, tmp_path / "out_a.txt", here=str(a), wait_for=str(b)),
        _job(tmp_path, tmp_path / "out_b.txt", here=str(b), wait_for=str(a)),
    ]
    errors = []

    def run(job):
        try:
            jobhost.run_job(script, job)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    pids = {(tmp_path / f"out_{k}.txt").read_text().split()[0] for k in "ab"}
    assert len(pids) == 2


def test_a_jobs_tweakflow_error_is_raised_with_its_line_and_logged(tmp_path, workers):
    script = _script(tmp_path, "fails.py", """
        from tweakflow.errors import TweakflowError
        from tweakflow.steps import run_rule

        def step():
            raise TweakflowError("bad.fits: no SCI extension")

        run_rule(step, snakemake.log[0])
    """)
    with pytest.raises(TweakflowError, match=r"^bad.fits: no SCI extension$"):
        jobhost.run_job(script, _job(tmp_path, tmp_path / "out.txt"))
    assert "ERROR tweakflow: bad.fits: no SCI extension" in (tmp_path / "job.log").read_text()


def test_a_bug_in_a_job_comes_back_with_its_traceback(tmp_path, workers):
    script = _script(tmp_path, "bug.py", "x = {}['missing']\n")
    with pytest.raises(RuntimeError, match=r"bug.py failed in a worker process:(.|\n)*KeyError: 'missing'"):
        jobhost.run_job(script, _job(tmp_path, tmp_path / "out.txt"))


def test_a_worker_that_dies_fails_its_job_only(tmp_path, workers):
    killed = _script(tmp_path, "killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(TweakflowError, match=r"killed.py: its worker process ended with status -9"):
        jobhost.run_job(killed, _job(tmp_path, tmp_path / "out.txt"))
    out = tmp_path / "after.txt"
    jobhost.run_job(_script(tmp_path, "pid.py", _PID_SCRIPT), _job(tmp_path, out))
    assert out.exists()


def test_with_one_core_jobs_run_in_their_thread(tmp_path):
    threshold = gc.get_threshold()
    jobhost.start_zygote()
    prepare_for_jobs(cores=1)
    try:
        assert jobhost._zygote is None  # no worker to fork: ended
        out = tmp_path / "out.txt"
        jobhost.run_job(_script(tmp_path, "pid.py", _PID_SCRIPT), _job(tmp_path, out))
        assert int(out.read_text().split()[0]) == os.getpid()
    finally:
        jobhost.finish_jobs()
        gc.unfreeze()
        gc.set_threshold(*threshold)


# --- the zygote ------------------------------------------------------------------


@pytest.fixture
def zygote_workers():
    """Workers forked from a zygote, as a run on two cores has them on Linux."""
    threshold = gc.get_threshold()
    jobhost.start_zygote()
    prepare_for_jobs(cores=2)
    yield jobhost._zygote
    jobhost.finish_jobs()
    gc.unfreeze()
    gc.set_threshold(*threshold)


_WARM_SCRIPT = """
    import os, sys
    warm = "photutils.detection" in sys.modules and "stdatamodels.jwst.datamodels" in sys.modules
    with open(snakemake.output.result, "w") as f:
        f.write(f"{os.getpid()} {os.getppid()} {warm}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks workers on Linux only")
def test_workers_forked_from_the_zygote_start_with_the_libraries_imported(tmp_path, zygote_workers):
    assert zygote_workers is not None
    script = _script(tmp_path, "warm.py", _WARM_SCRIPT)
    out = tmp_path / "out.txt"
    jobhost.run_job(script, _job(tmp_path, out))
    pid, parent, warm = out.read_text().split()
    assert warm == "True"  # imported before the job, by the zygote
    assert int(parent) == zygote_workers.process.pid  # forked from it
    assert int(pid) != os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks workers on Linux only")
def test_without_its_zygote_a_worker_starts_on_its_own(tmp_path, zygote_workers):
    zygote_workers.process.kill()
    zygote_workers.process.wait()
    out = tmp_path / "out.txt"
    jobhost.run_job(_script(tmp_path, "warm.py", _WARM_SCRIPT), _job(tmp_path, out))
    parent = out.read_text().split()[1]
    assert int(parent) == os.getpid()  # started by this process, not forked


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks workers on Linux only")
def test_a_forked_worker_that_dies_or_is_interrupted_fails_its_job_quietly(tmp_path, zygote_workers, capfd):
    killed = _script(tmp_path, "killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(TweakflowError, match=r"killed.py: its worker process ended in the job"):
        jobhost.run_job(killed, _job(tmp_path, tmp_path / "out.txt"))
    # Ctrl-C reaches the workers too: they end at once, without a traceback
    interrupted = _script(tmp_path, "interrupted.py", "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nimport time\ntime.sleep(60)\n")
    with pytest.raises(TweakflowError, match=r"interrupted.py: its worker process ended in the job"):
        jobhost.run_job(interrupted, _job(tmp_path, tmp_path / "out.txt"))
    assert "Traceback" not in capfd.readouterr().err
    out = tmp_path / "after.txt"
    jobhost.run_job(_script(tmp_path, "pid.py", _PID_SCRIPT), _job(tmp_path, out))
    assert out.exists()


def test_a_jobs_file_names_reach_the_worker_as_plain_strings():
    import pickle

    from snakemake.io import IOFile

    named = Namedlist(fromdict={"images": [IOFile("a.fits"), IOFile("b.fits")], "refcat": IOFile("ref.ecsv")})
    back = pickle.loads(pickle.dumps(jobhost.JobNames(named)))
    assert back == [["a.fits", "b.fits"], "ref.ecsv"] and back.images == ["a.fits", "b.fits"] and back.get("refcat") == "ref.ecsv"
    assert {type(x) for x in [*back[0], back[1], *back.images, back.refcat]} == {str}  # no Snakemake to import in the worker


def test_a_job_waiting_for_a_worker_takes_the_room_a_dead_one_left(tmp_path, monkeypatch):
    monkeypatch.setattr(jobhost, "_workers", jobhost._Workers(1))
    started = tmp_path / "started.flag"
    dies = _script(tmp_path, "dies.py", f"""
        import os, signal, time
        open({str(started)!r}, "w").close()
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    errors = []

    def run(script, out):
        try:
            jobhost.run_job(script, _job(tmp_path, out))
        except TweakflowError as exc:
            errors.append(str(exc))

    first = threading.Thread(target=run, args=(dies, tmp_path / "dies.txt"))
    first.start()
    t = time.monotonic()
    while not started.exists():
        assert time.monotonic() - t < 60
        time.sleep(0.01)
    second = threading.Thread(target=run, args=(_script(tmp_path, "pid.py", _PID_SCRIPT), tmp_path / "out.txt"))
    second.start()  # waits: the only worker is busy
    first.join(timeout=60)
    second.join(timeout=60)
    try:
        assert not second.is_alive()
        assert (tmp_path / "out.txt").exists()
        assert len(errors) == 1 and "dies.py: its worker process ended" in errors[0]
    finally:
        jobhost._workers.close()
