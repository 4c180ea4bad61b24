"""ftbot's engine: validate datasets, fine-tune, evaluate against baselines, serve models.

This module is the public API; ``bot/`` imports from here only. Names are loaded lazily so that
``import engine`` stays fast and never loads torch (checked by tests/test_architecture.py).
To export a new name, add it to ``_EXPORTS`` (name -> defining module) and it joins ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # errors
    "FtbotError": "engine.errors",
    "UsageError": "engine.errors",
    "ConfigError": "engine.errors",
    "DatasetError": "engine.errors",
    "NotFound": "engine.errors",
    "JobNotFound": "engine.errors",
    "DatasetNotFound": "engine.errors",
    "ModelNotFound": "engine.errors",
    "PermissionDenied": "engine.errors",
    "InvalidTransition": "engine.errors",
    "StoreError": "engine.errors",
    "BackendError": "engine.errors",
    "BackendUnavailable": "engine.errors",
    "ResourceExhausted": "engine.errors",
    "TrainingFailed": "engine.errors",
    "GenerationError": "engine.errors",
    "RemoteError": "engine.errors",
    # settings
    "Settings": "engine.settings",
    "BUILTIN_TINY": "engine.settings",
    "BUILTIN_SMOLLM2": "engine.settings",
    "BUILTIN_MODELS": "engine.settings",
    # jobs
    "Job": "engine.jobs",
    "JobState": "engine.jobs",
    # progress
    "ProgressEvent": "engine.progress",
    "ProgressSink": "engine.progress",
    "NullSink": "engine.progress",
    "ListSink": "engine.progress",
    "CallbackSink": "engine.progress",
    "TeeSink": "engine.progress",
    "ThrottledSink": "engine.relay",
    # training configuration: pure
    "TrainConfig": "engine.config",
    "parse_options": "engine.config",
    "option_help": "engine.config",
    # evaluation: pure, stdlib only
    "build_report": "engine.evaluate",
    "render_report": "engine.evaluate",
    "format_metric": "engine.evaluate",
    "should_promote": "engine.evaluate",
    "detect_task": "engine.evaluate",
    "PRIMARY_METRIC": "engine.evaluate",
    "LOWER_IS_BETTER": "engine.evaluate",
    "VERDICTS": "engine.evaluate",
    # store, service
    "Store": "engine.store",
    "DatasetRecord": "engine.store",
    "ModelRecord": "engine.store",
    "DefaultChoice": "engine.store",
    "Engine": "engine.service",
    "job_summary": "engine.service",
    # serving: what Engine.ask returns (no torch at import)
    "Answer": "engine.backends.local_generation",
    # datasets: pure validation, examples, split, leakage; token counting (lazy torch)
    "validate_file": "engine.dataset",
    "validate_bytes": "engine.dataset",
    "ValidationReport": "engine.dataset",
    "ValidationIssue": "engine.dataset",
    "ValidationWarning": "engine.dataset",
    "Example": "engine.dataset",
    "read_examples": "engine.dataset",
    "load_examples": "engine.dataset",
    "split": "engine.dataset",
    "leakage": "engine.dataset",
    "token_counter_for": "engine.backends.local_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
