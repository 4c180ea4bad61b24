"""Answering a question (``/ask`` or a mention) in the channel, with a placeholder when the
model takes longer than two seconds. Runs on the question pool
(:meth:`bot.slack.context.SlackBot.submit_ask`)."""

from __future__ import annotations

import threading
from typing import Any

from bot.slack import blocks
from bot.slack.context import SlackBot, Where
from bot.slack.parse import AskRequest

PLACEHOLDER_AFTER_SECONDS = 2.0


def answer(bot: SlackBot, where: Where, request: AskRequest, model: str | None = None) -> None:
    """Answer in the channel (or thread); a placeholder shows after 2 s if it takes longer.
    ``model`` (a job thread's model) overrides the request's."""
    placeholder: dict[str, Any] = {}
    lock = threading.Lock()

    def show_working() -> None:
        with lock:
            if "done" in placeholder:
                return
            resp = bot.post(
                where,
                blocks.notice(f"Thinking about <@{where.user}>'s question…"),
                thread_ts=where.thread_ts,
            )
            placeholder["ts"] = resp["ts"]

    timer = threading.Timer(PLACEHOLDER_AFTER_SECONDS, show_working)
    timer.daemon = True
    timer.start()
    try:
        result = request.ask(bot.engine, team=where.team, channel=where.channel, model=model)
    finally:
        timer.cancel()
        with lock:
            placeholder["done"] = True
    message = blocks.ask_answer(result, prompt=request.prompt, user=where.user)
    if "ts" in placeholder:
        bot.client.chat_update(channel=where.channel, ts=placeholder["ts"], **message.kwargs())
    else:
        bot.post(where, message, thread_ts=where.thread_ts)
