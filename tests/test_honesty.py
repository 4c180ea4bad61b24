"""A verdict that never flatters (engine/evaluate.py): numbers only from answers that are numbers,
the constant-answer reference for every task and every model, the promotion rule, report.md.

Pure functions on fixed answers: no model, no store.
"""

from __future__ import annotations

import json
import random

import pytest

from engine.evaluate import (
    answer_stats,
    beats_constant,
    build_report,
    know_nothing_guess,
    promotion_decision,
    render_markdown,
    render_text,
    score,
    should_promote,
    token_f1,
)

approx = pytest.approx

# What the random builtin:tiny model really answered on examples/prices.jsonl.
GIBBERISH = [
    "189ameragreen 36wou742 94 m",
    "18992ttak his169204 973 252 are 15 259",
    "189bad 18992497atteryummar 68phoneL are 15 259",
    "Model X-200 costs 3 4 5",
]


def _prices(n: int = 30, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.randint(20, 600)}.99" for _ in range(n)]


def _codes(report: dict) -> list[str]:
    return [f["code"] for f in report["flags"]]


# ---------------------------------------------------------------------------------------------
# numbers only from answers that are numbers


def test_gibberish_is_not_a_number_and_costs_the_whole_reference() -> None:
    refs = _prices(8)
    answers = (GIBBERISH * 2)[: len(refs)]
    s = score("numeric", refs, answers)
    # Before: the first digits counted (189, 18992, ...), a 100% parse rate and a made-up error.
    assert s.metrics["parse_rate"] == 0
    assert s.per_example["mae"] == approx([float(r) for r in refs])
    assert s.metrics["mae_parsed"] is None


def test_the_verdict_sentence_shows_the_parse_rate_beside_the_error() -> None:
    refs = _prices(20)
    few = [r if i % 5 else "189ameragreen 36wou742 94 m" for i, r in enumerate(refs)]  # 80% numbers
    fine = list(refs)  # exact, always a number
    report = build_report(refs, {"zero_shot": ["?"] * 20, "few_shot": few, "finetuned": fine})
    assert report["baseline"]["few_shot"]["parse_rate"] == approx(0.8)
    few_mae = report["baseline"]["few_shot"]["mae"]
    assert (
        f"{few_mae:.1f} (numbers in 80% of answers) for the base model prompted with examples"
        in (report["summary"])
    )
    # 100% is not worth saying: the fine-tune's value stands alone.
    assert "0.00 for the fine-tuned model" in report["summary"]
    assert "numbers in 100%" not in report["summary"]


def test_a_rate_just_below_one_never_reads_as_100_percent() -> None:
    refs = [str(100 + i) for i in range(200)]
    few = [*refs[:-1], "no idea"]  # 199 of 200 numbers
    report = build_report(refs, {"few_shot": few, "finetuned": refs})
    assert "numbers in 99% of answers" in report["summary"]


def test_json_and_label_summaries_show_their_valid_rate() -> None:
    refs = ['{"a": 1}'] * 12
    report = build_report(refs, {"few_shot": ['{"a": 1}'] * 6 + ["nope"] * 6, "finetuned": refs})
    assert "(valid JSON in 50% of answers)" in report["summary"]
    # The flag about a baseline below the constant answer keeps "JSON" as written.
    (flag,) = [f["message"] for f in report["flags"] if f["code"] == "baseline_no_better_than_guessing"]
    assert flag.startswith("The base model prompted with examples (fields right 50%, valid JSON in 50%")
    labels = ["yes", "no"] * 10
    report = build_report(labels, {"few_shot": ["maybe"] * 5 + labels[5:], "finetuned": labels})
    assert "(a known label in 75% of answers)" in report["summary"]


# ---------------------------------------------------------------------------------------------
# the constant answer, for every task and every model


def test_the_json_constant_answer_takes_each_fields_most_common_value() -> None:
    refs = [
        '{"team": "billing", "urgent": false, "order": null}',
        '{"team": "bug", "urgent": false}',
        '{"team": "billing", "urgent": true, "order": 17}',
        "not json",  # skipped
    ]
    guess = know_nothing_guess("json", refs)
    # Ties (order: null vs 17) go to the value seen first; keys keep their first-seen order.
    assert json.loads(guess["answer"]) == {"team": "billing", "urgent": False, "order": None}
    assert list(json.loads(guess["answer"])) == ["team", "urgent", "order"]
    assert guess["metrics"] == score("json", refs, [guess["answer"]] * 4).metrics
    assert guess["metrics"]["field_accuracy"] == approx((1 + 1 / 2 + 1 / 3) / 3)


