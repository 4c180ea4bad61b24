"""The Slack listeners, one module per command or event, each with ``register(app, bot)`` (the
layout of Bolt's starter template). :func:`register` wires them all, in an order that matters:
Bolt runs the first listener that matches, so the catch-alls (bot/slack/listeners/fallbacks.py)
come last."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.context import SlackBot
from bot.slack.listeners import ask, buttons, dedupe, fallbacks, finetune, mention, uploads


def register(app: App, bot: SlackBot) -> None:
    """Wire the dedupe middleware, every command, event and action, then the catch-alls."""
    for module in (dedupe, finetune, ask, uploads, mention, buttons, fallbacks):
        module.register(app, bot)
