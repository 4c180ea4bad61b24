"""One local job per host, across processes (issue 12, point 4).

Two ``ftbot run`` on one FTBOT_HOME used to train at the same time (two models in GPU memory on a
real host), and ``ftbot run`` started beside a running ``serve``. The rule now holds through an
``flock`` on FTBOT_HOME/local-job.lock (engine.hostlock.HostLock): the dispatcher of any process
takes it before it claims a job and its worker inherits it.

All real: ``python -m bot run`` processes training builtin:tiny on one FTBOT_HOME, a separate
process that holds the lock the way a dispatcher does (and is then SIGKILLed: the kernel frees an
flock when its holder dies), and the Engine's dispatcher in this process as ``ftbot serve`` runs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.jobs import JobState
from engine.paths import worker_log_path
from engine.progress import ProgressEvent
from engine.service import Engine
from engine.settings import Settings
from engine.workers import WorkerProcess
from tests.fakes.datasets import write_price_dataset
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


class CliProcess:
    """``python -m bot ARGS`` with its stderr collected line by line on a thread (so the test can
    wait for a line while the process runs) and its stdout kept for the end."""

    def __init__(self, home: Path, *args: str) -> None:
        env = {
            **os.environ,
            "FTBOT_HOME": str(home),
            "FTBOT_BASE_MODEL": "builtin:tiny",
            "OMP_NUM_THREADS": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_line(self, fragment: str, timeout: float = 120.0) -> str:
        wait_for(
            lambda: fragment in self.stderr,
            timeout,
            f"{fragment!r} on stderr; so far:\n{self.stderr[-3000:]}",
        )
        return next(line for line in self.lines if fragment in line)

    def finish(self, timeout: float = 300.0) -> tuple[int, dict]:
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(10)
        return self.proc.returncode, json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[CliProcess | subprocess.Popen]]:
    """Every process a test starts; whatever still runs at the end is killed (only those)."""
    started: list[CliProcess | subprocess.Popen] = []
    yield started
    for item in started:
        if isinstance(item, CliProcess):
            item.stop()
        elif item.poll() is None:
            item.kill()
            item.wait(10)


class PausedWorker:
    """The worker process of a running job, stopped with SIGSTOP until :meth:`resume`.

    Whether a second process starts while the first job still trains must not depend on how fast
    this machine trains builtin:tiny (early stopping can end a 30-epoch job in two epochs, before
    a new Python process has imported torch): the test pauses the worker, waits for the second
    process to say it is waiting, and lets the worker go on. The lock is held by the worker's
    parent, so a paused worker still holds the host.
    """

    def __init__(self, engine: Engine, job_id: str) -> None:
        wait_for(lambda: engine.job(job_id).worker_pid is not None, 60, f"job {job_id}'s worker")
        self.pid = int(engine.job(job_id).worker_pid)  # type: ignore[arg-type]
        database = engine.settings.db_path
        # A worker stopped inside a write transaction would hold the database's write lock and
        # block the second process: stop it again until it is stopped outside one.
        wait_for(lambda: self._stop_outside_a_write(database), 60, f"job {job_id}'s worker to pause")

    def _stop_outside_a_write(self, database: Path) -> bool:
        os.kill(self.pid, signal.SIGSTOP)
        connection = sqlite3.connect(str(database), timeout=0)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            return True
        except sqlite3.OperationalError:  # database is locked: it was writing
            os.kill(self.pid, signal.SIGCONT)
            return False
        finally:
            connection.close()

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it may have ended already
            os.kill(self.pid, signal.SIGCONT)


def _steps(engine: Engine, job_id: str) -> list[ProgressEvent]:
    return [event for event in engine.events(job_id) if event.kind == "step"]


def _state_at(engine: Engine, job_id: str, state: JobState) -> ProgressEvent:
    return next(e for e in engine.events(job_id) if e.kind == "state" and e.data.get("state") == state.value)


# A process that holds the host's slot the way a dispatcher does for a job it runs: an exclusive
# flock on FTBOT_HOME/local-job.lock, the holder's note in it, the job in the store (training, with
# this process as its worker). Plain fcntl: the lock file is the contract between processes.
HOLDER = """
import fcntl, json, os, sys, time
from pathlib import Path
from engine.jobs import JobState
from engine.service import Engine
from engine.settings import Settings

