"""bot/progress_view.py: the one mapping from progress events to what a person reads, as the Slack
thread, the console and `ftbot run` use it."""

from __future__ import annotations

from bot.dispatch import ROUTES, Handler
from bot.progress_view import (
    LIVE_KINDS,
    chart_title,
    console_output,
    report_messages,
    terminal_lines,
    terminal_step,
    thread_messages,
)
from bot.slack.blockkit import Message
from engine import ProgressEvent


def _event(kind: str, message: str = "", **kw: object) -> ProgressEvent:
    return ProgressEvent(job_id="ft-1", kind=kind, message=message, **kw)  # type: ignore[arg-type]


def test_a_preflight_that_needs_a_confirmation_asks_in_slack_only() -> None:
    event = _event("preflight", "Estimate", data={"confirmation_required": True, "cost_usd": 12.5})
    slack = thread_messages(event, set(), "ft-1")
    assert [m.text for m in slack] == [
        "Pre-flight: Estimate",
        "This job would cost about $12.50 on OpenAI. Start it?",
    ]
    console = console_output(event, set(), "ft-1")
    assert [m.text for m in console if isinstance(m, Message)] == ["Pre-flight: Estimate"]


def test_caveats_shown_by_the_verdict_are_not_repeated_as_alerts() -> None:
    shown: set[str] = set()
    report = {"verdict": "improved", "flags": [{"message": "few examples"}]}
    assert len(report_messages(_event("evaluation", data=report), shown)) == 2
    assert shown == {"few examples"}
    assert report_messages(_event("alert", "few examples"), shown) == []
    assert [m.text for m in report_messages(_event("alert", "other"), shown)] == ["Alert: other"]


def test_lines_for_the_console_and_the_terminal() -> None:
    state = _event("state", "validating data", data={"state": "validating", "hint": "wait"})
    assert console_output(state, set(), "ft-1") == ["[ft-1] validating: validating data"]
    assert terminal_lines(state) == ["[validating] validating data", "  hint: wait"]
    chart = _event("artifact", "Loss chart", data={"kind": "loss_chart", "path": "/x.png"})
    assert console_output(chart, set(), "ft-1") == ["Chart (loss_chart): /x.png"]
    assert terminal_lines(chart) == ["  Loss chart /x.png"]
    assert chart_title("loss_chart") == "Training loss" and chart_title("eval_chart") == "Evaluation"
    assert chart_title("other_chart") == "other chart"
    text, fraction = terminal_step(_event("step", step=5, total=10, metrics={"loss": 1.5}))
    assert fraction == 0.5 and text == "  training [############------------] step 5/10  loss 1.5000"
    assert {"step", "eval"} == LIVE_KINDS


def test_every_request_has_a_handler_method() -> None:
    assert set(ROUTES.values()) == {name for name in vars(Handler) if name.startswith("on_")}
