"""The buttons: Start fine-tuning (validation report), Cancel (owner or admin), the OpenAI cost
confirmation, and *Use this model* on the model list (the same as ``/finetune use``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import App

from bot.slack import blocks
from bot.slack.context import NOT_ALLOWED, NOT_ALLOWED_USE, SlackBot, Where, where_from_action
from bot.slack.jobs import cancel_job, confirm_job, start_job, use_model
from bot.slack.parse import FinetuneRequest


def action_value(body: Mapping[str, Any]) -> str:
    """The pressed button's value (a dataset hash, a job id, a model choice)."""
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _allowed_in_channel(bot: SlackBot, body: dict[str, Any], refusal: str) -> Where | None:
    """Where a button that starts or changes something answers: the channel itself (not a thread).
    None, after a private ``refusal``, when the user who pressed it may not start jobs."""
    where = where_from_action(body)
    if not bot.settings.may_start_jobs(where.user):
        bot.submit_private(where, blocks.error(refusal))
        return None
    return Where(where.team, where.channel, where.user, None, where.response_url)


def register(app: App, bot: SlackBot) -> None:
    @app.action(blocks.ACTION_START)
    def start_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        where = _allowed_in_channel(bot, body, NOT_ALLOWED)
        if where is not None:
            bot.submit(start_job, where, FinetuneRequest(dataset=action_value(body)))

    @app.action(blocks.ACTION_CANCEL)
    def cancel_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        bot.submit(cancel_job, where_from_action(body), action_value(body))

    @app.action(blocks.ACTION_CONFIRM)
    def confirm_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        bot.submit(confirm_job, where_from_action(body), action_value(body))

    @app.action(blocks.ACTION_USE)
    def use_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        # The list was private; the announcement goes to the channel itself, not a thread.
        where = _allowed_in_channel(bot, body, NOT_ALLOWED_USE)
        if where is not None:
            bot.submit(use_model, where, action_value(body))
