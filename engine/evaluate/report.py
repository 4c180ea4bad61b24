"""The evaluation report: :func:`build_report` and how answers were read (``scoring``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.evaluate.answers import resolve_task
from engine.evaluate.flags import _flags, _flips
from engine.evaluate.formatting import verdict_sentence
from engine.evaluate.guess import answer_stats, beats_constant, know_nothing_guess
from engine.evaluate.names import (
    LOWER_IS_BETTER,
    MIN_EXAMPLES,
    MIN_EXAMPLES_FOR_VERDICT,
    PER_EXAMPLE_METRICS,
    PRIMARY_METRIC,
    TASKS,
    _better,
)
from engine.evaluate.scoring import Scores, _usable, score
from engine.evaluate.verdict import decide, min_effect, paired_bootstrap

# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def scoring_note(task: str) -> str:
    """How answers were read and how bad answers counted, in one paragraph for the report."""
    notes = {
        "numeric": (
            "An answer counts as a number only when it is one: after removing surrounding spaces, "
            "quotes, backticks, a final period, a label such as 'Price:' and a hedge such as 'about', "
            "'approximately' or '~', what is left must be a single number, with an optional sign, "
            "currency symbol or code, thousands commas, decimals and a unit or percent ('$1,299.00', "
            "'349 USD', '12.5%', '40 dollars'). A short sentence counts only when its one and only number "
            "is an amount of money ('The price is $349.00.'). Digits picked out of other text never count "
            "('189ameragreen 36wou742' is not a number, nor is '3 for $10'). An answer that is not a number "
            "counts as an error as large as the reference value, as if it said 0 (for a reference of 0, "
            "the median reference value); 'numeric' is the share of answers that were numbers and "
            "'avg err (parsed)' the average error over those. Changes smaller than 1% of the average "
            "reference value count as no difference."
        ),
        "json": (
            "Each answer must contain a JSON object (code fences and surrounding text are tolerated). "
            "An answer without one scores 0 on every field. Changes under 1 point count as no "
            "difference. Field values compare ignoring case and "
            "extra spaces; extra keys only cost exact match."
        ),
        "label": (
            "An answer counts as a label when it is one (ignoring case and a final period) or names "
            "exactly one known label; anything else is wrong. Changes under 1 point count as no difference."
        ),
        "text": (
            "Answers are compared word by word after lower-casing and removing punctuation; token F1 "
            "is the overlap of words, ROUGE-L the longest run of words in the same order. Changes under "
            "1 point count as no difference."
        ),
    }
    return notes[task]


def build_report(
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    *,
    task: str | None = None,
    metric: str | None = None,
    prompts: Sequence[str] | None = None,
    finetuned: str = "finetuned",
    seed: int = 0,
    resamples: int = 2000,
    confidence: float = 0.95,
    min_examples: int = MIN_EXAMPLES,
    max_flips: int = 3,
) -> dict[str, Any]:
    """The evaluation report as a JSON-able dict.

    ``predictions`` maps model names (``zero_shot``, ``few_shot``, ``finetuned``; any subset, any
    other name counts as a baseline) to one answer per reference. ``task`` forces the task,
    ``metric`` is the user's ``metric=`` option (see :func:`resolve_task`); neither: detected.
    ``prompts`` (optional, same length) are shown with the flips.

    Keys: ``task``, ``metric``, ``higher_is_better``, ``n`` (scored examples), ``skipped``
    (references that could not be scored), ``baseline`` ({name: metrics}), ``finetuned`` (metrics
    or None), ``best_baseline``, ``verdict`` (None without a fine-tuned model or a baseline),
    ``interval`` (the bootstrap of fine-tuned minus best baseline, in the primary metric's units,
    so negative is better for errors; as :meth:`Interval.to_dict`, plus ``compared``), ``flags``
    ([{code, message}]), ``flips`` ({rule, fixed, broken, fixed_count, broken_count}),
    ``scoring`` (how answers counted), ``details`` ({name: task extras}), ``per_example``
    ({name: primary per-example scores}), ``guess`` (the constant-answer reference,
    :func:`know_nothing_guess`, or None), ``beats_constant`` ({name: whether that model beats the
    constant answer by at least ``min_effect``; empty without a constant answer}), ``min_effect``
    (the smallest change that counts, :func:`min_effect`), ``answer_stats`` ({name:
    :func:`answer_stats`} over the scored examples), ``reference_stats`` (the same for the
    references), ``summary`` (the verdict in plain words, which never presents a model that the
    constant answer beats as good). ``interval`` also holds ``min_effect``.
    """
    references = list(references)
    task, primary = _task_and_metric(references, predictions, prompts, task, metric)
    higher = primary not in LOWER_IS_BETTER
    usable = _usable(task, references)
    refs = [references[i] for i in usable]
    scores = {name: score(task, refs, [answers[i] for i in usable]) for name, answers in predictions.items()}
    n = len(usable)
    smallest = min_effect(primary, refs)
    guess = know_nothing_guess(task, refs)

    baselines = [name for name in scores if name != finetuned]
    best = _best_baseline(primary, scores, baselines)
    ft = scores.get(finetuned)
    verdict, interval = _verdict(
        ft, scores[best] if best is not None else None, primary, n, smallest, resamples, confidence, seed
    )
    if interval is not None:
        interval["compared"] = [finetuned, best]

    report: dict[str, Any] = {
        "task": task,
        "metric": primary,
        "higher_is_better": higher,
        "n": n,
        "skipped": len(references) - n,
        "baseline": {name: scores[name].metrics for name in baselines},
        "finetuned": ft.metrics if ft is not None else None,
        "best_baseline": best,
        "verdict": verdict,
        "interval": interval,
        "flags": [],
        "flips": _flips(
            scores, usable, references, predictions, prompts, finetuned, best, primary, max_flips
        ),
        "scoring": scoring_note(task),
        "guess": guess,
        "min_effect": smallest,
        "beats_constant": (
            {
                name: beats_constant(primary, s.metrics.get(primary), guess["metrics"].get(primary), smallest)
                for name, s in scores.items()
            }
            if guess is not None and n > 0
            else {}
        ),
        "answer_stats": {
            name: answer_stats([answers[i] for i in usable]) for name, answers in predictions.items()
        },
        "reference_stats": answer_stats(refs),
        "details": {name: s.details for name, s in scores.items() if s.details},
        "per_example": {name: s.per_example[primary] for name, s in scores.items()},
    }
    report["flags"] = _flags(
        report,
        scores,
        finetuned,
        min_examples,
        [predictions[finetuned][i] for i in usable] if finetuned in predictions else [],
        refs,
    )
    report["summary"] = verdict_sentence(report)
    return report


def _task_and_metric(
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    prompts: Sequence[str] | None,
    task: str | None,
    metric: str | None,
) -> tuple[str, str]:
    """Check the lengths, then ``(task, primary metric)``: forced, chosen by ``metric=``, or detected."""
    for name, answers in predictions.items():
        if len(answers) != len(references):
            raise ValueError(f"{name}: {len(answers)} predictions for {len(references)} references")
    if prompts is not None and len(prompts) != len(references):
        raise ValueError("prompts and references differ in length")
    if task is not None and metric is None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        return task, PRIMARY_METRIC[task]
    if task is not None and metric is not None:
        primary = resolve_task(references, metric)[1]
        if primary not in PER_EXAMPLE_METRICS[task]:
            primary = PRIMARY_METRIC[task]
        return task, primary
    return resolve_task(references, metric)


def _best_baseline(primary: str, scores: Mapping[str, Scores], baselines: Sequence[str]) -> str | None:
    """The baseline with the best primary metric (the first of equals), or None."""
    best = None
    for name in baselines:
        if best is None or _better(
            primary, scores[name].metrics.get(primary), scores[best].metrics.get(primary)
        ):
            best = name
    return best


def _verdict(
    ft: Scores | None,
    base: Scores | None,
    primary: str,
    n: int,
    smallest: float,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[str | None, dict[str, Any] | None]:
    """``(verdict, interval)`` of the fine-tune against the best baseline: None without either; no
    verdict but ``no_significant_difference`` under MIN_EXAMPLES_FOR_VERDICT examples."""
    if ft is None or base is None:
        return None, None
    if n <= 0:
        return "no_significant_difference", None
    result = paired_bootstrap(
        ft.per_example[primary],
        base.per_example[primary],
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )
    verdict = (
        decide(result, higher_is_better=primary not in LOWER_IS_BETTER, min_effect=smallest)
        if n >= MIN_EXAMPLES_FOR_VERDICT
        else "no_significant_difference"
    )
    return verdict, {**result.to_dict(), "min_effect": smallest}
