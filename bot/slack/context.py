"""What every listener shares: :class:`Where` (who asked, from where), :class:`SlackBot` (the
engine, settings, client, job cards, the work pools and the ways to reply), and the readers of
Slack's payloads (:func:`where_from_command`, :func:`where_from_event`, :func:`where_from_action`).

Work runs off Bolt's listener threads (:meth:`SlackBot.submit`, :meth:`SlackBot.submit_ask`) and
reports its failures privately: our own message for an ``FtbotError``, :data:`GENERIC_ERROR` for
anything else (never its text, a token, a file URL or a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.settings import BotSettings
from bot.slack import blocks
from bot.slack.blockkit import Message
from bot.slack.once import OnceEach, Seen
from bot.slack.pools import ASK_MAX_WAITING, ASK_WORKERS, BoundedPool
from bot.slack.progress import JobCards
from engine import FtbotError

log = logging.getLogger("ftbot.slack")

GENERIC_ERROR = "Something went wrong on my side; the admin can find the details in the bot's log."
NOT_ALLOWED = (
    "You are not on the list of people who may start fine-tuning jobs here (FTBOT_ALLOWED_USERS). "
    "Ask the bot's admin to add you."
)
NOT_ALLOWED_USE = (
    "You are not on the list of people who may use this bot's fine-tuning commands here "
    "(FTBOT_ALLOWED_USERS), so you cannot change this channel's model. Ask the bot's admin to add you."
)
# How long a file whose intake succeeded is remembered in memory (the store remembers it for good).
FILE_TTL_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Where:
    """Who asked, from where: every engine call is scoped by ``team``."""

    team: str
    channel: str
    user: str
    thread_ts: str | None = None
    response_url: str | None = None
    # Ephemeral replies show inside a thread only when the thread already exists (a mention in a
    # job's thread), not under a fresh upload: there they go to the channel.
    private_in_thread: bool = False


def where_from_command(command: Mapping[str, Any]) -> Where:
    """Where a slash command came from."""
    return Where(
        team=str(command.get("team_id") or ""),
        channel=str(command.get("channel_id") or ""),
        user=str(command.get("user_id") or ""),
        response_url=command.get("response_url"),
    )


def where_from_event(body: Mapping[str, Any], event: Mapping[str, Any]) -> Where:
    """Where an Events API event came from (its thread, if any)."""
    return Where(
        team=str(body.get("team_id") or event.get("team") or ""),
        channel=str(event.get("channel") or event.get("channel_id") or ""),
        user=str(event.get("user") or event.get("user_id") or ""),
        thread_ts=event.get("thread_ts"),
    )


def where_from_action(body: Mapping[str, Any]) -> Where:
    """Where a button press came from (the message's thread, if any)."""
    container = body.get("container") or {}
    return Where(
        team=str((body.get("team") or {}).get("id") or body.get("team_id") or ""),
        channel=str((body.get("channel") or {}).get("id") or container.get("channel_id") or ""),
        user=str((body.get("user") or {}).get("id") or ""),
        thread_ts=container.get("thread_ts"),
        response_url=body.get("response_url"),
    )


def user_message(exc: BaseException) -> str:
    """What to tell the user about ``exc``: our own message for FtbotError, else generic."""
    if isinstance(exc, FtbotError):
        return str(exc)
    return GENERIC_ERROR


class SlackBot:
    """The listeners' shared state: the engine, the settings, the client, the job cards, the work
    pools, and the in-memory deduplication of events and file intakes."""

    def __init__(
        self,
        engine: Any,
        settings: BotSettings,
        client: WebClient,
        *,
        cards: JobCards,
        executor: Executor,
        work_dir: Path | None = None,
        ask_pool: BoundedPool | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.client = client
        self.cards = cards
        self.executor = executor
        self.ask_pool = ask_pool or BoundedPool(workers=ASK_WORKERS, max_waiting=ASK_MAX_WAITING)
        self.work_dir = work_dir
        self.events_seen = Seen()
        # Repeated deliveries within this process; across restarts the engine's record of each
        # upload (Engine.dataset_by_source by team, channel and file id) answers.
        self.files = OnceEach(ttl=FILE_TTL_SECONDS)

    def submit(self, func: Callable[..., None], where: Where, *args: Any) -> None:
        """Run ``func(self, where, *args)`` on the work pool; report failures privately."""
        self.executor.submit(self._reporting(func, where, *args))

    def submit_ask(self, func: Callable[..., None], where: Where, *args: Any) -> bool:
        """Run ``func(self, where, *args)`` on the question pool (failures reported privately);
        False, and nothing runs, when the pool is full (tell the user :meth:`busy_message`)."""
        return self.ask_pool.try_submit(self._reporting(func, where, *args))

    def submit_private(self, where: Where, message: Message) -> None:
        """Send ``message`` privately from the work pool (a listener only acks)."""
        self.submit(_send_private, where, message)

    def busy_message(self) -> Message:
        """What a question beyond the pool's capacity gets, at once."""
        n = self.ask_pool.pending
        waiting = f"{n} questions are waiting" if n != 1 else "1 question is waiting"
        return blocks.notice(f"The model is busy: {waiting} for an answer; try again in a minute.")

    def _reporting(self, func: Callable[..., None], where: Where, *args: Any) -> Callable[[], None]:
        """``func(self, where, *args)`` as a task that tells the user privately when it fails."""

        def run() -> None:
            try:
                func(self, where, *args)
            except FtbotError as exc:
                self.private(where, blocks.error(user_message(exc)))
            except Exception:
                log.exception("listener work failed (%s)", getattr(func, "__name__", func))
                self.private(where, blocks.error(GENERIC_ERROR))

        return run

    def private(self, where: Where, message: Message) -> None:
        """An ephemeral message to the user; through ``response_url`` when the bot cannot post
        in the channel (it is not a member)."""
        try:
            kwargs: dict[str, Any] = {"channel": where.channel, "user": where.user, **message.kwargs()}
            if where.thread_ts and where.private_in_thread:
                kwargs["thread_ts"] = where.thread_ts
            self.client.chat_postEphemeral(**kwargs)
            return
        except SlackApiError as exc:
            log.info("chat.postEphemeral failed: %s", exc.response.get("error"))
        if where.response_url:
            try:
                WebhookClient(where.response_url, timeout=10).send(
                    response_type="ephemeral", replace_original=False, **message.kwargs()
                )
            except Exception:  # best effort: nowhere left to tell the user
                log.warning("response_url reply failed")

    def post(self, where: Where, message: Message, *, thread_ts: str | None = None) -> Any:
        """A message in the channel (in ``thread_ts``'s thread when given), visible to everyone."""
        kwargs: dict[str, Any] = {"channel": where.channel, **message.kwargs()}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        return self.client.chat_postMessage(**kwargs)


def _send_private(bot: SlackBot, where: Where, message: Message) -> None:
    bot.private(where, message)
