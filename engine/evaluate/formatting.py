"""Metrics, differences and verdicts in words: the numbers and sentences every rendering shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.evaluate.names import (
    _MODEL_PHRASES,
    _RATE_METRICS,
    FORMAT_METRIC,
    METRIC_NAMES,
    MIN_EXAMPLES_FOR_VERDICT,
    MODEL_LABELS,
    _short,
)

# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_metric(metric: str, value: Any) -> str:
    """A metric value for people: shares as percentages, errors with sensible precision."""
    if value is None:
        return "-"
    if metric in _RATE_METRICS:
        return _pct(value)
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"


def format_difference(metric: str, value: float, *, like: float | None = None) -> str:
    """A signed change in ``metric`` for people ("+3.3 points", "-12.5"). ``like``: format with
    the precision a value of that size gets, so both ends of an interval read alike."""
    if metric in _RATE_METRICS:
        return f"{100 * value:+.1f} points"
    size = abs(like) if like is not None else abs(value)
    if size >= 1000:
        text = f"{abs(value):,.0f}"
    elif size >= 10:
        text = f"{abs(value):,.1f}"
    elif size >= 0.01 or size == 0:
        text = f"{abs(value):.2f}"
    else:
        text = f"{abs(value):.3g}"
    return ("-" if value < 0 else "+") + text


def format_interval(metric: str, low: float, high: float) -> str:
    """Both ends of an interval, with one precision: "-49.7 to -8.9"."""
    size = max(abs(low), abs(high))
    return f"{format_difference(metric, low, like=size)} to {format_difference(metric, high, like=size)}"


_FORMAT_SHARES: dict[str, str] = {
    "numeric": "numbers in {} of answers",
    "json": "valid JSON in {} of answers",
    "label": "a known label in {} of answers",
}


def format_note(report: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The task's format rate in words (see :data:`FORMAT_METRIC`), e.g. "numbers in 85% of
    answers", when a model's answers were not all in the right format; else "" (also for free
    text). A rate just below 1 shows as 99%, never as a misleading 100%."""
    fmt = FORMAT_METRIC.get(report.get("task") or "")
    rate = (metrics or {}).get(fmt) if fmt else None
    if not isinstance(rate, int | float) or rate >= 1:
        return ""
    shown = f"{min(99, round(100 * rate))}%" if rate > 0 else "0%"
    return _FORMAT_SHARES[report["task"]].format(shown)


def _value_phrase(report: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The primary metric's value, with the format rate beside it when below 100%:
    "131.9 (numbers in 85% of answers)"."""
    metric = report["metric"]
    note = format_note(report, metrics)
    value = format_metric(metric, (metrics or {}).get(metric))
    return f"{value} ({note})" if note else value


def _model_with_value(report: Mapping[str, Any], name: str, metrics: Mapping[str, Any] | None) -> str:
    """A model with its value, e.g. "the base model on its own (average error 3,746, numbers in 0%
    of answers)"."""
    metric = report["metric"]
    parts = [f"{METRIC_NAMES.get(metric, metric)} {format_metric(metric, (metrics or {}).get(metric))}"]
    if format_note(report, metrics):
        parts.append(format_note(report, metrics))
    return f"{_MODEL_PHRASES.get(name, name)} ({', '.join(parts)})"


def _constant_phrase(report: Mapping[str, Any]) -> str:
    """The constant answer with its value, e.g. "always answering '111.99', the median reference
    value (average error 122.8)"."""
    guess = report["guess"]
    metric = report["metric"]
    rule = guess.get("rule")
    return (
        f"always answering {_short(guess['answer'], 60)!r}"
        + (f", {rule}" if rule else "")
        + f" ({METRIC_NAMES.get(metric, metric)} {format_metric(metric, guess['metrics'].get(metric))})"
    )


