"""Slack retries an event it thinks failed, and Bolt does not dedupe: a middleware processes each
``(team, event_id)`` once and answers a repeat with 200 at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltResponse

from bot.slack.context import SlackBot


def register(app: App, bot: SlackBot) -> None:
    @app.middleware
    def dedupe_events(body: dict[str, Any], next: Callable[[], None]) -> BoltResponse | None:
        if body.get("type") == "event_callback" and body.get("event_id"):
            team = str(body.get("team_id") or "")
            if not bot.events_seen.first_time(team, str(body["event_id"])):
                return BoltResponse(status=200, body="")
        next()
        return None
