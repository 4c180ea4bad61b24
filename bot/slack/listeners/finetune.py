"""``/finetune``: start a job, or ``status | list | cancel JOB | models | use MODEL | help``
(bot/dispatch.py routes each request; bot/slack/slash.py acks and queues the work)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.context import SlackBot
from bot.slack.slash import command_listener


def register(app: App, bot: SlackBot) -> None:
    app.command("/finetune")(command_listener(bot, "/finetune"))
