"""The Slack app: ``create_app(engine, settings, *, client)`` returns a configured Bolt ``App``.

What it listens to (the tables :data:`COMMANDS`, :data:`EVENTS`, :data:`ACTIONS` must match
``manifest.yml``; tests/test_manifest.py checks both ways):

Each command and event has its module in bot/slack/listeners/ (``register(app, bot)``); the work
they queue is in bot/slack/jobs.py, bot/slack/answers.py and listeners/uploads.py; what they share
(:class:`bot.slack.context.SlackBot`: the engine, the client, the pools, the ways to reply) in
bot/slack/context.py.

* ``message`` with files (subtype ``file_share``) and ``file_shared``: download the JSONL file
  (bot/slack/files.py), store and validate it (``Engine.add_dataset``), reply in the file's
  thread with the report and a Start fine-tuning button.
* ``/finetune``: start a job (post the job card; bot/slack/progress.py edits it), or
  ``status | list | cancel JOB | help``; ``models`` (the workspace's models, the channel's current
  one marked with who chose it) and ``use MODEL_ID|base|auto`` (change the channel's current model,
  announced in the channel). ``/ask``: answer with the channel's model.
* ``app_mention``: in a job's thread, ask that job's model; elsewhere, the channel's model.
* buttons: Start fine-tuning, Cancel (owner or admin), the OpenAI cost confirmation, *Use this
  model* on the model list (the same as ``/finetune use``).

Rules the listeners keep (Slack's platform: ack within 3 seconds; events and 404s are retried):

* **Ack at once, work elsewhere.** Listeners only parse (pure, microseconds) and ack; the work
  (downloads, engine calls, Slack posts) runs on this app's own thread pool, never on Bolt's
  listener threads, and training runs in the engine's worker process. Questions (``/ask``,
  mentions) have a pool of their own, bounded (bot/slack/pools.py: ``BoundedPool``, ``ASK_WORKERS``
  running, ``ASK_MAX_WAITING`` waiting): slow generation can never hold up ``/finetune``, uploads or
  buttons, and a question beyond that gets "the model is busy" at once instead of a long wait.
* **Idempotent.** Slack retries events and Bolt does not dedupe: events are deduplicated by
  ``(team, event_id)``. A file is taken in once per ``(team, channel, file id)``
  (``OnceEach``, bot/slack/once.py): one upload can arrive as both ``message``/``file_share`` and
  ``file_shared``, and a second delivery is dropped while the first is being handled or once it
  succeeded; an intake that failed (a download error, Slack's files.info refusing) is forgotten,
  so sharing the file again works. Across restarts the engine's record of each upload
  (``Engine.dataset_by_source`` by team, channel and file id) answers. A catch-all listener
  answers every other event and action with 200, because Bolt answers unmatched requests with 404
  and Slack retries those.
* **One file, many channels.** The same file shared into another channel is validated and
  answered there too, in the file's thread in that channel: the dataset is stored once
  (content-addressed), with one dataset record per channel, so ``/finetune`` with no dataset
  finds it in each channel.
* **Slack's values are checked before use.** A file id must look like a Slack id
  (``[A-Z0-9]+``) before it becomes part of a path or a database key (anything else gets a clear
  refusal); a file is a dataset when its own name ends in ``.jsonl`` (any length, any
  characters); the name stored is derived (bot/slack/files.py ``safe_filename``) and the original
  is shown, escaped.
* **Who may do what.** ``FTBOT_ALLOWED_USERS`` may start jobs and change a channel's current
  model (empty: everyone); the owner or an ``FTBOT_ADMINS`` member may cancel. Every engine call carries the request's team, so nothing
  from another workspace is visible.
* **Errors are private** (ack text or ``chat.postEphemeral``) and built from our own messages
  (``FtbotError.message``); an unexpected exception gives a generic reply, never its text, a
  token, a file URL or a traceback.
* **No environment.** Bolt reads ``SLACK_*`` variables for anything it is not given; every value
  is passed explicitly (see bot/settings.py for the OAuth trap).
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.dispatch import PARSERS
from bot.settings import BotSettings
from bot.slack import blocks, listeners
from bot.slack.context import SlackBot
from bot.slack.pools import BoundedPool
from bot.slack.progress import JobCards
from engine import UsageError

COMMANDS = tuple(PARSERS)  # the slash commands of the shared table (bot/dispatch.py)
EVENTS = ("message", "file_shared", "app_mention")
ACTIONS = blocks.ACTIONS


def make_client(settings: BotSettings, *, timeout: int = 30) -> WebClient:
    """The bot's Web API client: SLACK_API_URL, the bot token, and the SDK's retry handlers for
    rate limits (HTTP 429 + Retry-After) and dropped connections."""
    client = WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=timeout)
    add_retry_handlers(client)
    return client


def add_retry_handlers(client: WebClient) -> None:
    """Make sure ``client`` retries 429s (3 times) and connection errors (2 times).

    Bolt copies these handlers into every per-request client, so listeners get them too.
    """
    kinds = {type(h) for h in client.retry_handlers}
    if RateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
    if ConnectionErrorRetryHandler not in kinds:
        client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=2))


def create_app(
    engine: Any,
    settings: BotSettings,
    *,
    client: WebClient,
    cards: JobCards | None = None,
    executor: Executor | None = None,
    ask_pool: BoundedPool | None = None,
    work_dir: Path | None = None,
    token_verification: bool = True,
) -> App:
    """Build the Bolt app around ``engine`` (the Engine facade) and ``client``.

    Args:
        engine: the Engine; its ``sink_for`` should be ``cards.sink_for`` so jobs report on
            their cards (``ftbot serve`` wires this).
        settings: who may do what, file limits, the signing secret.
        client: the Web API client (see :func:`make_client`); retry handlers are added if missing.
        cards: the job card registry shared with the engine's ``sink_for`` (one is made if None).
        executor: where post-ack work runs (default: a pool of 8 threads), except questions.
        ask_pool: where questions (``/ask``, mentions) run (default: ``ASK_WORKERS``
            threads, ``ASK_MAX_WAITING`` waiting; beyond that a question gets "busy").
        work_dir: where downloads land before the engine stores them (default: a temporary
            directory per download, removed with it: nothing is left behind).
        token_verification: call ``auth.test`` now (fails fast on a bad token).

    Raises:
        UsageError: HTTP use without a signing secret.
    """
    if settings.mode != "socket" and not settings.signing_secret:
        raise UsageError("SLACK_SIGNING_SECRET is needed to serve Slack over HTTP.")
    add_retry_handlers(client)
    cards = cards or JobCards(client, engine)
    bot = SlackBot(
        engine,
        settings,
        client,
        cards=cards,
        executor=executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="ftbot-work"),
        ask_pool=ask_pool,
        work_dir=work_dir,
    )
    app = App(
        client=client,
        signing_secret=settings.signing_secret or "",  # "" (not None) so Bolt does not read the env
        # Always verify HTTP requests when there is a secret (Bolt skips it for Socket Mode
        # requests by itself); without one this app is Socket-Mode-only (checked above).
        request_verification_enabled=bool(settings.signing_secret),
        token_verification_enabled=token_verification,
        name="ftbot",
        listener_executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="ftbot-bolt"),
    )
    register(app, bot)
    return app


def register(app: App, bot: SlackBot) -> None:
    """Wire every command, event and action in the tables above to ``bot``
    (bot/slack/listeners/)."""
    listeners.register(app, bot)
