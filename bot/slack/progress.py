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
        """The engine's ``sink_for``: a sink that reports ``job`` on its card and thread."""
        return SlackProgressSink(self, job)


def _safe_engine(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception:  # display code must not break the job; the engine logged its own error
        log.exception("engine lookup for the job card failed")
        return None


_FINAL = frozenset(s.value for s in JobState if s.is_final)
_CHART_TITLES = {"loss_chart": "Training loss", "eval_chart": "Evaluation"}


class SlackProgressSink:
    """Reports one job's events on its card and in the card's thread. Never raises."""

    def __init__(self, cards: JobCards, job: Job) -> None:
        self.cards = cards
        self.job = job
        self.progress = blocks.JobProgress(state=str(job.state))
        self._last_edit: float | None = None
        self._dirty = False
        self._shown: set[str] = set()  # caveats already in the verdict (not posted again as alerts)
        self._lock = threading.Lock()

    def emit(self, event: ProgressEvent) -> None:
        if self.cards.sender is None:
            self._show(event)
        else:
            self.cards.sender.submit(self._show, event)

    def _show(self, event: ProgressEvent) -> None:
        try:
            with self._lock:
                self._emit(event)
        except Exception:  # a display bug must not fail the job
            log.exception("progress display failed for %s (%s event)", self.job.id, event.kind)

    def _refresh_job(self) -> None:
        engine = self.cards.engine
        if engine is not None:
            fresh = _safe_engine(lambda: engine.job(self.job.id, team=self.job.team or None))
            if fresh is not None:
                self.job = fresh

    def _edit_card(self, *, force: bool) -> None:
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
        job = self.job
        result: Mapping[str, Any] = job.result or {}
        promoted = result.get("promoted")
        report = None
        if self.cards.engine is not None and job.state == JobState.SUCCEEDED:
            report = _safe_engine(lambda: self.cards.engine.evaluation(job.id, team=job.team or None))
        self.cards.post_in_thread(job, blocks.final_summary(job, report, promoted=promoted), broadcast=True)
