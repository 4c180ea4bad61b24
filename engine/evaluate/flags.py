"""What the report flags (``flags``) and the answers that fine-tuning fixed or broke (``flips``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.evaluate.formatting import (
    _constant_phrase,
    _join,
    _model_with_value,
    _pct,
    _upper_first,
    format_metric,
)
from engine.evaluate.guess import _same_answer
from engine.evaluate.names import (
    _MODEL_PHRASES,
    FORMAT_FLAG_BELOW,
    FORMAT_METRIC,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    MIN_EXAMPLES_FOR_VERDICT,
    _better,
    _short,
)
from engine.evaluate.scoring import Scores


def _flips(
    scores: Mapping[str, Scores],
    usable: Sequence[int],
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    prompts: Sequence[str] | None,
    finetuned: str,
    best: str | None,
    primary: str,
    limit: int,
) -> dict[str, Any]:
    rules = {
        "numeric": "right = within 10% of the reference",
        "json": "right = every field right",
        "label": "right = the right label",
        "text": "right = token F1 of at least 0.5",
    }
    ft = scores.get(finetuned)
    empty: dict[str, Any] = {"rule": "", "fixed": [], "broken": [], "fixed_count": 0, "broken_count": 0}
    if ft is None or best is None:
        return empty
    base = scores[best]
    sign = -1.0 if primary in LOWER_IS_BETTER else 1.0
    fixed: list[tuple[float, int]] = []
    broken: list[tuple[float, int]] = []
    for j, (was, now) in enumerate(zip(base.correct, ft.correct, strict=True)):
        gain = sign * (ft.per_example[primary][j] - base.per_example[primary][j])
        if now and not was:
            fixed.append((-gain, j))
        elif was and not now:
            broken.append((gain, j))

    def entry(j: int) -> dict[str, Any]:
        i = usable[j]
        return {
            "index": i,
            "prompt": _short(prompts[i]) if prompts is not None else None,
            "reference": _short(references[i]),
            "baseline": _short(predictions[best][i]),
            "finetuned": _short(predictions[finetuned][i]),
            "baseline_score": base.per_example[primary][j],
            "finetuned_score": ft.per_example[primary][j],
        }

    return {
        "rule": rules[ft.task],
        "fixed": [entry(j) for _, j in sorted(fixed)[:limit]],
        "broken": [entry(j) for _, j in sorted(broken)[:limit]],
        "fixed_count": len(fixed),
        "broken_count": len(broken),
    }


@dataclass
class _Flags:
    """What every flag rule reads (the report so far, the scores, the fine-tune's name and answers,
    the references), and the flags found so far, in the report's order."""

    report: Mapping[str, Any]
    scores: Mapping[str, Scores]
    finetuned: str
    min_examples: int
    finetuned_answers: Sequence[str]
    references: Sequence[str]
    found: list[dict[str, str]] = field(default_factory=list)

    def add(self, code: str, message: str) -> None:
        self.found.append({"code": code, "message": message})


def _flags(
    report: Mapping[str, Any],
    scores: Mapping[str, Scores],
    finetuned: str,
    min_examples: int,
    finetuned_answers: Sequence[str],
    references: Sequence[str],
) -> list[dict[str, str]]:
    """The report's ``flags``, each ``{code, message}``: the eval set's size, baselines and the
    fine-tune against the constant answer, trade-offs between average and worst case, the answer
    format, one answer for everything, and whether prompting is enough."""
    c = _Flags(report, scores, finetuned, min_examples, finetuned_answers, references)
    _size_flags(c)
    _baseline_flags(c)
    ft = scores.get(finetuned)
    best = report["best_baseline"]
    if ft is None or best is None or report["n"] == 0:
        return c.found
    fm, bm = ft.metrics, scores[best].metrics
    _tradeoff_flags(c, fm, bm)
    _format_flags(c, fm, bm, _MODEL_PHRASES.get(best, best))
    _finetune_flags(c, fm)
    _prompting_flag(c, fm, best)
    return c.found


