"""The job card and its thread: a progress sink that reports a job in Slack.

One message per job (the card) is posted in the channel and then edited in place with
``chat.update``. Everything else about the job goes into the card's thread: the pre-flight estimate
(and the OpenAI cost confirmation), baseline results, alerts, the loss chart (a PNG through
``files_upload_v2(channel=, thread_ts=)``), the evaluation table, the verdict, the examples that
changed, and whether the model became the channel's default. The final result is also broadcast
to the channel (``reply_broadcast``).

The path of an event: the worker writes it to the store; the engine's relay (engine/relay.py)
reads it, throttles ``step`` events, and hands it to this job's :class:`SlackProgressSink`
(``engine.subscribe(cards.sink_for)``), which queues the Slack calls on the ``sender`` thread. The
relay keeps what was shown (its per-job delivery cursor, moved by :meth:`SlackProgressSink.
after_shown` once the calls before it ran) and catches up after a restart (``recall``, ``replay``).
This module only renders: no cursor, and no throttle unless ``min_interval`` asks for one (a card
used without the relay).

Where the card lives is stored with the job (``Job.reply_to``: team, channel, ts), so a restarted
bot keeps editing the same card. :class:`JobCards` is the one place that posts cards, under a
per-job lock, so the listener that submitted the job and the relay's first event never post two
cards for one job. A sink must never raise for a display problem (engine/progress.py): Slack
errors are logged and dropped, the job goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.job_progress import JobProgress
from bot.progress_view import LIVE_KINDS, chart_title, thread_messages
from bot.slack import blocks
from engine import Job, JobState, ProgressEvent

log = logging.getLogger("ftbot.slack")

# The relay's throttle for cards (``engine.subscribe(cards.sink_for, min_interval=...)``): seconds
# between two ``step`` events, hence between two card edits for steps.
DEFAULT_MIN_INTERVAL = 3.0


class CardJobs(Protocol):
    """What the cards read and write about jobs (the Engine provides it)."""

    def job(self, job_id: str, *, team: str | None = None) -> Job: ...

    def queue_position(self, job_id: str) -> int | None: ...

    def set_reply_to(self, job_id: str, reply_to: Mapping[str, Any]) -> Job: ...

    def evaluation(self, job_id: str, *, team: str | None = None) -> dict[str, Any] | None: ...


def _safe(what: str, func: Callable[[], Any]) -> Any:
    """Run a Slack call; log and swallow Slack errors (never the token: the SDK error text has none)."""
    try:
        return func()
    except (SlackApiError, SlackRequestError, OSError) as exc:
        detail = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
        log.warning("Slack %s failed: %s", what, detail)
        return None


class JobCards:
    """Posts and edits job cards; hands out a progress sink per job (:meth:`sink_for`).

    ``jobs``: where job details are read and the card's place is stored (the Engine; None: the
    cards only talk to Slack). The engine does not know the cards: it is handed ``sink_for``.

    ``sender``: where the Slack calls of the sinks run. None: in the thread that emits (the
    relay; what the unit tests use). The bot passes a one-thread executor, so a slow or
    rate-limited Slack (the SDK sleeps out a 429's Retry-After) never holds up the job queue's
    tick, and one thread keeps every job's events in order.

    ``min_interval``: seconds between two card edits for ``step``/``eval`` events (default 0: the
    relay throttles; a card used without it may ask for its own limit).

    One sink per job while the job runs (:meth:`sink_for` hands the same one out again, e.g.
    when the relay rebuilds its sink after ``set_reply_to``), so the card's readings live in one place.
    """

    def __init__(
        self,
        client: WebClient,
        jobs: CardJobs | None = None,
        *,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sender: Executor | None = None,
    ) -> None:
        self.client = client
        self.jobs = jobs
        self.min_interval = min_interval
        self.clock = clock
        self.sender = sender
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._reply_to: dict[str, dict[str, str]] = {}
        self._sinks: dict[str, SlackProgressSink] = {}
        # Jobs whose card Slack refused (not a Slack channel, bot not invited): tried once, not
        # on every event of the job.
        self._no_card: set[str] = set()

    def drain(self) -> None:
        """Wait until the sender has shown every event handed to it so far (the bot calls this
        when the engine stops, so nothing is shown against a closed store)."""
        if self.sender is not None:
            self.sender.submit(lambda: None).result()

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def reply_to(self, job: Job) -> dict[str, str] | None:
        """Where ``job``'s card is: our cache, then the job's stored ``reply_to``, else None."""
        cached = self._reply_to.get(job.id)
        if cached:
            return cached
        stored = dict(job.reply_to or {})
        if stored.get("ts") and stored.get("channel"):
            self._reply_to[job.id] = {k: str(v) for k, v in stored.items()}
            return self._reply_to[job.id]
        return None

    def ensure(self, job: Job, *, dataset_name: str | None = None) -> dict[str, str] | None:
        """Post ``job``'s card unless it exists; store where it is (``Engine.set_reply_to``).

        Returns ``{"team", "channel", "ts"}``, or None when the job has no channel (console jobs)
        or Slack refused the post.
        """
        jobs = self.jobs
        with self._lock(job.id):
            where = self.reply_to(job)
            if where is None and jobs is not None:
                # Another process (or an earlier bot) may have posted it: re-read the job.
                fresh = _safe_engine(lambda: jobs.job(job.id, team=job.team or None))
                if fresh is not None:
                    where = self.reply_to(fresh)
                    job = fresh
            if where is not None:
                return where
            if not job.channel or job.id in self._no_card:
                return None
            position = _safe_engine(lambda: jobs.queue_position(job.id)) if jobs is not None else None
            card = blocks.job_card(job, queue_position=position, dataset_name=dataset_name)
            resp = _safe(
                "chat.postMessage (card)",
                lambda: self.client.chat_postMessage(channel=job.channel, **card.kwargs()),
            )
            if resp is None:
                self._no_card.add(job.id)
                return None
            where = {"team": job.team, "channel": str(resp["channel"]), "ts": str(resp["ts"])}
            self._reply_to[job.id] = where
            if jobs is not None:
                _safe_engine(lambda: jobs.set_reply_to(job.id, where))
            return where

    def update(self, job: Job, progress: JobProgress | None = None) -> None:
        where = self.reply_to(job)
        if where is None:
            return
        position, jobs = None, self.jobs
        if job.state == JobState.QUEUED and jobs is not None:
            position = _safe_engine(lambda: jobs.queue_position(job.id))
        card = blocks.job_card(job, progress, queue_position=position)
        _safe(
            "chat.update (card)",
            lambda: self.client.chat_update(channel=where["channel"], ts=where["ts"], **card.kwargs()),
        )

    def post_in_thread(self, job: Job, message: blocks.Message, *, broadcast: bool = False) -> None:
        where = self.reply_to(job)
        if where is None:
            return
        extra = {"reply_broadcast": True} if broadcast else {}
        _safe(
            "chat.postMessage (thread)",
            lambda: self.client.chat_postMessage(
                channel=where["channel"], thread_ts=where["ts"], **message.kwargs(), **extra
            ),
        )

    def upload_in_thread(self, job: Job, path: Path, *, title: str, comment: str | None = None) -> None:
        where = self.reply_to(job)
        if where is None or not path.is_file():
            return
        # No alt_txt: it can make the share fail silently (python-slack-sdk#1818).
        _safe(
            "files_upload_v2 (chart)",
            lambda: self.client.files_upload_v2(
                channel=where["channel"],
                thread_ts=where["ts"],
                file=str(path),
                filename=path.name,
                title=title,
                initial_comment=comment,
            ),
        )

    def sink_for(self, job: Job) -> SlackProgressSink:
        """What the engine is subscribed to (``engine.subscribe(cards.sink_for)``): the sink that
        reports ``job`` on its card and thread (the same one for the job until its end was shown)."""
        with self._guard:
            sink = self._sinks.get(job.id)
            if sink is None:
                sink = self._sinks[job.id] = SlackProgressSink(self, job)
            return sink

    def _forget(self, sink: SlackProgressSink) -> None:
        """The job's end was shown: drop its sink (a later event builds a new one; the relay
        has it recall what was shown)."""
        with self._guard:
            if self._sinks.get(sink.job.id) is sink:
                del self._sinks[sink.job.id]


def _safe_engine(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception:  # display code must not break the job; the engine logged its own error
        log.exception("engine lookup for the job card failed")
        return None


_FINAL = frozenset(s.value for s in JobState if s.is_final)


class SlackProgressSink:
    """Reports one job's events on its card and in the card's thread. Never raises.

    What the relay (engine/relay.py) may call besides :meth:`emit`: :meth:`recall` (events an
    earlier process showed: rebuild the card's readings), :meth:`replay` (events never shown:
    each thread milestone once, the card edited once at the end) and :meth:`after_shown` (run a
    callback once everything handed over so far is shown). All of them run on the ``sender``.
    """

    def __init__(self, cards: JobCards, job: Job) -> None:
        self.cards = cards
        self.job = job
        self.progress = JobProgress(state=str(job.state))
        self._last_edit: float | None = None
        self._dirty = False
        self._shown: set[str] = set()  # caveats already in the verdict (not posted again as alerts)
        self._lock = threading.Lock()
        self._replaying = False  # card edits wait for the end of a replay: one edit, not hundreds
        self._ended = False

    def emit(self, event: ProgressEvent) -> None:
        self._submit(self._show, event)

    def recall(self, events: list[ProgressEvent]) -> None:
        """Take in events shown before (by an earlier process) without showing them again."""
        self._submit(self._recall, list(events))

    def replay(self, events: list[ProgressEvent]) -> None:
        """Show events that were never shown (after a restart), the card edited once at the end."""
        self._submit(self._replay, list(events))

    def after_shown(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every event handed over before it is shown (on the sender)."""
        self._submit(callback)

    def _submit(self, func: Callable[..., None], *args: Any) -> None:
        if self.cards.sender is None:
            func(*args)
        else:
            self.cards.sender.submit(func, *args)

    def _show(self, event: ProgressEvent) -> None:
        try:
            with self._lock:
                self._emit(event)
        except Exception:  # a display bug must not fail the job
            log.exception("progress display failed for %s (%s event)", self.job.id, event.kind)
        self._forget_if_ended()

    def _recall(self, events: list[ProgressEvent]) -> None:
        with self._lock:
            for event in events:
                self.progress.apply(event)
                if event.kind == "evaluation":
                    self._shown |= blocks.shown_flags(event.data)

    def _replay(self, events: list[ProgressEvent]) -> None:
        """Each thread milestone once, the card once at the end."""
        with self._lock:
            self._replaying = True
            try:
                for event in events:
                    if event.kind in LIVE_KINDS:
                        self.progress.apply(event)
                        self._dirty = True
                        continue
                    try:
                        self._emit(event)
                    except Exception:  # one event the display cannot show must not hold up the rest
                        log.exception("progress display failed for %s (%s event)", self.job.id, event.kind)
            finally:
                self._replaying = False
            if self._dirty:
                self._edit_card(force=True)
        self._forget_if_ended()

    def _forget_if_ended(self) -> None:
        if self._ended:
            self.cards._forget(self)

    def _refresh_job(self) -> None:
        jobs = self.cards.jobs
        if jobs is not None:
            fresh = _safe_engine(lambda: jobs.job(self.job.id, team=self.job.team or None))
            if fresh is not None:
                self.job = fresh

    def _edit_card(self, *, force: bool) -> None:
        if self._replaying:
            self._dirty = True
            return
        now = self.cards.clock()
        if not force and self._last_edit is not None and now - self._last_edit < self.cards.min_interval:
            self._dirty = True
            return
        self._last_edit = now
        self._dirty = False
        self.cards.update(self.job, self.progress)

    def _emit(self, event: ProgressEvent) -> None:
        cards, kind, data = self.cards, event.kind, event.data
        if cards.reply_to(self.job) is None:
            cards.ensure(self.job)
        self.progress.apply(event)
        if kind in LIVE_KINDS:  # steps and evaluation losses only edit the card
            self._edit_card(force=False)
            return
        if kind == "state":
            self._refresh_job()
            state = str(data.get("state") or self.job.state)
            if self.job.state != state and not self.job.is_final:
                # The store may lag behind the event; show the event's state.
                self.progress.state = state
            self._edit_card(force=True)
            if state in _FINAL:
                self._finish()
            return
        if self._dirty:  # a milestone: show the latest step first so the card never lags
            self._edit_card(force=True)
        if kind == "artifact":
            path = data.get("path")
            if path:
                cards.upload_in_thread(
                    self.job,
                    Path(str(path)),
                    title=chart_title(str(data.get("kind", "chart"))),
                    comment=event.message or None,
                )
            return
        for message in thread_messages(event, self._shown, self.job.id):
            cards.post_in_thread(self.job, message)

    def _finish(self) -> None:
        """The job ended: the result, broadcast to the channel (the engine announced the promotion
        itself, as an ``alert`` with code ``promotion``)."""
        self._ended = True
        job = self.job
        result: Mapping[str, Any] = job.result or {}
        promoted = result.get("promoted")
        report = None
        jobs = self.cards.jobs
        if jobs is not None and job.state == JobState.SUCCEEDED:
            report = _safe_engine(lambda: jobs.evaluation(job.id, team=job.team or None))
        self.cards.post_in_thread(job, blocks.final_summary(job, report, promoted=promoted), broadcast=True)
