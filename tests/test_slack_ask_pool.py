"""/ask cannot starve the other commands (issue 12): questions run on a bounded pool of their own,
so `/finetune list`, `/finetune status`, uploads and buttons are answered within seconds while a
hundred questions are being generated, and a question beyond the pool's capacity gets "the model
is busy" at once.

Nothing of ours is faked: the real Bolt app on a real Engine (SQLite under tmp_path) and real
generation with builtin:tiny, made slow by a large token limit and distinct questions (the model
server batches them, so each batch runs to the limit); signed requests; the fake Slack Web API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from slack_bolt import App, BoltResponse

from bot.settings import BotSettings
from bot.slack.app import create_app, make_client
from bot.slack.progress import JobCards
from engine import Engine, Settings
from tests.fakes.slack_api import Call, FakeSlack
from tests.fakes.slack_requests import (
    CHANNEL,
    FORM,
    TEAM,
    USER,
    action_body,
    bot_env,
    command_body,
    event_body,
    file_share_event,
    signed_request,
)
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
PRICES = (ROOT / "examples" / "prices.jsonl").read_bytes()
QUESTIONS = 100
TOKENS = 1024  # FTBOT_ASK_MAX_NEW_TOKENS here: every answer may run this long
FAST = 5.0  # seconds: "answered within a few seconds"


@dataclass
class Harness:
    slack: FakeSlack
    engine: Engine
    app: App

    def dispatch(self, body: str, *, content_type: str = FORM) -> BoltResponse:
        response = self.app.dispatch(signed_request(body, content_type=content_type))
        assert response.status == 200
        return response

    def command(self, command: str, text: str = "") -> BoltResponse:
        return self.dispatch(command_body(command, text))

    def timed(self, method: str, send: Any, where: Any, *, timeout: float = FAST) -> None:
        """``send()``, then wait for a ``method`` call matching ``where`` made after it: it must
        reach Slack within ``timeout`` seconds."""
        started = time.monotonic()
        send()
        self.slack.wait_for(method, timeout=timeout, where=lambda c: c.at >= started and where(c))


def _answered(call: Call) -> bool:
    return "Answered by" in json.dumps(call.args.get("blocks") or [])


def _answers(slack: FakeSlack) -> int:
    shown = [c for c in slack.calls_to("chat.postMessage") + slack.calls_to("chat.update") if _answered(c)]
    return len(shown)


@pytest.fixture
def h(settings: Settings) -> Iterator[Harness]:
    with FakeSlack() as slack:
        bot_settings = BotSettings.from_env(bot_env(slack))
        client = make_client(bot_settings)
        engine = Engine(replace(settings, ask_max_new_tokens=TOKENS))
        cards = JobCards(client, engine, min_interval=0.0)
        engine.subscribe(cards.sink_for)
        app = create_app(engine, bot_settings, client=client, cards=cards)
        try:
            yield Harness(slack, engine, app)
        finally:
            engine.close()


def _text(call: Call) -> str:
    return (call.args.get("text") or "") + json.dumps(call.args.get("blocks") or [])


def test_a_hundred_questions_do_not_starve_the_other_commands(h: Harness) -> None:
    # A dataset first, for the Start button below.
    h.dispatch(
        event_body(file_share_event(h.slack.add_file(PRICES, name="prices.jsonl"))),
        content_type="application/json",
    )
    h.slack.wait_for("chat.postMessage")
    record = h.engine.latest_dataset(TEAM, CHANNEL)
    assert record is not None

    acks = [
        h.command("/ask", f"question number {i}: what is the price of item {i * 7919}?")
        for i in range(QUESTIONS)
    ]
    accepted = [r for r in acks if "Thinking about" in r.body]

    # Meanwhile, every other command is answered within seconds (the first right away, the
    # others below).
    h.timed(
        "chat.postEphemeral",
        lambda: h.command("/finetune", "list"),
        lambda c: "No fine-tune jobs" in _text(c),
    )

    # A mention when the pool is full gets the busy answer too, privately.
    mention = {
        "type": "app_mention",
        "user": USER,
        "channel": CHANNEL,
        "text": "<@UBOT0001> hi",
        "ts": "1699991000.000100",
    }
    h.dispatch(event_body(mention), content_type="application/json")
    wait_for(
        lambda: any("The model is busy" in _text(c) for c in h.slack.calls_to("chat.postEphemeral")),
        FAST,
        "the busy answer to a mention",
    )

    h.timed(
        "chat.postEphemeral",
        lambda: h.command("/finetune", "status"),
        lambda c: "No fine-tune jobs" in _text(c),
    )
    h.timed(
        "chat.postMessage",
        lambda: h.dispatch(
            event_body(file_share_event(h.slack.add_file(PRICES, name="more.jsonl"), ts="1699990900.000100")),
            content_type="application/json",
        ),
        lambda c: "more.jsonl: usable" in (c.args.get("text") or ""),
    )
    h.timed(
        "chat.postMessage",
        lambda: h.dispatch(action_body("start_finetune", record.hash)),
        lambda c: "cancel_job" in json.dumps(c.args.get("blocks") or []),
    )
    assert _answers(h.slack) < len(accepted), "all of that happened while questions were generated"

    # The questions beyond the pool's capacity were told at once that the model is busy.
    busy = [r for r in acks if "The model is busy" in r.body]
    assert len(accepted) + len(busy) == QUESTIONS
    assert accepted, "some questions must be taken"
    assert len(busy) >= QUESTIONS // 2, "questions beyond the pool's capacity get the busy answer"
    assert all("waiting" in r.body and "try again in a minute" in r.body for r in busy)

    # Every question taken is answered in the end (and the test leaves no generation running).
    wait_for(lambda: _answers(h.slack) >= len(accepted), 300, "the accepted questions' answers")
