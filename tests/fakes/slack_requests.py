"""Requests into the Slack app, as Slack sends them: signed bodies for slash commands, events and
button clicks, posted over real HTTP or dispatched into Bolt, plus the app served over HTTP.

Slack signs every HTTP request (v0 HMAC of "v0:{timestamp}:{body}"); these builders produce the
bodies and headers Slack sends, signed with slack_sdk's own SignatureVerifier. Tests and the
benchmarks (bench/slack_ack.py) share them, so there is one idea of "a request from Slack".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlencode

if TYPE_CHECKING:
    from slack_bolt.request import BoltRequest

    from bot.settings import BotSettings
    from engine import Engine, Settings
    from tests.fakes.slack_api import FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
FORM = "application/x-www-form-urlencoded"
# Who sends a request unless a test says otherwise: the fake Slack's workspace, one user, one channel.
USER, CHANNEL, TEAM = "U0USER01", "C0CHAN01", "T0001"
APP_ID = "A0APP001"
# Where response_url points by default: a port nothing listens on (the app must not depend on it).
DEAD_WEBHOOK = "http://127.0.0.1:9/webhook"


def signed_headers(
    body: str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    content_type: str = "application/json",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    headers = {"content-type": content_type, "x-slack-request-timestamp": ts, "x-slack-signature": signature}
    headers.update(extra or {})
    return headers


def signed_request(body: str, **kw: Any) -> BoltRequest:
    """``body`` as Bolt receives it over HTTP, signed (``kw`` as for :func:`signed_headers`)."""
    from slack_bolt.request import BoltRequest

    return BoltRequest(body=body, headers=signed_headers(body, **kw))


def command_body(
    command: str,
    text: str = "",
    *,
    user: str = USER,
    channel: str = CHANNEL,
    team: str = TEAM,
    response_url: str | None = None,
) -> str:
    return urlencode(
        {
            "token": "deprecated",
            "team_id": team,
            "team_domain": "acme",
            "channel_id": channel,
            "channel_name": "ml",
            "user_id": user,
            "user_name": "someone",
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url or DEAD_WEBHOOK,
            "trigger_id": "1.2.3",
        }
    )


_event_ids = itertools.count(1)


def event_body(event: Mapping[str, Any], *, team: str = TEAM, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "token": "deprecated",
            "team_id": team,
            "api_app_id": APP_ID,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_event_ids):08d}",
            "event_time": int(time.time()),
            "event": dict(event),
            "authorizations": [{"team_id": team, "user_id": "UBOT0001", "is_bot": True}],
            "is_ext_shared_channel": False,
        }
    )


def file_share_event(
    file: Mapping[str, Any],
    *,
    user: str = USER,
    channel: str = CHANNEL,
    ts: str = "1699990000.000100",
    thread_ts: str | None = None,
) -> dict[str, Any]:
    event = {
        "type": "message",
        "subtype": "file_share",
        "upload": False,
        "channel": channel,
        "channel_type": "channel",
        "user": user,
        "text": "",
        "ts": ts,
        "event_ts": ts,
        "files": [dict(file)],
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def file_shared_event(file_id: str, *, user: str = USER, channel: str = CHANNEL) -> dict[str, Any]:
    """The ``file_shared`` event Slack sends for a file (besides, or instead of, the message)."""
    return {
        "type": "file_shared",
        "file_id": file_id,
        "user_id": user,
        "channel_id": channel,
        "file": {"id": file_id},
        "event_ts": "1.1",
    }


def action_body(
    action_id: str,
    value: str,
    *,
    user: str = USER,
    channel: str = CHANNEL,
    team: str = TEAM,
    message_ts: str = "1700000001.000100",
    response_url: str | None = None,
) -> str:
    payload = {
        "type": "block_actions",
        "api_app_id": APP_ID,
        "token": "deprecated",
        "team": {"id": team},
        "user": {"id": user},
        "channel": {"id": channel, "name": "ml"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "message": {"ts": message_ts},
        "trigger_id": "1.2.3",
        "response_url": response_url or DEAD_WEBHOOK,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b",
                "value": value,
                "action_ts": "1700000002.000100",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


# -- the app over HTTP -------------------------------------------------------------------------


class Reply(NamedTuple):
    status: int
    body: str
    ms: float  # from sending the request to having read the whole response


def post_signed(
    url: str,
    body: str,
    *,
    content_type: str = "application/json",
    secret: str = SIGNING_SECRET,
    timeout: float = 30,
) -> Reply:
    """POST ``body`` signed as Slack would; an HTTP error status is a reply, not an exception."""
    headers = signed_headers(body, content_type=content_type, secret=secret)
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return Reply(response.status, text, (time.perf_counter() - started) * 1000)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        return Reply(exc.code, text, (time.perf_counter() - started) * 1000)


def bot_env(slack: FakeSlack, **extra: str) -> dict[str, str]:
    """The environment of a bot that talks to ``slack`` and takes signed HTTP requests."""
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "FTBOT_FILE_HOSTS": slack.url,
        **extra,
    }


@contextlib.contextmanager
def serve_http(bot_settings: BotSettings, settings: Settings) -> Iterator[tuple[Engine, str]]:
    """The `ftbot serve --http` code path on 127.0.0.1 (port 0), its engine started; yields the
    engine and the events URL, and shuts both down afterwards."""
    from bot.commands.serve import EVENTS_PATH, build_slack, make_http_server, serve_in_thread

    engine, app = build_slack(bot_settings, settings, mode="http")
    server = make_http_server(app, "127.0.0.1", 0)
    serve_in_thread(server)
    engine.start()
    try:
        yield engine, f"http://127.0.0.1:{server.server_port}{EVENTS_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        engine.close()
