"""The dispatcher's Ray seam (engine/scheduler.py with engine/cluster.py) without Ray: a stand-in
cluster whose actors are plain objects the test places, ends and kills. The same behaviour on a
real Ray instance is in tests/test_ray_cluster.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from engine.cluster import RayCluster, RayJob
from engine.jobs import JobState
from engine.service import Engine
from engine.settings import Settings
from tests.fakes.datasets import write_price_dataset


@dataclass(eq=False)
class StandInActor(RayJob):
    """An actor the test drives: ``is_placed``, ``code`` (the run's exit code once it ended)."""

    is_placed: bool = False
    code: int | None = None
    stop_asked: bool = False

    def placed(self) -> bool:
        return self.is_placed or self.code is not None

    def poll(self) -> int | None:
        if self.exit_code is None and self.code is not None:
            self.exit_code = self.code
        return self.exit_code

    def terminate(self) -> None:
        self.stop_asked = True

    def kill(self) -> None:
        self.code = -9 if self.code is None else self.code


class StandInCluster(RayCluster):
    def __init__(self, settings: Settings) -> None:
        super().__init__(replace(settings, ray_address="127.0.0.1:6390"))
        self.actors: dict[str, StandInActor] = {}

    def connect(self) -> None:
        pass

    def launch(self, job_id: str, resume: bool) -> RayJob:
        actor = StandInActor(job_id=job_id, handle=None, result_ref=None)
        self.actors[job_id] = actor
        return actor

    def attach(self, job_id: str) -> RayJob | None:
        actor = self.actors.get(job_id)
        return actor if actor is not None and actor.code is None else None

    def stop(self, job_id: str) -> None:
        if job_id in self.actors:
            self.actors[job_id].terminate()


def _queue(engine: Engine, tmp_path: Path, n: int) -> list[str]:
    record = engine.add_dataset(write_price_dataset(tmp_path / "prices.jsonl"), team="T", channel="C")
    return [engine.submit(record.hash, owner=f"U{i}", team="T", channel="C").id for i in range(n)]


def test_without_an_address_there_is_no_cluster(settings: Settings) -> None:
    with Engine(settings) as engine:
        assert engine.dispatcher.cluster is None


def test_jobs_go_to_the_cluster_as_it_places_them(settings: Settings, tmp_path: Path) -> None:
    cluster = StandInCluster(settings)
    with Engine(settings, cluster=cluster) as engine:
        first, second, third = _queue(engine, tmp_path, 3)
        engine.dispatcher.tick()
        assert list(cluster.actors) == [first]
        job = engine.job(first)
        assert job.state is JobState.VALIDATING and job.worker_pid is None
        assert job.result["ray_actor"] == f"ftbot-{first}"
        assert not engine.dispatcher.host_lock.held  # the host's slot is not used
        engine.dispatcher.tick()
        assert list(cluster.actors) == [first]  # not placed yet: the next one waits in our queue
        assert "Ray cluster at 127.0.0.1:6390" in engine.dispatcher.waiting_message(second)
        cluster.actors[first].is_placed = True
        engine.dispatcher.tick()
        assert list(cluster.actors) == [first, second]  # two run at once
        cluster.actors[second].is_placed = True
        engine.dispatcher.tick()
        assert list(cluster.actors) == [first, second, third]
        assert {w.job_id for w in engine.dispatcher.workers()} == {first, second, third}


def test_a_dead_actor_fails_its_job_with_the_reason_and_a_cancel_reaches_the_actor(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = StandInCluster(settings)
    with Engine(settings, cluster=cluster) as engine:
        first, second = _queue(engine, tmp_path, 2)
        engine.dispatcher.tick()
        cluster.actors[first].is_placed = True
        engine.dispatcher.tick()
        dead = cluster.actors[first]
        dead.code = -9
        dead.cause = ("The Ray actor ftbot-x that ran this job died: killed.", "Start the job again.")
        engine.dispatcher.tick()
        failed = engine.job(first)
        assert failed.state is JobState.FAILED and "ftbot-x that ran this job died" in (failed.error or "")
        assert first not in {w.job_id for w in engine.dispatcher.workers()}

        engine.cancel(second, user="U1")
        assert cluster.actors[second].stop_asked
        cluster.actors[second].code = 0  # the job stopped at its next check
        engine.dispatcher.tick()
        assert engine.job(second).state is JobState.CANCELLED
        assert engine.dispatcher.workers() == []


def test_a_restart_follows_live_actors_and_fails_jobs_whose_actor_is_gone(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = StandInCluster(settings)
    first_engine = Engine(settings, cluster=cluster)
    live, gone = _queue(first_engine, tmp_path, 2)
    first_engine.dispatcher.tick()
    cluster.actors[live].is_placed = True
    first_engine.dispatcher.tick()
    first_engine.close()
    cluster.actors[gone].code = -9  # its actor died while no bot followed it

    with Engine(settings, cluster=cluster) as second_engine:
        second_engine.dispatcher.recover()
        assert [w.job_id for w in second_engine.dispatcher.workers()] == [live]
        failed = second_engine.job(gone)
        assert failed.state is JobState.FAILED
        assert f"Ray actor ftbot-{gone}" in (failed.error or "") and "is gone" in (failed.error or "")
        assert second_engine.job(live).state is JobState.VALIDATING


def test_a_job_the_cluster_does_not_place_says_why_it_waits(settings: Settings, tmp_path: Path) -> None:
    cluster = StandInCluster(settings)
    with Engine(settings, cluster=cluster) as engine:
        (job_id,) = _queue(engine, tmp_path, 1)
        engine.dispatcher.tick()
        engine.dispatcher.tick()
        assert not [e for e in engine.events(job_id) if e.data.get("code") == "waiting_for_cluster"]
        cluster.actors[job_id].launched_at -= 60  # a minute on, still not placed
        engine.dispatcher.tick()
        engine.dispatcher.tick()
        alerts = [e for e in engine.events(job_id) if e.data.get("code") == "waiting_for_cluster"]
        assert len(alerts) == 1 and "asks for 1 GPU(s) and 1 CPU(s)" in alerts[0].message