def test_the_text_constant_answer_is_the_medoid_by_token_f1() -> None:
    refs = [
        "Thanks, we have refunded your order.",
        "Thanks, we have refunded the order today.",
        "Your parcel left the warehouse.",
        "Thanks, your order is refunded.",
    ]
    guess = know_nothing_guess("text", refs)
    means = [sum(token_f1(a, b) for b in refs) for a in refs]
    assert guess["answer"] == refs[means.index(max(means))] == refs[0]
    assert guess["metrics"]["token_f1"] == approx(means[0] / len(refs))
    assert guess["rule"].startswith("the reference answer with the most words in common")


def test_every_model_is_compared_with_the_constant_answer() -> None:
    refs = _prices()
    median = sorted(refs, key=float)[(len(refs) - 1) // 2]
    near = [f"{float(r) + (5 if i % 2 else -5):.2f}" for i, r in enumerate(refs)]
    report = build_report(
        refs, {"zero_shot": GIBBERISH * 7 + ["1", "2"], "few_shot": near, "finetuned": near}
    )
    assert report["guess"]["answer"] == median
    assert report["beats_constant"] == {"zero_shot": False, "few_shot": True, "finetuned": True}
    assert report["min_effect"] == report["interval"]["min_effect"]
    # The baseline that does not beat it is named in a flag, with its parse rate.
    (flag,) = [f for f in report["flags"] if f["code"] == "baseline_no_better_than_guessing"]
    assert flag["message"].startswith("The base model on its own (average error ")
    assert "numbers in 7% of answers" in flag["message"] and f"always answering {median!r}" in flag["message"]
    # Both renderings show the row and the comparison.
    text = render_text(report)
    assert f"Always {median!r} (constant answer, no model)" in text and "beats constant" in text


def test_beating_the_constant_needs_the_smallest_change_that_matters() -> None:
    assert beats_constant("mae", 99.0, 100.0, 0.5) is True
    assert beats_constant("mae", 99.8, 100.0, 0.5) is False  # closer, but by less than matters
    assert beats_constant("mae", 100.0, 100.0, 0.0) is False  # a tie is not a win
    assert beats_constant("accuracy", 0.62, 0.6, 0.01) is True
    assert beats_constant("accuracy", None, 0.6) is False
    assert beats_constant("accuracy", 0.1, None) is True


def test_a_baseline_worse_than_the_constant_answer_is_never_recommended() -> None:
    # The bug report: on a price task the verdict said "keep using the baseline" about a few-shot
    # baseline whose error was 154.6, while always answering the typical price gave 131.9.
    rng = random.Random(11)
    refs = _prices(40, seed=11)
    few = [f"{max(1.0, float(r) + rng.choice([-1, 1]) * rng.randint(200, 300)):.2f}" for r in refs]
    fine = [f"{float(r) * 3:.2f}" for r in refs]  # far worse again
    report = build_report(refs, {"zero_shot": GIBBERISH * 10, "few_shot": few, "finetuned": fine})
    guess_mae = report["guess"]["metrics"]["mae"]
    assert report["baseline"]["few_shot"]["mae"] > guess_mae  # the situation of the bug report
    assert report["verdict"] == "worse" and report["best_baseline"] == "few_shot"
    summary = report["summary"]
    assert summary.startswith("Fine-tuning made things worse")
    assert "keep using" not in summary
    assert f"None of the models beats always answering {report['guess']['answer']!r}" in summary
    assert "prompting_is_enough" not in _codes(report)
    assert {"baseline_no_better_than_guessing", "no_better_than_guessing"} <= set(_codes(report))


def test_keep_using_the_baseline_only_when_it_beats_the_constant_answer() -> None:
    refs = _prices(40, seed=12)
    good = [f"{float(r) + 3:.2f}" for r in refs]
    report = build_report(refs, {"few_shot": good, "finetuned": GIBBERISH * 10})
    assert report["verdict"] == "worse"
    assert report["summary"].endswith("so keep using the base model prompted with examples.")
    assert "None of the models" not in report["summary"]


def test_prompting_is_enough_only_when_prompting_beats_the_constant_answer() -> None:
    refs = _prices(40, seed=13)
    rng = random.Random(13)
    # few-shot beats zero-shot, and equals the fine-tune, but guesses worse than the median.
    few = [f"{float(r) + rng.choice([-1, 1]) * 250:.2f}" for r in refs]
    report = build_report(refs, {"zero_shot": GIBBERISH * 10, "few_shot": few, "finetuned": list(few)})
    assert report["beats_constant"]["few_shot"] is False
    assert report["verdict"] == "no_significant_difference"
    assert "prompting_is_enough" not in _codes(report)
    assert "None of the models beats" in report["summary"]


def test_improved_over_the_baselines_is_not_called_help_when_a_constant_beats_it() -> None:
    refs = ["billing"] * 12 + ["bug"] * 8 + ["shipping"] * 6
    report = build_report(
        refs, {"zero_shot": ["zq"] * 26, "few_shot": ["zq"] * 26, "finetuned": ["billing"] * 26}
    )
    assert report["verdict"] == "improved"  # against base models that answer gibberish
    summary = report["summary"]
    assert not summary.startswith("Fine-tuning helped")
    assert summary.startswith("The fine-tuned model did better than the base model")
    assert "None of the models beats always answering 'billing'" in summary


# ---------------------------------------------------------------------------------------------
# never promote a model that has not learned


def _decision(
    refs: list[str], tuned: list[str], base: list[str] | None = None, **kw
) -> tuple[bool, list[str]]:
    base = base if base is not None else ["zq"] * len(refs)
    report = build_report(refs, {"zero_shot": base, "few_shot": base, "finetuned": tuned}, **kw)
    # The decision reads the report alone, so a report read back from JSON decides the same.
    again = promotion_decision(json.loads(json.dumps(report)))
    assert again == promotion_decision(report)
    return again


def test_a_fine_tune_that_learned_the_task_is_promoted() -> None:
    refs = _prices()
    assert _decision(refs, [f"{float(r) + 2:.2f}" for r in refs]) == (True, [])


def test_worse_is_never_promoted() -> None:
    refs = _prices()
    ok, reasons = _decision(refs, GIBBERISH * 7 + ["1", "2"], base=[f"{float(r) + 2:.2f}" for r in refs])
    assert not ok and reasons[0].startswith("it did worse than the base model")
    assert "0% of its answers were a number, so it has not learned the format" not in reasons  # 2 numbers


def test_no_valid_answers_is_not_promoted_even_when_not_worse() -> None:
    refs = ['{"a": 1, "b": "x"}'] * 20
    ok, reasons = _decision(refs, ["{broken"] * 20, base=["nothing"] * 20)
    assert not ok
    assert "0% of its answers were valid JSON, so it has not learned the format" in reasons
    assert should_promote("no_significant_difference") is True  # what the old rule said


def test_empty_answers_are_not_promoted() -> None:
    refs = ["yes", "no"] * 10
    ok, reasons = _decision(refs, [""] * 20, base=["?"] * 20)
    assert not ok and reasons[0] == "all of its answers were empty"
    assert not any("format" in r for r in reasons)  # said once, not twice


def test_one_answer_to_everything_is_not_promoted() -> None:
    refs = _prices()
    ok, reasons = _decision(refs, ["249.99"] * len(refs), base=GIBBERISH * 7 + ["x", "y"])
    assert not ok
    assert "it gave the same answer ('249.99') to every example although the right answers vary" in reasons
    # One answer is fine where the right answer is one answer too.
    ok, reasons = _decision(["42"] * 20, ["42"] * 20, base=["7"] * 20)
    assert ok, reasons


def test_no_better_than_the_constant_answer_is_not_promoted() -> None:
    refs = _prices(40)
    rng = random.Random(2)
    guesses = [f"{rng.randint(20, 600)}.99" for _ in refs]  # varied numbers, unrelated to the item
    ok, reasons = _decision(refs, guesses, base=GIBBERISH * 10)
    assert not ok and len(reasons) == 1
    assert reasons[0].startswith("it is no better than always answering '")
    assert reasons[0].endswith("so it has not learned the task")


def test_the_promotion_rule_edge_cases() -> None:
    refs = _prices(20)
    report = build_report(refs, {"zero_shot": GIBBERISH * 5, "finetuned": refs})
    assert promotion_decision(report) == (True, [])
    assert promotion_decision({**report, "verdict": None}) == (
        False,
        ["it was not evaluated against a baseline"],
    )
    with pytest.raises(ValueError):
        promotion_decision({**report, "verdict": "great"})
    # A report stored before these checks existed: only what it holds is checked.
    old = {k: v for k, v in report.items() if k not in ("answer_stats", "reference_stats", "beats_constant")}
    assert promotion_decision(old) == (True, [])
    assert promotion_decision({**old, "verdict": "worse"})[0] is False


def test_answer_stats() -> None:
    assert answer_stats(["A", " a ", "", None, "b"]) == {
        "n": 5,
        "empty": 2,
        "distinct": 3,
        "top_answer": "A",
        "top_count": 2,
    }


# ---------------------------------------------------------------------------------------------
# report.md


def test_render_markdown_has_everything_a_team_lead_needs() -> None:
    refs = _prices(30)
    few = [f"{float(r) + 60:.2f}" if i % 4 else "I | don't know [x](y)" for i, r in enumerate(refs)]
    fine = [f"{float(r) + 5:.2f}" for r in refs]
    report = build_report(
        refs, {"zero_shot": GIBBERISH * 7 + ["?", "?"], "few_shot": few, "finetuned": fine}, prompts=refs
    )
    report["k"] = 3
    page = render_markdown(
        report,
        job_id="ft-1234abcd",
        base_model="builtin:tiny",
        dataset="prices.jsonl",
        promotion={"promoted": True, "message": "The fine-tuned model ft-1234abcd is now the default."},
        charts={"loss.png": "Training loss", "eval.png": "Evaluation"},
    )
    assert page.startswith("# Fine-tuning report: job ft-1234abcd\n")
    assert "- Base model: `builtin:tiny`" in page and "- Dataset: `prices.jsonl`" in page
    assert "primary metric: average error (`mae`, lower is better)" in page and "- Eval examples: 30" in page
    assert "- Verdict: **improved**" in page
    assert "## Verdict\n\n" + report["summary"] in page  # the sentence, as the report has it
    table = [line for line in page.splitlines() if line.startswith("|")]
    assert table[0].startswith("| Model | avg error |") and "| numeric |" in table[0]
    assert table[0].endswith("| beats constant |")
    assert len(table) == 2 + 4  # head, rule, the constant answer and three models
    assert all(line.count("|") == table[0].count("|") for line in table)  # no answer breaks a row
    assert "Always" in table[2] and "(constant answer, no model)" in table[2]
    assert "Base model + 3 examples (few-shot)" in table[4] and table[4].endswith("| yes |")
    assert "| 73% |" in table[4]  # the parse rate of the few-shot baseline
    assert "## Notes" in page and "## Promotion" in page
    assert "**The fine-tuned model became this channel's default model.**" in page
    assert "is now the default" in page
    assert "## Fixed by the fine-tune" in page
    assert "![Training loss](loss.png)" in page and "![Evaluation](eval.png)" in page
    assert "## How answers were scored" in page and "counts as a number only when it is one" in page
    assert "The constant answer, " in page


def test_render_markdown_without_a_promotion_derives_it_and_without_charts_links_none() -> None:
    refs = ["yes", "no"] * 10
    report = build_report(refs, {"zero_shot": ["?"] * 20, "finetuned": [""] * 20})
    page = render_markdown(report)
    assert page.startswith("# Fine-tuning report\n")
    assert "**The fine-tuned model was NOT made this channel's default model.**" in page
    assert "- All of its answers were empty" in page
    assert "](" not in page and "## Charts" not in page
    baseline_only = build_report(refs, {"zero_shot": ["?"] * 20})
    assert "## Promotion" not in render_markdown(baseline_only)


def test_a_fine_tune_ahead_of_few_shot_by_chance_is_told_so_not_called_worse() -> None:
    from engine.evaluate import build_report

    references = ["positive", "negative"] * 12
    zero = ["positive"] * 24  # 50%: the constant answer
    few = [r if i < 16 else ("negative" if r == "positive" else "positive") for i, r in enumerate(references)]
    # Wrong on 4 examples few-shot got right, right on the 8 it got wrong: 83% vs 67%, mixed flips.
    tuned = [("negative" if r == "positive" else "positive") if i < 4 else r for i, r in enumerate(references)]
    report = build_report(references, {"zero_shot": zero, "few_shot": few, "finetuned": tuned})
    assert report["verdict"] == "no_significant_difference"
    flag = next(f for f in report["flags"] if f["code"] == "prompting_is_enough")
    assert "comes close" in flag["message"] and "could be chance" in flag["message"]
    assert "67%" in flag["message"] and "83%" in flag["message"]
    assert "better than fine-tuning" not in flag["message"]  # the fine-tune scored higher
