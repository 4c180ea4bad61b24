"""No upload is dropped without a reply (issue 12): a failed intake can be retried, a file shared
into a second channel is answered there, long and odd names are taken in, and a file id that is
not Slack's is refused before it touches a path or the database.

The real Bolt app on a real Engine (SQLite under tmp_path), driven by signed requests against the
fake Slack Web API, which serves the file downloads. What the app did is read from the fake's call
record and the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from slack_bolt import App, BoltResponse

from bot.settings import BotSettings
from bot.slack.app import create_app, make_client
from bot.slack.progress import JobCards
from engine import Engine, Settings
from tests.fakes.slack_api import LOGIN_PAGE, FakeSlack
from tests.fakes.slack_requests import (
    CHANNEL,
    TEAM,
    USER,
    bot_env,
    event_body,
    file_share_event,
    file_shared_event,
    signed_request,
)

ROOT = Path(__file__).resolve().parent.parent
PRICES = (ROOT / "examples" / "prices.jsonl").read_bytes()
SECOND = "C0CHAN02"


@dataclass
class Harness:
    slack: FakeSlack
    engine: Engine
    app: App
    work_dir: Path

    def event(self, event: dict[str, Any], **kw: Any) -> BoltResponse:
        response = self.app.dispatch(signed_request(event_body(event, **kw)))
        assert response.status == 200
        return response

    def share(self, file: dict[str, Any], *, channel: str = CHANNEL, ts: str, **kw: Any) -> None:
        """``file`` shared in ``channel`` by a message with timestamp ``ts``."""
        self.event(file_share_event(file, channel=channel, ts=ts), **kw)

    def reports(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The validation reports posted (chat.postMessage args), optionally in one channel."""
        return self.slack.messages(channel)


@pytest.fixture
def h(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    with FakeSlack() as slack:
        bot_settings = BotSettings.from_env(bot_env(slack, FTBOT_MAX_UPLOAD_MB="1"))
        client = make_client(bot_settings)
        engine = Engine(settings)
        cards = JobCards(client, engine, min_interval=0.0)
        engine.subscribe(cards.sink_for)
        work_dir = tmp_path / "uploads"
        app = create_app(engine, bot_settings, client=client, cards=cards, work_dir=work_dir)
        try:
            yield Harness(slack, engine, app, work_dir)
        finally:
            engine.close()


def _quiet(seconds: float = 0.5) -> None:
    """Give background work a moment before asserting that nothing more happened."""
    time.sleep(seconds)


def _mrkdwn(args: dict[str, Any]) -> str:
    """Every mrkdwn text of a message (what Slack parses for mentions and links)."""
    texts = [args.get("text") or ""]
    for block in args.get("blocks") or []:
        if block.get("type") == "header":
            continue  # plain_text: Slack does not parse it
        texts.append(json.dumps(block))
    return "\n".join(texts)


# ----- a failed intake can be retried ----------------------------------------------------------


def test_a_failed_download_lets_the_same_file_be_shared_again(h: Harness) -> None:
    # Slack serves its sign-in page once (a download that failed), then the file itself.
    file = h.slack.add_file(LOGIN_PAGE, name="prices.jsonl", file_id="F0RETRY01")
    h.share(file, ts="1699990000.000100")
    (refusal,) = h.slack.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == USER and "share the file again" in refusal.args["text"]
    assert h.engine.dataset_by_source("F0RETRY01", team=TEAM) is None

    h.slack.add_file(PRICES, name="prices.jsonl", file_id="F0RETRY01")
    h.share(file, ts="1699990100.000100")  # shared again: the same file id, a new message
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert reply.args["thread_ts"] == "1699990100.000100" and "prices.jsonl: usable" in reply.args["text"]
    record = h.engine.dataset_by_source("F0RETRY01", team=TEAM)
    assert record is not None and record.usable and record.channel == CHANNEL
    assert len(h.slack.downloads) == 2


def test_a_failed_files_info_lets_a_later_delivery_through(h: Harness) -> None:
    file = h.slack.add_file(PRICES, name="prices.jsonl")
    h.slack.files[file["id"]]["shares"] = {"public": {CHANNEL: [{"ts": "1699990500.000200"}]}}
    h.slack.fail("files.info", "internal_error")
    h.event(file_shared_event(file["id"]))  # file_shared alone: the bot must ask files.info
    (refusal,) = h.slack.wait_for("chat.postEphemeral")
    assert "share the file again" in refusal.args["text"]

    h.slack.fail("files.info", "")  # Slack answers again
    h.event(file_shared_event(file["id"]))  # delivered again (another event id)
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert reply.args["thread_ts"] == "1699990500.000200" and "usable" in reply.args["text"]


def test_event_retries_and_double_announcements_stay_deduplicated(h: Harness) -> None:
    file = h.slack.add_file(PRICES, name="prices.jsonl")
    h.share(file, ts="1699990000.000100", event_id="Ev0UPRETRY1")
    h.share(file, ts="1699990000.000100", event_id="Ev0UPRETRY1")  # Slack's retry: same event id
    h.event(file_shared_event(file["id"]))  # the same upload announced as file_shared
    h.slack.wait_for("chat.postMessage")
    _quiet()
    assert len(h.reports()) == 1 and len(h.slack.downloads) == 1
    assert len(h.engine.store.datasets(team=TEAM)) == 1


# ----- one file, many channels -----------------------------------------------------------------


def test_a_file_shared_into_a_second_channel_gets_its_own_reply_there(h: Harness) -> None:
    file = h.slack.add_file(PRICES, name="prices.jsonl")
    h.share(file, channel=CHANNEL, ts="1699990000.000100")
    h.share(file, channel=SECOND, ts="1699990200.000300")  # at once: both intakes may overlap
    h.slack.wait_for("chat.postMessage", count=2)
    first, second = h.reports(CHANNEL), h.reports(SECOND)
    assert len(first) == 1 and first[0]["thread_ts"] == "1699990000.000100"
    assert len(second) == 1 and second[0]["thread_ts"] == "1699990200.000300"
    assert "prices.jsonl: usable" in second[0]["text"] and "start_finetune" in json.dumps(second[0]["blocks"])

    # One dataset (content-addressed, stored once), one record per channel.
    records = {r.channel: r for r in h.engine.store.datasets(team=TEAM)}
    assert set(records) == {CHANNEL, SECOND}
    assert records[CHANNEL].hash == records[SECOND].hash
    assert records[SECOND].path.is_file()
    assert [p.name for p in records[SECOND].path.parent.iterdir()] == [f"{records[SECOND].hash}.jsonl"]
    latest = h.engine.latest_dataset(TEAM, SECOND)
    assert latest is not None and latest.hash == records[SECOND].hash

    # Repeated deliveries in the second channel are still duplicates.
    h.share(file, channel=SECOND, ts="1699990200.000300")
    h.event(file_shared_event(file["id"], channel=SECOND))
    _quiet()
    assert len(h.reports()) == 2 and len(h.engine.store.datasets(team=TEAM)) == 2


# ----- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "customer support examples for the new returns policy, reviewed by the team in march "
        "and april, final version 3 (copy).jsonl",
        "....jsonl",
        "<!here> prices & <https://evil.example|click>.JSONL",
    ],
    ids=["long", "dots", "markup"],
)
def test_long_and_odd_names_are_taken_in_and_shown_escaped(h: Harness, name: str) -> None:
    assert len(name) > 100 or not name[0].isalnum()
    file = h.slack.add_file(PRICES, name=name)
    # Slack's download URLs carry the name percent-encoded (the fake puts it in as it is).
    for key in ("url_private", "url_private_download"):
        file[key] = file[key].split(name)[0] + quote(name, safe="")
    h.share(file, ts="1699990000.000100")
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert reply.args["thread_ts"] == "1699990000.000100"
    shown = _mrkdwn(reply.args)
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in reply.args["text"] and escaped in shown  # the original name, escaped
    assert "<!here>" not in shown and "<https://evil" not in shown
    assert "usable" in reply.args["text"]

    record = h.engine.dataset_by_source(file["id"], team=TEAM)
    assert record is not None and record.usable
    # The stored name is derived: a .jsonl, at most 100 characters, nothing but safe characters.
    assert record.name.lower().endswith(".jsonl") and len(record.name) <= 100
    assert all(c.isalnum() or c in "-_. " for c in record.name) and not record.name.startswith(".")


