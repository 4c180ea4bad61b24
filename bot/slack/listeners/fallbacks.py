"""What no other listener takes: plain messages, other events and actions get 200 (Bolt answers
unmatched requests with 404, and Slack retries those), and listener errors are logged without the
request body. Registered last: Bolt runs the first listener that matches."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import App

from bot.slack.context import SlackBot

log = logging.getLogger("ftbot.slack")


def register(app: App, bot: SlackBot) -> None:
    @app.event("message")
    def other_messages() -> None:
        """Plain messages, edits, joins…: nothing to do, but answer 200 (not 404)."""

    @app.event(re.compile(".*"))
    def other_events() -> None:
        """Any other event type: 200 so Slack does not retry it."""

    @app.action(re.compile(".*"))
    def other_actions(ack: Callable[..., None]) -> None:
        ack()

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        # Bolt's default handler only logs; we log without the body (it may hold user data).
        log.error("unhandled listener error: %s", type(error).__name__, exc_info=error)
