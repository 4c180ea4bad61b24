"""Local jobs on a real Ray cluster (FTBOT_RAY_ADDRESS, engine/cluster.py), on builtin:tiny.

The module starts one Ray head on 127.0.0.1 (tests/ray_local.py: ``ray start --head --block`` in
its own session, a GCS port outside Ray's worker port range, 2 CPUs, a short temp dir) and stops
exactly that instance at the end: every process of its session, SIGTERM then SIGKILL. The tests share it
(``xdist_group("ray")``). Each job asks for 0 GPUs and 1 CPU, as on a CPU-only cluster.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from engine.cluster import NAMESPACE, actor_name
from engine.jobs import JobState
from engine.progress import ProgressEvent
from engine.service import Engine
from engine.settings import Settings
from tests.fakes.datasets import write_price_dataset as write_dataset
from tests.fakes.waiting import wait_for
from tests.ray_local import ray_head

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ftbot[cluster]')")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with ray_head(num_cpus=2) as address:
        yield address


@pytest.fixture
def ray_settings(settings: Settings, ray_address: str) -> Iterator[Settings]:
    yield replace(settings, ray_address=ray_address, ray_gpus=0.0, ray_cpus=1.0)
    # Leave no actor behind for the next test.
    for name in ray.util.list_named_actors():
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def _actor_alive(job_id: str) -> bool:
    try:
        ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
        return True
    except ValueError:
        return False


def _submit(engine: Engine, tmp_path: Path, epochs: int) -> str:
    data = write_dataset(tmp_path / "prices.jsonl")
    record = engine.add_dataset(data, team="T", channel="C")
    return engine.submit(record.hash, options={"epochs": str(epochs)}, owner="U", team="T", channel="C").id


def _training(engine: Engine, job_id: str) -> bool:
    return any(e.kind == "step" for e in engine.events(job_id))


def test_whole_pipeline_runs_in_a_named_actor(ray_settings: Settings, tmp_path: Path) -> None:
    shown: list[tuple[str, bool]] = []  # (kind, the job was still running) per event shown
    with Engine(ray_settings, scheduler_interval=0.2, throttle_seconds=0.0) as engine:
        engine.subscribe(lambda job: _Collect(shown, lambda: engine.job(job.id).is_final))
        job_id = _submit(engine, tmp_path, epochs=4)
        engine.start()
        wait_for(lambda: _actor_alive(job_id), timeout=120, what="the job's Ray actor")
        assert engine.job(job_id).result["ray_actor"] == f"ftbot-{job_id}"
        assert engine.job(job_id).worker_pid is None  # no child process on this host
        # Events reach the bot's display while the job trains in the actor.
        wait_for(
            lambda: engine.job(job_id).is_final or any(kind == "step" for kind, _ in shown),
            timeout=240,
            what="step events while training",
        )
        assert ("step", True) in shown, shown  # shown while the actor still ran the job
        wait_for(lambda: engine.job(job_id).is_final, timeout=300, what="the job's end")
        final = engine.job(job_id)
        assert final.state is JobState.SUCCEEDED, final.error
        kinds = {e.kind for e in engine.events(job_id)}
        assert {"step", "preflight", "artifact"} <= kinds
        models = [m for m in engine.models("T") if m.job_id == job_id]
        assert models, "the fine-tune was registered"
        model_id = models[0].id
        assert (ray_settings.models_dir / job_id / "adapter_config.json").exists()
        answer = engine.ask("used lamp number 7", model=model_id, team="T", channel="C")
        assert isinstance(answer.text, str) and answer.model == model_id and answer.adapter is not None
        wait_for(lambda: not _actor_alive(job_id), timeout=60, what="the actor to be let go")


class _Collect:
    """The bot's display stand-in: notes each event's kind, and whether its job was still running."""

    def __init__(self, shown: list[tuple[str, bool]], is_final: Callable[[], bool]) -> None:
        self.shown = shown
        self.is_final = is_final

    def emit(self, event: ProgressEvent) -> None:
        self.shown.append((event.kind, not self.is_final()))


def test_cancel_reaches_the_actor(ray_settings: Settings, tmp_path: Path) -> None:
    with Engine(ray_settings, scheduler_interval=0.2) as engine:
        job_id = _submit(engine, tmp_path, epochs=50)
        engine.start()
        wait_for(lambda: _training(engine, job_id), timeout=240, what="training")
        engine.cancel(job_id, user="U")
        wait_for(lambda: not _actor_alive(job_id), timeout=60, what="the actor to stop")
        final = engine.job(job_id)
        assert final.state is JobState.CANCELLED
        steps = [e.step for e in engine.events(job_id) if e.kind == "step"]
        assert steps and max(steps) < 100  # it stopped long before the end
        wait_for(lambda: not (ray_settings.runs_dir / job_id / "train").exists(), timeout=30, what="cleanup")
        assert not (ray_settings.models_dir / job_id).exists()


def test_a_killed_actor_fails_the_job_clearly(ray_settings: Settings, tmp_path: Path) -> None:
    with Engine(ray_settings, scheduler_interval=0.2) as engine:
        job_id = _submit(engine, tmp_path, epochs=50)
        engine.start()
        wait_for(lambda: _training(engine, job_id), timeout=240, what="training")
        ray.kill(ray.get_actor(actor_name(job_id), namespace=NAMESPACE), no_restart=True)
        wait_for(lambda: engine.job(job_id).is_final, timeout=60, what="the job to fail")
        final = engine.job(job_id)
        assert final.state is JobState.FAILED
        assert f"Ray actor ftbot-{job_id}" in (final.error or "") and "died" in (final.error or "")


def test_a_restarted_bot_follows_the_running_actor_again(ray_settings: Settings, tmp_path: Path) -> None:
    first = Engine(ray_settings, scheduler_interval=0.2)
    job_id = _submit(first, tmp_path, epochs=8)
    first.start()
    try:
        wait_for(lambda: _training(first, job_id), timeout=240, what="training")
    finally:
        first.close()  # the bot goes away; the (detached) actor trains on
    assert _actor_alive(job_id)
    with Engine(ray_settings, scheduler_interval=0.2) as second:
        second.start()
        wait_for(lambda: second.job(job_id).is_final, timeout=300, what="the job's end")
        final = second.job(job_id)
        assert final.state is JobState.SUCCEEDED, final.error
        assert (ray_settings.models_dir / job_id / "adapter_config.json").exists()
        assert not any(e.data.get("code") == "resumed" for e in second.events(job_id))


def test_ftbot_run_runs_the_job_in_a_named_actor(
    ray_settings: Settings, ray_address: str, tmp_path: Path
) -> None:
    """``FTBOT_RAY_ADDRESS=... ftbot run`` on builtin:tiny: the job runs in the actor named after it."""
    from click.testing import CliRunner

    from bot.cli import main

    data = write_dataset(tmp_path / "prices.jsonl")
    seen: list[str] = []

    def look() -> None:  # while the CLI runs (in this process), note the job actors that exist
        while not done:
            seen.extend(n for n in ray.util.list_named_actors() if n not in seen)
            time.sleep(0.1)

    done = False
    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    try:
        result = CliRunner().invoke(
            main,
            ["run", str(data), "--epochs", "1", "--json"],
            env={
                "FTBOT_HOME": str(ray_settings.home),
                "FTBOT_RAY_ADDRESS": ray_address,
                "FTBOT_RAY_GPUS": "0",
            },
        )
    finally:
        done = True
        watcher.join(timeout=10)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded"
    assert f"ftbot-{summary['job_id']}" in seen


def test_a_restarted_bot_fails_a_job_whose_actor_is_gone(ray_settings: Settings, tmp_path: Path) -> None:
    first = Engine(ray_settings, scheduler_interval=0.2)
    job_id = _submit(first, tmp_path, epochs=50)
    first.start()
    try:
        wait_for(lambda: _training(first, job_id), timeout=240, what="training")
    finally:
        first.close()
    ray.kill(ray.get_actor(actor_name(job_id), namespace=NAMESPACE), no_restart=True)
    wait_for(lambda: not _actor_alive(job_id), timeout=60, what="the actor to die")
    with Engine(ray_settings, scheduler_interval=0.2) as second:
        second.start()
        wait_for(lambda: second.job(job_id).is_final, timeout=60, what="the job to fail")
        final = second.job(job_id)
        assert final.state is JobState.FAILED
        assert f"Ray actor ftbot-{job_id}" in (final.error or "") and "gone" in (final.error or "")
