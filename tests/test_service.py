"""The Engine facade and the dispatcher, with real SQLite and real child processes.

The child processes here are stand-in workers (``python -c ...`` scripts that sleep, crash or
write to the store): the process boundary is real (signals, exit codes, pids), only the heavy
pipeline is left out. tests/test_worker.py runs the real worker on builtin:tiny.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.diagnosis import diagnose_exit
from engine.errors import (
    ConfigError,
    DatasetError,
    DatasetNotFound,
    JobNotFound,
    ModelNotFound,
    PermissionDenied,
    UsageError,
)
from engine.jobs import JobState
from engine.paths import latest_checkpoint, worker_log_path
from engine.progress import CallbackSink, ListSink, ProgressEvent
from engine.scheduler import Dispatcher
from engine.service import Engine, job_summary
from engine.settings import Settings
from engine.store import ModelRecord
from engine.workers import Launcher, WorkerProcess, launch_command, pid_alive
from tests.contract import RUN_JSON_KEYS
from tests.fakes.datasets import write_price_dataset as write_dataset
from tests.fakes.waiting import wait_for


@pytest.fixture
def engine(settings: Settings):
    eng = Engine(settings, launcher=stand_in(settings, SLEEP))
    yield eng
    eng.close()
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _started.clear()


@pytest.fixture
def dataset(engine: Engine, tmp_path: Path):
    return engine.add_dataset(
        write_dataset(tmp_path / "prices.jsonl"), uploaded_by="U1", team="T1", channel="C1"
    )


# ------------------------------------------------------------------ stand-in workers

_started: list[subprocess.Popen[bytes]] = []
SLEEP = "import time; time.sleep(120)"
OOM_CRASH = (
    "import sys; print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); sys.exit(1)"
)
SELF_KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
# Writes a step event and succeeds, like a worker would (through the real Store).
FINISH = (
    "import sys\n"
    "from pathlib import Path\n"
    "from engine.store import Store\n"
    "from engine.jobs import JobState\n"
    "from engine.progress import ProgressEvent\n"
    "job_id, db = sys.argv[2], sys.argv[3]\n"
    "s = Store.open(Path(db))\n"
    "for i in range(1, 6):\n"
    "    s.add_event(ProgressEvent(job_id, 'step', step=i, total=5, metrics={'loss': 1.0 / i}))\n"
    "for st in ('baseline', 'training', 'evaluating', 'succeeded'):\n"
    "    s.transition(job_id, JobState(st))\n"
)


def stand_in(settings: Settings, script: str, *, resumed: list[str] | None = None) -> Launcher:
    """A launcher whose 'worker' is ``python -c script engine.worker JOB_ID DB`` (so /proc shows a
    worker of that job), with output in the job's log like the real one."""

    def launch(job_id: str, resume: bool) -> WorkerProcess:
        if resumed is not None and resume:
            resumed.append(job_id)
        log_path = worker_log_path(settings, job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-c", script, "engine.worker", job_id, str(settings.db_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(popen)
        return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log_path)

    return launch


# ------------------------------------------------------------------ datasets and submit


def test_add_dataset_validates_and_stores_once(engine: Engine, tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "a.jsonl")
    first = engine.add_dataset(path, uploaded_by="U1", team="T1", channel="C1")
    second = engine.add_dataset(path, uploaded_by="U2", team="T1", channel="C2")
    assert first.usable and first.report["ok"] and first.report["stats"]["examples"] == 40
    assert first.hash == second.hash and first.path == second.path
    assert engine.latest_dataset("T1", "C1") == first
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    record = engine.add_dataset(bad, team="T1", channel="C1")
    assert not record.usable and record.report["errors"]
    assert engine.latest_dataset("T1", "C1") == first  # an unusable upload never becomes "latest"
    with pytest.raises(DatasetNotFound):
        engine.add_dataset(tmp_path / "missing.jsonl")


def test_bad_hyperparameters_are_refused_before_any_work(engine: Engine, dataset) -> None:
    with pytest.raises(ConfigError) as info:
        engine.submit(
            dataset.hash,
            options={"lr": "abc", "r": "0", "epochs": "100", "colour": "red"},
            owner="U1",
            team="T1",
            channel="C1",
        )
    fields = {field for field, _ in info.value.problems}
    assert {"lr", "r", "epochs", "colour"} <= fields
    assert engine.jobs() == []  # nothing was queued
    assert not engine.settings.runs_dir.exists()  # and no worker ever started


