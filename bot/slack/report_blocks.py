"""The evaluation report as a table: each model's figures (zero-shot, few-shot, fine-tuned, and the
constant answer when the report has one) on the task's metrics, in mrkdwn. Used by the baseline
and evaluation messages (bot/slack/blocks.py). Pure: stdlib and engine types only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bot.slack.blockkit import escape, fmt_number
from engine import LOWER_IS_BETTER, format_metric

# The evaluation's lower-is-better metrics, plus losses.
LOWER_IS_BETTER_SHOWN = LOWER_IS_BETTER | {"loss", "eval_loss"}

_NOT_METRICS = {"n", "count", "examples", "skipped"}
_MODEL_COLUMNS = (("zero_shot", "base zero-shot"), ("few_shot", "base few-shot"), ("finetuned", "fine-tuned"))


def _eval_models(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{column: {metric: value}} from the shapes the engine may use: ``baseline.zero_shot`` +
    ``finetuned`` (the `ftbot run --json` contract), top-level ``zero_shot``/``few_shot``, or a
    ``models`` mapping."""
    out: dict[str, dict[str, Any]] = {}
    sources: list[Mapping[str, Any]] = [report]
    for key in ("baseline", "models", "results"):
        if isinstance(report.get(key), Mapping):
            sources.append(report[key])
    for column, _ in _MODEL_COLUMNS:
        for src in sources:
            value = src.get(column)
            if isinstance(value, Mapping):
                metrics = value.get("metrics") if isinstance(value.get("metrics"), Mapping) else value
                out[column] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
                break
    return out


def _fmt_metric(metric: str, value: Any) -> str:
    """A metric as the report writes it (shares as percentages: "93%"), counts as numbers."""
    if isinstance(value, float) and not math.isnan(value):
        return format_metric(metric, value)
    return fmt_number(value)


def metrics_table(report: Mapping[str, Any], *, max_metrics: int = 8) -> str:
    """The metrics (rows) of each model (columns). With the report's constant answer (``guess``:
    always giving the typical answer, no model) it comes first as a column of its own, a last row
    says whether each model beats it (``beats_constant``), and a line under the table says what
    that constant answer is."""
    models = _eval_models(report)
    columns = [(key, label) for key, label in _MODEL_COLUMNS if key in models]
    if not columns:
        return "_no figures_"
    guess = report.get("guess")
    if isinstance(guess, Mapping) and isinstance(guess.get("metrics"), Mapping):
        models["constant"] = {k: v for k, v in guess["metrics"].items() if isinstance(v, int | float)}
        columns.insert(0, ("constant", "constant answer"))
    primary = report.get("metric")
    metrics: list[str] = []
    if primary and any(primary in models[c] for c, _ in columns):
        metrics.append(str(primary))
    for c, _ in columns:
        for m in models[c]:
            if m not in metrics and m not in _NOT_METRICS:
                metrics.append(m)
    metrics = metrics[:max_metrics]
    width = max(len(m) for m in metrics) + 2 if metrics else 8
    if "constant" in models:
        width = max(width, len("beats constant") + 2)  # the last row's label
    head = "metric".ljust(width) + "".join(label.rjust(16) for _, label in columns)
    rows = [head]
    for m in metrics:
        mark = " ↓" if m in LOWER_IS_BETTER_SHOWN else ""
        rows.append(
            escape(m + mark).ljust(width)
            + "".join(_fmt_metric(m, models[c].get(m)).rjust(16) for c, _ in columns)
        )
    beats = report.get("beats_constant")
    if "constant" in models and isinstance(beats, Mapping) and beats:
        marks = {True: "yes", False: "NO"}
        rows.append(
            "beats constant".ljust(width)
            + "".join(("" if c == "constant" else marks.get(beats.get(c), "–")).rjust(16) for c, _ in columns)
        )
    table = "```\n" + "\n".join(rows) + "\n```"
    if "constant" in models:
        answer = str(guess.get("answer", ""))
        answer = (answer if len(answer) <= 60 else answer[:59] + "…").replace("`", "'")
        table += f"\n_constant answer: always answering `{escape(answer)}` (no model)_"
    return table
