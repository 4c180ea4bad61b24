"""The slash commands' replies: :class:`CommandReply` answers each request of the shared command
table (bot/dispatch.py) by acknowledging at once, privately (help, refusals, errors) or with a
short note, and queueing the work (bot/slack/jobs.py, bot/slack/answers.py) on a pool.
:func:`command_listener` is the Bolt listener of one command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.dispatch import dispatch
from bot.slack import blocks
from bot.slack.answers import answer
from bot.slack.blockkit import escape
from bot.slack.context import NOT_ALLOWED, NOT_ALLOWED_USE, SlackBot, Where, where_from_command
from bot.slack.jobs import cancel_job, list_jobs, list_models, start_job, status, use_model
from bot.slack.parse import (
    AskRequest,
    CancelRequest,
    FinetuneRequest,
    HelpRequest,
    ListRequest,
    ModelsRequest,
    ParseError,
    StatusRequest,
    UseRequest,
)
from engine import UsageError


class CommandReply:
    """A :class:`bot.dispatch.Handler` for one slash command: ``ack`` within Slack's 3 seconds,
    the work on the bot's pools."""

    def __init__(self, bot: SlackBot, ack: Callable[..., None], where: Where) -> None:
        self.bot, self.ack, self.where = bot, ack, where

    def on_help(self, request: HelpRequest) -> None:
        self.ack(**blocks.help_message(request.topic).kwargs())

    def on_start(self, request: FinetuneRequest) -> None:
        if not self.bot.settings.may_start_jobs(self.where.user):
            self.ack(**blocks.error(NOT_ALLOWED).kwargs())
            return
        self.ack(text="Preparing the fine-tuning job; the job card will appear in this channel.")
        self.bot.submit(start_job, self.where, request)

    def on_cancel(self, request: CancelRequest) -> None:
        self.ack(text=f"Cancelling {escape(request.job_id)}…")
        self.bot.submit(cancel_job, self.where, request.job_id)

    def on_status(self, request: StatusRequest) -> None:
        self.ack()
        self.bot.submit(status, self.where, request.job_id)

    def on_list(self, request: ListRequest) -> None:
        self.ack()
        self.bot.submit(list_jobs, self.where)

    def on_models(self, request: ModelsRequest) -> None:
        self.ack()
        self.bot.submit(list_models, self.where)

    def on_use(self, request: UseRequest) -> None:
        if not self.bot.settings.may_start_jobs(self.where.user):
            self.ack(**blocks.error(NOT_ALLOWED_USE).kwargs())
            return
        self.ack(text=f"Switching this channel's model to {escape(request.choice[:100])}…")
        self.bot.submit(use_model, self.where, request.choice)

    def on_ask(self, request: AskRequest) -> None:
        try:
            request.check(self.bot.engine)  # temperature / max_tokens out of range: say so at once
        except UsageError as exc:
            self.ack(**blocks.error(str(exc)).kwargs())
            return
        if not self.bot.submit_ask(answer, self.where, request):
            self.ack(**self.bot.busy_message().kwargs())
            return
        self.ack(text=f"Thinking about: {escape(request.prompt[:200])}")


def command_listener(bot: SlackBot, name: str) -> Callable[..., None]:
    """The Bolt listener of the slash command ``name`` (a key of ``bot.dispatch.PARSERS``): parse,
    route to a :class:`CommandReply`, and ack a malformed command with what is accepted."""

    def listener(ack: Callable[..., None], command: dict[str, Any]) -> None:
        try:
            dispatch(name, command.get("text") or "", CommandReply(bot, ack, where_from_command(command)))
        except ParseError as exc:
            ack(**blocks.error(str(exc)).kwargs())

    listener.__name__ = f"command_{name.strip('/')}"
    return listener