def test_unusable_or_foreign_dataset_is_refused(engine: Engine, dataset, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    record = engine.add_dataset(bad, team="T1", channel="C1")
    with pytest.raises(DatasetError) as info:
        engine.submit(record.hash, owner="U1", team="T1", channel="C1")
    assert info.value.report == record.report
    with pytest.raises(DatasetNotFound):
        engine.submit(dataset.hash, owner="U9", team="T2", channel="C1")  # another team's upload
    with pytest.raises(DatasetNotFound):
        engine.submit("f" * 64, owner="U1", team="T1", channel="C1")


def test_submit_records_config_and_queue_positions(engine: Engine, dataset) -> None:
    a = engine.submit(
        dataset.hash,
        options={"epochs": "2", "lr": "1e-3"},
        owner="U1",
        team="T1",
        channel="C1",
        reply_to={"channel": "C1", "ts": "1.2"},
    )
    b = engine.submit(dataset.hash, owner="U2", team="T1", channel="C1")
    assert a.state is JobState.QUEUED and a.backend == "local" and a.base_model == "builtin:tiny"
    assert a.config["epochs"] == 2 and a.config["learning_rate"] == 1e-3 and a.config["seed"] == 0
    assert a.dataset_hash == dataset.hash and dict(a.reply_to) == {"channel": "C1", "ts": "1.2"}
    assert (engine.queue_position(a.id), engine.queue_position(b.id)) == (1, 2)
    assert "next in line" in engine.events(a.id)[0].message
    assert "position 2" in engine.events(b.id)[0].message
    engine.cancel(a.id, user="U1")
    assert engine.queue_position(b.id) == 1
    assert [e.action for e in engine.store.audit_log()][:2] == ["job.cancel", "job.submit"]


def test_cancel_rules(engine: Engine, dataset) -> None:
    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    with pytest.raises(PermissionDenied):
        engine.cancel(job.id, user="U2")
    with pytest.raises(JobNotFound):
        engine.cancel(job.id, user="U1", team="T2")
    cancelled = engine.cancel(job.id, user="U2", is_admin=True)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    with pytest.raises(UsageError, match="already finished"):
        engine.cancel(job.id, user="U1")


def test_jobs_are_scoped_by_team(engine: Engine, dataset) -> None:
    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    assert engine.job(job.id, team="T1").id == job.id
    with pytest.raises(JobNotFound):
        engine.job(job.id, team="T2")
    assert [j.id for j in engine.jobs(team="T1")] == [job.id]
    assert engine.jobs(team="T2") == []
    assert [j.id for j in engine.jobs(active_only=True)] == [job.id]


def test_models_defaults_and_visibility(engine: Engine) -> None:
    now = engine.clock()
    for model_id, team in (("ft-a", "T1"), ("ft-b", "T2")):
        engine.store.add_model(
            ModelRecord(
                id=model_id,
                kind="local_adapter",
                base_model="builtin:tiny",
                job_id=model_id,
                team=team,
                channel="C1",
                created_at=now,
                path=Path("/nowhere"),
                verdict="worse",
            )
        )
    assert engine.current_model("T1", "C1") is None
    engine.set_default_model("T1", "C1", "ft-a", user="U1")  # a user may pick even a "worse" model
    assert engine.current_model("T1", "C1").id == "ft-a"
    with pytest.raises(ModelNotFound):
        engine.set_default_model("T1", "C1", "ft-b")
    with pytest.raises(ModelNotFound):
        engine.model("ft-b", team="T1")
    assert [m.id for m in engine.models("T2")] == ["ft-b"]
    with pytest.raises(UsageError):
        engine.ask("   ", team="T1", channel="C1")


@pytest.mark.slow
def test_a_base_model_answer_says_why_the_base_model_answered(engine: Engine) -> None:
    from engine import Answer

    def reason(channel: str = "C1", **kw: object) -> str | None:
        answer = engine.ask("a used bike", team="T1", channel=channel, max_tokens=2, **kw)
        assert isinstance(answer, Answer) and answer.adapter is None
        assert answer.to_dict().get("base_reason") == getattr(answer, "base_reason", None)
        return getattr(answer, "base_reason", None)

    assert reason() == "no_finetune"
    assert reason(model="base") == "requested"
    engine.store.add_model(
        ModelRecord(
            id="ft-w",
            kind="local_adapter",
            base_model="builtin:tiny",
            job_id="ft-w",
            team="T1",
            channel="C1",
            created_at=engine.clock(),
            path=Path("/nowhere"),
            verdict="worse",  # not promoted: the channel has a fine-tune, but no current model
        )
    )
    assert reason() == "none_promoted"
    assert reason("C2") == "no_finetune"  # the workspace's fine-tune was made in another channel
    engine.use_model("T1", "C1", "base", user="U1")
    assert reason() == "chosen"
    assert reason(model="base") == "requested"


# ------------------------------------------------------------------ the dispatcher


def test_dispatch_one_at_a_time_and_cancel_terminates_the_child(engine: Engine, dataset) -> None:
    a = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    b = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    engine.dispatcher.tick()
    running = engine.job(a.id)
    assert running.state is JobState.VALIDATING and pid_alive(running.worker_pid, a.id)
    assert engine.queue_position(b.id) == 1
    engine.dispatcher.tick()
    assert engine.job(b.id).state is JobState.QUEUED  # one GPU, one job
    proc = engine.dispatcher.current
    checkpoints = engine.settings.runs_dir / a.id / "train" / "checkpoints" / "checkpoint-2"
    checkpoints.mkdir(parents=True)
    (checkpoints / "trainer_state.json").write_text("{}")
    started = time.monotonic()
    engine.cancel(a.id, user="U1")
    wait_for(lambda: proc.poll() is not None, timeout=10, tick=engine.dispatcher.tick)
    assert time.monotonic() - started < 6  # "ends the child within seconds"
    assert proc.poll() == -signal.SIGTERM
    wait_for(lambda: engine.job(b.id).state is JobState.VALIDATING, tick=engine.dispatcher.tick)
    job = engine.job(a.id)
    assert job.state is JobState.CANCELLED and job.worker_pid is None
    assert not (engine.settings.runs_dir / a.id / "train").exists()  # partial files removed
    assert (engine.settings.runs_dir / a.id / "worker.log").exists()  # the log stays


def test_a_child_that_ignores_sigterm_is_killed(settings: Settings, dataset) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    with Engine(settings, launcher=stand_in(settings, stubborn)) as eng:
        eng.dispatcher._grace = 0.5
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.dispatcher.tick()
        proc = eng.dispatcher.current
        time.sleep(0.3)  # let it install its handler
        eng.cancel(job.id, user="U1")
        wait_for(lambda: proc.poll() is not None, timeout=10, tick=eng.dispatcher.tick)
        assert proc.poll() == -signal.SIGKILL
        assert eng.job(job.id).state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("script", "expected", "hint"),
    [
        (OOM_CRASH, "ran out of memory", "batch"),
        (SELF_KILL, "killed by the system", "batch"),
        ("import sys; print('boom: something broke'); sys.exit(3)", "exit code 3", "again"),
    ],
    ids=["oom", "sigkill", "crash"],
)
def test_a_dead_child_fails_the_job_in_plain_words(
    settings: Settings, dataset, script: str, expected: str, hint: str
) -> None:
    with Engine(settings, launcher=stand_in(settings, script)) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.dispatcher.tick()
        wait_for(lambda: eng.job(job.id).is_final, tick=eng.dispatcher.tick)
        failed = eng.job(job.id)
        assert failed.state is JobState.FAILED
        assert expected in failed.error and hint in failed.error
        last = eng.events(job.id)[-1]
        assert last.kind == "state" and last.data["state"] == "failed" and hint in last.data["hint"]
        if "exit code" in expected:
            assert "boom: something broke" in failed.error  # the last words help


