"""The verdict: a paired bootstrap, the smallest change that matters, and the promotion rule."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.evaluate.answers import reference_number
from engine.evaluate.formatting import format_metric
from engine.evaluate.names import (
    _MODEL_PHRASES,
    FORMAT_METRIC,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    VERDICTS,
    _short,
)

# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap result: the mean of (candidate - baseline) per-example scores and its CI."""

    mean_difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of mean(candidate - baseline), resampling examples (pairs) with
    replacement, seeded. Raises ValueError on mismatched or empty inputs."""
    if len(candidate) != len(baseline):
        raise ValueError("paired scores must have the same length")
    if not candidate:
        raise ValueError("no examples to compare")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be in (0, 1) and resamples >= 1")
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if all(d == diffs[0] for d in diffs):
        return Interval(mean, mean, mean, confidence, resamples, seed)
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    alpha = (1 - confidence) / 2
    low = means[max(0, math.floor(alpha * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)]
    return Interval(mean, low, high, confidence, resamples, seed)


def decide(interval: Interval, *, higher_is_better: bool, min_effect: float = 0.0) -> str:
    """``improved`` / ``worse`` when the whole interval is on one side of zero and the mean change
    is at least ``min_effect``; else ``no_significant_difference``."""
    if abs(interval.mean_difference) < min_effect:
        return "no_significant_difference"
    if interval.low > 0 or interval.high < 0:
        better = interval.low > 0 if higher_is_better else interval.high < 0
        return "improved" if better else "worse"
    return "no_significant_difference"


#: The smallest change in a share (accuracy, F1, ...) that counts: one percentage point.
MIN_EFFECT_SHARE = 0.01
#: The smallest change in an error that counts, as a fraction of the average reference value.
MIN_EFFECT_RELATIVE = 0.01


def min_effect(metric: str, references: Sequence[str]) -> float:
    """The smallest change in ``metric`` that counts as a difference (see the module docstring)."""
    if metric in LOWER_IS_BETTER:
        values = [abs(v) for v in (reference_number(r) for r in references) if v is not None]
        return MIN_EFFECT_RELATIVE * (math.fsum(values) / len(values)) if values else 0.0
    return MIN_EFFECT_SHARE


def should_promote(verdict: str | None) -> bool:
    """Whether a verdict alone allows promotion: it is not ``worse``.

    Kept for compatibility (it is part of ``engine``'s API); the promotion rule itself is
    :func:`promotion_decision`, which also refuses a fine-tune that has not learned the task.
    ``None`` (no evaluation) does not promote; an unknown string raises ValueError.
    """
    if verdict is None:
        return False
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    return verdict != "worse"


_FORMAT_FAILURES: dict[str, str] = {
    "numeric": "of its answers were a number",
    "json": "of its answers were valid JSON",
    "label": "of its answers named a known label",
}


def promotion_decision(report: Mapping[str, Any], *, finetuned: str = "finetuned") -> tuple[bool, list[str]]:
    """The promotion rule: whether the fine-tune in ``report`` (:func:`build_report`'s dict, or
    one read back from JSON) may become its channel's default model, and if not, why.

    Returns ``(promote, reasons)``; ``reasons`` is empty exactly when ``promote`` is True, and each
    reason is a plain-words clause that completes "... was NOT made this channel's default: ".
    A fine-tune is refused when any of these holds (all that hold are listed, in this order):

    1. it has no verdict (not evaluated, or no baseline), or its verdict is ``worse``;
    2. all of its answers are empty;
    3. none of its answers had the task's format (numeric: a number, json: valid JSON, label: a
       known label; free text has no format) - it has not learned the format;
    4. it gave the same answer to every example although the reference answers vary;
    5. it is no better than the constant answer on the primary metric (``beats_constant``: by at
       least the smallest change that matters), even when its verdict is not ``worse``.

    Reports written before checks 2, 4 and 5 existed lack their keys; those checks are skipped.
    An unknown verdict raises ValueError.
    """
    metrics = report.get("finetuned")
    verdict = report.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    if metrics is None or verdict is None:
        return False, ["it was not evaluated against a baseline"]
    task, metric = report.get("task"), report.get("metric")
    name = METRIC_NAMES.get(metric, metric)
    reasons: list[str] = []
    if verdict == "worse":
        best = report.get("best_baseline")
        base = (report.get("baseline") or {}).get(best) or {}
        reasons.append(
            f"it did worse than {_MODEL_PHRASES.get(best, best)} ({name} "
            f"{format_metric(metric, metrics.get(metric))} vs {format_metric(metric, base.get(metric))})"
        )
    stats = (report.get("answer_stats") or {}).get(finetuned) or {}
    all_empty = bool(stats.get("n")) and stats.get("empty") == stats.get("n")
    if all_empty:
        reasons.append("all of its answers were empty")
    fmt = FORMAT_METRIC.get(task or "")
    if fmt is not None and metrics.get(fmt) == 0 and not all_empty:
        reasons.append(f"0% {_FORMAT_FAILURES[task]}, so it has not learned the format")
    refs = report.get("reference_stats") or {}
    if (
        not all_empty
        and (stats.get("n") or 0) >= 2
        and stats.get("distinct") == 1
        and (refs.get("distinct") or 0) > 1
    ):
        reasons.append(
            f"it gave the same answer ({_short(stats.get('top_answer'), 60)!r}) to every example although "
            "the right answers vary"
        )
    guess = report.get("guess")
    if guess and (report.get("beats_constant") or {}).get(finetuned) is False:
        reasons.append(
            f"it is no better than always answering {_short(guess['answer'], 60)!r} ({name} "
            f"{format_metric(metric, metrics.get(metric))} vs {format_metric(metric, guess['metrics'].get(metric))}), "
            "so it has not learned the task"
        )
    return not reasons, reasons
