"""engine/evaluate.py: metrics against hand-computed values, task detection, the bootstrap verdict,
flags, flips and the report."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.evaluate import (
    PRIMARY_METRIC,
    build_report,
    decide,
    detect_task,
    is_strict_number,
    know_nothing_guess,
    lcs_length,
    match_label,
    min_effect,
    paired_bootstrap,
    parse_json_object,
    parse_number,
    percentile,
    reference_number,
    reference_units,
    render_text,
    resolve_task,
    rouge_l,
    score,
    should_promote,
    token_f1,
)

approx = pytest.approx

# ---------------------------------------------------------------------------------------------
# reading answers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("349.00", 349.0),
        ("1,299.00", 1299.0),
        ("$349", 349.0),
        ("-12", -12.0),
        ("\u221212", -12.0),  # unicode minus
        ("-$12.50", -12.5),
        ("$-12.50", -12.5),
        ("about 40 dollars", 40.0),
        ("€ 2,500", 2500.0),
        (".5", 0.5),
        ("  +7 ", 7.0),
        ("349.", 349.0),  # a final period
        ("`349`", 349.0),
        ('"349.00"', 349.0),
        ("**$349**", 349.0),
        ("349 USD", 349.0),
        ("USD 349", 349.0),
        ("349 €", 349.0),
        ("12.5%", 12.5),
        ("3 kg", 3.0),
        ("Price: $349", 349.0),
        ("Answer: about 40", 40.0),
        ("Estimate: ~349.", 349.0),
        ("≈ 40", 40.0),
        ("approx. 1,299", 1299.0),
        # The sentence rule: one number in the whole answer, marked as money.
        ("The price is $349.00.", 349.0),
        ("The price is $1,049.99.", 1049.99),
        ("It costs $349, I think.", 349.0),
        ("It is 40 dollars.", 40.0),
    ],
)
def test_parse_number_reads_answers_that_are_a_number(text: str, value: float) -> None:
    assert parse_number(text) == approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "forty",
        "n/a",
        None,
        "$",
        "-",
        "x.5",
        # Digits out of noise are not an answer (the random model's gibberish counted as 189).
        "189ameragreen 36wou742 94 m",
        "18992ttak his169204 973 252 are 15 259",
        "Model X-200 costs 3 4 5",
        "iPhone15",
        "iPhone15 for $20",  # digits glued to letters anywhere: not the sentence rule
        "model X-200, 30 cm",
        "X-200 costs $40",  # two numbers
        "3 for $10",
        "The 55-inch TV costs $499.99 today",
        "10-20",  # a range
        "1,29",  # not a thousands group
        "3,5",  # a decimal comma
        "40k",  # an unknown suffix is not read as 40
        "1e3",  # nor an exponent as 1
        "about40",  # a hedge glued to the number
        "-$-5",  # two signs
        "The answer is 349",  # a sentence whose number is not money
        "349\n\nThis estimate is based on similar products.",
        "349 amer",  # an unknown unit word
        "$" + "9" * 400,  # not finite
    ],
)
def test_parse_number_none_when_the_answer_is_not_a_number(text: str | None) -> None:
    assert parse_number(text) is None


def test_the_references_units_count_for_the_answers() -> None:
    assert parse_number("3 widgets") is None
    assert parse_number("3 widgets", units={"widgets"}) == 3
    assert reference_number("3 widgets") == 3  # a reference may use any unit word
    assert reference_units(["3 widgets", "4 Widgets", "5", "$6"]) == {"widgets"}
    s = score("numeric", ["3 widgets", "5 widgets"], ["4 widgets", "5 gadgets"])
    assert s.metrics["parse_rate"] == 0.5 and s.per_example["mae"] == [1, 5]


@given(
    st.sampled_from(["", "-", "+", "\u2212"]),
    st.sampled_from(["", "$", "€ ", "USD ", "US$"]),
    st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "%", " USD", " widgets", "kg"]),
)
def test_every_strict_reference_is_read(sign: str, currency: str, value, unit: str) -> None:
    # Whatever detect_task calls numeric, reference_number reads (else it would be left out).
    x = float(value)
    for body in (f"{x:.2f}", f"{x:,.2f}", f"{int(x)}"):
        text = sign + currency + body + unit
        if is_strict_number(text):
            expected = (
                -float(body.replace(",", "")) if sign in ("-", "\u2212") else float(body.replace(",", ""))
            )
            assert reference_number(text) == approx(expected), text


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
def test_parse_number_round_trips_currency_formatting(value) -> None:
    x = float(value)
    sign = "-" if x < 0 else ""
    for text in (f"{x:.2f}", f"{x:,.2f}", f"{sign}${abs(x):,.2f}", f"Price: {x:,.2f} USD"):
        assert parse_number(text) == approx(x, abs=1e-6), text


def test_parse_json_object_tolerates_fences_and_chatter() -> None:
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_object('Sure! Here it is: {"a": {"b": 2}} Hope that helps.') == {"a": {"b": 2}}
    assert parse_json_object("[1, 2]") is None
    assert parse_json_object('{"a": 1') is None
    assert parse_json_object("[" * 100000 + "]" * 100000) is None  # deep nesting: no crash
    assert parse_json_object(None) is None


def test_match_label() -> None:
    labels = ["billing", "bug", "not spam", "spam"]
    assert match_label("Billing.", labels) == "billing"
    assert match_label("'bug'", labels) == "bug"
    assert match_label("Category: bug", labels) == "bug"
    assert match_label("billing or bug", labels) is None  # ambiguous counts as wrong
    assert match_label("debugging", labels) is None  # whole words only
    assert match_label("This is not spam", labels) == "not spam"
    assert match_label("spam", labels) == "spam"
    assert match_label(None, labels) is None


# ---------------------------------------------------------------------------------------------
# task detection


def test_detect_task() -> None:
    assert detect_task(["349.00", "$1,299", "-12", "12.5%"]) == "numeric"
    assert detect_task(['{"a": 1}', '```json\n{"a": 2}\n```']) == "json"
    assert detect_task(["billing", "bug", "Bug", "billing.", "feature request", "bug"]) == "label"
    assert detect_task(["The cat sat on the mat.", "A dog ran.", "Birds fly south."]) == "text"
    assert detect_task([]) == "text"
    assert detect_task(["", "  "]) == "text"
    # 0/1 answers are numbers; metric=accuracy forces labels.
    assert detect_task(["0", "1", "1", "0"]) == "numeric"
    # One stray answer in twenty does not change the task (95%)...
    assert detect_task([str(i) for i in range(19)] + ["N/A"]) == "numeric"
    # ...two do.
    assert detect_task([str(i) for i in range(18)] + ["N/A", "unknown"]) != "numeric"
    # Many distinct short answers are text, not labels.
    assert detect_task([f"word{i}" for i in range(30)]) == "text"
    # Long repeated answers are not labels.
    assert detect_task(["this is a rather long repeated answer"] * 6) == "text"
    # JSON arrays are not objects.
    assert detect_task(["[1, 2]", "[3]"]) == "text"


def test_resolve_task() -> None:
    nums = ["1", "2", "3"]
    assert resolve_task(nums) == ("numeric", "mae")
    assert resolve_task(nums, "accuracy") == ("label", "accuracy")
    assert resolve_task(nums, "Numbers") == ("numeric", "mae")
    assert resolve_task(nums, "within-10pct") == ("numeric", "within_10pct")
    assert resolve_task(['{"a": 1}'], "exact_match") == ("json", "exact_match")
    assert resolve_task(["some text here"], "exact_match") == ("text", "exact_match")
    assert resolve_task(["x"], "rouge") == ("text", "rouge_l")
    with pytest.raises(UsageError) as err:
        resolve_task(nums, "bleu")
    assert "mae" in str(err.value) and "token_f1" in str(err.value)


# ---------------------------------------------------------------------------------------------
# metrics, by hand


def test_numeric_metrics_by_hand() -> None:
    refs = ["100", "200", "$1,299.00", "-12"]
    preds = ["110", "no idea", "1,300", "-$10"]
    s = score("numeric", refs, preds)
    # The unparsed answer costs its reference, 200.
    assert s.per_example["mae"] == approx([10, 200, 1, 2])
    m = s.metrics
    assert m["n"] == 4
    assert m["mae"] == approx(213 / 4)
    assert m["median_ae"] == approx(6)
    assert m["p90_ae"] == approx(10 + 0.7 * 190)
    assert m["max_ae"] == approx(200)
    assert m["mape"] == approx((0.1 + 1 + 1 / 1299 + 2 / 12) / 4)
    assert m["within_10pct"] == approx(0.5)  # 10 of 100 is exactly 10%: inside
    assert m["parse_rate"] == approx(0.75)
    assert m["mae_parsed"] == approx(13 / 3)
    assert s.correct == [True, False, True, False]


def test_numeric_all_unparseable_counts_against_the_model() -> None:
    s = score("numeric", ["10", "20", "30"], ["", "n/a", "?"])
    # No number: as if it said 0.
    assert s.per_example["mae"] == [10, 20, 30]
    assert s.metrics["mae"] == approx(20)
    assert s.metrics["parse_rate"] == 0
    assert s.metrics["within_10pct"] == 0
    assert s.metrics["mae_parsed"] is None


def test_numeric_zero_reference_still_penalises_a_missing_number() -> None:
    s = score("numeric", ["0", "10"], ["nothing", "10"])
    assert s.per_example["mae"] == [5, 0]  # median |ref| = 5
    assert s.metrics["mape"] == 0  # the 0 reference is left out of MAPE
    assert s.metrics["within_10pct"] == 0.5


def test_empty_eval_set() -> None:
    for task in ("numeric", "json", "label", "text"):
        m = score(task, [], []).metrics
        assert m["n"] == 0
        assert all(v is None for k, v in m.items() if k not in ("n", "unknown_answers")), (task, m)
    report = build_report([], {"zero_shot": [], "few_shot": [], "finetuned": []}, task="numeric")
    assert report["verdict"] == "no_significant_difference"
    assert report["interval"] is None
    assert [f["code"] for f in report["flags"]] == ["empty_eval"]
    json.dumps(report)
    render_text(report)


def test_json_metrics_by_hand() -> None:
    ref = '{"name": "Ann", "n": 3, "ok": true}'
    preds = [
        '```json\n{"name": "ann", "n": 3.0, "ok": true}\n```',  # all fields (lenient), not exact
        'Sure! {"name": "Ann", "n": "3", "ok": 1}',  # 1 is not true: 2 of 3 fields
        "not json",
        '{"name": "Ann", "n": 3, "ok": true, "extra": 1}',  # extra key: fields right, not exact
        '{"name": "Ann", "n": 3, "ok": true}',
    ]
    s = score("json", [ref] * 5, preds)
    assert s.per_example["field_accuracy"] == approx([1, 2 / 3, 0, 1, 1])
    assert s.metrics["valid_rate"] == approx(4 / 5)
    assert s.metrics["exact_match"] == approx(1 / 5)
    assert s.metrics["field_accuracy"] == approx(11 / 15)
    assert s.details["fields"] == approx({"n": 4 / 5, "name": 4 / 5, "ok": 3 / 5})
    assert s.correct == [True, False, False, True, True]


def test_json_null_and_nested_fields() -> None:
    ref = '{"order_id": null, "items": [1, 2], "who": {"a": "X"}}'
    s = score(
        "json",
        [ref, ref],
        [
            '{"order_id": null, "items": [1, 2], "who": {"a": "x"}}',
            '{"order_id": "null", "items": [2, 1], "who": {"a": "X"}}',
        ],
    )
    assert s.per_example["field_accuracy"] == approx([1, 1 / 3])
    assert s.per_example["exact_match"] == [0, 0]


def test_label_metrics_by_hand() -> None:
    s = score("label", ["billing", "bug", "bug", "other"], ["Billing.", "it's a bug", "BUG", "billing"])
    assert s.metrics["accuracy"] == approx(3 / 4)
    # billing: P 1/2 R 1 F1 2/3; bug: F1 1; other: F1 0.
    assert s.metrics["macro_f1"] == approx((2 / 3 + 1 + 0) / 3)
    assert s.metrics["valid_rate"] == 1
    per = s.details["per_label"]
    assert per["billing"] == approx(
        {"support": 1, "predicted": 2, "correct": 1, "precision": 0.5, "recall": 1.0, "f1": 2 / 3}
    )
    assert per["other"]["predicted"] == 0 and per["other"]["f1"] == 0


def test_label_unknown_answers() -> None:
    s = score("label", ["yes", "no", "yes", "no"], ["maybe", "", "yes", "no"])
    assert s.metrics["accuracy"] == 0.5
    assert s.metrics["valid_rate"] == 0.5
    assert s.metrics["unknown_answers"] == 2


def test_text_metrics_by_hand() -> None:
    assert token_f1("The cat sat", "the cat sat down") == approx(6 / 7)
    assert token_f1("a a b", "a b b") == approx(2 / 3)  # counts are clipped
    assert token_f1("", "") == 1 and token_f1("x", "") == 0 and token_f1("...", "!") == 1
    assert rouge_l("a b c d", "a c b d") == approx(0.75)
    assert rouge_l("a b", "c d") == 0
    s = score("text", ["Hello, world!", "one two"], ["hello world", "three"])
    assert s.metrics["exact_match"] == 0.5
    assert s.metrics["token_f1"] == approx(0.5)
    assert s.metrics["rouge_l"] == approx(0.5)


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([5], 0.9) == 5
    assert percentile([], 0.5) is None
    assert percentile([0, 10], 0.9) == approx(9)


@given(
    st.lists(
        st.tuples(st.integers(-1000, 1000), st.one_of(st.integers(-2000, 2000), st.just(None))),
        min_size=1,
        max_size=40,
    )
)
def test_numeric_per_example_scores_average_to_the_metrics(pairs) -> None:
    refs = [str(r) for r, _ in pairs]
    preds = ["no number" if p is None else f"${p:,}" for _, p in pairs]
    s = score("numeric", refs, preds)
    for name, values in s.per_example.items():
        assert s.metrics[name] == approx(math.fsum(values) / len(values))
    assert all(e >= 0 for e in s.per_example["mae"])
    assert s.metrics["median_ae"] <= s.metrics["p90_ae"] <= s.metrics["max_ae"]


@given(st.text(max_size=40), st.text(max_size=40))
def test_text_scores_are_bounded_and_symmetric(a: str, b: str) -> None:
    for fn in (token_f1, rouge_l):
        value = fn(a, b)
        assert 0 <= value <= 1
        assert value == approx(fn(b, a))
        assert fn(a, a) == 1


# ---------------------------------------------------------------------------------------------
# the verdict


def test_bootstrap_clearly_better_worse_and_indistinguishable() -> None:
    rng = random.Random(7)
    base = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(60)]
    better = [1.0 if rng.random() < 0.9 else 0.0 for _ in range(60)]
    same = list(base)
    rng.shuffle(same)  # same distribution, paired at random
    up = paired_bootstrap(better, base, seed=0)
    assert up.low > 0 and decide(up, higher_is_better=True) == "improved"
    down = paired_bootstrap(base, better, seed=0)
    assert down.high < 0 and decide(down, higher_is_better=True) == "worse"
    flat = paired_bootstrap(same, base, seed=0)
    assert flat.low <= 0 <= flat.high
    assert decide(flat, higher_is_better=True) == "no_significant_difference"
    # Errors: lower is better, so a negative difference is an improvement.
    assert decide(paired_bootstrap([1.0] * 30, [5.0] * 29 + [4.0]), higher_is_better=False) == "improved"


def test_bootstrap_is_seeded_and_ties_give_no_difference() -> None:
    a = [random.Random(1).random() for _ in range(40)]
    b = [x + 0.01 * ((-1) ** i) for i, x in enumerate(a)]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    tie = paired_bootstrap([0.5] * 20, [0.5] * 20)
    assert (tie.low, tie.high, tie.mean_difference) == (0, 0, 0)
    assert decide(tie, higher_is_better=True) == "no_significant_difference"
    with pytest.raises(ValueError):
        paired_bootstrap([], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=30), st.integers(0, 99))
def test_bootstrap_interval_contains_the_mean_and_flips_sign(pairs, seed) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    forward = paired_bootstrap(a, b, seed=seed, resamples=200)
    assert forward.low <= forward.mean_difference + 1e-9 and forward.mean_difference <= forward.high + 1e-9
    backward = paired_bootstrap(b, a, seed=seed, resamples=200)
    assert backward.low == approx(-forward.high) and backward.high == approx(-forward.low)


def test_should_promote() -> None:
    assert should_promote("improved") is True
    assert should_promote("no_significant_difference") is True
    assert should_promote("worse") is False
    assert should_promote(None) is False
    with pytest.raises(ValueError):
        should_promote("great")


# ---------------------------------------------------------------------------------------------
# the report


def _prices(n: int = 50, seed: int = 1) -> tuple[list[str], dict[str, list[str]]]:
    rng = random.Random(seed)
    refs = [f"{rng.randint(10, 500)}.00" for _ in range(n)]
    zero = ["I'm not sure."] * (n // 2) + [str(float(r) + rng.randint(-100, 100)) for r in refs[n // 2 :]]
    few = [f"${float(r) + rng.randint(-60, 60):,.2f}" for r in refs]
    fine = [f"{float(r) + rng.randint(-20, 20):.2f}" for r in refs]
    return refs, {"zero_shot": zero, "few_shot": few, "finetuned": fine}


def test_report_improved_on_prices_is_consistent() -> None:
    refs, preds = _prices()
    report = build_report(refs, preds, prompts=[f"item {i}" for i in range(len(refs))])
    assert report["task"] == "numeric" and report["metric"] == "mae" and report["higher_is_better"] is False
    assert report["best_baseline"] == "few_shot"
    assert report["verdict"] == "improved"
    assert report["interval"]["compared"] == ["finetuned", "few_shot"]
    assert report["interval"]["high"] < 0
    assert set(report["baseline"]) == {"zero_shot", "few_shot"}
    for name, metrics in [*report["baseline"].items(), ("finetuned", report["finetuned"])]:
        assert metrics["mae"] == approx(sum(report["per_example"][name]) / len(refs))
        assert metrics == score("numeric", refs, preds[name]).metrics
    assert report["flips"]["fixed_count"] >= 1
    fixed = report["flips"]["fixed"][0]
    assert fixed["prompt"] == f"item {fixed['index']}" and fixed["reference"] == refs[fixed["index"]]
    assert report["summary"].startswith("Fine-tuning helped")
    json.loads(json.dumps(report))  # JSON-able
    text = render_text(report)
    assert "Fine-tuned model" in text and "Base model (zero-shot)" in text and report["summary"] in text
    assert "as if it said 0" in text  # says how unparsed answers counted


def test_report_worse_and_no_difference() -> None:
    refs, preds = _prices()
    worse = build_report(refs, {**preds, "finetuned": preds["zero_shot"]})
    assert worse["verdict"] == "worse" and worse["summary"].startswith("Fine-tuning made things worse")
    assert worse["interval"]["low"] > 0
    same = build_report(refs, {**preds, "finetuned": list(preds["few_shot"])})
    assert same["verdict"] == "no_significant_difference"
    assert "prompting_is_enough" in [f["code"] for f in same["flags"]]
    assert same["flips"]["fixed_count"] == same["flips"]["broken_count"] == 0
    assert same["summary"].startswith("No difference: the fine-tuned model and the base model prompted")


def test_report_flips_fixed_and_broken() -> None:
    refs = ["billing", "bug", "other", "bug"] * 6
    base = ["billing", "x", "x", "bug"] * 6
    fine = ["billing", "bug", "other", "billing"] * 6
    report = build_report(refs, {"zero_shot": base, "finetuned": fine}, max_flips=2)
    flips = report["flips"]
    assert flips["fixed_count"] == 12 and flips["broken_count"] == 6
    assert [f["index"] for f in flips["fixed"]] == [1, 2]
    assert [f["index"] for f in flips["broken"]] == [3, 7]
    assert flips["broken"][0] | {"prompt": None} == {
        "index": 3,
        "prompt": None,
        "reference": "bug",
        "baseline": "bug",
        "finetuned": "billing",
        "baseline_score": 1.0,
        "finetuned_score": 0.0,
    }


def test_flag_worst_case_better_but_average_worse() -> None:
    refs = ["100"] * 20
    base = ["110"] * 19 + ["1000"]  # mae 54.5, worst 900
    fine = ["170"] * 20  # mae 70, worst 70
    report = build_report(refs, {"few_shot": base, "finetuned": fine})
    assert "worst_case_better_average_worse" in [f["code"] for f in report["flags"]]
    report = build_report(refs, {"few_shot": ["150"] * 20, "finetuned": ["100"] * 19 + ["1000"]})
    assert "average_better_worst_case_worse" in [f["code"] for f in report["flags"]]


def test_flag_format_gain_is_not_accuracy() -> None:
    refs = [str(100 + i) for i in range(30)]
    base = [r if i % 2 else "hmm" for i, r in enumerate(refs)]  # half unparsed, parsed ones exact
    fine = [str(int(r) + 30) for r in refs]  # always a number, always 30 off
    report = build_report(refs, {"zero_shot": base, "finetuned": fine})
    flags = {f["code"]: f["message"] for f in report["flags"]}
    assert "format_improved" in flags and "format, not accuracy" in flags["format_improved"]
    assert "finetuned_format" not in flags


def test_flag_fine_tune_breaks_format() -> None:
    refs = ['{"a": 1}'] * 25
    report = build_report(refs, {"zero_shot": refs, "finetuned": ["{"] * 20 + refs[:5]})
    codes = [f["code"] for f in report["flags"]]
    assert "finetuned_format" in codes and "format_worse" in codes
    assert report["verdict"] == "worse"


def test_small_eval_sets() -> None:
    refs = ["1"] * 5
    tiny = build_report(refs, {"zero_shot": ["9"] * 5, "finetuned": refs})
    assert tiny["verdict"] == "no_significant_difference"  # five wins prove nothing
    assert "too_small_to_tell" in [f["code"] for f in tiny["flags"]]
    assert tiny["summary"].startswith("Too few eval examples")
    small = build_report(["1"] * 15, {"zero_shot": ["9"] * 15, "finetuned": ["1"] * 15})
    assert small["verdict"] == "improved"
    assert "small_eval_set" in [f["code"] for f in small["flags"]]


def test_unscorable_references_are_left_out_and_flagged() -> None:
    refs = [str(i) for i in range(1, 20)] + ["N/A"]
    report = build_report(refs, {"zero_shot": ["0"] * 20, "finetuned": refs})
    assert report["task"] == "numeric" and report["n"] == 19 and report["skipped"] == 1
    assert "unscorable_references" in [f["code"] for f in report["flags"]]


def test_report_without_a_fine_tune_or_a_baseline() -> None:
    refs, preds = _prices(20)
    base_only = build_report(refs, {"zero_shot": preds["zero_shot"], "few_shot": preds["few_shot"]})
    assert base_only["verdict"] is None and base_only["finetuned"] is None
    assert base_only["summary"].startswith("Baseline measured")
    render_text(base_only)
    alone = build_report(refs, {"finetuned": preds["finetuned"]})
    assert alone["verdict"] is None and alone["best_baseline"] is None
    render_text(alone)


def test_metric_option_forces_the_task() -> None:
    refs = ["0", "1", "1", "0"] * 6
    report = build_report(refs, {"zero_shot": ["1"] * 24, "finetuned": refs}, metric="accuracy")
    assert report["task"] == "label" and report["metric"] == "accuracy" and report["higher_is_better"]
    report = build_report(refs, {"zero_shot": ["1"] * 24, "finetuned": refs}, metric="within_10pct")
    assert report["task"] == "numeric" and report["metric"] == "within_10pct"


def test_mismatched_lengths_are_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        build_report(["1", "2"], {"finetuned": ["1"]})


def test_primary_metrics_match_the_design_contract() -> None:
    assert PRIMARY_METRIC == {
        "numeric": "mae",
        "json": "field_accuracy",
        "label": "accuracy",
        "text": "token_f1",
    }


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["numeric", "json", "label", "text"]),
    st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12)), max_size=25),
)
def test_any_answers_give_a_json_able_report(task: str, rows) -> None:
    refs = [r[0] for r in rows]
    report = build_report(
        refs, {"zero_shot": [r[1] for r in rows], "finetuned": [r[2] for r in rows]}, task=task, resamples=100
    )
    json.loads(json.dumps(report))
    assert report["verdict"] in ("improved", "worse", "no_significant_difference")
    assert isinstance(render_text(report), str)


def _lcs_table(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@given(st.lists(st.sampled_from("abcd"), max_size=30), st.lists(st.sampled_from("abcd"), max_size=30))
def test_bit_parallel_lcs_matches_the_textbook_table(a: list[str], b: list[str]) -> None:
    assert lcs_length(a, b) == _lcs_table(a, b)


def test_a_consistent_but_tiny_change_is_no_difference() -> None:
    # What builtin:tiny really did on examples/prices.jsonl: the few-shot baseline never answered
    # with a number, and the fine-tune answered ".99" to everything. That is 0.99 closer on every
    # example, which a paired bootstrap calls significant; it means nothing.
    rng = random.Random(3)
    refs = [f"{rng.randint(20, 900)}.99" for _ in range(32)]
    report = build_report(
        refs,
        {"zero_shot": ["933301zeliv"] * 32, "few_shot": ["`oday estimator"] * 32, "finetuned": [".99"] * 32},
    )
    assert report["interval"]["high"] < 0  # the bootstrap alone would say "improved"
    assert report["interval"]["min_effect"] == approx(0.01 * sum(float(r) for r in refs) / 32)
    assert report["verdict"] == "no_significant_difference"
    assert report["summary"].startswith("No meaningful difference")
    codes = [f["code"] for f in report["flags"]]
    assert {"format_improved", "same_answer", "no_better_than_guessing"} <= set(codes)
    assert "prompting_is_enough" not in codes  # few-shot is no good either
    assert "Always" in render_text(report)  # the know-nothing row is in the table


def test_decide_with_a_minimum_effect() -> None:
    interval = paired_bootstrap([1.0] * 20, [0.995] * 20)
    assert decide(interval, higher_is_better=True) == "improved"
    assert decide(interval, higher_is_better=True, min_effect=0.01) == "no_significant_difference"
    assert min_effect("accuracy", ["a"]) == 0.01
    assert min_effect("mae", ["100", "$300", "n/a"]) == approx(2.0)
    assert min_effect("mae", []) == 0


def test_know_nothing_guess() -> None:
    numeric = know_nothing_guess("numeric", ["3.00", "$1,000", "2.00", "x"])
    assert numeric["answer"] == "3.00"  # the lower median, as written
    assert numeric["metrics"]["mae"] == approx((0 + 997 + 1) / 3)
    label = know_nothing_guess("label", ["Bug", "billing", "bug", "billing", "other"])
    assert label["answer"] == "billing"  # ties go alphabetically
    assert label["metrics"]["accuracy"] == approx(2 / 5)
    assert know_nothing_guess("numeric", []) is None
    assert know_nothing_guess("json", ["not json"]) is None
    assert know_nothing_guess("text", []) is None


def test_same_answer_is_not_flagged_when_the_answers_are_mostly_one_class() -> None:
    refs = ["ham"] * 22 + ["spam"] * 3
    report = build_report(refs, {"zero_shot": ["spam"] * 25, "finetuned": ["ham"] * 25})
    codes = [f["code"] for f in report["flags"]]
    assert "same_answer" not in codes
    assert "no_better_than_guessing" in codes  # always "ham" is exactly the guess