def test_events_are_relayed_to_the_jobs_sink_throttled(settings: Settings, dataset) -> None:
    sinks: dict[str, ListSink] = {}

    def sink_for(job):
        return sinks.setdefault(job.id, ListSink())

    with Engine(settings, launcher=stand_in(settings, FINISH), sink_for=sink_for, throttle_seconds=60) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        wait_for(lambda: eng.job(job.id).is_final, tick=eng.dispatcher.tick)
        eng.dispatcher.tick()
        got = sinks[job.id].events
        kinds = [e.kind for e in got]
        assert kinds[0] == "state" and got[-1].data["state"] == "succeeded"
        steps = [e.step for e in got if e.kind == "step"]
        # the first step passes, the rest wait; the latest pending one is delivered before the next milestone
        assert steps == [1, 5]
        states = [e.data["state"] for e in got if e.kind == "state"]
        assert states == ["queued", "validating", "baseline", "training", "evaluating", "succeeded"]
        assert [e.seq for e in got] == sorted(e.seq for e in got)


def test_events_missed_while_the_bot_was_down_are_relayed_after_a_restart(
    settings: Settings, dataset
) -> None:
    got: list[ProgressEvent] = []

    def sink_for(job):
        return CallbackSink(got.append)

    with Engine(settings, sink_for=sink_for, launcher=stand_in(settings, SLEEP)) as first:
        job = first.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        first.dispatcher.tick()  # relays "queued" (and the claim) and remembers how far it got
    # While no bot runs, the worker goes on writing.
    with Engine(settings) as offline:
        offline.store.transition(job.id, JobState.CANCELLED, message="Cancelled while the bot was down.")
    seen = len(got)
    with Engine(settings, sink_for=sink_for, launcher=stand_in(settings, SLEEP)) as second:
        second.dispatcher.tick()
    states = [e.data["state"] for e in got[seen:] if e.kind == "state"]
    assert states == ["cancelled"]  # delivered once, after the restart


