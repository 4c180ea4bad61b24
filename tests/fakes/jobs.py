"""Job records for tests that render or move jobs without running one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine import Job, JobState

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def make_job(state: JobState = JobState.QUEUED, *, at: datetime = NOW, **fields: Any) -> Job:
    """A local builtin:tiny job in ``state``, created and last updated ``at``; ``fields`` set (or
    override) any other Job field."""
    values: dict[str, Any] = {
        "id": "ft-00000001",
        "backend": "local",
        "base_model": "builtin:tiny",
        "dataset_hash": "ab" * 32,
        "created_at": at,
        "updated_at": at,
        "state": state,
    }
    values.update(fields)
    return Job(**values)


def slack_job(state: JobState = JobState.QUEUED, **fields: Any) -> Job:
    """:func:`make_job` started from Slack: owned by the fake Slack's user, in its workspace."""
    return make_job(state, **{"owner": "U0USER01", "team": "T0001", "channel": "C0CHAN01", **fields})
