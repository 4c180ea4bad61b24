"""End to end over Socket Mode, the default way a team runs the bot: the `ftbot serve` code path
(build_slack + connect_socket_mode) with slack_bolt's websocket-client adapter, against the fake
Slack Web API and a real WebSocket server (tests/fakes/slack_socket.py), with the real engine.

Covers: the connection (app token, hello, pings both ways), slash commands answered in the ack
within Slack's 3 s, /ask acked at once and answered in the channel, an upload's report in its
thread (a redelivery processed once), buttons and unhandled events acked, reconnecting after
Slack rotates, closes or loses the connection (an envelope right after a rotation still acked in
time), stopping at once, and a refused app token or WebSocket stopping `ftbot serve` with a
message instead of a traceback."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.cli import main
from bot.commands.serve import build_slack, close_socket_mode, connect_socket_mode
from bot.settings import BotSettings
from bot.slack import blocks
from engine import Engine, Settings, UsageError
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import CHANNEL, SIGNING_SECRET, USER, file_share_event, file_shared_event
from tests.fakes.slack_socket import (
    OP_CLOSE,
    OP_TEXT,
    Ack,
    FakeSocketMode,
    action_payload,
    command_payload,
    event_payload,
    read_frame,
    serve_socket_mode,
    socket_env,
)
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
SLACK_ACK_SECONDS = 3.0  # Slack shows the user an error when an envelope is not acked in time
# slack_sdk's Socket Mode client would tunnel through a proxy from the environment.
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@dataclass
class Bot:
    slack: FakeSlack
    socket: FakeSocketMode
    engine: Engine
    handler: Any

    def send(self, type: str, payload: dict[str, Any], **kw: Any) -> Ack:
        """Push one envelope and return its ack (which must come within Slack's 3 s)."""
        ack = self.socket.wait_ack(self.socket.push(type, payload, **kw))
        assert ack.seconds < SLACK_ACK_SECONDS, ack
        return ack


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fakes(no_proxy: None) -> Iterator[tuple[FakeSlack, FakeSocketMode]]:
    with FakeSlack() as slack, FakeSocketMode(slack) as ws:
        yield slack, ws


@contextlib.contextmanager
def serving(fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings, **kw: Any) -> Iterator[Bot]:
    slack, ws = fakes
    with serve_socket_mode(BotSettings.from_env(socket_env(slack)), settings, **kw) as (engine, handler):
        yield Bot(slack, ws, engine, handler)


@pytest.fixture
def bot(fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings) -> Iterator[Bot]:
    with serving(fakes, settings) as served:
        yield served


def _dataset(n: int = 40) -> bytes:
    lines = (ROOT / "examples" / "prices.jsonl").read_bytes().splitlines(keepends=True)
    return b"".join(lines[:n])


def test_it_connects_with_the_app_token_and_keeps_the_connection_alive(bot: Bot) -> None:
    # With the app token (the client may ask for a URL twice while it starts: it uses the last).
    opened = bot.slack.calls_to("apps.connections.open")
    assert opened and {c.headers["authorization"] for c in opened} == {f"Bearer {bot.slack.app_token}"}
    conn = bot.socket.wait_connected()
    assert conn.number == 1 and bot.socket.rejected == [] and bot.socket.protocol_errors == []
    # The client pings (every ping_interval) and reads our pongs; it answers ours.
    wait_for(lambda: conn.pings >= 2, 5, "the client's pings")
    bot.socket.ping(b"are-you-there")
    wait_for(lambda: conn.pongs == [b"are-you-there"], 5, "the client's pong")
    assert bot.handler.client.is_connected() and len(bot.socket.connections) == 1


def test_finetune_help_and_a_bad_option_are_answered_in_the_ack(bot: Bot) -> None:
    ack = bot.send("slash_commands", command_payload("/finetune", "help"))
    assert ack.payload is not None and ack.payload["text"].startswith("How to use /finetune")
    assert "/finetune status" in json.dumps(ack.payload["blocks"])

    ack = bot.send("slash_commands", command_payload("/finetune", "cancel"))
    assert ack.payload is not None and "needs exactly one job id" in ack.payload["text"]
    # Answered in the ack alone: nothing was posted.
    assert bot.slack.calls_to("chat.postMessage") == [] and bot.slack.calls_to("chat.postEphemeral") == []


@pytest.mark.slow
def test_ask_is_acked_at_once_and_answered_in_the_channel(bot: Bot) -> None:
    ack = bot.send("slash_commands", command_payload("/ask", "max_tokens=4 A 2 kg bag of rice?"))
    assert ack.payload is not None and "Thinking about: A 2 kg bag of rice?" in ack.payload["text"]

    # The answer (after 2 s a "Thinking…" message shows, and the answer replaces it) names the
    # model, here the tiny demo base model.
    def answers() -> list[Any]:
        return [
            c
            for c in bot.slack.calls
            if c.method in ("chat.postMessage", "chat.update")
            and "Answered by" in json.dumps(c.args.get("blocks") or [])
        ]

    wait_for(lambda: bool(answers()), 60, "the answer")
    answer = answers()[0]
    assert answer.args["channel"] == CHANNEL and "tiny demo model" in json.dumps(answer.args["blocks"])


def test_an_uploaded_file_is_reported_in_its_thread_once(bot: Bot) -> None:
    slack = bot.slack
    file = slack.add_file(_dataset(), name="prices.jsonl", user=USER)
    body = event_payload(file_share_event(file, ts="1699990000.000200"))
    ack = bot.send("events_api", body)
    assert ack.payload is None  # events are acked with the envelope id alone
    (report,) = slack.wait_for("chat.postMessage")
    assert report.args["thread_ts"] == "1699990000.000200" and "usable" in report.args["text"]
    assert blocks.ACTION_START in json.dumps(report.args["blocks"])

    # Slack redelivers an event it thinks failed (retry_attempt in the envelope, not in HTTP
    # headers), and also sends file_shared for the same upload: both acked, neither processed.
    bot.send("events_api", body, retry_attempt=1, retry_reason="timeout")
    bot.send("events_api", event_payload(file_shared_event(file["id"])))
    time.sleep(0.3)  # give a wrongly started download the time to show
    assert len(slack.downloads) == 1 and len(slack.calls_to("chat.postMessage")) == 1
    assert slack.calls_to("files.info") == []


def test_a_signing_secret_left_set_does_not_block_socket_mode(
    fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings
) -> None:
    """A team moving from HTTP to Socket Mode may leave SLACK_SIGNING_SECRET set: envelopes are
    not signed (the WebSocket is authenticated), so verification must not apply to them."""
    slack, ws = fakes
    bot_settings = BotSettings.from_env(socket_env(slack, SLACK_SIGNING_SECRET=SIGNING_SECRET))
    with serve_socket_mode(bot_settings, settings) as (engine, handler):
        bot = Bot(slack, ws, engine, handler)
        ack = bot.send("slash_commands", command_payload("/finetune", "help"))
        assert ack.payload is not None and ack.payload["text"].startswith("How to use /finetune")


def test_buttons_and_unhandled_events_are_acked(bot: Bot) -> None:
    # Cancel on a job that does not exist: acked, then a private answer.
    ack = bot.send("interactive", action_payload(blocks.ACTION_CANCEL, "ft-nosuchjob"))
    assert ack.payload is None
    (note,) = bot.slack.wait_for("chat.postEphemeral")
    assert note.args["user"] == USER and "There is no job ft-nosuchjob" in note.args["text"]
    # A button from an older version of the bot, and events the bot does not handle: Bolt would
    # answer 404, which the Socket Mode adapter never acks, so Slack would redeliver them.
    bot.send("interactive", action_payload("some_old_button", "x"))
    edited = {"type": "message", "subtype": "message_changed", "channel": CHANNEL, "ts": "1.2"}
    bot.send("events_api", event_payload(edited))
    bot.send("events_api", event_payload({"type": "member_joined_channel", "user": USER, "channel": CHANNEL}))


@pytest.mark.parametrize("how", ["refresh", "drop", "cut", "stall"])
def test_it_reconnects_when_slack_ends_the_connection(bot: Bot, how: str) -> None:
    """refresh: Slack's ``disconnect`` message (it rotates connections every few hours); drop: a
    close frame; cut: the TCP connection ends without one; stall: nothing comes back any more, TCP
    left open (found by the pong deadline: half a ping interval)."""
    first = bot.socket.wait_connected()
    started = time.monotonic()
    getattr(bot.socket, how)()
    second = bot.socket.wait_connected(2, timeout=10)
    # Within a few pings at most (the client measured: 0.5 s, 2 s for a stall), never a 10 s wait.
    assert time.monotonic() - started < 5.0
    # A new connection needs a new URL: the client called apps.connections.open again.
    assert len(bot.slack.calls_to("apps.connections.open")) >= 2 and second is not first
    wait_for(lambda: not first.open, 10, "the old connection to close")
    ack = bot.send("slash_commands", command_payload("/finetune", "help"))
    assert ack.connection >= 2 and ack.payload is not None
    assert bot.socket.rejected == [] and bot.socket.protocol_errors == []


def test_an_envelope_sent_right_after_a_refresh_is_acked_in_time(bot: Bot) -> None:
    """slack_sdk's builtin client read the new connection only ~3 s after a rotation, so this
    envelope was acked about 3.1 s late; the websocket-client one reads it as soon as it opens."""
    started = time.monotonic()
    bot.socket.refresh()
    bot.socket.wait_connected(2)
    assert time.monotonic() - started < SLACK_ACK_SECONDS  # Slack holds envelopes meanwhile
    envelope = bot.socket.push("slash_commands", command_payload("/finetune", "help"))
    ack = bot.socket.wait_ack(envelope, timeout=10)
    assert ack.seconds < 1.0, ack


def test_it_stops_at_once_and_says_goodbye(bot: Bot) -> None:
    conn = bot.socket.wait_connected()
    bot.send("slash_commands", command_payload("/finetune", "help"))
    urls = len(bot.slack.calls_to("apps.connections.open"))
    started = time.monotonic()
    close_socket_mode(bot.handler)  # again when the fixture ends: closing twice is harmless
    assert time.monotonic() - started < 1.0
    wait_for(lambda: not conn.open, 5, "the connection to close")
    assert conn.close_code == 1000 and not bot.handler.client.is_connected()
    time.sleep(1.5)  # more than a ping interval: nothing reconnects
    assert len(bot.socket.connections) == 1
    assert len(bot.slack.calls_to("apps.connections.open")) == urls


def test_a_refused_app_token_is_a_clear_error(
    fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings
) -> None:
    slack, ws = fakes
    # What Slack says to a bot token on apps.connections.open (the fake keeps to it).
    with pytest.raises(SlackApiError) as info:
        WebClient(base_url=slack.api_url).apps_connections_open(app_token=slack.bot_token)
    assert info.value.response["error"] == "not_allowed_token_type"

    revoked = "xapp-1-A0APP001-9-revoked"
    bot_settings = BotSettings.from_env(socket_env(slack, SLACK_APP_TOKEN=revoked))
    engine, app = build_slack(bot_settings, settings, mode="socket")
    try:
        with pytest.raises(UsageError, match=r"did not accept SLACK_APP_TOKEN \(invalid_auth\)") as err:
            connect_socket_mode(app, bot_settings)
    finally:
        engine.close()
    assert "connections:write" in str(err.value) and revoked not in str(err.value)
    assert ws.connections == []


def test_ftbot_serve_stops_with_a_message_when_slack_refuses_the_app_token(
    fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings
) -> None:
    slack, _ = fakes
    env: dict[str, str | None] = {
        **socket_env(slack, SLACK_APP_TOKEN="xapp-1-A0APP001-9-revoked"),
        "FTBOT_HOME": str(settings.home),
        "SLACK_SIGNING_SECRET": None,
        "SLACK_CLIENT_ID": None,
        "SLACK_CLIENT_SECRET": None,
    }
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Error: Slack did not accept SLACK_APP_TOKEN (invalid_auth)" in result.output
    assert "Traceback" not in result.output and "is connected to Slack" not in result.output


def test_a_websocket_that_does_not_open_is_a_clear_error(
    fakes: tuple[FakeSlack, FakeSocketMode], settings: Settings
) -> None:
    slack, ws = fakes
    ws.refuse = True  # e.g. a proxy that blocks WebSockets
    bot_settings = BotSettings.from_env(socket_env(slack))
    engine, app = build_slack(bot_settings, settings, mode="socket")
    try:
        with pytest.raises(UsageError, match="WebSocket connection to it failed") as err:
            connect_socket_mode(app, bot_settings)
    finally:
        engine.close()
    assert "--http" in str(err.value) and ws.connections == []
    assert ws.rejected and set(ws.rejected) == {"refused by the test"}


def _raw_handshake(url: str) -> tuple[socket.socket, bytes]:
    """Open ``url`` with a hand-written upgrade request; return the socket and the response head."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    key = base64.b64encode(b"0123456789abcdef").decode()
    sock.sendall(
        (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.hostname}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def test_the_fake_socket_server_keeps_to_the_protocol(fakes: tuple[FakeSlack, FakeSocketMode]) -> None:
    """The stand-in is only worth its tests if it is strict: a URL opens one connection, once,
    and a client frame must be masked (RFC 6455 section 5.1)."""
    _, fake = fakes
    url = fake.new_url()
    sock, head = _raw_handshake(url)
    with sock, sock.makefile("rb") as rfile:
        assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Accept:" in head
        _, opcode, hello = read_frame(rfile, from_client=False)
        assert opcode == OP_TEXT and json.loads(hello)["type"] == "hello"
        sock.sendall(bytes([0x81, 2]) + b"{}")  # an unmasked text frame
        _, opcode, data = read_frame(rfile, from_client=False)
        assert opcode == OP_CLOSE and data[:2] == b"\x03\xea"  # 1002, protocol error
    assert fake.protocol_errors == ["a client frame was not masked"]
    again, head = _raw_handshake(url)
    with again:
        assert head.startswith(b"HTTP/1.1 401")
    assert fake.rejected == ["an unknown or used ticket"]