def test_set_reply_to_rebuilds_the_sink(settings: Settings, dataset) -> None:
    built: list[dict] = []

    def sink_for(job):
        built.append(dict(job.reply_to))
        return ListSink()

    with Engine(settings, sink_for=sink_for, launcher=stand_in(settings, SLEEP)) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.dispatcher.tick()  # first events: no card yet
        eng.set_reply_to(job.id, {"channel": "C1", "ts": "9.9"})
        eng.store.add_event(ProgressEvent(job.id, "log", "hello"))
        eng.dispatcher.tick()
        assert built == [{}, {"channel": "C1", "ts": "9.9"}]
        eng.cancel(job.id, user="U1")
        wait_for(lambda: eng.dispatcher.current is None, tick=eng.dispatcher.tick)


def test_a_sink_may_store_its_card_from_another_thread_while_the_relay_runs(
    settings: Settings, dataset
) -> None:
    # The Slack card: the relay delivers an event into the card's sink, which waits on a lock that
    # a listener thread holds while it stores where it posted the card (set_reply_to). That store
    # must not wait for the relay in turn (it once did: the bot deadlocked under load).
    stored = threading.Event()

    class CardSink:
        def __init__(self, job_id: str) -> None:
            self.job_id = job_id

        def emit(self, event: ProgressEvent) -> None:
            listener = threading.Thread(
                target=lambda: (eng.set_reply_to(self.job_id, {"channel": "C1", "ts": "1.2"}), stored.set())
            )
            listener.start()
            listener.join(timeout=10)

    with Engine(settings, sink_for=lambda job: CardSink(job.id), launcher=stand_in(settings, SLEEP)) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.dispatcher.tick()
        assert stored.is_set(), "set_reply_to waited for the relay that was waiting for it"
        assert eng.job(job.id).reply_to == {"channel": "C1", "ts": "1.2"}
        eng.cancel(job.id, user="U1")
        wait_for(lambda: eng.dispatcher.current is None, tick=eng.dispatcher.tick)


def test_stop_hooks_run_after_the_scheduler_stopped(settings: Settings) -> None:
    calls: list[bool] = []
    with Engine(settings) as eng:
        eng.add_stop_hook(lambda: calls.append(eng.scheduler.running))
        eng.start()
        eng.stop()
        assert calls == [False]
    assert calls == [False, False]  # close() stops too


def test_a_broken_sink_never_stops_the_queue(settings: Settings, dataset) -> None:
    class Broken:
        def emit(self, event: ProgressEvent) -> None:
            raise RuntimeError("slack is down")

    with Engine(settings, launcher=stand_in(settings, FINISH), sink_for=lambda job: Broken()) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        wait_for(lambda: eng.job(job.id).is_final, tick=eng.dispatcher.tick)
        assert eng.job(job.id).state is JobState.SUCCEEDED


# ------------------------------------------------------------------ restart recovery


def test_restart_follows_a_live_worker(settings: Settings, dataset) -> None:
    first = Engine(settings, launcher=stand_in(settings, SLEEP))
    job = first.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    first.dispatcher.tick()
    pid = first.job(job.id).worker_pid
    first.close()  # the bot stops; the worker keeps running
    assert pid_alive(pid, job.id)
    with Engine(settings, launcher=stand_in(settings, SLEEP)) as second:
        assert job.id in second.dispatcher.recover()
        assert second.dispatcher.current is not None and second.dispatcher.current.pid == pid
        second.dispatcher.tick()
        assert second.job(job.id).state is JobState.VALIDATING  # still running, still followed
        second.cancel(job.id, user="U1")
        wait_for(lambda: not pid_alive(pid, job.id), timeout=10, tick=second.dispatcher.tick)
        wait_for(lambda: second.dispatcher.current is None, tick=second.dispatcher.tick)


