"""The Bolt app (bot/slack/app.py) with a real Engine, driven by signed requests, against the fake
Slack Web API. No Slack, no mocks: what the app does is read from the fake's call record."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slack_bolt import App, BoltResponse
from slack_bolt.request import BoltRequest

from bot.settings import BotSettings
from bot.slack.app import create_app, make_client
from bot.slack.progress import JobCards
from engine import Engine, JobState, Settings, UsageError
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import (
    FORM,
    action_body,
    bot_env,
    command_body,
    event_body,
    file_share_event,
    file_shared_event,
    signed_request,
)
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
PRICES = (ROOT / "examples" / "prices.jsonl").read_bytes()
OWNER, OTHER, ADMIN, STRANGER = "U0USER01", "U0OTHER1", "U0ADMIN1", "U0EVE001"


@dataclass
class Harness:
    slack: FakeSlack
    engine: Engine
    app: App
    settings: BotSettings

    def dispatch(self, body: str, *, content_type: str = "application/json", **kw: Any) -> BoltResponse:
        return self.app.dispatch(signed_request(body, content_type=content_type, **kw))

    def command(self, command: str, text: str = "", **kw: Any) -> BoltResponse:
        return self.dispatch(command_body(command, text, **kw), content_type=FORM)

    def action(self, action_id: str, value: str, **kw: Any) -> BoltResponse:
        return self.dispatch(action_body(action_id, value, **kw), content_type=FORM)

    def upload(
        self, content: bytes = PRICES, *, name: str = "prices.jsonl", user: str = OWNER, **kw: Any
    ) -> dict[str, Any]:
        file = self.slack.add_file(content, name=name, user=user, **kw)
        response = self.dispatch(event_body(file_share_event(file, user=user)))
        assert response.status == 200
        return file

    def ephemerals(self, user: str | None = None) -> list[str]:
        return [
            c.args["text"]
            for c in self.slack.calls_to("chat.postEphemeral")
            if user is None or c.args["user"] == user
        ]


def make_harness(settings: Settings, slack: FakeSlack, **env: str) -> Harness:
    bot_settings = BotSettings.from_env(
        bot_env(
            slack,
            FTBOT_ALLOWED_USERS=f"{OWNER},{OTHER}",
            FTBOT_ADMINS=ADMIN,
            FTBOT_MAX_UPLOAD_MB="1",
            **env,
        )
    )
    client = make_client(bot_settings)
    engine = Engine(settings)
    cards = JobCards(client, engine, min_interval=0.0)
    engine.subscribe(cards.sink_for)
    app = create_app(engine, bot_settings, client=client, cards=cards)
    return Harness(slack, engine, app, bot_settings)


@pytest.fixture
def h(settings: Settings) -> Iterator[Harness]:
    with FakeSlack() as slack:
        harness = make_harness(settings, slack)
        yield harness
        harness.engine.close()


def _quiet(seconds: float = 0.4) -> None:
    """Give background work a moment before asserting that nothing happened."""
    time.sleep(seconds)


def _blocks_text(call_args: dict[str, Any]) -> str:
    return json.dumps(call_args.get("blocks") or [])


# ----- verification --------------------------------------------------------------------------


def test_bad_signature_and_stale_timestamp_are_refused_and_nothing_happens(h: Harness) -> None:
    file = h.slack.add_file(PRICES)
    body = event_body(file_share_event(file))
    assert h.dispatch(body, secret="another-secret-123").status == 401
    assert h.dispatch(body, timestamp=int(time.time()) - 6 * 60).status == 401  # stale
    assert h.dispatch(command_body("/finetune", ""), secret="x" * 32, content_type=FORM).status == 401
    _quiet()
    assert h.slack.downloads == []
    assert set(h.slack.methods()) <= {"auth.test"}
    assert h.engine.latest_dataset("T0001", "C0CHAN01") is None
    assert h.engine.jobs() == []


def test_url_verification_and_unhandled_events_get_200(h: Harness) -> None:
    challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"})
    response = h.dispatch(challenge)
    assert response.status == 200 and "abc123" in response.body
    for event in (
        {"type": "message", "subtype": "message_changed", "channel": "C0CHAN01"},
        {"type": "message", "channel": "C0CHAN01", "user": OWNER, "text": "hello", "ts": "1.2"},
        {"type": "reaction_added", "user": OWNER, "reaction": "tada"},
        {"type": "channel_created", "channel": {"id": "C9"}},
    ):
        assert h.dispatch(event_body(event)).status == 200, event
    assert h.action("some_future_button", "x").status == 200


# ----- uploads -------------------------------------------------------------------------------


def test_upload_gets_a_validation_report_in_its_thread(h: Harness) -> None:
    h.upload()
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert reply.args["channel"] == "C0CHAN01" and reply.args["thread_ts"] == "1699990000.000100"
    assert "prices.jsonl: usable" in reply.args["text"]
    assert "start_finetune" in _blocks_text(reply.args)
    record = h.engine.latest_dataset("T0001", "C0CHAN01")
    assert (
        record is not None and record.usable and record.name == "prices.jsonl" and record.uploaded_by == OWNER
    )
    assert h.slack.downloads[0].headers["authorization"] == f"Bearer {h.slack.bot_token}"


def test_an_unusable_upload_gets_errors_and_no_button(h: Harness) -> None:
    h.upload(b'{"messages": [}\nnot json\n', name="broken.jsonl")
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert "not usable" in reply.args["text"] and "start_finetune" not in _blocks_text(reply.args)
    assert "line 1" in _blocks_text(reply.args)


def test_a_retried_event_makes_one_dataset(h: Harness) -> None:
    file = h.slack.add_file(PRICES, name="prices.jsonl")
    body = event_body(file_share_event(file), event_id="Ev00RETRY1")
    assert h.dispatch(body).status == 200
    assert (
        h.dispatch(body, extra={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}).status
        == 200
    )
    # The same file announced again as file_shared (another event id) is also a duplicate.
    shared = file_shared_event(file["id"], user=OWNER, channel="C0CHAN01")
    assert h.dispatch(event_body(shared)).status == 200
    h.slack.wait_for("chat.postMessage")
    _quiet()
    assert len(h.slack.calls_to("chat.postMessage")) == 1
    assert len(h.slack.downloads) == 1
    assert len(h.engine.store.datasets(team="T0001")) == 1


def test_uploads_are_remembered_across_a_restart(h: Harness) -> None:
    file = h.upload()
    h.slack.wait_for("chat.postMessage")
    (record,) = h.engine.store.datasets(team="T0001")
    # A restart: a new app (empty in-memory state) on the same engine and store.
    client = make_client(h.settings)
    h.app = create_app(h.engine, h.settings, client=client, cards=JobCards(client, h.engine, min_interval=0.0))
    # Slack delivers the same upload again (a retry that outlived the old process).
    assert h.dispatch(event_body(file_share_event(file), event_id="Ev00AGAIN1")).status == 200
    _quiet()
    assert len(h.slack.downloads) == 1 and len(h.slack.calls_to("chat.postMessage")) == 1
    assert len(h.engine.store.datasets(team="T0001")) == 1
    # `/finetune F...` still finds the upload by its Slack file id.
    assert h.command("/finetune", f"{file['id']} epochs=1").status == 200
    h.slack.wait_for("chat.postMessage", count=2)
    (job,) = h.engine.jobs(team="T0001")
    assert job.dataset_hash == record.hash


def test_file_shared_alone_is_handled_through_files_info(h: Harness) -> None:
    file = h.slack.add_file(PRICES, name="prices.jsonl")
    h.slack.files[file["id"]]["shares"] = {"public": {"C0CHAN01": [{"ts": "1699990500.000200"}]}}
    shared = file_shared_event(file["id"], user=OWNER, channel="C0CHAN01")
    assert h.dispatch(event_body(shared)).status == 200
    (reply,) = h.slack.wait_for("chat.postMessage")
    assert reply.args["thread_ts"] == "1699990500.000200"
    assert h.slack.calls_to("files.info")


def test_a_file_from_another_host_is_refused_and_never_gets_the_token(h: Harness) -> None:
    with FakeSlack(host="localhost") as elsewhere:
        file = elsewhere.add_file(PRICES, name="prices.jsonl")
        assert h.dispatch(event_body(file_share_event(file))).status == 200
        (refusal,) = h.slack.wait_for("chat.postEphemeral")
        assert refusal.args["user"] == OWNER and "not hosted by Slack" in refusal.args["text"]
        assert elsewhere.downloads == []
    assert h.engine.latest_dataset("T0001", "C0CHAN01") is None


def test_an_oversized_file_is_refused_before_downloading(h: Harness) -> None:
    h.upload(PRICES, size=50 * 1024 * 1024)
    (refusal,) = h.slack.wait_for("chat.postEphemeral")
    assert "limit" in refusal.args["text"] and "FTBOT_MAX_UPLOAD_MB" in refusal.args["text"]
    assert h.slack.downloads == []


def test_other_files_are_ignored_politely(h: Harness) -> None:
    h.upload(b"\x89PNG...", name="cat.png")
    _quiet()
    assert h.slack.downloads == [] and h.slack.calls_to("chat.postMessage") == []
    assert h.slack.calls_to("chat.postEphemeral") == []


def test_a_rate_limited_reply_is_retried(h: Harness) -> None:
    h.slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    h.upload()
    calls = h.slack.wait_for("chat.postMessage", count=2)
    assert calls[0].args == calls[1].args  # the same reply, sent again after the 429


# ----- /finetune -----------------------------------------------------------------------------


def _uploaded(h: Harness) -> str:
    h.upload()
    h.slack.wait_for("chat.postMessage")
    record = h.engine.latest_dataset("T0001", "C0CHAN01")
    assert record is not None
    return record.hash


def test_finetune_acks_at_once_and_posts_the_job_card(h: Harness) -> None:
    _uploaded(h)
    started = time.perf_counter()
    response = h.command("/finetune", "epochs=1")
    assert time.perf_counter() - started < 1.0
    assert response.status == 200 and "Preparing" in response.body
    card = h.slack.wait_for("chat.postMessage", count=2)[-1]
    assert card.args["channel"] == "C0CHAN01" and "thread_ts" not in card.args
    assert "cancel_job" in _blocks_text(card.args) and "queued" in card.args["text"]
    (job,) = h.engine.jobs(team="T0001")
    assert job.owner == OWNER and job.state == JobState.QUEUED and job.config["epochs"] == 1
    wait_for(lambda: bool(h.engine.job(job.id).reply_to), 10.0)  # where the card is, stored with the job
    assert h.engine.job(job.id).reply_to["channel"] == "C0CHAN01" and h.engine.job(job.id).reply_to["ts"]


def test_finetune_by_a_user_not_allowed_is_refused_privately(h: Harness) -> None:
    _uploaded(h)
    response = h.command("/finetune", "", user=STRANGER)
    assert response.status == 200 and "FTBOT_ALLOWED_USERS" in response.body
    _quiet()
    assert h.engine.jobs() == []
    assert len(h.slack.calls_to("chat.postMessage")) == 1  # only the upload's report


def test_finetune_argument_errors_are_private_and_list_what_is_accepted(h: Harness) -> None:
    response = h.command("/finetune", "a b")
    assert "second dataset" in response.body and "epochs=" in response.body
    _uploaded(h)
    assert h.command("/finetune", "epochs=lots wings=2").status == 200
    (error,) = h.slack.wait_for("chat.postEphemeral")
    assert error.args["user"] == OWNER
    assert (
        "wings" in error.args["text"]
        and "epochs" in error.args["text"]
        and "Accepted keys" in error.args["text"]
    )
    assert h.engine.jobs() == []


def test_finetune_without_a_dataset_says_what_to_do(h: Harness) -> None:
    h.command("/finetune")
    (error,) = h.slack.wait_for("chat.postEphemeral")
    assert "no usable dataset" in error.args["text"] and "Upload" in error.args["text"]


def test_datasets_and_jobs_of_another_workspace_are_invisible(h: Harness) -> None:
    dataset_hash = _uploaded(h)
    h.command("/finetune", dataset_hash[:12], team="T0002")
    (error,) = h.slack.wait_for("chat.postEphemeral")
    assert "No dataset" in error.args["text"] and h.engine.jobs() == []
    h.command("/finetune", "", team="T0002")  # T0002's channel has no upload of its own
    assert "no usable dataset" in h.slack.wait_for("chat.postEphemeral", count=2)[-1].args["text"]
    h.command("/finetune", dataset_hash[:12])
    h.slack.wait_for("chat.postMessage", count=2)
    (job,) = h.engine.jobs()
    h.command("/finetune", f"status {job.id}", team="T0002")
    assert "no job" in h.slack.wait_for("chat.postEphemeral", count=3)[-1].args["text"].lower()


def test_help_list_and_status(h: Harness) -> None:
    assert "/finetune" in h.command("/finetune", "help").body
    assert "/ask" in h.command("/ask", "help").body
    h.command("/finetune", "list")
    assert "No fine-tune jobs" in _blocks_text(h.slack.wait_for("chat.postEphemeral")[0].args)
    _uploaded(h)
    h.command("/finetune")
    h.slack.wait_for("chat.postMessage", count=2)
    (job,) = h.engine.jobs()
    h.command("/finetune", "status")
    status = h.slack.wait_for("chat.postEphemeral", count=2)[-1]
    assert job.id in status.args["text"]


def test_start_button_starts_a_job(h: Harness) -> None:
    dataset_hash = _uploaded(h)
    assert h.action("start_finetune", dataset_hash).status == 200
    h.slack.wait_for("chat.postMessage", count=2)
    (job,) = h.engine.jobs()
    assert job.dataset_hash == dataset_hash and job.owner == OWNER
    h.action("start_finetune", dataset_hash, user=STRANGER)
    assert "FTBOT_ALLOWED_USERS" in h.slack.wait_for("chat.postEphemeral")[0].args["text"]
    assert len(h.engine.jobs()) == 1


def test_cancel_by_a_stranger_is_refused_by_the_owner_works(h: Harness) -> None:
    _uploaded(h)
    h.command("/finetune")
    card = h.slack.wait_for("chat.postMessage", count=2)[-1]
    (job,) = h.engine.jobs()
    wait_for(lambda: bool(h.engine.job(job.id).reply_to), 10.0)

    h.action("cancel_job", job.id, user=OTHER, message_ts=card.args.get("ts", ""))
    (refusal,) = h.slack.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == OTHER and "Only the person who started" in refusal.args["text"]
    assert h.engine.job(job.id).state == JobState.QUEUED

    # Another workspace cannot even see it.
    h.action("cancel_job", job.id, user=OWNER, team="T0002")
    refusal = h.slack.wait_for("chat.postEphemeral", count=2)[-1]
    assert "no job" in refusal.args["text"] and h.engine.job(job.id).state == JobState.QUEUED

    h.action("cancel_job", job.id, user=OWNER)
    wait_for(lambda: h.engine.job(job.id).state == JobState.CANCELLED, 10.0)
    update = h.slack.wait_for("chat.update", where=lambda c: "cancelled" in c.args.get("text", ""))[-1]
    assert "cancel_job" not in _blocks_text(update.args)

    h.action("cancel_job", job.id, user=OWNER)  # a second click: a polite no-op
    assert "already ended" in h.slack.wait_for("chat.postEphemeral", count=3)[-1].args["text"]


def test_an_admin_may_cancel_anyones_job(h: Harness) -> None:
    _uploaded(h)
    h.command("/finetune")
    h.slack.wait_for("chat.postMessage", count=2)
    (job,) = h.engine.jobs()
    h.command("/finetune", f"cancel {job.id}", user=ADMIN)
    wait_for(lambda: h.engine.job(job.id).state == JobState.CANCELLED, 10.0)


def test_errors_never_leak_tokens_urls_or_tracebacks(h: Harness) -> None:
    h.upload(PRICES, size=50 * 1024 * 1024)
    h.command("/finetune", "ft-missing")
    h.command("/ask", "model=nope hello")
    h.slack.wait_for("chat.postEphemeral", count=3)
    for text in h.ephemerals():
        assert h.slack.bot_token not in text and "files-pri" not in text and "Traceback" not in text
        assert "http://" not in text


def test_http_requests_are_verified_even_when_an_app_token_is_set(settings: Settings) -> None:
    """`serve --http` with SLACK_APP_TOKEN also set must still check signatures; a Socket-Mode-only
    app (no signing secret) takes socket requests, which Slack authenticates on the connection."""
    with FakeSlack() as slack:
        harness = make_harness(settings, slack, SLACK_APP_TOKEN="xapp-1-A0APP-1-abcdef")
        try:
            body = command_body("/finetune", "help")
            assert harness.dispatch(body, secret="f" * 32, content_type=FORM).status == 401
        finally:
            harness.engine.close()
        socket_only = BotSettings.from_env(
            {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_APP_TOKEN": "xapp-1-A0APP-1-abcdef",
                "SLACK_API_URL": slack.api_url,
            }
        )
        app = create_app(None, socket_only, client=make_client(socket_only))
        payload = {
            "command": "/finetune",
            "text": "help",
            "user_id": OWNER,
            "channel_id": "C0CHAN01",
            "team_id": "T0001",
        }
        response = app.dispatch(BoltRequest(body=payload, mode="socket_mode"))
        assert response.status == 200 and "/finetune" in response.body
        with pytest.raises(UsageError, match="SLACK_SIGNING_SECRET"):
            create_app(
                None,
                BotSettings.from_env({"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url}),
                client=make_client(socket_only),
            )


def test_seen_remembers_for_its_ttl_and_stays_bounded() -> None:
    from bot.slack.once import Seen

    now = [0.0]
    seen = Seen(ttl=60.0, max_items=3, clock=lambda: now[0])
    assert seen.first_time("T1", "Ev1") and not seen.first_time("T1", "Ev1")
    assert seen.first_time("T2", "Ev1")  # per workspace
    now[0] = 61.0
    assert seen.first_time("T1", "Ev1")  # forgotten after the TTL
    for i in range(10):
        seen.first_time("T1", f"x{i}")
    assert len(seen._items) <= 3
