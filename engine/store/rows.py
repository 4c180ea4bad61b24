"""Conversions between the records and SQLite rows (times as ISO text, JSON columns)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.jobs import Job, JobState
from engine.progress import ProgressEvent
from engine.store.records import DatasetRecord, ModelRecord


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # naive datetimes are taken as UTC, never as local time
        value = value.replace(tzinfo=UTC)
    # Always stored in UTC with the same shape, so ordering by the text orders by time.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _loads(value: str | None, default: Any) -> Any:
    return json.loads(value) if value else default


_JOB_COLUMNS = (
    "id backend base_model dataset_hash eval_dataset_hash state config owner team channel reply_to "
    "created_at updated_at started_at finished_at error remote_id worker_pid model_id result"
).split()
# Fields update_job may change: everything except identity, state and timestamps owned by advance().
_JOB_UPDATABLE = frozenset(
    {"config", "reply_to", "error", "remote_id", "worker_pid", "model_id", "result", "base_model"}
)


def _job_to_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "backend": job.backend,
        "base_model": job.base_model,
        "dataset_hash": job.dataset_hash,
        "eval_dataset_hash": job.eval_dataset_hash,
        "state": job.state.value,
        "config": _dumps(dict(job.config)),
        "owner": job.owner,
        "team": job.team,
        "channel": job.channel,
        "reply_to": _dumps(dict(job.reply_to)),
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "error": job.error,
        "remote_id": job.remote_id,
        "worker_pid": job.worker_pid,
        "model_id": job.model_id,
        "result": _dumps(dict(job.result)),
    }


def _row_to_job(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"],
        backend=row["backend"],
        base_model=row["base_model"] or "",
        dataset_hash=row["dataset_hash"] or "",
        eval_dataset_hash=row["eval_dataset_hash"],
        state=JobState(row["state"]),
        config=_loads(row["config"], {}),
        owner=row["owner"] or "",
        team=row["team"] or "",
        channel=row["channel"] or "",
        reply_to=_loads(row["reply_to"], {}),
        created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_dt(row["updated_at"]),  # type: ignore[arg-type]
        started_at=_dt(row["started_at"]),
        finished_at=_dt(row["finished_at"]),
        error=row["error"],
        remote_id=row["remote_id"],
        worker_pid=row["worker_pid"],
        model_id=row["model_id"],
        result=_loads(row["result"], {}),
    )


def _row_to_event(row: Mapping[str, Any]) -> ProgressEvent:
    return ProgressEvent(
        job_id=row["job_id"],
        kind=row["kind"],
        message=row["message"] or "",
        step=row["step"],
        total=row["total"],
        epoch=row["epoch"],
        metrics=_loads(row["metrics"], {}),
        data=_loads(row["data"], {}),
        at=_dt(row["at"]),
        seq=row["seq"],
    )


def _row_to_dataset(row: Mapping[str, Any]) -> DatasetRecord:
    return DatasetRecord(
        id=row["id"],
        hash=row["hash"],
        name=row["name"],
        path=Path(row["path"]),
        size=row["size"] or 0,
        uploaded_by=row["uploaded_by"] or "",
        team=row["team"] or "",
        channel=row["channel"] or "",
        report=_loads(row["report"], {}),
        usable=bool(row["usable"]),
        created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
        source_id=row.get("source_id") or None,
    )


def _row_to_model(row: Mapping[str, Any]) -> ModelRecord:
    return ModelRecord(
        id=row["id"],
        kind=row["kind"],
        base_model=row["base_model"] or "",
        job_id=row["job_id"],
        team=row["team"] or "",
        channel=row["channel"] or "",
        created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
        path=Path(row["path"]) if row["path"] else None,
        remote_name=row["remote_name"],
        verdict=row["verdict"],
        system_prompt=row["system_prompt"],
        metrics=_loads(row["metrics"], {}),
    )


# --------------------------------------------------------------------------- the store
