"""The job card and its thread: a progress sink that reports a job in Slack.

One message per job (the card) is posted in the channel and then edited in place with
``chat.update`` (at most once per ``min_interval`` seconds for step events; state changes at
once). Everything else about the job goes into the card's thread: the pre-flight estimate (and
the OpenAI cost confirmation), baseline results, alerts, the loss chart (a PNG through
``files_upload_v2(channel=, thread_ts=)``), the evaluation table, the verdict, the examples that
changed, and whether the model became the channel's default. The final result is also broadcast
to the channel (``reply_broadcast``).

Where the card lives is stored with the job (``Job.reply_to``: team, channel, ts), so a restarted
bot keeps editing the same card. :class:`JobCards` is the one place that posts cards, under a
per-job lock, so the listener that submitted the job and the scheduler's first event never post
two cards for one job.

A sink must never raise for a display problem (engine/progress.py): Slack errors are logged and
dropped, the job goes on.

**Nothing lost, nothing twice, across restarts.** The scheduler's relay stores its cursor once it
has *handed* an event to a job's sink, but in the bot the sink only queues the Slack call on the
``sender`` thread. A bot that dies (crash, OOM kill, power) with calls still queued would lose
those milestones for good: the relay has moved on. So each job's sink keeps its own **delivery
record** in the store (``Engine.set_delivered_seq``): the highest event ``seq`` it has shown, written
after each shown event other than the throttled ``step``/``eval`` ones (and registered at 0 when
the card is posted). On its first event in a process, and when the engine starts (:meth:`JobCards.
catch_up`, an engine start hook, for the jobs ``Engine.undelivered_jobs`` names), the sink reads
the job's stored events: those up to the record only rebuild its state (the card's readings, the
caveats the verdict already showed); those after it are **replayed** (thread milestones posted,
steps folded into one card edit at the end, so a restart never floods Slack). Events at or below
the record are skipped, so an event the relay hands over again after a restart (it died between
showing and storing its cursor) is not posted twice. Exactly once, except an event whose Slack
post succeeded just before the process died, before its record was written: that one is posted
again (at most that event). A post Slack refused (an API error) counts as shown: it is not
retried, as before.

Why not a delivery watermark in the relay (the relay persisting the lowest seq every sink has
acknowledged instead of what it handed over)? The relay's cursor is one global position across
jobs, so replaying from the lowest unacknowledged event would hand other jobs' shown events over
again: a per-job record would be needed anyway to skip them. Acknowledgements would also have to
travel from the sender thread back into the relay, next to the lock ordering that the deadlock fix
(the scheduler's ``refresh_sink`` leaf lock) keeps simple, and through ``ThrottledSink``, which
drops most ``step`` events on purpose. The per-job record alone does both jobs and leaves the
relay as it was. Jobs without a record (older than this scheme) are not caught up: they go on as
before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.slack import blocks
from engine import Job, JobState, ProgressEvent

log = logging.getLogger("ftbot.slack")

DEFAULT_MIN_INTERVAL = 3.0  # seconds between two card edits for step events


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

    ``engine`` is bound after construction (:meth:`bind`) because the engine needs ``sink_for``
    when it is built and the cards need the engine to read and store ``reply_to``.

    ``sender``: where the Slack calls of the sinks run. None: in the thread that emits (the
    scheduler's relay; what the unit tests use). The bot passes a one-thread executor, so a slow
    or rate-limited Slack (the SDK sleeps out a 429's Retry-After) never holds up the job queue's
    tick, and one thread keeps every job's events in order.

    One sink per job while the job runs (:meth:`sink_for` hands the same one out again, e.g.
    when the relay rebuilds its sink after ``set_reply_to``), so the card's readings and the
    job's delivery record (see the module docstring) live in one place.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sender: Executor | None = None,
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.clock = clock
        self.sender = sender
        self.engine: Any = None
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._reply_to: dict[str, dict[str, str]] = {}
        self._sinks: dict[str, SlackProgressSink] = {}
        # Jobs whose card Slack refused (not a Slack channel, bot not invited): tried once, not
        # on every event of the job.
        self._no_card: set[str] = set()

    def bind(self, engine: Any) -> None:
        self.engine = engine

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
        with self._lock(job.id):
            where = self.reply_to(job)
            if where is None and self.engine is not None:
                # Another process (or an earlier bot) may have posted it: re-read the job.
                fresh = _safe_engine(lambda: self.engine.job(job.id, team=job.team or None))
                if fresh is not None:
                    where = self.reply_to(fresh)
                    job = fresh
            if where is not None:
                return where
            if not job.channel or job.id in self._no_card:
                return None
            position = _safe_engine(lambda: self.engine.queue_position(job.id)) if self.engine else None
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
            if self.engine is not None:
                _safe_engine(lambda: self.engine.set_reply_to(job.id, where))
                # Track the job's delivery from its first event on: should every event queued
                # for the new card be lost, a restarted bot still replays them.
                _safe_engine(lambda: self.engine.set_delivered_seq(job.id, 0))
            return where

    def update(self, job: Job, progress: blocks.JobProgress | None = None) -> None:
        where = self.reply_to(job)
        if where is None:
            return
        position = None
        if job.state == JobState.QUEUED and self.engine is not None:
            position = _safe_engine(lambda: self.engine.queue_position(job.id))
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
        """The engine's ``sink_for``: the sink that reports ``job`` on its card and thread (the
        same one for the job until its end was shown)."""
        with self._guard:
            sink = self._sinks.get(job.id)
            if sink is None:
                sink = self._sinks[job.id] = SlackProgressSink(self, job)
            return sink

    def _forget(self, sink: SlackProgressSink) -> None:
        """The job's end was shown: drop its sink (a later event builds a new one, which picks
        up from the stored delivery record)."""
        with self._guard:
            if self._sinks.get(sink.job.id) is sink:
                del self._sinks[sink.job.id]

    def catch_up(self) -> int:
        """Replay, on each card, the events an earlier bot process was handed but never showed
        (the bot registers this as an engine start hook). Returns at once (the work runs on the
        ``sender``); returns how many jobs are caught up."""
        if self.engine is None:
            return 0
        jobs = _safe_engine(lambda: self.engine.undelivered_jobs()) or []
        for job in jobs:
            self.sink_for(job).catch_up()
        if jobs:
            log.info("catching up on %d job card(s) after a restart", len(jobs))
        return len(jobs)


def _safe_engine(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception:  # display code must not break the job; the engine logged its own error
        log.exception("engine lookup for the job card failed")
        return None


_FINAL = frozenset(s.value for s in JobState if s.is_final)
# Events that only edit the card: the relay throttles them, and their delivery is not stored one
# by one (a replay folds them into one edit).
_EDIT_ONLY = frozenset({"step", "eval"})
_CHART_TITLES = {"loss_chart": "Training loss", "eval_chart": "Evaluation"}


class SlackProgressSink:
    """Reports one job's events on its card and in the card's thread. Never raises.

    Keeps the job's delivery record (module docstring): events from the store (those with a
    ``seq``) are shown once each, and the ones an earlier process was handed but never showed are
    replayed first. Events without a ``seq`` (not from the store) are simply shown.
    """

    def __init__(self, cards: JobCards, job: Job) -> None:
        self.cards = cards
        self.job = job
        self.progress = blocks.JobProgress(state=str(job.state))
        self._last_edit: float | None = None
        self._dirty = False
        self._shown: set[str] = set()  # caveats already in the verdict (not posted again as alerts)
        self._lock = threading.Lock()
        self._synced = False  # the stored record and events were read (the first time only)
        self._delivered: int | None = None  # highest seq shown (None: the job is not tracked)
        self._replaying = False  # card edits wait for the end of a replay: one edit, not hundreds
        self._ended = False

    def emit(self, event: ProgressEvent) -> None:
        self._submit(self._show, event)

    def catch_up(self) -> None:
        """Show the job's stored events that no process has shown yet (after a restart)."""
        self._submit(self._show_missed)

    def _submit(self, func: Callable[..., None], *args: Any) -> None:
        if self.cards.sender is None:
            func(*args)
        else:
            self.cards.sender.submit(func, *args)

    def _show(self, event: ProgressEvent) -> None:
        try:
            with self._lock:
                if event.seq is None:
                    self._emit(event)
                    return
                if not self._synced:
                    self._sync(before=event.seq)
                if self._delivered is not None and event.seq <= self._delivered:
                    return  # shown already (replayed just now, or handed over again after a restart)
                self._emit(event)
                self._mark(event.seq, persist=event.kind not in _EDIT_ONLY)
        except Exception:  # a display bug must not fail the job
            log.exception("progress display failed for %s (%s event)", self.job.id, event.kind)
        self._forget_if_ended()

    def _show_missed(self) -> None:
        try:
            with self._lock:
                if not self._synced:
                    self._sync(before=None)
                elif self._delivered is not None and self.cards.engine is not None:
                    engine, after = self.cards.engine, self._delivered
                    self._replay(_safe_engine(lambda: engine.events(self.job.id, after_seq=after)) or [])
        except Exception:
            log.exception("catching up on the card of %s failed", self.job.id)
        self._forget_if_ended()

    def _sync(self, *, before: int | None) -> None:
        """Read the job's delivery record and stored events (once): events up to the record only
        rebuild this sink's state; later ones (below ``before``, the event being shown) are
        replayed. An untracked job replays nothing."""
        self._synced = True
        engine = self.cards.engine
        if engine is None:
            return
        job_id = self.job.id
        delivered = _safe_engine(lambda: engine.delivered_seq(job_id))
        history: list[ProgressEvent] = _safe_engine(lambda: engine.events(job_id)) or []
        if delivered is None:  # not tracked: no record of what was shown, so show from here on
            for event in history:
                if before is not None and (event.seq or 0) < before:
                    self._fold(event)
            return
        self._delivered = max(delivered, self._delivered or 0)
        missed = []
        for event in history:
            seq = event.seq or 0
            if seq <= self._delivered:
                self._fold(event)
            elif before is None or seq < before:
                missed.append(event)
        self._replay(missed)

    def _fold(self, event: ProgressEvent) -> None:
        """Take in an event shown before (by an earlier process) without showing it again."""
        self.progress.apply(event)
        if event.kind == "evaluation":
            self._shown |= blocks.shown_flags(event.data)

    def _replay(self, events: list[ProgressEvent]) -> None:
        """Show events that were never shown: each thread milestone once, the card once at the end."""
        if not events:
            return
        log.info("replaying %d event(s) on the card of %s", len(events), self.job.id)
        self._replaying = True
        try:
            for event in events:
                if event.kind in _EDIT_ONLY:
                    self.progress.apply(event)
                    self._dirty = True
                    continue
                try:
                    self._emit(event)
                except Exception:  # one event the display cannot show must not hold up the rest
                    log.exception("progress display failed for %s (%s event)", self.job.id, event.kind)
                self._mark(event.seq, persist=True)
        finally:
            self._replaying = False
        if self._dirty:
            self._edit_card(force=True)
        self._mark(events[-1].seq, persist=True)

    def _mark(self, seq: int | None, *, persist: bool) -> None:
        """``seq`` was shown. Stored for thread milestones and state changes; steps only here
        (a restart at worst edits the card once more, which shows the same)."""
        if seq is None:
            return
        self._delivered = seq if self._delivered is None else max(self._delivered, seq)
        engine = self.cards.engine
        # Only jobs with a card are tracked: a job Slack has no card for has nothing to catch up.
        if persist and engine is not None and self.cards.reply_to(self.job) is not None:
            _safe_engine(lambda: engine.set_delivered_seq(self.job.id, seq))

    def _forget_if_ended(self) -> None:
        if self._ended:
            self.cards._forget(self)

    def _refresh_job(self) -> None:
        engine = self.cards.engine
        if engine is not None:
            fresh = _safe_engine(lambda: engine.job(self.job.id, team=self.job.team or None))
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
        if kind in ("step", "eval"):
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
        if kind == "preflight":
            cards.post_in_thread(self.job, blocks.preflight(data, event.message))
            if data.get("confirmation_required"):
                cost = data.get("cost_usd", data.get("usd"))
                cards.post_in_thread(self.job, blocks.confirm_cost(self.job.id, cost))
        elif kind == "baseline":
            cards.post_in_thread(self.job, blocks.baseline(data))
        elif kind == "alert":
            text = event.message or str(data.get("message", ""))
            if text not in self._shown:
                cards.post_in_thread(self.job, blocks.alert(text, data.get("code")))
        elif kind == "evaluation":
            self._shown |= blocks.shown_flags(data)
            cards.post_in_thread(self.job, blocks.eval_table(data))
            cards.post_in_thread(self.job, blocks.verdict(data))
            flips = blocks.flips(data)
            if flips is not None:
                cards.post_in_thread(self.job, flips)
        elif kind == "artifact":
            path = data.get("path")
            chart = str(data.get("kind", "chart"))
            if path:
                cards.upload_in_thread(
                    self.job,
                    Path(str(path)),
                    title=_CHART_TITLES.get(chart, chart.replace("_", " ")),
                    comment=event.message or None,
                )
        elif kind == "submitted":
            cards.post_in_thread(
                self.job, blocks.notice(event.message or f"Remote job {data.get('remote_id', '')} created.")
            )
        elif kind == "log" and data.get("notify"):
            cards.post_in_thread(self.job, blocks.notice(event.message))

    def _finish(self) -> None:
        """The job ended: the result, broadcast to the channel (the engine announced the promotion
        itself, as an ``alert`` with code ``promotion``)."""
        self._ended = True
        job = self.job
        result: Mapping[str, Any] = job.result or {}
        promoted = result.get("promoted")
        report = None
        if self.cards.engine is not None and job.state == JobState.SUCCEEDED:
            report = _safe_engine(lambda: self.cards.engine.evaluation(job.id, team=job.team or None))
        self.cards.post_in_thread(job, blocks.final_summary(job, report, promoted=promoted), broadcast=True)
