"""No user input can ping a channel or forge a link in what the bot posts: the real Bolt app with
a real Engine (builtin:tiny), driven by signed requests, against the fake Slack Web API. Every
``text`` (the notification fallback, which Slack parses as well) and every block the bot posts,
updates or answers with is scanned for raw markup; only the bot's own mention of the person who
asked (``<@U0USER01>``, a Slack id from the signed request) may remain."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from slack_bolt import App, BoltResponse

from bot.settings import BotSettings
from bot.slack.app import create_app, make_client
from bot.slack.progress import JobCards
from engine import Engine, JobState, Settings
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import (
    FORM,
    USER,
    bot_env,
    command_body,
    event_body,
    file_share_event,
    signed_request,
)
from tests.fakes.waiting import wait_for

# `<!channel>`, `<!here>`, `<!subteam^…>`, `<#C…>`, `<https://…|…>`, `<mailto:…>`, and any user
# mention but the asker's.
RAW_MARKUP = re.compile(rf"<(?:!|#|https?:|mailto:|@(?!{USER}>))")
POSTING = ("chat.postMessage", "chat.update", "chat.postEphemeral")
HOSTILE = "<!channel> <!here> <@U0EVE001> <https://evil.example|click here>"


@dataclass
class Bot:
    slack: FakeSlack
    engine: Engine
    app: App

    def command(self, command: str, text: str) -> BoltResponse:
        return self.app.dispatch(signed_request(command_body(command, text), content_type=FORM))

    def posted(self) -> list[str]:
        """Every text and block the bot sent to Slack, as JSON strings."""
        return [
            json.dumps({"text": c.args.get("text"), "blocks": c.args.get("blocks")})
            for c in self.slack.calls
            if c.method in POSTING
        ]


def raw_markup(texts: list[str]) -> list[str]:
    """The texts that hold markup the bot did not write itself."""
    return [t for t in texts if RAW_MARKUP.search(t)]


@contextlib.contextmanager
def running_bot(settings: Settings, **env: str) -> Iterator[Bot]:
    """The app and its engine (not started) against a fresh fake Slack; ``env`` as bot_env's."""
    with FakeSlack() as slack:
        bot_settings = BotSettings.from_env(bot_env(slack, **env))
        client = make_client(bot_settings)
        engine = Engine(settings)
        cards = JobCards(client, engine, min_interval=0.0)
        engine.subscribe(cards.sink_for)
        app = create_app(engine, bot_settings, client=client, cards=cards)
        try:
            yield Bot(slack, engine, app)
        finally:
            engine.close()


@pytest.fixture
def bot(settings: Settings) -> Iterator[Bot]:
    with running_bot(settings) as running:
        yield running


def _upload(bot: Bot, content: bytes, name: str = "prices.jsonl") -> None:
    file = bot.slack.add_file(content, name=name, user=USER)
    assert bot.app.dispatch(signed_request(event_body(file_share_event(file, user=USER)))).status == 200


def _examples(n: int = 40) -> bytes:
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Price of item {i}?"},
                {"role": "assistant", "content": f"{i}.99"},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_a_base_model_named_like_a_mention_pings_no_one(settings: Settings) -> None:
    """`/finetune base=<!channel>` by an admin (who may name any base model): the job fails on
    that base model, and the failure broadcast to the channel quotes it escaped, in its text as
    in its blocks."""
    with running_bot(settings, FTBOT_ADMINS=USER) as bot:
        _check_a_failed_job_on_a_hostile_base(bot)


def _check_a_failed_job_on_a_hostile_base(bot: Bot) -> None:
    _upload(bot, _examples())
    bot.slack.wait_for("chat.postMessage")
    bot.engine.start()
    response = bot.command("/finetune", "base=<!channel>")
    assert response.status == 200 and not raw_markup([response.body])
    wait_for(lambda: bool(bot.engine.jobs(team="T0001")), 30.0, "the job")
    (job,) = bot.engine.jobs(team="T0001")
    wait_for(lambda: bot.engine.job(job.id).is_final, 120.0, "the job to end")
    assert bot.engine.job(job.id).state == JobState.FAILED
    (summary,) = bot.slack.wait_for(
        "chat.postMessage", timeout=30.0, where=lambda c: bool(c.args.get("reply_broadcast"))
    )
    assert "&lt;!channel&gt;" in summary.args["text"]  # still says what was typed
    assert raw_markup(bot.posted()) == []
    assert f"<@{USER}>" in "".join(bot.posted())  # the bot's own mention of the owner stays


def test_option_values_dataset_names_and_file_contents_are_quoted_escaped(bot: Bot) -> None:
    _upload(bot, _examples())
    # An upload whose problems quote its own lines.
    bad = json.dumps({"messages": [{"role": "<!channel>", "content": "<https://evil.example|x>"}]})
    _upload(bot, (bad + "\n").encode() * 3 + b"<!here> not json\n", name="hostile.jsonl")
    bot.slack.wait_for("chat.postMessage", count=2)
    # Refused at the ack (the HTTP response's text) or afterwards (posted privately, one each).
    acks = [
        bot.command("/finetune", f"{HOSTILE} epochs=1").body,  # at the ack
        bot.command("/finetune", "base=<!channel>").body,  # not an admin's to choose
        bot.command("/finetune", "epochs=<!here> lr=<https://evil.example|click>").body,
        bot.command("/finetune", "<!channel>").body,  # no such dataset
        bot.command("/finetune", "use <!channel>").body,
        bot.command("/ask", f"model=<!here> {HOSTILE}").body,
    ]
    # (The ack of `cancel JOB`, "Cancelling JOB…", is written by bot/slack/app.py, not blocks.py,
    # and is left out here; its error is posted privately.)
    bot.command("/finetune", "cancel <!channel>")
    wait_for(lambda: len(bot.posted()) == 2 + 6, 30.0, "a private error for each command but the first")
    assert raw_markup(acks) == [], acks
    posted = bot.posted()
    assert raw_markup(posted) == [], posted
    assert sum("&lt;!" in t for t in posted) == 7  # the values are shown, escaped