def _size_flags(c: _Flags) -> None:
    """``empty_eval``, ``too_small_to_tell``, ``small_eval_set``, ``unscorable_references``."""
    report, add, min_examples = c.report, c.add, c.min_examples
    n, task = report["n"], report["task"]
    if n == 0:
        add("empty_eval", "There were no eval examples to score, so nothing can be concluded.")
    elif n < MIN_EXAMPLES_FOR_VERDICT:
        add(
            "too_small_to_tell",
            f"Only {n} eval examples: far too few to tell whether fine-tuning helped. "
            f"Use at least {min_examples} (more is better).",
        )
    elif n < min_examples:
        add(
            "small_eval_set",
            f"Only {n} eval examples: differences may be chance. "
            f"Use at least {min_examples} for a verdict you can lean on.",
        )
    if report["skipped"]:
        add(
            "unscorable_references",
            f"{report['skipped']} eval examples had a reference answer that is not "
            f"a valid {'number' if task == 'numeric' else 'JSON object'} and were left out.",
        )


def _baseline_flags(c: _Flags) -> None:
    """``baseline_no_better_than_guessing``: baselines the constant answer beats."""
    report, add, scores, finetuned = c.report, c.add, c.scores, c.finetuned
    guess = report.get("guess")
    beats = report.get("beats_constant") or {}
    losers = [name for name in scores if name != finetuned and beats.get(name) is False]
    if guess and losers:
        verb = "is" if len(losers) == 1 else "are"
        add(
            "baseline_no_better_than_guessing",
            f"{_upper_first(_join([_model_with_value(report, name, report['baseline'][name]) for name in losers]))} "
            f"{verb} no better than {_constant_phrase(report)}: prompting the base model does not do this "
            "task yet.",
        )


def _tradeoff_flags(c: _Flags, fm: Mapping[str, Any], bm: Mapping[str, Any]) -> None:
    """Numbers: a better worst case with a worse average, or the other way round."""
    add, task = c.add, c.report["task"]
    if task == "numeric" and None not in (fm["max_ae"], bm["max_ae"], fm["mae"], bm["mae"]):
        if fm["max_ae"] < bm["max_ae"] and fm["mae"] > bm["mae"]:
            add(
                "worst_case_better_average_worse",
                f"The fine-tune's worst error is smaller ({format_metric('max_ae', fm['max_ae'])} vs "
                f"{format_metric('max_ae', bm['max_ae'])}) but its average error is larger ({format_metric('mae', fm['mae'])} vs "
                f"{format_metric('mae', bm['mae'])}): fixing outliers is not a better average.",
            )
        elif fm["max_ae"] > bm["max_ae"] and fm["mae"] < bm["mae"]:
            add(
                "average_better_worst_case_worse",
                f"The fine-tune's average error is smaller ({format_metric('mae', fm['mae'])} vs {format_metric('mae', bm['mae'])}) "
                f"but its worst error is larger ({format_metric('max_ae', fm['max_ae'])} vs {format_metric('max_ae', bm['max_ae'])}): "
                "check the worst cases before relying on it.",
            )


