"""Scoring one model's answers against the references: per-example scores and metrics per task."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.evaluate.answers import (
    is_strict_number,
    label_key,
    match_label,
    parse_json_object,
    parse_number,
    reference_number,
    reference_units,
    text_tokens,
)
from engine.evaluate.names import TASKS

# ---------------------------------------------------------------------------------------------
# Small statistics helpers
# ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------------------------------------
# Scoring one model
# ---------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """One model's results on one eval set.

    ``metrics``: metric name -> value (None when undefined, e.g. on an empty set), plus ``n``.
    ``per_example``: for each per-example metric, one score per usable example; its mean is the
    metric. ``correct``: per example, whether the answer counts as right for the flips (numeric:
    within 10%; json: every field right; label: right label; text: token F1 >= 0.5).
    ``details``: task extras (label: ``per_label``; json: ``fields``).
    """

    task: str
    metrics: dict[str, float | int | None]
    per_example: dict[str, list[float]]
    correct: list[bool]
    details: dict[str, Any] = field(default_factory=dict)


def _usable(task: str, references: Sequence[str]) -> list[int]:
    """Indices of references that can be scored (a numeric/json reference must parse)."""
    if task == "numeric":
        return [i for i, r in enumerate(references) if reference_number(r) is not None]
    if task == "json":
        return [i for i, r in enumerate(references) if parse_json_object(r) is not None]
    return list(range(len(references)))


def numeric_zero_cost(references: Sequence[float]) -> float:
    """What an answer without a number costs when the reference is 0: the median absolute
    reference value (1 when that is 0 too)."""
    median = statistics.median(abs(r) for r in references) if references else 0.0
    return median or 1.0


def score_numeric(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Numeric metrics; references that are not numbers are skipped (the caller counts them)."""
    refs = [reference_number(r) for r in references]
    units = reference_units(references)  # an answer may use the references' own units ("3 widgets")
    zero_cost = numeric_zero_cost([r for r in refs if r is not None])
    errors: list[float] = []
    parsed_errors: list[float] = []
    within: list[float] = []
    ape: list[float] = []
    for ref, pred_text in zip(refs, predictions, strict=True):
        if ref is None:
            continue
        pred = parse_number(pred_text, units=units)
        if pred is None:
            err = abs(ref) if ref != 0 else zero_cost
        else:
            err = abs(pred - ref)
            parsed_errors.append(err)
        errors.append(err)
        hit = pred is not None and err <= 0.1 * abs(ref) + 1e-9 * max(1.0, abs(ref))
        within.append(1.0 if hit else 0.0)
        if ref != 0:
            ape.append(err / abs(ref))
    n = len(errors)
    metrics: dict[str, float | int | None] = {
        "n": n,
        "mae": _mean(errors),
        "median_ae": percentile(errors, 0.5),
        "p90_ae": percentile(errors, 0.9),
        "max_ae": max(errors) if errors else None,
        "mape": _mean(ape),
        "within_10pct": _mean(within),
        "parse_rate": len(parsed_errors) / n if n else None,
        "mae_parsed": _mean(parsed_errors),
    }
    return Scores("numeric", metrics, {"mae": errors, "within_10pct": within}, [w == 1.0 for w in within])


def _same_value(ref: Any, pred: Any, *, lenient: bool) -> bool:
    """JSON value equality: bools are not numbers; numbers compare numerically. ``lenient`` also
    ignores case and extra spaces in strings and lets a numeric string equal a number."""
    if isinstance(ref, bool) or isinstance(pred, bool):
        return isinstance(ref, bool) and isinstance(pred, bool) and ref == pred
    if isinstance(ref, int | float) and isinstance(pred, int | float):
        return math.isclose(ref, pred, rel_tol=1e-9, abs_tol=1e-12)
    if lenient and isinstance(ref, int | float) and isinstance(pred, str) and is_strict_number(pred):
        return _same_value(ref, reference_number(pred), lenient=False)
    if lenient and isinstance(pred, int | float) and isinstance(ref, str) and is_strict_number(ref):
        return _same_value(reference_number(ref), pred, lenient=False)
    if isinstance(ref, str) and isinstance(pred, str):
        if lenient:
            return " ".join(ref.casefold().split()) == " ".join(pred.casefold().split())
        return ref == pred
    if isinstance(ref, dict) and isinstance(pred, dict):
        return ref.keys() == pred.keys() and all(_same_value(ref[k], pred[k], lenient=lenient) for k in ref)
    if isinstance(ref, list) and isinstance(pred, list):
        return len(ref) == len(pred) and all(
            _same_value(a, b, lenient=lenient) for a, b in zip(ref, pred, strict=True)
        )
    return ref is None and pred is None