def test_a_worker_followed_by_another_process_is_left_to_it(
    settings: Settings, dataset, tmp_path: Path
) -> None:
    """``ftbot run`` in another terminal: its worker is not adopted, but it holds the GPU."""
    with Engine(settings, launcher=stand_in(settings, SLEEP)) as eng:
        running = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        waiting = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.store.transition(running.id, JobState.VALIDATING)
        pid_file = tmp_path / "pid"
        parent_script = (
            "import subprocess, sys, time\n"
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'engine.worker', "
            f"'{running.id}'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "child.wait(); time.sleep(60)\n"
        )
        parent = subprocess.Popen([sys.executable, "-c", parent_script])
        _started.append(parent)
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        worker_pid = int(pid_file.read_text())
        eng.store.update_job(running.id, worker_pid=worker_pid)
        wait_for(lambda: pid_alive(worker_pid, running.id))
        assert eng.dispatcher.recover() == []  # not adopted: its parent follows it
        eng.dispatcher.tick()
        assert eng.job(waiting.id).state is JobState.QUEUED  # ... and it holds the GPU
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(worker_pid, running.id))
        assert eng.dispatcher.recover(dead_grace=60) == []  # its parent gets time to record why
        assert eng.job(running.id).state is JobState.VALIDATING
        assert eng.dispatcher.recover(dead_grace=0) == [running.id]  # nobody did: resume it here
        eng.dispatcher.tick()
        assert eng.dispatcher.current.job_id == running.id
        for job in (running, waiting):
            eng.cancel(job.id, user="U1")
        wait_for(lambda: not eng.dispatcher.workers(), timeout=10, tick=eng.dispatcher.tick)


def test_restart_with_the_worker_gone(settings: Settings, dataset) -> None:
    first = Engine(settings, launcher=stand_in(settings, SLEEP))
    jobs = [first.submit(dataset.hash, owner="U1", team="T1", channel="C1") for _ in range(3)]
    store = first.store
    # Three interrupted jobs: training with a checkpoint, training without one, baseline.
    for job, state in zip(jobs, ("training", "training", "baseline"), strict=True):
        for step in ("validating", "baseline", "training")[
            : ("validating", "baseline", "training").index(state) + 1
        ]:
            store.transition(job.id, JobState(step))
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        store.update_job(job.id, worker_pid=dead.pid)
    checkpoint = settings.runs_dir / jobs[0].id / "train" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(settings.runs_dir / jobs[0].id / "train") == checkpoint
    first.close()

    resumed: list[str] = []
    with Engine(settings, launcher=stand_in(settings, SLEEP, resumed=resumed)) as second:
        second.dispatcher.recover()
        no_checkpoint = second.job(jobs[1].id)
        assert no_checkpoint.state is JobState.FAILED
        assert "no checkpoint to resume from" in no_checkpoint.error and "training" in no_checkpoint.error
        second.dispatcher.tick()
        assert resumed == [jobs[0].id]
        assert second.job(jobs[0].id).state is JobState.TRAINING  # same state, new worker
        assert second.job(jobs[0].id).result["resumes"] == 1
        alert = [e for e in second.events(jobs[0].id) if e.kind == "alert"][-1]
        assert alert.data["code"] == "resumed"
        second.cancel(jobs[0].id, user="U1")
        wait_for(
            lambda: second.dispatcher.current is not None and second.dispatcher.current.job_id == jobs[2].id,
            tick=second.dispatcher.tick,
        )
        assert resumed == [jobs[0].id, jobs[2].id]  # the baseline step simply runs again
        second.cancel(jobs[2].id, user="U1")
        wait_for(lambda: second.dispatcher.current is None, tick=second.dispatcher.tick)


def test_the_scheduler_runs_the_queue_on_its_own(settings: Settings, dataset) -> None:
    with Engine(settings, launcher=stand_in(settings, FINISH), scheduler_interval=0.05) as eng:
        job = eng.submit(dataset.hash, owner="U1", team="T1", channel="C1")
        eng.start()
        assert eng.scheduler.running
        wait_for(lambda: eng.job(job.id).state is JobState.SUCCEEDED, timeout=30)
        eng.stop()
        assert not eng.scheduler.running


# ------------------------------------------------------------------ small pure pieces


