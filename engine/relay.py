"""The one progress path: job events from the store to the subscribed display, once each.

Workers (and the engine) write :class:`~engine.progress.ProgressEvent` values to SQLite. On each
scheduler tick :meth:`Relay.pump` reads what is new in the store's event feed and hands it to the
job's sink (made by the subscribed ``sink_for``, e.g. ``JobCards.sink_for``, the bot's Slack
cards). The relay owns, per job:

- **one throttle** (:class:`ThrottledSink`): at most one ``step`` event per ``min_interval``
  seconds, the latest pending one delivered before the next milestone and when the job ends;
- **one delivery cursor**: the highest ``seq`` shown, kept in the store (``Store.delivered_seq``,
  the ``deliveries`` table). It moves when the sink says an event was *shown*
  (:meth:`DisplaySink.after_shown`: a sink that shows events on its own thread runs the callback
  there, after the event), for every event but ``step``/``eval`` (a restart at worst shows the
  card once more). A job is tracked from the first event this relay hands over for it.

On the first event of a tracked job in this process, and for every tracked job with events after
its cursor when the engine starts (:meth:`Relay.catch_up`), the sink *recalls* the events up to
the cursor (they rebuild its state without being shown again) and is handed the ones after it
(:meth:`DisplaySink.replay`: shown once each, the card edited once at the end). Events at or
below the cursor are never handed over again, so a restart neither repeats nor loses anything
(except an event whose display succeeded just before the process died, before its cursor was
written: that one is shown again). An untracked job (older than delivery records) replays
nothing: it is shown from its next event on.

The feed position (which of the store's events the relay has read, meta key
:data:`RELAY_CURSOR_KEY`) is only a reading position: events written while no display ran are read
after a restart, and the per-job cursor says which of them were shown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from engine.jobs import Job, JobState
from engine.progress import NullSink, ProgressEvent, ProgressSink
from engine.store import Store

log = logging.getLogger(__name__)

RELAY_CURSOR_KEY = "relay_cursor"
SinkFactory = Callable[[Job], ProgressSink]
# Events that only change the card's readings: throttled, and not recorded as shown one by one.
EDIT_ONLY = frozenset({"step", "eval"})


class DisplaySink(ProgressSink, Protocol):
    """What a sink may add to ``emit`` to be caught up after a restart (all optional; a plain
    :class:`~engine.progress.ProgressSink` gets every event through ``emit`` and counts as shown
    when ``emit`` returns).

    - ``recall(events)``: events shown by an earlier process: rebuild state, show nothing.
    - ``replay(events)``: events never shown: show each once (a card may fold its edits).
    - ``after_shown(callback)``: call ``callback`` once everything handed over so far is shown.
    """

    def recall(self, events: list[ProgressEvent]) -> None: ...

    def replay(self, events: list[ProgressEvent]) -> None: ...

    def after_shown(self, callback: Callable[[], None]) -> None: ...


def relay_events(store: Store, job_id: str, sink: ProgressSink, after_seq: int = 0) -> int:
    """Pass ``job_id``'s events after ``after_seq`` to ``sink``, unthrottled (a job followed in
    the foreground). Returns the sequence number of the last one passed (``after_seq`` if none)."""
    for event in store.events(job_id, after_seq=after_seq):
        after_seq = event.seq or after_seq
        sink.emit(event)
    return after_seq


class ThrottledSink:
    """Passes every event except ``step`` events, which it lets through at most once per
    ``min_interval`` seconds (the latest one wins). Milestones are never dropped, and the last
    pending step is delivered before any later milestone so the card never goes backwards.

    Why: a Slack message may be edited about once a second per channel; a training loop logs
    many steps per second on a small model.
    """

    def __init__(
        self,
        inner: ProgressSink,
        *,
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
        throttled_kinds: Iterable[str] = ("step",),
    ) -> None:
        self._inner = inner
        self._min_interval = min_interval
        self._clock = clock
        self._kinds = frozenset(throttled_kinds)
        self._last_sent: float | None = None
        self._pending: ProgressEvent | None = None
        self._lock = threading.Lock()

    @property
    def inner(self) -> ProgressSink:
        return self._inner

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind in self._kinds:
                now = self._clock()
                if self._last_sent is None or now - self._last_sent >= self._min_interval:
                    self._pending = None
                    self._last_sent = now
                    self._inner.emit(event)
                else:
                    self._pending = event
                return
            self._flush_locked()
            self._inner.emit(event)

    def flush(self) -> None:
        """Deliver a pending throttled event, if any (call when a job ends)."""
        with self._lock:
            self._flush_locked()

    def flush_due(self) -> None:
        """Deliver a pending throttled event whose interval has passed (no later event came to
        push it out: the last step is shown anyway)."""
        with self._lock:
            if self._last_sent is None or self._clock() - self._last_sent >= self._min_interval:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._last_sent = self._clock()
            self._inner.emit(pending)


class Relay:
    """Hands each job's new events to its sink: one throttle and one delivery cursor per job (see
    the module docstring). Thread-safe: :meth:`pump` and :meth:`catch_up` run one at a time.

    Without a subscriber the relay only follows the feed (nothing is shown, nothing tracked).
    """

    def __init__(
        self,
        store: Store,
        *,
        sink_for: SinkFactory | None = None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._sink_for: SinkFactory | None = None
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._cursor = store.event_feed_cursor()
        self._sinks: dict[str, ThrottledSink] = {}
        self._delivered: dict[str, int | None] = {}  # jobs synced in this process -> highest seq handed over
        # Jobs whose sink must be built again (see refresh). A leaf lock, never held while calling
        # out: a sink may call back into the engine (the Slack card stores where it was posted),
        # and taking the relay's lock there would deadlock against the relay.
        self._stale: set[str] = set()
        self._stale_lock = threading.Lock()
        if sink_for is not None:
            self.subscribe(sink_for)

    def subscribe(self, sink_for: SinkFactory, *, min_interval: float | None = None) -> None:
        """Show every job's events through ``sink_for(job)`` (the one display of this process;
        a second call replaces it), ``step`` events at most once per ``min_interval`` seconds
        (default: the relay's). Reading resumes where the last relaying process stopped, so a job
        that moved on while no display ran still reaches it; a fresh database starts now."""
        with self._lock:
            first = self._sink_for is None
            self._sink_for = sink_for
            if min_interval is not None:
                self._min_interval = min_interval
            if first:
                stored = self.store.get_meta(RELAY_CURSOR_KEY)
                self._cursor = int(stored) if stored and stored.isdigit() else self.store.event_feed_cursor()

    def refresh(self, job_id: str) -> None:
        """Build the job's sink again at its next event (its ``reply_to`` changed: the card moved).
        Safe to call from inside a sink, on any thread: it only leaves a note."""
        with self._stale_lock:
            self._stale.add(job_id)

    def pump(self) -> None:
        """Hand the events written since the last pump to their jobs' sinks; store the feed
        position. Never raises for a sink's error (logged)."""
        with self._lock:
            if self._sink_for is None:
                self._cursor = self.store.event_feed_cursor()
                return
            start = self._cursor
            while batch := self.store.event_feed(after=self._cursor, limit=500):
                for cursor, event in batch:
                    self._cursor = cursor
                    self._deliver(event)
            if self._cursor != start:
                self.store.set_meta(RELAY_CURSOR_KEY, str(self._cursor))
            for job_id, sink in list(self._sinks.items()):
                with _logged(f"progress sink failed for job {job_id}"):
                    sink.flush_due()

    def catch_up(self) -> int:
        """Show, on each tracked job's sink, the events no process has shown yet (after a
        restart). Returns how many jobs are caught up (0 without a subscriber)."""
        with self._lock:
            if self._sink_for is None:
                return 0
            jobs = [job for job in self.store.undelivered_jobs() if job.id not in self._delivered]
            for job in jobs:
                with _logged(f"catching up on job {job.id}"):
                    self._sync(job.id, before=None)
            if jobs:
                log.info("catching up on the display of %d job(s) after a restart", len(jobs))
            return len(jobs)

    # ----- per job

    def _sink(self, job_id: str) -> ThrottledSink:
        with self._stale_lock:
            stale = job_id in self._stale
            self._stale.discard(job_id)
        if stale and (old := self._sinks.pop(job_id, None)) is not None:
            with contextlib.suppress(Exception):
                old.flush()
        sink = self._sinks.get(job_id)
        if sink is None:
            try:
                inner = self._sink_for(self.store.get_job(job_id)) if self._sink_for else NullSink()
            except Exception:  # a broken sink must never stop the queue
                log.exception("no sink for job %s", job_id)
                inner = NullSink()
            sink = ThrottledSink(inner, min_interval=self._min_interval, clock=self._clock)
            self._sinks[job_id] = sink
        return sink

    def _deliver(self, event: ProgressEvent) -> None:
        job_id, seq = event.job_id, event.seq or 0
        with _logged(f"progress sink failed for job {job_id}"):
            if job_id not in self._delivered:
                self._sync(job_id, before=seq)
            delivered = self._delivered.get(job_id)
            if delivered is not None and seq <= delivered:
                return  # shown already (caught up just now, or read again after a restart)
            sink = self._sink(job_id)
            self._delivered[job_id] = seq
            sink.emit(event)
            if event.kind not in EDIT_ONLY:
                self._after_shown(sink.inner, job_id, seq)
            if event.kind == "state" and JobState(event.data.get("state", "queued")).is_final:
                sink.flush()
                self._sinks.pop(job_id, None)  # its position stays: a later event is not replayed

    def _sync(self, job_id: str, *, before: int | None) -> None:
        """The job's first delivery in this process: read its cursor; the sink recalls the events
        up to it and is handed those after it (below ``before``, the event being delivered). An
        untracked job is tracked from ``before`` on and replays nothing."""
        delivered = self.store.delivered_seq(job_id)
        history = self.store.events(job_id)
        sink = self._sink(job_id).inner
        if delivered is None:
            self._delivered[job_id] = None
            _call(sink, "recall", [e for e in history if before is not None and (e.seq or 0) < before])
            if before is not None:
                self.store.set_delivered_seq(job_id, before - 1)
            return
        self._delivered[job_id] = delivered
        _call(sink, "recall", [e for e in history if (e.seq or 0) <= delivered])
        missed = [
            e for e in history if (e.seq or 0) > delivered and (before is None or (e.seq or 0) < before)
        ]
        if not missed:
            return
        log.info("replaying %d event(s) of job %s", len(missed), job_id)
        replay = getattr(sink, "replay", None)
        if replay is not None:
            replay(missed)
        else:
            for event in missed:
                sink.emit(event)
        last = missed[-1].seq or delivered
        self._delivered[job_id] = last
        self._after_shown(sink, job_id, last)

    def _after_shown(self, sink: ProgressSink, job_id: str, seq: int) -> None:
        """Move the job's delivery cursor to ``seq`` once ``sink`` has shown it."""

        def mark() -> None:
            with _logged(f"recording what was shown of job {job_id}"):
                self.store.set_delivered_seq(job_id, seq)

        after_shown = getattr(sink, "after_shown", None)
        if after_shown is None:
            mark()
        else:
            after_shown(mark)


def _call(sink: ProgressSink, method: str, events: list[ProgressEvent]) -> None:
    hook = getattr(sink, method, None)
    if hook is not None and events:
        hook(events)


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Log and swallow an error: a display problem must never stop the queue."""
    try:
        yield
    except Exception:
        log.exception("%s", what)
