"""The one exception tree of ftbot's engine.

Every error the engine raises on purpose derives from :class:`FtbotError`. Each carries a
``message`` written for the person who caused it (what is wrong, where, and what to do) and never
holds a token, a signed URL or a stack trace. The bot and the CLI turn any ``FtbotError`` into a
private message or a clean exit code; anything else is a bug.

::

    FtbotError
    ├── UsageError              bad input from a user: arguments, settings, prompts
    │   └── ConfigError         a training/eval option with a bad value (carries every problem at once)
    ├── DatasetError            a dataset is not usable (carries the ValidationReport)
    ├── NotFound
    │   ├── JobNotFound
    │   ├── DatasetNotFound
    │   └── ModelNotFound
    ├── PermissionDenied        the user may not do this (not allowed, not the owner, other workspace)
    ├── InvalidTransition       a job state change the state machine forbids
    ├── StoreError              the database cannot be opened or migrated
    └── BackendError            training or generation could not run
        ├── BackendUnavailable  missing GPU / 4-bit support / API key / package
        ├── ResourceExhausted   the job does not fit (GPU memory, context length)
        ├── TrainingFailed      the worker died or training diverged
        ├── GenerationError     a model could not answer
        └── RemoteError         a remote API (OpenAI) refused or failed
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FtbotError(Exception):
    """Base of every deliberate engine error. ``message`` is safe to show to the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(FtbotError):
    """The user asked for something malformed; the message says what is accepted."""


class ConfigError(UsageError):
    """One or more options have bad values. ``problems`` lists ``(field, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        text = "; ".join(f"{field}: {msg}" for field, msg in self.problems)
        super().__init__(f"Invalid options: {text}", hint=hint)


class DatasetError(FtbotError):
    """The dataset cannot be used. ``report`` is the full validation report."""

    def __init__(self, message: str, *, report: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class NotFound(FtbotError):
    """A thing the user named does not exist (or is not visible to them)."""


class JobNotFound(NotFound):
    pass


class DatasetNotFound(NotFound):
    pass


class ModelNotFound(NotFound):
    pass


class PermissionDenied(FtbotError):
    """The user may not do this."""


class InvalidTransition(FtbotError):
    """A job state change that the state machine forbids."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"A job cannot go from '{current}' to '{target}'.")
        self.current = current
        self.target = target


class StoreError(FtbotError):
    """The database cannot be opened, migrated or written."""


class BackendError(FtbotError):
    """Training or generation could not run."""


class BackendUnavailable(BackendError):
    """A capability is missing here: a GPU, 4-bit support, an API key, a package."""


class ResourceExhausted(BackendError):
    """The job does not fit: GPU memory, context length, disk."""


class TrainingFailed(BackendError):
    """Training stopped abnormally (worker crash, OOM, divergence)."""


class GenerationError(BackendError):
    """A model could not produce an answer."""


class RemoteError(BackendError):
    """A remote API refused or failed. ``code`` is the remote error code when there is one."""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