# ----- file ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["../F0EVIL", "f0lower", "F0A;DROP", "F" * 65])
def test_a_file_id_not_in_slacks_format_is_refused_and_never_used(h: Harness, bad_id: str) -> None:
    file = {**h.slack.add_file(PRICES, name="prices.jsonl"), "id": bad_id}  # a downloadable file
    h.share(file, ts="1699990000.000100")
    (refusal,) = h.slack.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == USER and "not in Slack's format" in refusal.args["text"]
    assert bad_id not in refusal.args["text"]

    h.event(file_shared_event(bad_id))
    h.slack.wait_for("chat.postEphemeral", count=2)
    _quiet()
    assert h.slack.downloads == [] and h.slack.calls_to("files.info") == []
    assert h.slack.calls_to("chat.postMessage") == []
    assert h.engine.store.datasets(team=TEAM) == []
    assert not h.work_dir.exists() or list(h.work_dir.iterdir()) == []


# ----- nothing is left behind ------------------------------------------------------------------


def test_the_app_leaves_no_temporary_directory_behind(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start used to leave an empty ``ftbot-uploads-*`` directory in /tmp; now each download
    has a directory of its own, removed with it."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the standard library puts them
    with FakeSlack() as slack:
        bot_settings = BotSettings.from_env(bot_env(slack))
        client = make_client(bot_settings)
        engine = Engine(settings)
        cards = JobCards(client, engine, min_interval=0.0)
        engine.subscribe(cards.sink_for)
        try:
            app = create_app(engine, bot_settings, client=client, cards=cards)
            file = slack.add_file(PRICES, name="prices.jsonl")
            response = app.dispatch(
                signed_request(event_body(file_share_event(file, channel=CHANNEL, ts="1699990900.000100")))
            )
            assert response.status == 200
            (reply,) = slack.wait_for("chat.postMessage")
            assert "usable" in reply.args["text"]
        finally:
            engine.close()
    assert list(scratch.iterdir()) == []