settings = Settings.from_env()
with Engine(settings) as engine:
    record = engine.add_dataset(Path(sys.argv[1]))
    job = engine.submit(record.hash, options={"epochs": "1"})
    lock = open(settings.home / "local-job.lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.truncate(0)
    lock.write(json.dumps({"job_id": job.id, "started_by": f"a crashing holder, pid {os.getpid()}"}))
    lock.flush()
    for state in ("validating", "baseline", "training"):
        engine.store.transition(job.id, JobState(state))
    engine.store.update_job(job.id, worker_pid=os.getpid())
    print(job.id, flush=True)
    time.sleep(600)
"""


def _host_is_free(settings: Settings) -> bool:
    """Whether another process could take the host's slot now (tried, and let go at once)."""
    with open(settings.home / "local-job.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _start_holder(settings: Settings, data: Path, processes: list) -> tuple[subprocess.Popen, str]:
    """Start :data:`HOLDER`; return it and the id of the job it holds the host for."""
    env = {**os.environ, "FTBOT_HOME": str(settings.home), "FTBOT_BASE_MODEL": "builtin:tiny"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(holder)
    assert holder.stdout is not None
    job_id = holder.stdout.readline().strip()
    assert job_id.startswith("ft-"), job_id
    return holder, job_id


@pytest.mark.slow
def test_two_ftbot_runs_on_one_home_train_one_after_the_other(
    settings: Settings, tmp_path: Path, processes: list
) -> None:
    long_data = write_price_dataset(tmp_path / "long.jsonl", n=40)
    short_data = write_price_dataset(tmp_path / "short.jsonl", n=24)
    first = CliProcess(settings.home, "run", str(long_data), "--epochs", "30", "--json")
    processes.append(first)
    first.wait_line("training [")  # the first one trains ...
    with Engine(settings) as engine:
        paused = PausedWorker(engine, engine.jobs()[0].id)
    try:
        second = CliProcess(settings.home, "run", str(short_data), "--epochs", "1", "--json")
        processes.append(second)  # ... when the second one starts
        second.wait_line("waiting:")
    finally:
        paused.resume()

    first_code, first_summary = first.finish()
    second_code, second_summary = second.finish()
    assert first_code == 0, first.stderr[-3000:]
    assert second_code == 0, second.stderr[-3000:]
    first_id, second_id = first_summary["job_id"], second_summary["job_id"]
    with Engine(settings) as engine:
        first_steps, second_steps = _steps(engine, first_id), _steps(engine, second_id)
        assert first_steps and second_steps
        # The training windows (step events' times) do not overlap: the second trained after.
        assert max(e.at for e in first_steps) < min(e.at for e in second_steps)
        # Nor did any of its work start before the first job ended.
        assert (
            _state_at(engine, first_id, JobState.SUCCEEDED).at
            <= _state_at(engine, second_id, JobState.VALIDATING).at
        )
    # ... and the second one said what it waited for.
    waiting = (
        f"waiting: job {first_id} is training on this host (started by ftbot run, pid {first.proc.pid}); "
        "this job starts when it ends."
    )
    assert waiting in second.stderr, second.stderr[-3000:]
    assert "waiting:" not in first.stderr


@pytest.mark.slow
def test_a_holder_killed_by_sigkill_frees_the_host_and_the_waiting_run_goes_on(
    settings: Settings, tmp_path: Path, processes: list
) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl", n=24)
    holder, held_job = _start_holder(settings, data, processes)
    run = CliProcess(settings.home, "run", str(data), "--epochs", "1", "--json")
    processes.append(run)
    line = run.wait_line("waiting:")
    assert (
        f"waiting: job {held_job} is training on this host (started by a crashing holder, pid {holder.pid})"
        in line
    )
    with Engine(settings) as engine:
        assert [j.state for j in engine.jobs() if j.id != held_job] == [JobState.QUEUED]

    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup: only the kernel can free the lock now
    holder.wait(10)
    code, summary = run.finish()
    assert code == 0 and summary["status"] == "succeeded", run.stderr[-3000:]
    assert time.monotonic() - killed_at < 120
    with Engine(settings) as engine:
        assert engine.job(held_job).state is JobState.TRAINING  # the holder died, its job is untouched
        assert _steps(engine, summary["job_id"])


# A launcher for the in-process dispatcher: a stand-in worker that sleeps (the process boundary is
# real; the pipeline is left out, as in tests/test_service.py).
def _sleeping_worker(settings: Settings, started: list) -> object:
    def launch(job_id: str, resume: bool) -> WorkerProcess:
        log_path = worker_log_path(settings, job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(120)", "engine.worker", job_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(popen)
        return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log_path)

    return launch


def test_the_bots_queue_does_not_start_a_local_job_while_another_process_holds_the_host(
    settings: Settings, tmp_path: Path, processes: list
) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl", n=24)
    holder, held_job = _start_holder(settings, data, processes)
    with Engine(settings, launcher=_sleeping_worker(settings, processes)) as engine:
        record = engine.add_dataset(data, team="T", channel="C")
        job = engine.submit(record.hash, owner="U", team="T", channel="C")
        for _ in range(3):
            engine.dispatcher.tick()
        assert engine.job(job.id).state is JobState.QUEUED and engine.dispatcher.current is None
        assert engine.dispatcher.waiting_message(job.id).startswith(f"waiting: job {held_job} is training")

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        wait_for(
            lambda: engine.job(job.id).state is JobState.VALIDATING,
            30,
            "the job to start",
            tick=engine.dispatcher.tick,
        )
        assert not _host_is_free(settings)  # now this process holds it
        engine.cancel(job.id, user="U")
        wait_for(
            lambda: engine.dispatcher.current is None, 30, "the worker to stop", tick=engine.dispatcher.tick
        )
        assert _host_is_free(settings)


@pytest.mark.slow
def test_ftbot_run_waits_beside_a_serve_that_trains(
    settings: Settings, tmp_path: Path, processes: list
) -> None:
    """The first job is the bot's (the scheduler of ``ftbot serve`` / ``ftbot chat``, here in this
    process, with the real worker); ``ftbot run`` waits for it, then trains."""
    long_data = write_price_dataset(tmp_path / "long.jsonl", n=40)
    short_data = write_price_dataset(tmp_path / "short.jsonl", n=24)
    with Engine(settings, scheduler_interval=0.2) as engine:
        engine.dispatcher.started_by = "the bot, ftbot serve"  # what `ftbot serve` calls itself
        record = engine.add_dataset(long_data, team="T", channel="C")
        served = engine.submit(record.hash, options={"epochs": "30"}, owner="U", team="T", channel="C")
        engine.start()
        wait_for(lambda: any(_steps(engine, served.id)), 120, "the bot's job to train")
        paused = PausedWorker(engine, served.id)
        try:
            run = CliProcess(settings.home, "run", str(short_data), "--epochs", "1", "--json")
            processes.append(run)
            run.wait_line("waiting:")
        finally:
            paused.resume()
        code, summary = run.finish()
        assert code == 0, run.stderr[-3000:]
        assert engine.job(served.id).state is JobState.SUCCEEDED
        served_steps, run_steps = _steps(engine, served.id), _steps(engine, summary["job_id"])
        assert max(e.at for e in served_steps) < min(e.at for e in run_steps)
        assert (
            f"waiting: job {served.id} is training on this host (started by the bot, ftbot serve, pid {os.getpid()})"
            in run.stderr
        ), run.stderr[-3000:]
