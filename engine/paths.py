"""Where a job's files live under FTBOT_HOME: its run directory, the worker's log, checkpoints and the
adapter. Pure paths (stdlib only, and :class:`~engine.settings.Settings`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.settings import Settings


def run_dir(settings: Settings, job_id: str) -> Path:
    """The job's working directory: checkpoints, charts, predictions, the worker's log."""
    return settings.runs_dir / job_id


def worker_log_path(settings: Settings, job_id: str) -> Path:
    """The worker's stdout and stderr, appended across resumes (``<run dir>/worker.log``)."""
    return run_dir(settings, job_id) / "worker.log"


def checkpoints_dir(settings: Settings, job_id: str) -> Path:
    """Where training writes its checkpoints (``checkpoint-<step>`` folders)."""
    return run_dir(settings, job_id) / "train"


def adapter_dir(settings: Settings, job_id: str) -> Path:
    """Where a finished local job's adapter lives (the model registry points here)."""
    return settings.models_dir / job_id


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step under ``directory`` (searched
    one level deep too: the trainer writes ``<output_dir>/checkpoints/checkpoint-<step>``), or None."""
    if not directory.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for candidate in [*directory.glob("checkpoint-*"), *directory.glob("*/checkpoint-*")]:
        suffix = candidate.name.rpartition("-")[2]
        # Only complete checkpoints: the trainer writes trainer_state.json last.
        if suffix.isdigit() and (candidate / "trainer_state.json").exists():
            found.append((int(suffix), candidate))
    return max(found)[1] if found else None


def remove_partial_files(settings: Settings, job_id: str) -> None:
    """Delete what a stopped job leaves half done: checkpoints and the adapter. Keeps the log."""
    for path in (checkpoints_dir(settings, job_id), adapter_dir(settings, job_id)):
        shutil.rmtree(path, ignore_errors=True)
