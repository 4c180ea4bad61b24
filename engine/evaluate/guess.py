"""The constant answer every model is compared with, and how varied a model's answers are."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from engine.evaluate.answers import label_key, parse_json_object, reference_number, text_tokens
from engine.evaluate.names import LOWER_IS_BETTER, _short
from engine.evaluate.scoring import score

TEXT_MEDOID_CANDIDATES = 200

#: How each task's constant answer is chosen, for the reports.
CONSTANT_RULES: dict[str, str] = {
    "numeric": "the median reference value",
    "label": "the most common label",
    "json": "each field's most common value in the references",
    "text": "the reference answer with the most words in common with all the others",
}


def know_nothing_guess(task: str, references: Sequence[str]) -> dict[str, Any] | None:
    """The constant-answer reference: what giving the same typical answer to every example
    scores. None when there is nothing to take it from.

    - numeric: the median reference value (the lower median, as the reference wrote it);
    - label: the most common label (ties: alphabetical);
    - json: an object with, for each top-level key of the references (in order of first
      appearance), its most common value (ties: the value seen first);
    - text: the medoid, the reference with the highest mean token F1 to all references (itself
      included; ties: the earliest), chosen among at most :data:`TEXT_MEDOID_CANDIDATES`.

    ``{"answer": str, "rule": str, "metrics": {...}}``. The answer is taken from the eval
    references themselves, so it is a little better than a real know-nothing guess: beating it is
    the least a model should do.
    """
    refs = [r for r in references if isinstance(r, str)]
    if task == "numeric":
        values = sorted((v, r.strip()) for r in refs if (v := reference_number(r)) is not None)
        if not values:
            return None
        answer = values[(len(values) - 1) // 2][1]
    elif task == "label":
        if not refs:
            return None
        counts: dict[str, int] = {}
        shown: dict[str, str] = {}
        for r in refs:
            counts[label_key(r)] = counts.get(label_key(r), 0) + 1
            shown.setdefault(label_key(r), r.strip())
        answer = shown[min(counts, key=lambda k: (-counts[k], k))]
    elif task == "json":
        objects = [obj for r in refs if (obj := parse_json_object(r)) is not None]
        if not objects:
            return None
        answer = json.dumps(_typical_object(objects), ensure_ascii=False)
    elif task == "text":
        if not refs:
            return None
        answer = refs[_medoid(refs)]
    else:
        return None
    return {
        "answer": answer,
        "rule": CONSTANT_RULES[task],
        "metrics": score(task, references, [answer] * len(references)).metrics,
    }


def _typical_object(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """For each top-level key (first-appearance order), its most common value (ties: first seen)."""
    counts: dict[str, dict[str, int]] = {}
    values: dict[str, dict[str, Any]] = {}
    for obj in objects:
        for key, value in obj.items():
            canonical = json.dumps(value, sort_keys=True, ensure_ascii=False)
            counts.setdefault(key, {})
            counts[key][canonical] = counts[key].get(canonical, 0) + 1
            values.setdefault(key, {}).setdefault(canonical, value)
    # max() keeps the first of equal counts, and dicts keep insertion (first-seen) order.
    return {key: values[key][max(seen, key=seen.__getitem__)] for key, seen in counts.items()}


def _medoid(texts: Sequence[str]) -> int:
    """Index of the text with the highest mean token F1 to all texts (see :func:`know_nothing_guess`)."""
    bags = [Counter(text_tokens(t)) for t in texts]
    sizes = [sum(b.values()) for b in bags]

    def f1(i: int, j: int) -> float:  # token_f1 on pre-counted tokens
        if not sizes[i] or not sizes[j]:
            return 1.0 if sizes[i] == sizes[j] else 0.0
        overlap = sum((bags[i] & bags[j]).values())
        return 2 * overlap / (sizes[i] + sizes[j])

    step = max(1, math.ceil(len(texts) / TEXT_MEDOID_CANDIDATES))
    candidates = range(0, len(texts), step)
    return max(candidates, key=lambda i: (math.fsum(f1(i, j) for j in range(len(texts))), -i))


def beats_constant(metric: str, value: float | None, constant: float | None, smallest: float = 0.0) -> bool:
    """Whether a model's ``value`` of ``metric`` beats the constant answer's by at least
    ``smallest`` (the smallest change that matters, :func:`min_effect`), and strictly. A missing
    value never beats; a missing constant is beaten by any value; a perfect value (no error,
    every answer right) counts as beating it, since nothing can do better (where every reference
    is the same answer, the constant answer is perfect too)."""
    if value is None:
        return False
    if constant is None or value == (0.0 if metric in LOWER_IS_BETTER else 1.0):
        return True
    gain = constant - value if metric in LOWER_IS_BETTER else value - constant
    return gain > 0 and gain >= smallest


def answer_stats(answers: Sequence[str | None]) -> dict[str, Any]:
    """How varied a model's answers are, compared ignoring case and extra spaces: ``n``,
    ``empty`` (blank answers), ``distinct`` (different answers), ``top_answer`` (the most
    common, shortened to 120 characters) and ``top_count`` (how often it appears)."""
    keys = [" ".join((a or "").casefold().split()) if isinstance(a, str) else "" for a in answers]
    top = _same_answer([a if isinstance(a, str) else "" for a in answers])
    return {
        "n": len(keys),
        "empty": sum(1 for k in keys if not k),
        "distinct": len(set(keys)),
        "top_answer": _short(top[0], 120) if top else None,
        "top_count": top[1] if top else 0,
    }


def _same_answer(answers: Sequence[str]) -> tuple[str, int] | None:
    """The most common answer (ignoring case and surrounding spaces) and how often it appears."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    for answer in answers:
        key = " ".join((answer or "").casefold().split())
        counts[key] = counts.get(key, 0) + 1
        shown.setdefault(key, answer or "")
    if not counts:
        return None
    key = max(counts, key=lambda k: (counts[k], k))
    return shown[key], counts[key]
