"""Progress events and the sinks that carry them. Pure: stdlib only.

A job's heavy steps (in the worker process) emit :class:`ProgressEvent` values. The worker writes
them to SQLite; the relay (engine/relay.py) reads new ones and passes them to the job's sink (the Slack card, the
console progress bar). The engine never knows what a sink does with them.

Event kinds and what they carry (``metrics`` are numbers, ``data`` is any JSON-able mapping):

=============  ===========================================================================
kind           meaning
=============  ===========================================================================
state          the job changed state: ``data["state"]``, ``message`` says why
preflight      estimate before training: ``data``: tokens, steps, seconds, gpu_memory_gb, ...
step           a training step: ``step``, ``total``, ``epoch``; metrics loss, learning_rate,
               tokens_per_second, elapsed_seconds, eta_seconds, gpu_memory_gb
eval           an evaluation during training: ``step``, ``epoch``; metrics eval_loss
alert          something the user should know now: ``data["code"]``, ``message``
baseline       baseline results: ``data`` = {"zero_shot": {...}, "few_shot": {...}, ...}
evaluation     the final evaluation report: ``data`` = the report as a dict
artifact       a file for the user: ``data`` = {"kind": "loss_chart"|"eval_chart", "path": ...}
submitted      a remote job was created: ``data["remote_id"]``
log            a plain message
=============  ===========================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

EVENT_KINDS = frozenset(
    {"state", "preflight", "step", "eval", "alert", "baseline", "evaluation", "artifact", "submitted", "log"}
)


@dataclass(frozen=True)
class ProgressEvent:
    job_id: str
    kind: str
    message: str = ""
    step: int | None = None
    total: int | None = None
    epoch: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    seq: int | None = None  # assigned by the store; orders events of one job

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown progress event kind {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = dict(self.metrics)
        out["data"] = dict(self.data)
        out["at"] = self.at.isoformat() if self.at else None
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProgressEvent:
        at = raw.get("at")
        return cls(
            job_id=raw["job_id"],
            kind=raw["kind"],
            message=raw.get("message") or "",
            step=raw.get("step"),
            total=raw.get("total"),
            epoch=raw.get("epoch"),
            metrics=dict(raw.get("metrics") or {}),
            data=dict(raw.get("data") or {}),
            at=datetime.fromisoformat(at) if isinstance(at, str) else at,
            seq=raw.get("seq"),
        )


def format_duration(seconds: float) -> str:
    """A duration for people: "45 s", "3 min 20 s" (under 10 minutes), "12 min", "1.5 h"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def utcnow() -> datetime:
    return datetime.now(UTC)


class ProgressSink(Protocol):
    """Receives a job's events in order. Must not block for long; must not raise for display errors."""

    def emit(self, event: ProgressEvent) -> None: ...


class NullSink:
    def emit(self, event: ProgressEvent) -> None:
        return None


class ListSink:
    """Keeps every event in memory: tests, and the CLI's final summary."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self._lock = threading.Lock()

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


class CallbackSink:
    def __init__(self, callback: Callable[[ProgressEvent], None]) -> None:
        self._callback = callback

    def emit(self, event: ProgressEvent) -> None:
        self._callback(event)


class TeeSink:
    """Fans each event out to several sinks, in order."""

    def __init__(self, *sinks: ProgressSink) -> None:
        self.sinks: tuple[ProgressSink, ...] = sinks

    def emit(self, event: ProgressEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)
