"""``app_mention``: in a job's thread, ask that job's model; elsewhere, the channel's model."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt import App

from bot.slack import blocks
from bot.slack.answers import answer
from bot.slack.context import SlackBot, Where, where_from_event
from bot.slack.parse import HelpRequest, parse_ask
from engine import Job

_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")


def register(app: App, bot: SlackBot) -> None:
    @app.event("app_mention")
    def mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        where = where_from_event(body, event)
        where = Where(
            where.team,
            where.channel,
            where.user,
            where.thread_ts or event.get("ts"),
            private_in_thread=bool(where.thread_ts),
        )
        if not bot.submit_ask(on_mention, where, str(event.get("text") or "")):
            bot.submit(_tell_busy, where)


def _tell_busy(bot: SlackBot, where: Where) -> None:
    """Privately, that the question pool is full (counted when this runs)."""
    bot.private(where, bot.busy_message())


def on_mention(bot: SlackBot, where: Where, text: str) -> None:
    """Answer the question in a mention (help when there is none), in its thread."""
    prompt = _MENTION.sub("", text or "").strip()
    if not prompt:
        bot.post(where, blocks.help_message("ask"), thread_ts=where.thread_ts)
        return
    request = parse_ask(prompt)
    if isinstance(request, HelpRequest):
        bot.post(where, blocks.help_message("ask"), thread_ts=where.thread_ts)
        return
    model = None
    if where.thread_ts:
        job = job_for_thread(bot, where)
        if job is not None:
            if not job.model_id:
                bot.post(
                    where,
                    blocks.notice(
                        f"Job {job.id} has no model yet ({job.state}); ask again when it has finished."
                    ),
                    thread_ts=where.thread_ts,
                )
                return
            model = job.model_id
    answer(bot, where, request, model)


def job_for_thread(bot: SlackBot, where: Where) -> Job | None:
    """The job whose card starts the thread ``where.thread_ts``, or None."""
    for job in bot.engine.jobs(team=where.team, channel=where.channel, limit=200):
        if str((job.reply_to or {}).get("ts")) == where.thread_ts:
            return job
    return None
