"""engine/relay.py: one throttle and one delivery cursor per job, from the store to the display."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine import Engine, JobState, ProgressEvent, Settings
from engine.relay import Relay
from tests.fakes.datasets import write_price_dataset


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Display:
    """A display that shows events later (as the Slack cards do on their sender thread)."""

    def __init__(self) -> None:
        self.shown: list[int] = []
        self.recalled: list[int] = []
        self.queue: list[Callable[[], None]] = []

    def emit(self, event: ProgressEvent) -> None:
        self.queue.append(lambda: self.shown.append(event.seq or 0))

    def recall(self, events: list[ProgressEvent]) -> None:
        self.recalled.extend(e.seq or 0 for e in events)

    def replay(self, events: list[ProgressEvent]) -> None:
        for event in events:
            self.emit(event)

    def after_shown(self, callback: Callable[[], None]) -> None:
        self.queue.append(callback)

    def run(self) -> None:
        while self.queue:
            self.queue.pop(0)()


def _job(engine: Engine, tmp_path: Path) -> str:
    record = engine.add_dataset(write_price_dataset(tmp_path / "prices.jsonl"), uploaded_by="U1", team="T1")
    return engine.submit(record.hash, owner="U1", team="T1").id


def test_the_cursor_moves_only_once_the_display_has_shown_the_event(
    settings: Settings, tmp_path: Path
) -> None:
    with Engine(settings) as engine:
        job_id = _job(engine, tmp_path)
        display = Display()
        relay = Relay(engine.store)
        relay.subscribe(lambda job: display)
        engine.store.add_event(ProgressEvent(job_id, "log", "hello"))
        relay.pump()
        last = engine.store.last_event_seq(job_id)
        assert engine.store.delivered_seq(job_id) == last - 1  # tracked, the new event not shown yet
        display.run()
        assert engine.store.delivered_seq(job_id) == last and display.shown == [last]


def test_a_restart_replays_what_was_handed_over_but_never_shown(settings: Settings, tmp_path: Path) -> None:
    with Engine(settings) as engine:
        job_id = _job(engine, tmp_path)
        first = Display()
        relay = Relay(engine.store)
        relay.subscribe(lambda job: first)
        engine.store.add_event(ProgressEvent(job_id, "log", "one"))
        relay.pump()
        first.run()
        shown = engine.store.last_event_seq(job_id)
        engine.store.add_event(ProgressEvent(job_id, "log", "two"))
        relay.pump()  # handed over; the process dies before the display shows it

        second = Display()
        restarted = Relay(engine.store)
        restarted.subscribe(lambda job: second)
        assert restarted.catch_up() == 1
        second.run()
        assert second.recalled == list(range(1, shown + 1)) and second.shown == [shown + 1]
        restarted.pump()  # nothing new, nothing twice
        second.run()
        assert second.shown == [shown + 1] and engine.store.undelivered_jobs() == []


def test_the_last_throttled_step_is_shown_once_its_interval_passed(
    settings: Settings, tmp_path: Path
) -> None:
    clock = Clock()
    with Engine(settings) as engine:
        job_id = _job(engine, tmp_path)
        display = Display()
        relay = Relay(engine.store, min_interval=3.0, clock=clock)
        relay.subscribe(lambda job: display)
        engine.store.transition(job_id, JobState.VALIDATING, expect=JobState.QUEUED)
        for step in (1, 2, 3):
            engine.store.add_event(ProgressEvent(job_id, "step", step=step, total=3))
        relay.pump()
        display.run()
        steps = [e.step for e in engine.store.events(job_id) if e.seq in display.shown and e.kind == "step"]
        assert steps == [1]
        clock.now += 3.0
        relay.pump()  # no new event: the pending step goes out anyway
        display.run()
        steps = [e.step for e in engine.store.events(job_id) if e.seq in display.shown and e.kind == "step"]
        assert steps == [1, 3]
