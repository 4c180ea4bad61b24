"""The Slack app: ``create_app(engine, settings, *, client)`` returns a configured Bolt ``App``.

What it listens to (the tables :data:`COMMANDS`, :data:`EVENTS`, :data:`ACTIONS` must match
``manifest.yml``; tests/test_manifest.py checks both ways):

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

Rules this module keeps (reference/slack-platform.md):

* **Ack at once, work elsewhere.** Listeners only parse (pure, microseconds) and ack; the work
  (downloads, engine calls, Slack posts) runs on this app's own thread pool, never on Bolt's
  listener threads, and training runs in the engine's worker process. Questions (``/ask``,
  mentions) have a pool of their own, bounded (:class:`BoundedPool`, :data:`ASK_WORKERS` running,
  :data:`ASK_MAX_WAITING` waiting): slow generation can never hold up ``/finetune``, uploads or
  buttons, and a question beyond that gets "the model is busy" at once instead of a long wait.
* **Idempotent.** Slack retries events and Bolt does not dedupe: events are deduplicated by
  ``(team, event_id)``. A file is taken in once per ``(team, channel, file id)``
  (:class:`OnceEach`): one upload can arrive as both ``message``/``file_share`` and
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

import logging
import re
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.settings import BotSettings
from bot.slack import blocks
from bot.slack.files import (
    DownloadError,
    check_file_meta,
    display_name,
    download,
    is_dataset_name,
    is_slack_file_id,
    safe_filename,
)
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
    parse_ask,
    parse_finetune,
)
from bot.slack.progress import JobCards
from engine import DatasetError, FtbotError, Job, JobNotFound, NotFound, UsageError

log = logging.getLogger("ftbot.slack")

COMMANDS = ("/finetune", "/ask")
EVENTS = ("message", "file_shared", "app_mention")
ACTIONS = blocks.ACTIONS

GENERIC_ERROR = "Something went wrong on my side; the admin can find the details in the bot's log."
NOT_ALLOWED = (
    "You are not on the list of people who may start fine-tuning jobs here (FTBOT_ALLOWED_USERS). "
    "Ask the bot's admin to add you."
)
NOT_ALLOWED_USE = (
    "You are not on the list of people who may use this bot's fine-tuning commands here "
    "(FTBOT_ALLOWED_USERS), so you cannot change this channel's model. Ask the bot's admin to add you."
)
BAD_FILE_ID = (
    "I did not take that upload: Slack sent a file id that is not in Slack's format (capital "
    "letters and digits), so I did not use it. Share the file again; if this keeps happening, "
    "tell the bot's admin."
)
# The /ask pool: questions answered at once (the local model server batches concurrent ones on its
# one generation thread; OpenAI questions wait on the network) and questions allowed to wait.
ASK_WORKERS = 4
ASK_MAX_WAITING = 16
# How long a file whose intake succeeded is remembered in memory (the store remembers it for good).
FILE_TTL_SECONDS = 24 * 3600.0
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")


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


class Seen:
    """A bounded, thread-safe "seen before?" set with a time-to-live (event and file ids)."""

    def __init__(
        self, *, ttl: float = 3600.0, max_items: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._items: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._ttl = ttl
        self._max = max_items
        self._clock = clock
        self._lock = threading.Lock()

    def first_time(self, *key: str) -> bool:
        """True the first time ``key`` is offered within the TTL (and remember it)."""
        now = self._clock()
        with self._lock:
            self._forget_old(now)
            if key in self._items:
                return False
            self._items[key] = now
            return True

    def knows(self, *key: str) -> bool:
        """True when ``key`` was offered within the TTL (without remembering it now)."""
        with self._lock:
            self._forget_old(self._clock())
            return key in self._items

    def _forget_old(self, now: float) -> None:
        """Drop expired keys, and the oldest beyond ``max_items`` (the caller holds the lock)."""
        while self._items:
            oldest, at = next(iter(self._items.items()))
            if now - at < self._ttl and len(self._items) < self._max:
                break
            self._items.pop(oldest)


class OnceEach:
    """Work done at most once per key: a key is *claimed* while its work runs (another delivery
    meanwhile is dropped) and *done* once the work succeeded (remembered for ``ttl``); a key
    whose work failed is released, so the next delivery does the work again."""

    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._done = Seen(ttl=ttl, clock=clock)
        self._running: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def claim(self, *key: str) -> bool:
        """True when the caller should do the work for ``key`` now (and must :meth:`release` it)."""
        with self._lock:
            if key in self._running or self._done.knows(*key):
                return False
            self._running.add(key)
            return True

    def release(self, *key: str, done: bool) -> None:
        """End a claim: ``done`` (the work succeeded) keeps ``key`` from being done again."""
        with self._lock:
            self._running.discard(key)
            if done:
                self._done.first_time(*key)


class BoundedPool:
    """A thread pool that says no instead of queueing without end: ``workers`` tasks run at once,
    at most ``max_waiting`` more wait for a thread, and :meth:`try_submit` refuses beyond that,
    so the caller can answer "busy" at once."""

    def __init__(self, *, workers: int, max_waiting: int, name: str = "ftbot-ask") -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.capacity = workers + max_waiting
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Tasks accepted and not finished (running or waiting)."""
        with self._lock:
            return self._taken

    def try_submit(self, task: Callable[[], None]) -> bool:
        """Run ``task`` on the pool and return True, or return False at once when it is full."""
        with self._lock:
            if self._taken >= self.capacity:
                return False
            self._taken += 1

        def run() -> None:
            try:
                task()
            finally:
                with self._lock:
                    self._taken -= 1

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down: nothing will run it
            with self._lock:
                self._taken -= 1
            return False
        return True


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


