"""manifest.yml is the single source of the app's commands, events and scopes: every command and
event in it has a listener in bot/slack/app.py, and back; and it is complete enough to paste."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_bolt import App

from bot.settings import BotSettings
from bot.slack import blocks
from bot.slack.app import ACTIONS, COMMANDS, EVENTS, create_app, make_client
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import FORM, action_body, bot_env, command_body, event_body, signed_request

ROOT = Path(__file__).resolve().parent.parent
MANIFEST: dict[str, Any] = yaml.safe_load((ROOT / "manifest.yml").read_text())
# What each listener needs; a scope not here is one too many, a missing one breaks a feature.
NEEDED_SCOPES = {
    "commands",
    "chat:write",
    "files:read",
    "files:write",
    "channels:history",
    "groups:history",
    "app_mentions:read",
}
EVENT_SCOPES = {
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "file_shared": "files:read",
    "app_mention": "app_mentions:read",
}


def _manifest_events() -> list[str]:
    return list(MANIFEST["settings"]["event_subscriptions"]["bot_events"])


def test_commands_and_events_match_the_listener_tables() -> None:
    commands = {c["command"] for c in MANIFEST["features"]["slash_commands"]}
    assert commands == set(COMMANDS)
    assert {e.split(".")[0] for e in _manifest_events()} == set(EVENTS)


def test_the_manifest_is_complete_and_minimal() -> None:
    info = MANIFEST["display_information"]
    assert 1 <= len(info["name"]) <= 35 and 1 <= len(info["description"]) <= 140
    assert 175 <= len(info["long_description"]) <= 4000
    assert MANIFEST["features"]["bot_user"]["display_name"]
    for command in MANIFEST["features"]["slash_commands"]:
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", command["command"])
        assert command["description"] and command["usage_hint"] and len(command["usage_hint"]) <= 1000
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert scopes == NEEDED_SCOPES
    for event in _manifest_events():
        assert EVENT_SCOPES[event] in scopes, event
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    assert MANIFEST["settings"]["socket_mode_enabled"] is True
    assert MANIFEST["settings"]["token_rotation_enabled"] is False


@pytest.fixture
def app() -> Iterator[App]:
    with FakeSlack() as slack:
        settings = BotSettings.from_env(bot_env(slack))
        yield create_app(None, settings, client=make_client(settings))


def _dispatch(app: App, body: str, content_type: str = "application/json") -> int:
    return app.dispatch(signed_request(body, content_type=content_type)).status


def test_every_manifest_command_event_and_button_reaches_a_listener(app: App) -> None:
    """Dispatched into the real app, each is handled (200), never Bolt's 404 for 'unhandled'."""
    for command in MANIFEST["features"]["slash_commands"]:
        assert _dispatch(app, command_body(command["command"], "help"), FORM) == 200, command
    samples = {
        "message": {
            "type": "message",
            "subtype": "file_share",
            "channel": "C1",
            "user": "U1",
            "ts": "1.1",
            "files": [{"id": "F1", "name": "cat.png", "size": 3, "url_private_download": "https://x/y"}],
        },
        "file_shared": {"type": "file_shared", "file_id": "F2", "user_id": "U1", "channel_id": "C1"},
        "app_mention": {
            "type": "app_mention",
            "user": "U1",
            "channel": "C1",
            "text": "<@UBOT0001>",
            "ts": "1.2",
        },
    }
    for event in _manifest_events():
        name = event.split(".")[0]
        assert _dispatch(app, event_body(samples[name])) == 200, event
    for action in ACTIONS:
        assert _dispatch(app, action_body(action, "x"), FORM) == 200, action


def _model_list() -> blocks.Message:
    """The model list with a *Use* button on a model, the base model and automatic."""
    from datetime import UTC, datetime

    from engine import DefaultChoice, ModelRecord

    model = ModelRecord(
        id="ft-1", kind="local_adapter", base_model="m", job_id=None, team="T", channel="C",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    return blocks.model_list([model], DefaultChoice(team="T", channel="C", mode="base"), base_model="m")


def test_every_button_the_app_renders_has_a_listener() -> None:
    rendered = json.dumps(
        [
            blocks.validation_report(
                {"ok": True, "stats": {"examples": 1}}, name="a.jsonl", dataset_hash="ab" * 32
            ).blocks,
            blocks.confirm_cost("ft-1", 12.5).blocks,
            _model_list().blocks,
        ]
    )
    found = set(re.findall(r'"action_id": "([a-z_]+)"', rendered))
    assert found <= set(ACTIONS) and blocks.ACTION_USE in found
