"""The one way a job ends with a reason: :func:`fail_job` (a message and a hint), for every caller.

The job runner (:mod:`engine.runner`, both backends), the dispatcher (a worker that died) and
the OpenAI poller all end jobs through :func:`fail_job`, so a failed job always looks the same:
``job.error`` is the message and the hint together, the state change's event carries the message,
and its data the hint. :func:`internal_error` and :func:`is_out_of_memory` word the two failures
that are not an :class:`~engine.errors.FtbotError`.

At run time it imports only engine.errors and engine.jobs (the store for type checkers): the
scheduler, the runner and the OpenAI poller all import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from engine.errors import InvalidTransition, JobNotFound
from engine.jobs import JobState

if TYPE_CHECKING:
    from engine.store import Store


def fail_job(
    store: Store,
    job_id: str,
    message: str,
    hint: str | None = None,
    *,
    to: JobState = JobState.FAILED,
    now: datetime | None = None,
) -> Exception | None:
    """Move ``job_id`` to ``to`` (``failed``; ``cancelled`` for a job cancelled on a remote
    service) with ``message`` as the reason and ``hint`` as what to do. A job that already ended
    (or is gone) stays as it is. Never raises: returns the database's error when it refused to
    write (a full disk: sqlite's "database or disk is full", an OSError), else None."""
    try:
        store.transition(
            job_id,
            to,
            now=now,
            error=f"{message} {hint}" if hint else message,
            message=message,
            data={"hint": hint} if hint else None,
        )
    except (InvalidTransition, JobNotFound):
        pass
    except Exception as exc:  # sqlite3.OperationalError "database or disk is full", OSError
        return exc
    return None


def internal_error(exc: BaseException, who: str) -> str:
    """The message of a failure that is a bug, not a user's mistake: ``who`` (``the worker``,
    ``the OpenAI pipeline``) names what hit it; the exception's type and start of its text follow."""
    return f"The {who} hit an internal error: {type(exc).__name__}: {str(exc)[:300]}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the process ran out of memory (host RAM, or CUDA's OutOfMemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