def score_json(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """JSON metrics; references that are not JSON objects are skipped."""
    valid: list[float] = []
    exact: list[float] = []
    fields_acc: list[float] = []
    per_field: dict[str, list[int]] = {}
    for ref_text, pred_text in zip(references, predictions, strict=True):
        ref = parse_json_object(ref_text)
        if ref is None:
            continue
        pred = parse_json_object(pred_text)
        valid.append(1.0 if pred is not None else 0.0)
        exact.append(1.0 if pred is not None and _same_value(ref, pred, lenient=False) else 0.0)
        if not ref:
            fields_acc.append(1.0 if pred == {} else 0.0)
            continue
        right = 0
        for key, value in ref.items():
            ok = pred is not None and key in pred and _same_value(value, pred[key], lenient=True)
            right += ok
            per_field.setdefault(key, [0, 0])
            per_field[key][0] += ok
            per_field[key][1] += 1
        fields_acc.append(right / len(ref))
    n = len(valid)
    metrics: dict[str, float | int | None] = {
        "n": n,
        "field_accuracy": _mean(fields_acc),
        "exact_match": _mean(exact),
        "valid_rate": _mean(valid),
    }
    details = {"fields": {k: ok / total for k, (ok, total) in sorted(per_field.items())}}
    return Scores(
        "json",
        metrics,
        {"field_accuracy": fields_acc, "exact_match": exact, "valid_rate": valid},
        [f == 1.0 for f in fields_acc],
        details,
    )


def score_label(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Label metrics over the label set of the references."""
    display: dict[str, str] = {}
    for ref in references:
        display.setdefault(label_key(ref), ref.strip())
    labels = sorted(display, key=lambda k: (-len(k), k))  # longest first for matching
    gold = [label_key(r) for r in references]
    guessed = [match_label(p, labels) for p in predictions]
    if len(gold) != len(guessed):
        raise ValueError("references and predictions differ in length")
    correct = [g == p for g, p in zip(gold, guessed, strict=True)]
    per_label: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for lab in sorted(display):
        support = sum(1 for g in gold if g == lab)
        predicted = sum(1 for p in guessed if p == lab)
        hits = sum(1 for g, p in zip(gold, guessed, strict=True) if g == lab and p == lab)
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_label[display[lab]] = {
            "support": support,
            "predicted": predicted,
            "correct": hits,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    n = len(gold)
    acc = [1.0 if c else 0.0 for c in correct]
    metrics: dict[str, float | int | None] = {
        "n": n,
        "accuracy": _mean(acc),
        "macro_f1": _mean(f1s) if n else None,
        "valid_rate": sum(1 for p in guessed if p is not None) / n if n else None,
        "unknown_answers": sum(1 for p in guessed if p is None),
    }
    return Scores("label", metrics, {"accuracy": acc}, correct, {"per_label": per_label})


def token_f1(reference: str, prediction: str) -> float:
    """Bag-of-words F1 between the two texts' :func:`text_tokens` (two empty texts: 1.0)."""
    ref, pred = text_tokens(reference), text_tokens(prediction)
    if not ref or not pred:
        return 1.0 if ref == pred else 0.0
    common: dict[str, int] = {}
    counts: dict[str, int] = {}
    for tok in ref:
        counts[tok] = counts.get(tok, 0) + 1
    overlap = 0
    for tok in pred:
        if counts.get(tok, 0) > common.get(tok, 0):
            common[tok] = common.get(tok, 0) + 1
            overlap += 1
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): one big-integer bit per token of ``b``, so a 500 x 500 comparison
    takes well under a millisecond instead of the textbook table's tens of milliseconds.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens over both lengths (two empty texts: 1.0)."""
    ref, pred = text_tokens(reference), text_tokens(prediction)
    if not ref or not pred:
        return 1.0 if ref == pred else 0.0
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def score_text(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Free-text metrics."""
    f1: list[float] = []
    rl: list[float] = []
    exact: list[float] = []
    for ref, pred in zip(references, predictions, strict=True):
        f1.append(token_f1(ref, pred))
        rl.append(rouge_l(ref, pred))
        exact.append(1.0 if text_tokens(ref) == text_tokens(pred) else 0.0)
    metrics: dict[str, float | int | None] = {
        "n": len(f1),
        "token_f1": _mean(f1),
        "rouge_l": _mean(rl),
        "exact_match": _mean(exact),
    }
    return Scores(
        "text", metrics, {"token_f1": f1, "rouge_l": rl, "exact_match": exact}, [s >= 0.5 for s in f1]
    )


_SCORERS = {"numeric": score_numeric, "json": score_json, "label": score_label, "text": score_text}


def score(task: str, references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Score one model's answers on ``task``. Lengths must match (a caller bug otherwise)."""
    if task not in _SCORERS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    return _SCORERS[task](list(references), [p if isinstance(p, str) else "" for p in predictions])


def compute_metrics(task: str, references: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Just the metrics dict of :func:`score` (what the baseline progress event carries)."""
    return dict(score(task, references, predictions).metrics)
