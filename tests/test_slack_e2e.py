"""End to end over real HTTP, through the `ftbot serve --http` code path (build_slack +
make_http_server on port 0), against the fake Slack Web API, with the real engine on builtin:tiny:
upload -> report in the thread; /finetune -> card, live edits, chart, evaluation and verdict in the
thread, result broadcast; /ask -> answer; a bad signature -> 401 and nothing happens."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.commands.serve import build_slack
from bot.settings import BotSettings
from engine import Engine, JobState, Settings
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import (
    FORM,
    SIGNING_SECRET,
    bot_env,
    command_body,
    event_body,
    file_share_event,
    post_signed,
    serve_http,
)

ROOT = Path(__file__).resolve().parent.parent
OWNER = "U0USER01"


class Served:
    def __init__(self, slack: FakeSlack, url: str, engine: Engine) -> None:
        self.slack, self.url, self.engine = slack, url, engine

    def post(
        self, body: str, *, content_type: str = "application/json", secret: str = SIGNING_SECRET
    ) -> tuple[int, str]:
        reply = post_signed(self.url, body, content_type=content_type, secret=secret, timeout=10)
        return reply.status, reply.body


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with FakeSlack() as slack, serve_http(BotSettings.from_env(bot_env(slack)), settings) as (engine, url):
        yield Served(slack, url, engine)


def _dataset(n: int = 40) -> bytes:
    lines = (ROOT / "examples" / "prices.jsonl").read_bytes().splitlines(keepends=True)
    return b"".join(lines[:n])


def test_bad_signature_over_http_is_401(served: Served) -> None:
    file = served.slack.add_file(_dataset())
    status, _ = served.post(event_body(file_share_event(file)), secret="0" * 32)
    assert status == 401
    time.sleep(0.3)
    assert served.slack.downloads == [] and served.slack.calls_to("chat.postMessage") == []


@pytest.mark.slow
def test_the_whole_slack_flow_on_builtin_tiny(served: Served) -> None:
    slack = served.slack
    # 1. Upload: the report in the file's thread, with the Start button.
    file = slack.add_file(_dataset(), name="prices.jsonl", user=OWNER)
    status, _ = served.post(event_body(file_share_event(file, user=OWNER)))
    assert status == 200
    (report,) = slack.wait_for("chat.postMessage")
    assert report.args["thread_ts"] == "1699990000.000100" and "usable" in report.args["text"]
    assert "start_finetune" in json.dumps(report.args["blocks"])

    # 2. /finetune: an immediate ack, the card in the channel, everything else in its thread.
    started = time.perf_counter()
    status, body = served.post(command_body("/finetune", "epochs=2", user=OWNER), content_type=FORM)
    assert status == 200 and "Preparing" in body and time.perf_counter() - started < 1.0
    card = slack.wait_for("chat.postMessage", count=2)[-1]
    assert "thread_ts" not in card.args and "cancel_job" in json.dumps(card.args["blocks"])
    (job,) = served.engine.jobs(team="T0001")
    final = slack.wait_for(
        "chat.postMessage", timeout=600, where=lambda c: bool(c.args.get("reply_broadcast"))
    )[0]
    job = served.engine.job(job.id)
    assert job.state == JobState.SUCCEEDED, job.error
    card_ts = job.reply_to["ts"]
    assert final.args["thread_ts"] == card_ts and "finished" in final.args["text"]
    thread = [
        c.args["text"] for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == card_ts
    ]
    for expected in ("Pre-flight", "Baseline measured", "Evaluation results", "Verdict:"):
        assert any(t.startswith(expected) for t in thread), (expected, thread)
    updates = [c for c in slack.calls_to("chat.update") if c.args["ts"] == card_ts]
    assert len(updates) >= 3  # edited in place as the job moved
    assert "succeeded" in updates[-1].args["text"] and "cancel_job" not in json.dumps(
        updates[-1].args["blocks"]
    )
    assert any("step" in u.args["text"] for u in updates)
    charts = slack.calls_to("files.completeUploadExternal")
    assert charts and all(
        c.args["thread_ts"] == card_ts and c.args["channel_id"] == "C0CHAN01" for c in charts
    )
    assert "Training loss" in [f["title"] for c in charts for f in c.args["files"]]
    assert all(data.startswith(b"\x89PNG") for data in slack.uploads.values())

    # 3. /ask: answered in the channel, naming the model and noting builtin:tiny.
    status, body = served.post(
        command_body("/ask", "New Valuline trail running shoes in navy.", user=OWNER), content_type=FORM
    )
    assert status == 200 and "Thinking" in body
    # (after 2 s a "Thinking…" message shows, and the answer replaces it with chat.update)
    deadline = time.monotonic() + 120
    answers: list = []
    while not answers and time.monotonic() < deadline:
        answers = [
            c
            for c in slack.calls
            if c.method in ("chat.postMessage", "chat.update")
            and "Answered by" in json.dumps(c.args.get("blocks") or [])
        ]
        time.sleep(0.1)
    assert answers, [c.method for c in slack.calls[-5:]]
    assert answers[0].args["channel"] == "C0CHAN01"
    assert "tiny demo model" in json.dumps(answers[0].args["blocks"])

    # 4. "@ftbot question" in the job's thread asks that job's model, and answers in the thread.
    mention = {
        "type": "app_mention",
        "user": OWNER,
        "channel": "C0CHAN01",
        "ts": "1700009999.000100",
        "thread_ts": card_ts,
        "text": "<@UBOT0001> Lumio OLED TV, 77 inch?",
    }
    status, _ = served.post(event_body(mention))
    assert status == 200
    deadline = time.monotonic() + 120
    in_thread: list = []
    while not in_thread and time.monotonic() < deadline:
        in_thread = [
            c
            for c in slack.calls
            if c.method in ("chat.postMessage", "chat.update")
            and f"Answered by `{job.model_id}`" in json.dumps(c.args.get("blocks") or [])
            and (c.args.get("thread_ts") == card_ts or c.method == "chat.update")
        ]
        time.sleep(0.1)
    assert in_thread


def test_serve_explains_a_token_slack_rejects(settings: Settings) -> None:
    from engine import UsageError

    with FakeSlack() as slack:
        bot_settings = BotSettings.from_env(
            {
                "SLACK_BOT_TOKEN": "xoxb-revoked-token",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
            }
        )
        with pytest.raises(UsageError, match="did not accept SLACK_BOT_TOKEN") as info:
            build_slack(bot_settings, settings, mode="http")
        assert "xoxb-revoked-token" not in str(info.value)


def test_serve_http_stops_with_a_message_when_the_port_is_taken(settings: Settings) -> None:
    with FakeSlack() as slack, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # another program on the port
        taken.listen()
        port = taken.getsockname()[1]
        env: dict[str, str | None] = {
            **bot_env(slack),
            "FTBOT_HOME": str(settings.home),
            "SLACK_APP_TOKEN": None,
            "SLACK_CLIENT_ID": None,
            "SLACK_CLIENT_SECRET": None,
        }
        runner = CliRunner()
        result = runner.invoke(main, ["serve", "--http", "--host", "127.0.0.1", "--port", str(port)], env=env)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert (
            f"Error: Port {port} on 127.0.0.1 is in use: stop the other program or choose --port."
            in result.output
        )
        assert "Traceback" not in result.output and "listens on" not in result.output

        # An address this machine does not have (TEST-NET-1, RFC 5737): also a message, not a traceback.
        result = runner.invoke(main, ["serve", "--http", "--host", "192.0.2.1", "--port", "0"], env=env)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "Error: Cannot listen on 192.0.2.1 port 0" in result.output and "--host" in result.output
        assert "Traceback" not in result.output