def _upper_first(text: str) -> str:
    """``text`` with its first letter upper-cased (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    """Items in words: "a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _constant_verdict(report: Mapping[str, Any], names: Sequence[str]) -> str:
    """What the verdict sentence adds about the constant answer for the models ``names`` (those
    it talks about): "" when each of them beats it (or there is none)."""
    beats = report.get("beats_constant") or {}
    if not report.get("guess") or not beats:
        return ""
    if not any(beats.values()):
        return (
            f" None of the models beats {_constant_phrase(report)}, so none of them is worth using "
            "for this task yet."
        )
    losers = [name for name in names if beats.get(name) is False]
    if not losers:
        return ""
    who = _upper_first(_join([_MODEL_PHRASES.get(name, name) for name in losers]))
    return f" {who} {'is' if len(losers) == 1 else 'are'} no better than {_constant_phrase(report)}."


def verdict_sentence(report: Mapping[str, Any]) -> str:
    """The verdict in plain words, for a non-expert.

    It states the verdict (fine-tuned against the better baseline, with the confidence range) and
    each model's format rate beside its value when below 100%, and it never presents as good a
    model that the constant answer (:func:`know_nothing_guess`) beats: "Fine-tuning helped" only
    when the fine-tune also beats the constant answer, "keep using" a baseline only when that
    baseline beats it, and "None of the models beats always answering ..." when none does.
    """
    metric = report["metric"]
    verdict = report.get("verdict")
    ft = report.get("finetuned")
    best = report.get("best_baseline")
    name = METRIC_NAMES.get(metric, metric)
    if ft is None:
        if best is None:
            return "No results yet."
        parts = [
            f"{MODEL_LABELS.get(model, model)}: {name} {_value_phrase(report, m)}"
            for model, m in report["baseline"].items()
        ]
        return (
            "Baseline measured ("
            + "; ".join(parts)
            + "); the fine-tune is not evaluated yet."
            + _constant_verdict(report, list(report["baseline"]))
        )
    if best is None:
        return (
            f"The fine-tuned model scored {name} {_value_phrase(report, ft)}, with no baseline to compare "
            "against." + _constant_verdict(report, ["finetuned"])
        )
    base = report["baseline"][best]
    base_phrase = _MODEL_PHRASES.get(best, best)
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    values = (
        f"{name} {_value_phrase(report, ft)} for the fine-tuned model vs "
        f"{_value_phrase(report, base)} for {base_phrase} ({direction})"
    )
    beats = report.get("beats_constant") or {}
    tail = _constant_verdict(report, ["finetuned", best])
    interval = report.get("interval")
    if report["n"] < MIN_EXAMPLES_FOR_VERDICT:
        return f"Too few eval examples ({report['n']}) to tell whether fine-tuning helped: {values}.{tail}"
    span = ""
    if interval is not None:
        span = (
            f"{round(interval['confidence'] * 100)}% confidence range for the change: "
            f"{format_interval(metric, interval['low'], interval['high'])}"
        )
    if verdict == "improved":
        if beats.get("finetuned") is False:
            return f"The fine-tuned model did better than {base_phrase}: {values}; {span}.{tail}"
        return f"Fine-tuning helped: {values}; {span}, so the gain is unlikely to be chance."
    if verdict == "worse":
        if beats.get(best) is False:
            return f"Fine-tuning made things worse: {values}; {span}.{tail}"
        return f"Fine-tuning made things worse: {values}; {span}, so keep using {base_phrase}."
    if interval is not None and interval["low"] == interval["high"] == 0:
        return (
            f"No difference: the fine-tuned model and {base_phrase} scored the same on "
            f"every example ({name} {_value_phrase(report, ft)}).{tail}"
        )
    if interval is not None and (interval["low"] > 0 or interval["high"] < 0):
        return (
            f"No meaningful difference: {values}; the change, "
            f"{format_difference(metric, interval['mean_difference'])}, is smaller than the smallest "
            f"change that matters here ({format_difference(metric, interval.get('min_effect') or 0.0)[1:]})."
            f"{tail}"
        )
    return (
        f"No clear difference: {values}; {span}, which includes no change, so the difference could be "
        f"chance.{tail}"
    )
