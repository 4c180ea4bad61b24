"""bot/slack/blocks.py: engine results -> Block Kit within Slack's limits, and the same as text."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.slack import blocks
from engine import Job, JobState, ProgressEvent
from tests.fakes.jobs import slack_job


def _job(state: JobState = JobState.TRAINING, **kw: Any) -> Job:
    return slack_job(state, id="ft-1a2b3c4d", channel="C1", result={"dataset_name": "prices.jsonl"}, **kw)


def _check_limits(message: blocks.Message) -> None:
    assert message.text
    assert len(message.blocks) <= 50
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "actions":
            for el in block["elements"]:
                assert len(el["text"]["text"]) <= 75
    json.dumps(message.blocks)  # serialisable


def _buttons(message: blocks.Message) -> list[dict[str, Any]]:
    return [el for b in message.blocks if b["type"] == "actions" for el in b["elements"]]


REPORT_OK = {
    "ok": True,
    "errors": [],
    "warnings": [{"code": "few", "message": "Only 40 examples", "lines": []}],
    "stats": {"examples": 40, "task": "numeric"},
}
REPORT_BAD = {
    "ok": False,
    "errors": [{"line": i, "code": "json", "message": f"line is not JSON <{i}>"} for i in range(1, 15)],
    "warnings": [],
    "stats": {"examples": 0},
}


def test_usable_report_has_a_start_button_with_the_hash() -> None:
    message = blocks.validation_report(REPORT_OK, name="prices.jsonl", dataset_hash="cd" * 32)
    _check_limits(message)
    (button,) = _buttons(message)
    assert button["action_id"] == blocks.ACTION_START and button["value"] == "cd" * 32
    assert "40" in json.dumps(message.blocks) and "Only 40 examples" in json.dumps(message.blocks)


def test_unusable_report_lists_errors_with_lines_and_no_button() -> None:
    message = blocks.validation_report(REPORT_BAD, name="bad.jsonl", dataset_hash=None)
    _check_limits(message)
    assert not _buttons(message)
    text = json.dumps(message.blocks)
    assert "line 1:" in text and "and 4 more" in text
    assert "&lt;1&gt;" in text  # user text escaped for mrkdwn
    assert "not usable" in message.text


def test_job_card_shows_progress_and_cancel() -> None:
    progress = blocks.JobProgress()
    progress.apply(ProgressEvent("ft-1a2b3c4d", "state", data={"state": "training"}))
    progress.apply(
        ProgressEvent(
            "ft-1a2b3c4d",
            "step",
            step=30,
            total=120,
            epoch=0.75,
            metrics={"loss": 1.234, "learning_rate": 2e-4, "eta_seconds": 95},
        )
    )
    progress.apply(ProgressEvent("ft-1a2b3c4d", "eval", step=30, metrics={"eval_loss": 1.5}))
    message = blocks.job_card(_job(), progress)
    _check_limits(message)
    text = json.dumps(message.blocks, ensure_ascii=False)
    for piece in (
        "training",
        "30/120",
        "25%",
        "1.234",
        "1.5",
        "0.0002",
        "1m 35s",
        "prices.jsonl",
        "builtin:tiny",
    ):
        assert piece in text, piece
    (button,) = _buttons(message)
    assert (
        button["action_id"] == blocks.ACTION_CANCEL
        and button["value"] == "ft-1a2b3c4d"
        and "confirm" in button
    )


def test_queued_card_shows_position_and_final_card_has_no_cancel() -> None:
    queued = blocks.job_card(_job(JobState.QUEUED), queue_position=3)
    assert "position 3" in json.dumps(queued.blocks)
    done = blocks.job_card(_job(JobState.SUCCEEDED, model_id="ft-1a2b3c4d"))
    assert not _buttons(done)
    failed = blocks.job_card(_job(JobState.FAILED, error="out of memory"))
    assert "out of memory" in json.dumps(failed.blocks) and not _buttons(failed)


REPORT = {
    "task": "numeric",
    "metric": "mae",
    "higher_is_better": False,
    "n": 32,
    "baseline": {
        "zero_shot": {"mae": 80.5, "parse_rate": 0.2},
        "few_shot": {"mae": 40.25, "parse_rate": 0.9},
    },
    "finetuned": {"mae": 12.0, "parse_rate": 1.0},
    "best_baseline": "few_shot",
    "verdict": "improved",
    "interval": {"low": -35.0, "high": -20.0, "confidence": 0.95},
    "flags": [{"code": "worst_case", "message": "The worst case got worse while the average improved."}],
    "flips": {
        "rule": "right = within 10% of the reference",
        "fixed": [{"prompt": "Shoes <b>", "reference": "113.99", "baseline": "80", "finetuned": "112.00"}],
        "broken": [],
        "fixed_count": 5,
        "broken_count": 0,
    },
    "summary": "Fine-tuning helped: MAE 12 vs 40.25.",
}


def test_eval_table_verdict_and_flips() -> None:
    table = blocks.eval_table(REPORT)
    _check_limits(table)
    text = table.blocks[0]["text"]["text"]
    assert "base zero-shot" in text and "base few-shot" in text and "fine-tuned" in text
    assert text.index("mae") < text.index("parse_rate")  # the primary metric first
    assert "80.5" in text and "40.2" in text and "12" in text and "lower is better" in text  # as the report writes it
    verdict = blocks.verdict(REPORT)
    assert "Fine-tuning helped" in verdict.text
    assert "worst case got worse" in json.dumps(verdict.blocks)
    flips = blocks.flips(REPORT)
    assert flips is not None and "Fixed by fine-tuning" in json.dumps(flips.blocks)
    assert "Shoes &lt;b&gt;" in json.dumps(flips.blocks)
    assert blocks.flips({"flips": {"fixed": [], "broken": []}}) is None


def test_baseline_table_without_finetuned_column() -> None:
    message = blocks.baseline({"metric": "mae", "zero_shot": {"mae": 3.0}, "few_shot": {"mae": 2.0}})
    text = message.blocks[0]["text"]["text"]
    assert "base few-shot" in text and "fine-tuned" not in text


def test_ask_answer_names_the_model_and_notes_builtin_tiny() -> None:
    answer = {"text": "113.99", "model": "base:builtin:tiny", "base_model": "builtin:tiny", "note": None}
    message = blocks.ask_answer(answer, prompt="How much?", user="U0USER01")
    _check_limits(message)
    text = json.dumps(message.blocks)
    assert (
        "113.99" in text
        and "base:builtin:tiny" in text
        and "tiny demo model" in text
        and "<@U0USER01>" in text
    )
    pair = blocks.ask_answer(
        (
            {"text": "1", "model": "base:x", "base_model": "x"},
            {"text": "2", "model": "ft-1", "base_model": "x"},
        ),
        prompt="q",
    )
    assert "Base model" in json.dumps(pair.blocks) and "ft-1" in json.dumps(pair.blocks)


def test_final_summary_and_help() -> None:
    done = _job(JobState.SUCCEEDED, model_id="ft-1a2b3c4d")
    assert "default" in blocks.final_summary(done, REPORT, promoted=True).text
    assert "cancelled" in blocks.final_summary(_job(JobState.CANCELLED)).text
    for topic in ("finetune", "ask"):
        _check_limits(blocks.help_message(topic))


def test_to_plain_renders_the_same_content_for_a_terminal() -> None:
    message = blocks.validation_report(REPORT_OK, name="prices.jsonl", dataset_hash="cd" * 32)
    text = blocks.to_plain(message)
    assert "Ready: prices.jsonl" in text and "Examples: 40" in text and "/finetune cdcdcdcdcdcd" in text
    assert "*" not in text and ":white_check_mark:" not in text
    card = blocks.to_plain(blocks.job_card(_job()))
    assert "/cancel ft-1a2b3c4d" in card


def test_long_user_text_is_clipped_to_slack_limits() -> None:
    message = blocks.error("x" * 10_000)
    _check_limits(message)


def test_eval_table_and_verdict_show_the_constant_answer() -> None:
    from engine.evaluate import build_report

    refs = ["billing"] * 12 + ["bug"] * 8 + ["shipping"] * 6
    report = build_report(
        refs, {"zero_shot": ["zq"] * 26, "few_shot": ["zq"] * 26, "finetuned": ["billing"] * 26}
    )
    table = blocks.eval_table(report)
    _check_limits(table)
    text = table.blocks[0]["text"]["text"]
    head = next(line for line in text.splitlines() if line.startswith("metric"))
    assert head.index("constant answer") < head.index("base zero-shot") < head.index("fine-tuned")
    beats = next(line for line in text.splitlines() if line.startswith("beats constant"))
    assert beats.split()[2:] == ["NO", "NO", "NO"]  # zero-shot, few-shot, fine-tuned
    assert "always answering `billing` (no model)" in text
    # "improved" against base models that answer gibberish is not "Fine-tuning helped" when
    # always answering the most common label does as well.
    verdict = blocks.verdict(report)
    assert "Fine-tuning helped" not in verdict.text
    assert "not than a constant answer" in verdict.text and ":warning:" in json.dumps(verdict.blocks)
    assert "None of the models beats always answering" in json.dumps(verdict.blocks)
    done = _job(JobState.SUCCEEDED, model_id="ft-1a2b3c4d")
    summary = blocks.final_summary(done, report, promoted=False).text
    assert "fine-tuning helped" not in summary and "not than a constant answer" in summary


def test_the_preflight_says_which_recipe_was_chosen_and_why() -> None:
    data = {
        "tokens": 44160,
        "steps": 87,
        "seconds": 207.0,
        "memory_gb": 2.0,
        "fits": True,
        "plan": {"recipe": "cpu"},
        "notes": ["lr 0.002 for a 135M-parameter model: <small models> need a larger step.", "Batches of 8."],
    }
    message = blocks.preflight(data, "Training: at most 87 steps.")
    text = json.dumps(message.blocks)
    assert "How it trains* (cpu recipe)" in text
    assert "lr 0.002 for a 135M-parameter model" in text and "&lt;small models&gt;" in text  # escaped
    assert "Memory (GB)" in text and "3m 27s" in text
    assert "How it trains" not in json.dumps(blocks.preflight({"tokens": 10}).blocks)


def test_shares_read_as_percentages_and_counts_as_counts() -> None:
    data = {
        "task": "label",
        "metric": "accuracy",
        "n": 28,
        "zero_shot": {"accuracy": 0.0, "valid_rate": 0.0, "unknown_answers": 28},
        "few_shot": {"accuracy": 0.25, "valid_rate": 0.5, "unknown_answers": 14},
    }
    text = blocks.baseline(data).blocks[0]["text"]["text"]
    assert "25%" in text and "50%" in text and "0%" in text and "28" in text
    assert "0.25" not in text


# ----- escaping: nothing the bot did not write can ping or link -------------------------------

HOSTILE = "<!channel> <!here> <@U0EVE001> <#C0OTHER1> <https://evil.example|click> & co"
# Markup the bot did not write: special mentions, links, channels, and any user but the owner.
_RAW = re.compile(r"<(?:!|#|https?:|mailto:|@(?!U0USER01>))")


def _mrkdwn(message: blocks.Message) -> list[str]:
    """The fallback text and every mrkdwn text of ``message`` (what Slack parses for markup;
    plain_text, e.g. a header, is shown as it is)."""
    found = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message.blocks)
    return found


def _raw_markup(message: blocks.Message) -> list[str]:
    return [text for text in _mrkdwn(message) if _RAW.search(text)]


def test_ask_answer_escapes_model_output_in_its_text_and_blocks() -> None:
    answer = {
        "text": f"Sure! {HOSTILE}",
        "model": "ft-<!here>",
        "base_model": "builtin:tiny",
        "note": HOSTILE,
    }
    message = blocks.ask_answer(answer, prompt=HOSTILE, user="U0USER01")
    assert _raw_markup(message) == []
    assert "Sure! &lt;!channel&gt; &lt;!here&gt;" in message.text and "&amp; co" in message.text
    assert "<@U0USER01> asked" in json.dumps(message.blocks)  # the bot's own mention of the asker
    pair = blocks.ask_answer(
        ({"text": HOSTILE, "model": "base:x", "base_model": HOSTILE, "note": HOSTILE}, answer), prompt=HOSTILE
    )
    assert _raw_markup(pair) == []
    # An asker that is not a Slack user id is text, not a mention.
    assert "@&lt;!channel&gt; asked" in json.dumps(
        blocks.ask_answer(answer, prompt="q", user="<!channel>").blocks
    )


def test_every_message_escapes_what_the_bot_did_not_write() -> None:
    failed = _job(JobState.FAILED, error=HOSTILE, base_model=HOSTILE, model_id=HOSTILE)
    report = {
        "ok": False,
        "errors": [{"line": 1, "message": HOSTILE}],
        "warnings": [{"message": HOSTILE, "lines": [2]}],
        "stats": {"examples": 0, "task": HOSTILE},
    }
    evaluation = {
        "task": HOSTILE,
        "metric": HOSTILE,
        "baseline": {"zero_shot": {HOSTILE: 1.0}},
        "finetuned": {HOSTILE: 2.0},
        "guess": {"answer": HOSTILE, "metrics": {HOSTILE: 0.5}},
        "verdict": HOSTILE,
        "verdict_text": HOSTILE,
        "flags": [HOSTILE],
        "flips": {
            "fixed": [{"prompt": HOSTILE, "reference": HOSTILE, "baseline": HOSTILE, "finetuned": HOSTILE}],
            "rule": HOSTILE,
        },
    }
    messages = {
        "validation_report": blocks.validation_report(report, name=HOSTILE),
        "job_card failed": blocks.job_card(failed, dataset_name=HOSTILE),
        "job_card progress": blocks.job_card(_job(), blocks.JobProgress(state=HOSTILE, message=HOSTILE)),
        "jobs_list": blocks.jobs_list([failed]),
        "preflight": blocks.preflight(
            {"examples": 3, "notes": [HOSTILE], "plan": {"recipe": HOSTILE}}, HOSTILE
        ),
        "confirm_cost": blocks.confirm_cost("ft-1", 12.5, HOSTILE),
        "alert": blocks.alert(HOSTILE, "flat_loss"),
        "notice": blocks.notice(HOSTILE),
        "eval_table": blocks.eval_table(evaluation),
        "verdict": blocks.verdict(evaluation),
        "flips": blocks.flips(evaluation),
        "final_summary failed": blocks.final_summary(failed),
        "final_summary succeeded": blocks.final_summary(
            _job(JobState.SUCCEEDED, model_id=HOSTILE), evaluation, promoted=True
        ),
        "error": blocks.error(HOSTILE),
    }
    for name, message in messages.items():
        assert message is not None and _raw_markup(message) == [], name
        assert "&lt;!channel&gt;" in " ".join(_mrkdwn(message)), name  # shown, escaped


def test_only_mentions_the_bot_builds_from_slack_ids_survive() -> None:
    card = blocks.job_card(_job(owner="U0USER01"))
    assert "Started by <@U0USER01>" in json.dumps(card.blocks)
    assert "<@" not in json.dumps(blocks.job_card(_job(owner="<!channel>")).blocks)
    assert "by @you" in blocks.to_plain(blocks.jobs_list([_job(owner="you")]))  # the console's user
    # A promotion alert names who chose the channel's model (the engine builds that mention from a
    # Slack id); anything else in it is escaped, in the text as in the blocks.
    promotion = blocks.alert(f"kept because <@U0OTHER1> chose it; {HOSTILE}", "promotion")
    for text in _mrkdwn(promotion):
        assert "<@U0OTHER1>" in text and "<!" not in text and "<http" not in text and "<#" not in text
    # A warning may quote anything (an OpenAI event message): no mention survives there.
    assert "<@" not in " ".join(_mrkdwn(blocks.alert("<@U0OTHER1> broke it", "flat_loss")))


def test_an_error_that_names_its_lines_is_not_prefixed_again() -> None:
    report = {
        "ok": False,
        "errors": [
            {"line": 121, "code": "invalid_json", "message": "Lines 121, 122 and 3 more (5 lines): not JSON"},
            {"line": 11, "code": "invalid_json", "message": "Line 11: a trailing comma before '}'"},
            {"line": 7, "code": "bad_role", "message": "role 'assistent': did you mean 'assistant'?"},
        ],
        "warnings": [],
        "stats": {"examples": 0},
    }
    text = json.dumps(blocks.validation_report(report, name="d.jsonl").blocks)
    assert "line 121: Lines" not in text and "Line 11" not in text
    assert "Lines 121, 122" in text and "line 11: a trailing comma" in text and "line 7: role" in text