def _user_message(exc: BaseException) -> str:
    """What to tell the user about ``exc``: our own message for FtbotError, else generic."""
    if isinstance(exc, FtbotError):
        return str(exc)
    return GENERIC_ERROR


class SlackBot:
    """The listeners' logic. Holds the engine, the settings, the client and the work pool."""

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

    # ----- plumbing ------------------------------------------------------------------------------

    def submit(self, func: Callable[..., None], where: Where, *args: Any) -> None:
        """Run ``func(where, *args)`` on the work pool; report failures privately."""
        self.executor.submit(self._reporting(func, where, *args))

    def submit_ask(self, func: Callable[..., None], where: Where, *args: Any) -> bool:
        """Run ``func(where, *args)`` on the question pool (failures reported privately); False,
        and nothing runs, when the pool is full (tell the user :meth:`busy_message`)."""
        return self.ask_pool.try_submit(self._reporting(func, where, *args))

    def busy_message(self) -> blocks.Message:
        """What a question beyond the pool's capacity gets, at once."""
        n = self.ask_pool.pending
        waiting = f"{n} questions are waiting" if n != 1 else "1 question is waiting"
        return blocks.notice(f"The model is busy: {waiting} for an answer; try again in a minute.")

    def _reporting(self, func: Callable[..., None], where: Where, *args: Any) -> Callable[[], None]:
        """``func(where, *args)`` as a task that tells the user privately when it fails."""

        def run() -> None:
            try:
                func(where, *args)
            except FtbotError as exc:
                self.private(where, blocks.error(_user_message(exc)))
            except Exception:
                log.exception("listener work failed (%s)", getattr(func, "__name__", func))
                self.private(where, blocks.error(GENERIC_ERROR))

        return run

    def private(self, where: Where, message: blocks.Message) -> None:
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

    def post(self, where: Where, message: blocks.Message, *, thread_ts: str | None = None) -> Any:
        kwargs: dict[str, Any] = {"channel": where.channel, **message.kwargs()}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        return self.client.chat_postMessage(**kwargs)

    # ----- datasets ------------------------------------------------------------------------------

    def on_file_message(self, where: Where, event: Mapping[str, Any]) -> None:
        thread_ts = event.get("thread_ts") or event.get("ts")
        for file in event.get("files") or []:
            if isinstance(file, Mapping):
                self.take_file(Where(where.team, where.channel, where.user, thread_ts), dict(file))

    def on_file_shared(self, where: Where, event: Mapping[str, Any]) -> None:
        self.take_file(where, {"id": event.get("file_id") or (event.get("file") or {}).get("id")})

    def take_file(self, where: Where, file: dict[str, Any]) -> None:
        """Queue the intake of one shared file, unless this channel's intake of it is running or
        succeeded (a repeated delivery). A file id not in Slack's format is refused, privately,
        and never used."""
        fid = file.get("id")
        if not is_slack_file_id(fid):
            log.warning("refused a shared file whose id is not in Slack's format")
            self.submit(lambda w: self.private(w, blocks.error(BAD_FILE_ID)), where)
            return
        if self.files.claim(where.team, where.channel, fid):
            self.submit(self._intake_once, where, file)

    def _intake_once(self, where: Where, file: dict[str, Any]) -> None:
        """:meth:`intake`, then end the claim: remembered as done only when it succeeded."""
        done = False
        try:
            self.intake(where, file)
            done = True
        finally:
            self.files.release(where.team, where.channel, str(file["id"]), done=done)

    def _file_info(self, fid: str) -> dict[str, Any]:
        try:
            return dict(self.client.files_info(file=fid)["file"])
        except SlackApiError as exc:
            raise DownloadError(
                "I could not read that file's details from Slack.",
                hint="Check that the app has the files:read scope, then share the file again.",
            ) from exc

    def intake(self, where: Where, file: dict[str, Any]) -> None:
        """Download, store and validate one shared file (``file["id"]`` already checked with
        ``is_slack_file_id``); reply in its thread in ``where.channel``. Returns quietly for a
        file that is not a dataset, or one this channel already has (a repeated delivery).

        Raises:
            DownloadError: Slack's details or the download failed (the user is told by
                :meth:`submit`; the file can be shared again).
        """
        fid = str(file["id"])
        if self.engine.dataset_by_source(fid, team=where.team, channel=where.channel) is not None:
            log.info("ignoring shared file %s: already stored for this channel (a repeated delivery)", fid)
            return
        if not file.get("url_private_download") or file.get("mode") == "file_access" or "size" not in file:
            # file_shared or a Slack Connect stub: ask Slack (the id stays the one checked).
            file = {**file, **self._file_info(fid), "id": fid}
        original = str(file.get("name") or file.get("title") or "")
        if not is_dataset_name(original):
            log.info("ignoring shared file %s (%s): not JSONL", fid, file.get("filetype"))
            return
        name = safe_filename(original, f"{fid}.jsonl")  # stored and typed (`/finetune NAME`)
        shown = display_name(original) or name  # the reply shows the original (blocks escapes it)
        if where.thread_ts is None:
            where = Where(where.team, where.channel, where.user, _share_ts(file, where.channel))
        check_file_meta(file, max_bytes=self.settings.max_upload_bytes)
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        # Unique per intake: the same file can be taken in for two channels at once. Without a
        # work_dir each download gets a temporary directory of its own, removed with the file.
        scratch = None if self.work_dir is not None else tempfile.TemporaryDirectory(prefix="ftbot-upload-")
        folder = self.work_dir if self.work_dir is not None else Path(scratch.name)  # type: ignore[union-attr]
        dest = folder / f"{fid}-{uuid.uuid4().hex}.jsonl"
        try:
            download(
                url,
                dest,
                token=self.settings.bot_token or "",
                allowed_origins=self.settings.file_hosts,
                max_bytes=self.settings.max_upload_bytes,
            )
            try:
                record = self.engine.add_dataset(
                    dest,
                    name=name,
                    uploaded_by=where.user,
                    team=where.team,
                    channel=where.channel,
                    source_id=fid,
                )
                report, dataset_hash = record.report, record.hash
            except DatasetError as exc:
                report, dataset_hash = exc.report, None
        finally:
            dest.unlink(missing_ok=True)
            if scratch is not None:
                scratch.cleanup()
        usable = bool(blocks.as_dict(report).get("ok"))
        message = blocks.validation_report(report, name=shown, dataset_hash=dataset_hash if usable else None)
        self.post(where, message, thread_ts=where.thread_ts)

    def resolve_dataset(self, where: Where, ref: str | None) -> str:
        """A dataset hash from what the user typed: nothing (the channel's latest usable upload),
        a Slack file id, or a hash (or its first characters)."""
        if ref is None:
            record = self.engine.latest_dataset(where.team, where.channel)
            if record is None:
                raise NotFound(
                    "There is no usable dataset in this channel yet.",
                    hint="Upload a .jsonl file of chat examples here first; I will check it and reply.",
                )
            return str(record.hash)
        known = self.engine.dataset_by_source(ref, team=where.team)
        if known is not None:
            return str(known.hash)
        return str(self.engine.dataset(ref, team=where.team).hash)

    # ----- /finetune -----------------------------------------------------------------------------

    def start_job(self, where: Where, request: FinetuneRequest) -> None:
        dataset_hash = self.resolve_dataset(where, request.dataset)
        eval_hash = self.resolve_dataset(where, request.eval_dataset) if request.eval_dataset else None
        # The engine holds who may do what (the base models people may choose, the limit of
        # unfinished jobs per person); admins may choose any base model and have no limit.
        job = self.engine.submit(
            dataset_hash,
            options=dict(request.options),
            owner=where.user,
            team=where.team,
            channel=where.channel,
            eval_dataset_hash=eval_hash,
            is_admin=self.settings.is_admin(where.user),
        )
        if self.cards.ensure(job) is None:
            self.private(
                where,
                blocks.error(
                    f"Job {job.id} is queued, but I cannot post in this channel: invite me with /invite, "
                    f"then `/finetune status {job.id}`."
                ),
            )

    def cancel_job(self, where: Where, job_id: str) -> None:
        try:
            job: Job = self.engine.job(job_id, team=where.team)
        except NotFound:
            raise JobNotFound(
                f"There is no job {job_id} in this workspace.",
                hint="`/finetune list` shows the jobs in this channel.",
            ) from None
        is_admin = self.settings.is_admin(where.user)
        if job.owner != where.user and not is_admin:
            self.private(
                where,
                blocks.error(
                    f"Only the person who started {job.id} (<@{job.owner}>) or an admin can cancel it."
                ),
            )
            return
        if job.is_final:
            self.private(where, blocks.error(f"Job {job.id} has already ended ({job.state})."))
            return
        job = self.engine.cancel(job.id, user=where.user, is_admin=is_admin, team=where.team)
        self.cards.update(job)

    def confirm_job(self, where: Where, job_id: str) -> None:
        job: Job = self.engine.job(job_id, team=where.team)
        if job.owner != where.user:  # spending money is the owner's call, not an admin's
            self.private(where, blocks.error(f"Only the person who started {job.id} can accept its cost."))
            return
        self.engine.confirm(job.id, user=where.user, team=where.team)
        self.cards.post_in_thread(
            job, blocks.notice(f"<@{where.user}> accepted the cost; the job can start.")
        )

    def status(self, where: Where, job_id: str | None) -> None:
        if job_id:
            job = self.engine.job(job_id, team=where.team)
        else:
            jobs = self.engine.jobs(team=where.team, channel=where.channel, limit=1)
            if not jobs:
                self.private(where, blocks.jobs_list([]))
                return
            job = jobs[0]
        position = self.engine.queue_position(job.id) if not job.is_final else None
        self.private(where, blocks.job_card(job, queue_position=position))

    def list_jobs(self, where: Where) -> None:
        self.private(
            where, blocks.jobs_list(self.engine.jobs(team=where.team, channel=where.channel, limit=20))
        )

    # ----- the channel's current model -----------------------------------------------------------

    def list_models(self, where: Where) -> None:
        """``/finetune models``: privately, the workspace's models with the current one marked."""
        choice = self.engine.model_choice(where.team, where.channel)
        message = blocks.model_list(
            self.engine.models(where.team),
            choice,
            base_model=self.engine.settings.base_model,
            channel=where.channel,
        )
        self.private(where, message)

    def use_model(self, where: Where, choice: str) -> None:
        """``/finetune use`` or a *Use* button: change the channel's current model and say so in
        the channel, visibly, so the team sees who switched it. A bad id is the engine's
        ModelNotFound (private, with how to list the models)."""
        before = self.engine.model_choice(where.team, where.channel)
        after = self.engine.use_model(where.team, where.channel, choice, user=where.user)
        message = blocks.model_switched(
            after, user=where.user, previous=before, base_model=self.engine.settings.base_model
        )
        try:
            self.post(where, message)
        except SlackApiError as exc:
            log.info("announcing a model change failed: %s", exc.response.get("error"))
            self.private(
                where,
                blocks.error(
                    "Done: this channel's model is changed, but I cannot post here to tell the team. "
                    "Invite me with /invite @ftbot."
                ),
            )

    # ----- /ask and mentions ---------------------------------------------------------------------

    def answer(self, where: Where, request: AskRequest, model: str | None = None) -> None:
        """Answer in the channel (or thread); a placeholder shows after 2 s if it takes longer."""
        placeholder: dict[str, Any] = {}
        lock = threading.Lock()

        def show_working() -> None:
            with lock:
                if "done" in placeholder:
                    return
                resp = self.post(
                    where,
                    blocks.notice(f"Thinking about <@{where.user}>'s question…"),
                    thread_ts=where.thread_ts,
                )
                placeholder["ts"] = resp["ts"]

        timer = threading.Timer(2.0, show_working)
        timer.daemon = True
        timer.start()
        try:
            result = request.ask(self.engine, team=where.team, channel=where.channel, model=model)
        finally:
            timer.cancel()
            with lock:
                placeholder["done"] = True
        message = blocks.ask_answer(result, prompt=request.prompt, user=where.user)
        if "ts" in placeholder:
            self.client.chat_update(channel=where.channel, ts=placeholder["ts"], **message.kwargs())
        else:
            self.post(where, message, thread_ts=where.thread_ts)

    def on_mention(self, where: Where, text: str) -> None:
        prompt = _MENTION.sub("", text or "").strip()
        if not prompt:
            self.post(where, blocks.help_message("ask"), thread_ts=where.thread_ts)
            return
        request = parse_ask(prompt)
        if isinstance(request, HelpRequest):
            self.post(where, blocks.help_message("ask"), thread_ts=where.thread_ts)
            return
        model = None
        if where.thread_ts:
            job = self.job_for_thread(where)
            if job is not None:
                if not job.model_id:
                    self.post(
                        where,
                        blocks.notice(
                            f"Job {job.id} has no model yet ({job.state}); ask again when it has finished."
                        ),
                        thread_ts=where.thread_ts,
                    )
                    return
                model = job.model_id
        self.answer(where, request, model)

    def job_for_thread(self, where: Where) -> Job | None:
        for job in self.engine.jobs(team=where.team, channel=where.channel, limit=200):
            if str((job.reply_to or {}).get("ts")) == where.thread_ts:
                return job
        return None


