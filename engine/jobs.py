"""The job model and its state machine. Pure: no I/O, stdlib only.

States (ARCHITECTURE.md)::

    queued -> validating -> baseline -> training -> evaluating -> succeeded
    failed / cancelled from any non-final state

A job that is interrupted (the bot restarted, the worker died) and can resume goes back to the
state it was in through the same path; resuming is a new attempt of that step, not a transition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from engine.errors import InvalidTransition


class JobState(StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    BASELINE = "baseline"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """A state in which a worker (or a remote job) is doing the work."""
        return self in ACTIVE_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.VALIDATING, JobState.BASELINE, JobState.TRAINING, JobState.EVALUATING})

_PIPELINE = [
    JobState.QUEUED,
    JobState.VALIDATING,
    JobState.BASELINE,
    JobState.TRAINING,
    JobState.EVALUATING,
    JobState.SUCCEEDED,
]

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    **{
        state: frozenset({_PIPELINE[i + 1], JobState.FAILED, JobState.CANCELLED})
        for i, state in enumerate(_PIPELINE[:-1])
    },
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def new_job_id() -> str:
    """Short, readable, unique enough for a workspace: ``ft-`` and 8 hex digits."""
    return "ft-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Job:
    """One fine-tuning job. ``config`` is the full, validated configuration (a JSON-able dict).

    ``reply_to`` is opaque to the engine: the bot stores where the job card lives (channel,
    message ts) so progress survives a restart.
    """

    id: str
    backend: str
    base_model: str
    dataset_hash: str
    created_at: datetime
    updated_at: datetime
    state: JobState = JobState.QUEUED
    config: Mapping[str, Any] = field(default_factory=dict)
    owner: str = ""
    team: str = ""
    channel: str = ""
    reply_to: Mapping[str, Any] = field(default_factory=dict)
    eval_dataset_hash: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    remote_id: str | None = None
    worker_pid: int | None = None
    model_id: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.state.is_final


def advance(job: Job, to: JobState, *, now: datetime, error: str | None = None) -> Job:
    """Return ``job`` moved to state ``to``; raise :class:`InvalidTransition` if forbidden."""
    if not can_transition(job.state, to):
        raise InvalidTransition(job.state.value, to.value)
    started = job.started_at
    if started is None and to.is_active:
        started = now
    finished = now if to.is_final else job.finished_at
    return replace(
        job,
        state=to,
        updated_at=now,
        started_at=started,
        finished_at=finished,
        error=error if error is not None else job.error,
    )