def test_launch_command_is_the_worker_module(tmp_path: Path) -> None:
    cmd = launch_command("ft-12345678", home=tmp_path, resume=True, python="py")
    assert cmd == ["py", "-u", "-m", "engine.worker", "ft-12345678", "--home", str(tmp_path), "--resume"]


def test_diagnose_exit() -> None:
    msg, hint = diagnose_exit(-9, "", state="training")
    assert "killed by the system while the job was training" in msg and "r=8" in hint
    msg, hint = diagnose_exit(1, "RuntimeError: CUDA out of memory.", state="training")
    assert "out of memory" in msg and "max_length" in hint
    msg, _ = diagnose_exit(-15, "")
    assert "SIGTERM" in msg
    msg, _ = diagnose_exit(2, "line one\nthe last line\n\n")
    assert "exit code 2" in msg and "the last line" in msg


def test_pid_alive_checks_the_job(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "engine.worker", "ft-aaaa"])
    try:
        # Between fork and exec the child still shows the parent's command line: wait for the exec.
        deadline = time.monotonic() + 10
        while b"engine.worker" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert pid_alive(proc.pid) and pid_alive(proc.pid, "ft-aaaa")
        assert not pid_alive(proc.pid, "ft-bbbb")  # a reused pid is not our worker
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid) and not pid_alive(None) and not pid_alive(0)


def test_dispatcher_leaves_other_backends_alone(settings: Settings, dataset) -> None:
    with Engine(settings, launcher=stand_in(settings, SLEEP)) as eng:
        eng.backend_runners["openai"] = lambda engine, job: None
        job = eng.submit(dataset.hash, options={"backend": "openai"}, owner="U1", team="T1", channel="C1")
        assert job.backend == "openai"
        Dispatcher.tick(eng.dispatcher)
        assert eng.job(job.id).state is JobState.QUEUED


def test_jobs_cli_json(settings: Settings, dataset, engine: Engine) -> None:
    from bot.cli import main

    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    result = CliRunner().invoke(main, ["jobs", "--json"], env={"FTBOT_HOME": str(settings.home)})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["job_id"] == job.id and rows[0]["status"] == "queued" and rows[0]["queue_position"] == 1
    text = CliRunner().invoke(main, ["jobs"], env={"FTBOT_HOME": str(settings.home)})
    assert text.exit_code == 0 and job.id in text.output and "queued #1" in text.output


def test_job_summary_has_every_contract_field(engine: Engine, dataset) -> None:
    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    summary = job_summary(job)
    for key in RUN_JSON_KEYS:
        assert key in summary
    assert set(summary["baseline"]) == {"zero_shot", "few_shot"}


# ------------------------------------------------------------------ the worker's error handling


@pytest.mark.parametrize(
    ("error", "state", "words"),
    [
        (MemoryError(), "failed", "Ran out of memory while the job was validating"),
        (UsageError("Your data is odd.", hint="Fix line 3."), "failed", "Your data is odd. Fix line 3."),
        (KeyError("surprise"), "failed", "internal error: KeyError"),
    ],
    ids=["oom", "ftbot-error", "bug"],
)
def test_worker_turns_errors_into_a_failed_job_with_a_reason(
    engine: Engine, dataset, error: BaseException, state: str, words: str
) -> None:
    from engine import worker

    def pipeline(ctx: worker.JobContext) -> None:
        raise error

    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    engine.store.save_job(replace(engine.job(job.id), backend="test-boom"))
    ctx = worker.JobContext(store=engine.store, settings=engine.settings, job_id=job.id)
    code = worker.run(ctx, pipeline)
    failed = engine.job(job.id)
    assert (code, failed.state.value) == (1, state)
    assert words in failed.error


def test_worker_stops_quietly_when_cancelled(engine: Engine, dataset) -> None:
    from engine import worker

    job = engine.submit(dataset.hash, owner="U1", team="T1", channel="C1")
    partial = engine.settings.runs_dir / job.id / "train" / "checkpoints"

    def pipeline(ctx: worker.JobContext) -> None:
        partial.mkdir(parents=True)
        engine.cancel(job.id, user="U1")  # from "outside", while the pipeline runs
        ctx.check()

    engine.store.save_job(replace(engine.job(job.id), backend="test-cancel"))
    ctx = worker.JobContext(store=engine.store, settings=engine.settings, job_id=job.id)
    code = worker.run(ctx, pipeline)
    assert code == 0 and engine.job(job.id).state is JobState.CANCELLED
    assert not partial.exists()