def _share_ts(file: Mapping[str, Any], channel: str) -> str | None:
    """The message ts of ``file``'s share in ``channel`` (from files.info ``shares``)."""
    shares = file.get("shares") or {}
    for kind in ("public", "private"):
        for share in (shares.get(kind) or {}).get(channel) or []:
            if share.get("ts"):
                return str(share.get("thread_ts") or share["ts"])
    return None


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
        ask_pool: where questions (``/ask``, mentions) run (default: :data:`ASK_WORKERS`
            threads, :data:`ASK_MAX_WAITING` waiting; beyond that a question gets "busy").
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
    """Wire every command, event and action in the tables above to ``bot``."""

    @app.middleware
    def dedupe_events(body: dict[str, Any], next: Callable[[], None]) -> BoltResponse | None:
        # Slack retries an event it thinks failed; process each event_id once, answer 200 always.
        if body.get("type") == "event_callback" and body.get("event_id"):
            team = str(body.get("team_id") or "")
            if not bot.events_seen.first_time(team, str(body["event_id"])):
                return BoltResponse(status=200, body="")
        next()
        return None

    def where_from_command(command: Mapping[str, Any]) -> Where:
        return Where(
            team=str(command.get("team_id") or ""),
            channel=str(command.get("channel_id") or ""),
            user=str(command.get("user_id") or ""),
            response_url=command.get("response_url"),
        )

    @app.command("/finetune")
    def finetune(ack: Callable[..., None], command: dict[str, Any]) -> None:
        where = where_from_command(command)
        try:
            request = parse_finetune(command.get("text") or "")
        except ParseError as exc:
            ack(**blocks.error(str(exc)).kwargs())
            return
        if isinstance(request, HelpRequest):
            ack(**blocks.help_message("finetune").kwargs())
        elif isinstance(request, FinetuneRequest):
            if not bot.settings.may_start_jobs(where.user):
                ack(**blocks.error(NOT_ALLOWED).kwargs())
                return
            ack(text="Preparing the fine-tuning job; the job card will appear in this channel.")
            bot.submit(bot.start_job, where, request)
        elif isinstance(request, CancelRequest):
            ack(text=f"Cancelling {blocks.escape(request.job_id)}…")
            bot.submit(bot.cancel_job, where, request.job_id)
        elif isinstance(request, StatusRequest):
            ack()
            bot.submit(bot.status, where, request.job_id)
        elif isinstance(request, ListRequest):
            ack()
            bot.submit(bot.list_jobs, where)
        elif isinstance(request, ModelsRequest):
            ack()
            bot.submit(bot.list_models, where)
        elif isinstance(request, UseRequest):
            if not bot.settings.may_start_jobs(where.user):
                ack(**blocks.error(NOT_ALLOWED_USE).kwargs())
                return
            ack(text=f"Switching this channel's model to {blocks.escape(request.choice[:100])}…")
            bot.submit(bot.use_model, where, request.choice)

    @app.command("/ask")
    def ask(ack: Callable[..., None], command: dict[str, Any]) -> None:
        where = where_from_command(command)
        try:
            request = parse_ask(command.get("text") or "")
        except ParseError as exc:
            ack(**blocks.error(str(exc)).kwargs())
            return
        if isinstance(request, HelpRequest):
            ack(**blocks.help_message("ask").kwargs())
            return
        try:
            request.check(bot.engine)  # temperature / max_tokens out of range: say so at once
        except UsageError as exc:
            ack(**blocks.error(str(exc)).kwargs())
            return
        if not bot.submit_ask(bot.answer, where, request):
            ack(**bot.busy_message().kwargs())
            return
        ack(text=f"Thinking about: {blocks.escape(request.prompt[:200])}")

    def where_from_event(body: Mapping[str, Any], event: Mapping[str, Any]) -> Where:
        return Where(
            team=str(body.get("team_id") or event.get("team") or ""),
            channel=str(event.get("channel") or event.get("channel_id") or ""),
            user=str(event.get("user") or event.get("user_id") or ""),
            thread_ts=event.get("thread_ts"),
        )

    @app.event({"type": "message", "subtype": "file_share"})
    def file_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        bot.on_file_message(where_from_event(body, event), event)

    @app.event("file_shared")
    def file_shared(body: dict[str, Any], event: dict[str, Any]) -> None:
        bot.on_file_shared(where_from_event(body, event), event)

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
        if not bot.submit_ask(bot.on_mention, where, str(event.get("text") or "")):
            bot.submit(lambda w: bot.private(w, bot.busy_message()), where)

    @app.event("message")
    def other_messages() -> None:
        """Plain messages, edits, joins…: nothing to do, but answer 200 (not 404)."""

    @app.event(re.compile(".*"))
    def other_events() -> None:
        """Any other event type: 200 so Slack does not retry it."""

    def where_from_action(body: Mapping[str, Any]) -> Where:
        container = body.get("container") or {}
        return Where(
            team=str((body.get("team") or {}).get("id") or body.get("team_id") or ""),
            channel=str((body.get("channel") or {}).get("id") or container.get("channel_id") or ""),
            user=str((body.get("user") or {}).get("id") or ""),
            thread_ts=container.get("thread_ts"),
            response_url=body.get("response_url"),
        )

    def action_value(body: Mapping[str, Any]) -> str:
        actions = body.get("actions") or [{}]
        return str(actions[0].get("value") or "")

    @app.action(blocks.ACTION_START)
    def start_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        where = where_from_action(body)
        if not bot.settings.may_start_jobs(where.user):
            bot.submit(lambda w: bot.private(w, blocks.error(NOT_ALLOWED)), where)
            return
        bot.submit(
            bot.start_job,
            Where(where.team, where.channel, where.user, None, where.response_url),
            FinetuneRequest(dataset=action_value(body)),
        )

    @app.action(blocks.ACTION_CANCEL)
    def cancel_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        bot.submit(bot.cancel_job, where_from_action(body), action_value(body))

    @app.action(blocks.ACTION_CONFIRM)
    def confirm_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        bot.submit(bot.confirm_job, where_from_action(body), action_value(body))

    @app.action(blocks.ACTION_USE)
    def use_button(ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        where = where_from_action(body)
        if not bot.settings.may_start_jobs(where.user):
            bot.submit(lambda w: bot.private(w, blocks.error(NOT_ALLOWED_USE)), where)
            return
        # The list was private; the announcement goes to the channel itself, not a thread.
        where = Where(where.team, where.channel, where.user, None, where.response_url)
        bot.submit(bot.use_model, where, action_value(body))

    @app.action(re.compile(".*"))
    def other_actions(ack: Callable[..., None]) -> None:
        ack()

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        # Bolt's default handler only logs; we log without the body (it may hold user data).
        log.error("unhandled listener error: %s", type(error).__name__, exc_info=error)
