"""``/ask``: answer with the channel's model, on the question pool ("busy" at once when full)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.context import SlackBot
from bot.slack.slash import command_listener


def register(app: App, bot: SlackBot) -> None:
    app.command("/ask")(command_listener(bot, "/ask"))