def _format_flags(c: _Flags, fm: Mapping[str, Any], bm: Mapping[str, Any], base_phrase: str) -> None:
    """``finetuned_format``, ``format_improved``, ``format_worse``: how often answers had the format."""
    add, task = c.add, c.report["task"]
    fmt = FORMAT_METRIC[task]
    if fmt is not None and fm.get(fmt) is not None and bm.get(fmt) is not None:
        what = {
            "parse_rate": "a number",
            "valid_rate": "a valid JSON object" if task == "json" else "a known label",
        }[fmt]
        if fm[fmt] < FORMAT_FLAG_BELOW:
            add(
                "finetuned_format",
                f"Only {_pct(fm[fmt])} of the fine-tuned model's answers were {what}; "
                "the rest counted as wrong.",
            )
        if fm[fmt] - bm[fmt] >= 0.1:
            message = (
                f"The fine-tune answers with {what} far more often than {base_phrase} "
                f"({_pct(fm[fmt])} vs {_pct(bm[fmt])})."
            )
            if (
                task == "numeric"
                and fm["mae_parsed"] is not None
                and bm["mae_parsed"] is not None
                and fm["mae_parsed"] >= bm["mae_parsed"]
            ):
                message += (
                    f" But counting only answers that were numbers, the fine-tune was not closer "
                    f"(average error "
                    f"{format_metric('mae', fm['mae_parsed'])} vs {format_metric('mae', bm['mae_parsed'])}): "
                    "the gain is format, not accuracy."
                )
            add("format_improved", message)
        elif bm[fmt] - fm[fmt] >= 0.1:
            add(
                "format_worse",
                f"The fine-tune answers with {what} less often than {base_phrase} "
                f"({_pct(fm[fmt])} vs {_pct(bm[fmt])}).",
            )


def _finetune_flags(c: _Flags, fm: Mapping[str, Any]) -> None:
    """``no_better_than_guessing`` and ``same_answer``: a fine-tune that has not learned the task."""
    report, add, finetuned = c.report, c.add, c.finetuned
    finetuned_answers, references = c.finetuned_answers, c.references
    guess = report.get("guess")
    beats = report.get("beats_constant") or {}
    if guess and beats.get(finetuned) is False:
        add(
            "no_better_than_guessing",
            f"{_upper_first(_model_with_value(report, finetuned, fm))} is no better than "
            f"{_constant_phrase(report)}: it has not learned the task.",
        )

    same = _same_answer(finetuned_answers)
    if same is not None and len(finetuned_answers) >= 5:
        answer, count = same
        refs_same = _same_answer(references)
        refs_share = refs_same[1] / len(references) if refs_same and references else 0.0
        # Only odd when the right answers vary: a label set that is 90% one class is another story.
        if count >= 0.8 * len(finetuned_answers) and refs_share < 0.5:
            add(
                "same_answer",
                f"The fine-tuned model gave the same answer ({_short(answer, 60)!r}) to {count} of "
                f"{len(finetuned_answers)} examples, whatever the question: it learned the answer's form, "
                "not the task.",
            )


def _prompting_flag(c: _Flags, fm: Mapping[str, Any], best: str) -> None:
    """``prompting_is_enough``: few-shot prompting does as well (never when the constant answer beats it)."""
    report, add, scores, primary = c.report, c.add, c.scores, c.report["metric"]
    guess = report.get("guess")
    beats = report.get("beats_constant") or {}
    guess_value = guess["metrics"].get(primary) if guess else None
    few = scores.get("few_shot")
    zero = scores.get("zero_shot")
    if (
        report["verdict"] in ("no_significant_difference", "worse")
        and few is not None
        and zero is not None
        and best == "few_shot"
        and _better(primary, few.metrics.get(primary), zero.metrics.get(primary))
        and beats.get("few_shot", guess_value is None)  # never recommend what a constant answer beats
    ):
        few_value, ft_value = few.metrics.get(primary), fm.get(primary)
        if report["verdict"] == "no_significant_difference" and _better(primary, ft_value, few_value):
            # The fine-tune scored higher, but not by more than chance: say exactly that.
            message = (
                f"Putting a few examples in the prompt comes close ({METRIC_NAMES.get(primary, primary)} "
                f"{format_metric(primary, few_value)} vs {format_metric(primary, ft_value)} for the fine-tune), "
                "and the difference could be chance: prompting may be enough here. More eval examples "
                "would tell."
            )
        else:
            message = (
                "Putting a few examples in the prompt already does as well as or better "
                "than fine-tuning here: consider using prompting instead."
            )
        add("prompting_is_enough", message)
