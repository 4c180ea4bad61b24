"""ARCHITECTURE.md's JSON contract for ``ftbot run --json`` (and ``job_summary``), written out here
rather than imported from the engine, so that tests hold the engine to the design."""

from __future__ import annotations

#: The keys every run result carries (more may follow).
RUN_JSON_KEYS = frozenset(
    {
        "job_id",
        "status",
        "backend",
        "base_model",
        "model_id",
        "task",
        "metric",
        "baseline",
        "finetuned",
        "verdict",
        "predictions",
    }
)
