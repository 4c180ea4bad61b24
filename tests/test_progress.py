from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.progress import ListSink, ProgressEvent, TeeSink
from engine.relay import ThrottledSink


def step(n: int) -> ProgressEvent:
    return ProgressEvent(job_id="j", kind="step", step=n, total=10, metrics={"loss": 1.0 / n})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_event_round_trips_through_a_dict() -> None:
    event = ProgressEvent(
        job_id="j",
        kind="eval",
        step=3,
        epoch=1.0,
        metrics={"eval_loss": 0.5},
        data={"x": [1]},
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert ProgressEvent.from_dict(event.to_dict()) == event


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        ProgressEvent(job_id="j", kind="nonsense")


def test_throttle_keeps_milestones_and_the_latest_step() -> None:
    clock = FakeClock()
    inner = ListSink()
    sink = ThrottledSink(inner, min_interval=3.0, clock=clock)
    sink.emit(step(1))  # first step passes
    clock.now = 1.0
    sink.emit(step(2))  # held
    sink.emit(step(3))  # replaces 2
    sink.emit(ProgressEvent(job_id="j", kind="alert", message="loss is NaN"))  # flushes 3 first
    clock.now = 2.0
    sink.emit(step(4))  # held: 1 s since the flush
    clock.now = 10.0
    sink.emit(step(5))  # passes
    sink.flush()
    assert [(e.kind, e.step) for e in inner.events] == [
        ("step", 1),
        ("step", 3),
        ("alert", None),
        ("step", 5),
    ]


def test_flush_delivers_a_pending_step() -> None:
    clock = FakeClock()
    inner = ListSink()
    sink = ThrottledSink(inner, min_interval=3.0, clock=clock)
    sink.emit(step(1))
    sink.emit(step(2))
    sink.flush()
    sink.flush()
    assert [e.step for e in inner.events] == [1, 2]


def test_tee_sends_to_every_sink_in_order() -> None:
    a, b = ListSink(), ListSink()
    TeeSink(a, b).emit(step(1))
    assert a.events == b.events == [step(1)]
