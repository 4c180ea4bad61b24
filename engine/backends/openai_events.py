"""What one poll of a remote OpenAI job reports: its ProgressEvents (loss points, status, checkpoints,
the end), the restart-safe cursor and the delay until the next poll. Pure: the requests are made by
:class:`~engine.backends.openai_jobs.OpenAIJobs`, which hands the answers to :func:`read_job` (or
the failure to :func:`lost_touch`).

Events: status changes and messages as ``log``, metrics as ``step`` (+ ``eval`` for full
validation loss), checkpoints as ``log``, problems as ``alert``. Event data: ``remote_status`` on
status logs, ``remote_event_id`` on converted events, ``checkpoint`` on checkpoint logs, ``code``
on alerts; the final success log carries ``model``, ``trained_tokens`` and ``usd`` (the actual
cost when the price is known).

    poll_delay(interval, failures, *, retry_after=None) -> seconds until the next poll.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.backends.openai_costs import training_price
from engine.backends.openai_errors import describe_job_error, named_line
from engine.errors import FtbotError
from engine.progress import ProgressEvent

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: The status a poll reports when it did not get through and no status is known yet.
TRANSIENT_STATUS = "unknown"

_STATUS_WORDS = {
    "validating_files": "OpenAI is validating the training files.",
    "queued": "The job is queued at OpenAI (this can take minutes or hours).",
    "running": "OpenAI started training.",
}
_METRIC_NAMES = {
    "train_loss": "loss",
    "valid_loss": "eval_loss",
    "train_mean_token_accuracy": "mean_token_accuracy",
    "valid_mean_token_accuracy": "eval_mean_token_accuracy",
}


@dataclass(frozen=True)
class PollResult:
    """One poll of a remote job. Store ``cursor`` and pass it to the next poll."""

    events: tuple[ProgressEvent, ...]
    status: str  # OpenAI's status, or the last known one when ``transient``
    done: bool  # succeeded, failed or cancelled on OpenAI's side
    model_name: str | None  # "ft:..." when succeeded
    error: str | None  # plain words: why the job failed, or why this poll did not get through
    error_code: str | None
    cursor: str
    transient: bool = False  # this poll failed (network, 429, 5xx, key); the job goes on
    eta_seconds: float | None = None
    trained_tokens: int | None = None
    retry_after: float | None = None  # seconds OpenAI asked us to wait (429)

    @property
    def succeeded(self) -> bool:
        return self.done and self.status == "succeeded"


@dataclass
class PollCursor:
    """What a poll has already reported; serialised into PollResult.cursor (restart-safe)."""

    event: str | None = None  # id of the newest OpenAI event already turned into a ProgressEvent
    status: str | None = None
    checkpoint: str | None = None
    failures: int = 0  # consecutive polls that did not get through
    warned: str | None = None  # code of the alert already sent for the current trouble
    eta: bool = False  # the first ETA was announced

    @classmethod
    def parse(cls, raw: str | None) -> PollCursor:
        """A stored cursor (also a bare OpenAI event id; anything unreadable starts afresh)."""
        if not raw:
            return cls()
        if not raw.startswith("{"):  # a bare OpenAI event id
            return cls(event=raw)
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        return cls(
            event=data.get("e"),
            status=data.get("s"),
            checkpoint=data.get("c"),
            failures=int(data.get("f") or 0),
            warned=data.get("w"),
            eta=bool(data.get("eta")),
        )

    def dump(self) -> str:
        """The compact JSON string to store and pass to the next poll."""
        data = {"e": self.event, "s": self.status, "c": self.checkpoint, "f": self.failures, "w": self.warned}
        if self.eta:
            data["eta"] = True
        return json.dumps({k: v for k, v in data.items() if v not in (None, 0)}, separators=(",", ":"))


def poll_delay(
    interval: float, failures: int, *, retry_after: float | None = None, cap: float = 600.0
) -> float:
    """Seconds until the next poll: ``interval`` normally, doubling with each consecutive failed
    poll up to ``cap`` (never below ``interval``), and at least what OpenAI asked for."""
    delay = interval * (2 ** min(max(failures, 0), 10))
    delay = min(delay, max(cap, interval))
    return max(delay, retry_after or 0.0)


def read_job(
    job_id: str,
    remote_id: str,
    job: Any,
    raw_events: Sequence[Any],
    checkpoints: Sequence[Any],
    cur: PollCursor,
    *,
    now: float,
    price_overrides: Mapping[str, float],
) -> PollResult:
    """One poll that got through: the remote ``job``, its events and checkpoints newer than
    ``cur`` (oldest first), as a PollResult; ``cur`` is advanced and dumped into it."""
    events: list[ProgressEvent] = []
    if cur.warned:  # an alert said we lost touch: say we are back
        events.append(
            ProgressEvent(
                job_id, "log", "Reached OpenAI again; following the job.", data={"remote_id": remote_id}
            )
        )
    eta = max(0.0, job.estimated_finish - now) if job.estimated_finish and job.status == "running" else None
    events.extend(_status_events(job_id, remote_id, job, cur, eta))
    epochs = _n_epochs(job)
    for raw in raw_events:
        events.extend(_convert_event(job_id, raw, epochs=epochs, eta=eta))
        cur.event = raw.id
    for ckpt in checkpoints:
        events.append(_checkpoint_event(job_id, remote_id, ckpt))
        cur.checkpoint = ckpt.id
    done = job.status in TERMINAL_STATUSES
    if done and job.status != cur.status:
        events.append(_terminal_event(job_id, remote_id, job, price_overrides))
    error_code, error = _outcome(remote_id, job)
    cur.status, cur.failures, cur.warned = job.status, 0, None
    return PollResult(
        events=tuple(events),
        status=job.status,
        done=done,
        model_name=job.fine_tuned_model,
        error=error,
        error_code=error_code,
        cursor=cur.dump(),
        eta_seconds=eta,
        trained_tokens=job.trained_tokens,
    )


def lost_touch(
    remote_id: str,
    cur: PollCursor,
    job_id: str | None,
    err: FtbotError,
    *,
    persistent: bool,
    retry_after: float | None,
) -> PollResult:
    """A poll that did not get through (``err``: why, translated): the job goes on. Alert once per
    kind of trouble: at once for a ``persistent`` one (a rejected key or permission), after 3
    failures in a row for network trouble."""
    job_id = job_id or remote_id
    code = getattr(err, "code", None) or "error"
    cur.failures += 1
    events: list[ProgressEvent] = []
    if cur.warned != code and (persistent or cur.failures >= 3):
        cur.warned = code
        events.append(
            ProgressEvent(
                job_id,
                "alert",
                f"{err.message} The job keeps running on OpenAI ({remote_id}); ftbot keeps checking and "
                "picks up where it left off.",
                data={"code": code, "remote_id": remote_id, "failures": cur.failures},
            )
        )
    return PollResult(
        events=tuple(events),
        status=cur.status or TRANSIENT_STATUS,
        done=False,
        model_name=None,
        error=err.message,
        error_code=code,
        cursor=cur.dump(),
        transient=True,
        retry_after=retry_after,
    )


def _status_events(
    job_id: str, remote_id: str, job: Any, cur: PollCursor, eta: float | None
) -> list[ProgressEvent]:
    """A log for a new (non-final) status, and one for the first ETA OpenAI gives."""
    events: list[ProgressEvent] = []
    if job.status != cur.status and job.status not in TERMINAL_STATUSES:
        events.append(
            ProgressEvent(
                job_id,
                "log",
                _STATUS_WORDS.get(job.status, f"OpenAI status: {job.status}."),
                data={"remote_status": job.status, "remote_id": remote_id},
            )
        )
    if eta is not None and not cur.eta:
        events.append(
            ProgressEvent(
                job_id,
                "log",
                f"OpenAI expects the job to finish in about {_duration(eta)}.",
                data={"eta_seconds": eta, "estimated_finish": job.estimated_finish},
            )
        )
        cur.eta = True
    return events


def _checkpoint_event(job_id: str, remote_id: str, ckpt: Any) -> ProgressEvent:
    raw_metrics = ckpt.metrics.model_dump(exclude_none=True) if ckpt.metrics is not None else {}
    metrics = {k: float(v) for k, v in raw_metrics.items() if _number(v)}
    return ProgressEvent(
        job_id,
        "log",
        f"Checkpoint at step {ckpt.step_number}: {ckpt.fine_tuned_model_checkpoint}",
        step=ckpt.step_number,
        metrics=metrics,
        at=_at(ckpt.created_at),
        data={"checkpoint": ckpt.fine_tuned_model_checkpoint, "remote_id": remote_id},
    )


def _outcome(remote_id: str, job: Any) -> tuple[str | None, str | None]:
    """(error_code, error) of a job that ended without a model; (None, None) otherwise."""
    if job.status == "failed":
        err = job.error
        return (err.code if err else None) or "failed", describe_job_error(
            err.code if err else None, err.message if err else None, err.param if err else None
        )
    if job.status == "cancelled":
        return "cancelled", _cancelled_words(remote_id)
    if job.status == "succeeded" and not job.fine_tuned_model:
        return "no_model", "OpenAI reported success but named no fine-tuned model."
    return None, None


def _terminal_event(
    job_id: str, remote_id: str, job: Any, price_overrides: Mapping[str, float]
) -> ProgressEvent:
    """The one event saying how the remote job ended: success (with the actual cost when the
    price is known), failure or cancellation."""
    data: dict[str, Any] = {"remote_status": job.status, "remote_id": remote_id}
    if job.status == "succeeded":
        data.update(model=job.fine_tuned_model, trained_tokens=job.trained_tokens)
        price, _ = training_price(job.model, price_overrides)
        if price is not None and job.trained_tokens:
            data["usd"] = round(job.trained_tokens * price / 1_000_000, 4)
        tokens = f" after {job.trained_tokens:,} trained tokens" if job.trained_tokens else ""
        return ProgressEvent(
            job_id, "log", f"OpenAI finished fine-tuning{tokens}: {job.fine_tuned_model}.", data=data
        )
    if job.status == "failed":
        err = job.error
        data.update(
            code=(err.code if err else None) or "failed",
            param=err.param if err else None,
            line=named_line(err.message) if err else None,
        )
        text = describe_job_error(
            err.code if err else None, err.message if err else None, err.param if err else None
        )
        return ProgressEvent(job_id, "alert", text, data=data)
    data["code"] = "cancelled"
    return ProgressEvent(job_id, "alert", _cancelled_words(remote_id), data=data)


def _cancelled_words(remote_id: str) -> str:
    """Why a remote job ended cancelled, also when nobody here cancelled it."""
    return (
        f"The OpenAI job {remote_id} was cancelled. If nobody cancelled it here, it was cancelled on "
        "OpenAI's side (the dashboard, another tool, or OpenAI itself)."
    )


def _convert_event(job_id: str, raw: Any, *, epochs: int | None, eta: float | None) -> list[ProgressEvent]:
    """One OpenAI event as ProgressEvents: metrics -> ``step`` (plus ``eval`` for a full
    validation pass), warnings/errors -> ``alert``, other messages -> ``log``."""
    at = _at(raw.created_at)
    data = raw.data if isinstance(raw.data, Mapping) else {}
    if raw.type == "metrics" or ("step" in data and "train_loss" in data):
        return _loss_points(job_id, raw, data, at, epochs=epochs, eta=eta)
    if raw.level in ("warn", "error"):
        return [
            ProgressEvent(
                job_id,
                "alert",
                f"OpenAI: {raw.message}",
                at=at,
                data={"code": f"openai_{raw.level}", "remote_event_id": raw.id},
            )
        ]
    return [ProgressEvent(job_id, "log", f"OpenAI: {raw.message}", at=at, data={"remote_event_id": raw.id})]


def _loss_points(
    job_id: str,
    raw: Any,
    data: Mapping[str, Any],
    at: datetime | None,
    *,
    epochs: int | None,
    eta: float | None,
) -> list[ProgressEvent]:
    """A metrics event as a ``step`` event, plus an ``eval`` one when it carries a full
    validation pass."""
    step = _int(data.get("step"))
    total = _int(data.get("total_steps"))
    metrics = {
        ours: float(data[theirs]) for theirs, ours in _METRIC_NAMES.items() if _number(data.get(theirs))
    }
    if eta is not None:
        metrics["eta_seconds"] = eta
    epoch = step / total * epochs if step is not None and total and epochs else None
    out = [
        ProgressEvent(
            job_id,
            "step",
            raw.message,
            step=step,
            total=total,
            epoch=epoch,
            metrics=metrics,
            at=at,
            data={"remote_event_id": raw.id},
        )
    ]
    if _number(data.get("full_valid_loss")):
        full = {"eval_loss": float(data["full_valid_loss"])}
        if _number(data.get("full_valid_mean_token_accuracy")):
            full["eval_mean_token_accuracy"] = float(data["full_valid_mean_token_accuracy"])
        out.append(
            ProgressEvent(
                job_id,
                "eval",
                f"Full validation loss {full['eval_loss']:.4f} at step {step}.",
                step=step,
                total=total,
                epoch=epoch,
                metrics=full,
                at=at,
                data={"remote_event_id": raw.id},
            )
        )
    return out


def _n_epochs(job: Any) -> int | None:
    candidates = []
    method = getattr(job, "method", None)
    supervised = getattr(method, "supervised", None) if method else None
    if supervised is not None and supervised.hyperparameters is not None:
        candidates.append(supervised.hyperparameters.n_epochs)
    if getattr(job, "hyperparameters", None) is not None:
        candidates.append(job.hyperparameters.n_epochs)
    for value in candidates:
        if isinstance(value, int):
            return value
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> int | None:
    return int(value) if _number(value) else None


def _at(timestamp: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"
