"""The OpenAI backend's job pipeline: the same steps, events and results as a local job.

:class:`OpenAIPipeline` is created by :class:`~engine.service.Engine` and registered as
``engine.backend_runners["openai"]`` (and ``engine.ask_remote`` for OpenAI models). It never
imports ``openai``: the remote work goes through :class:`engine.backends.openai_ft.OpenAIFineTuner`
(imported lazily, so ``import engine`` stays light), built on ``Engine(openai_client=...)`` or on
:func:`engine.backends.openai_ft.make_client` (``BackendUnavailable`` without OPENAI_API_KEY).

There is no GPU work and no child process: every job is driven by one **poller** registered with
the engine's scheduler (``Scheduler.add_poller``: an APScheduler interval job, every
``settings.openai_poll_seconds``; the scheduler is the only apscheduler user). Each tick reads the
job from the store and does the next step for its state, so a restart needs nothing but a new
poller (:meth:`OpenAIPipeline.recover`, called by ``Engine.start``):

0. **check** (:meth:`OpenAIPipeline.check`, inside ``Engine.submit`` before the job is stored;
   what it raises refuses the job, and nothing is stored): OpenAI still creates fine-tuning jobs
   (before ``openai_ft.FINE_TUNING_ENDS``, FTBOT_OPENAI_FINE_TUNING_ENDS), a client can be made
   (OPENAI_API_KEY), the base model is an OpenAI model (``builtin:tiny`` or no choice means
   :data:`DEFAULT_BASE_MODEL`) and has not retired. "Today" comes from the injected ``today``
   (default: the engine's clock), so tests stand on either side of each date.
1. **submit** (:meth:`OpenAIPipeline.submit`, synchronous, inside ``Engine.submit``): split the
   data and estimate the cost: a ``preflight`` event
   whose data is ``CostEstimate.to_dict()`` (plus ``tokens``/``cost_usd`` for the cards), led by
   the shutdown notice while there is one (the days left to create OpenAI fine-tuning jobs, and
   when the base model and its fine-tunes stop answering: ``openai_ft.shutdown_notice``). Above
   ``settings.openai_confirm_usd`` (or when the price is unknown) the job stays queued with
   ``result["awaiting_confirmation"]`` until ``Engine.confirm`` (the Slack button, ``--yes``).
   A problem found here fails the job and is raised to the caller.
2. **validating**: the same split and leakage check as local jobs (``engine.pipeline.prepare_data``).
3. **baseline**: the base model zero-shot and few-shot through chat completions
   (``tuner.generate``), scored by ``engine.pipeline.measure_baseline`` (the same scoring as local
   jobs, generation injected); a ``baseline`` event; ``baseline.json`` in the job's run directory.
4. **training**: the end date is checked again (a job confirmed or dispatched late), then
   ``tuner.start`` uploads the split and creates the remote job; the remote id is
   stored on the job the moment OpenAI answers (before the ``submitted`` event), so a restart
   follows it instead of creating a second one (``tuner.start`` also finds a job by its metadata).
   Then one ``tuner.poll`` per tick, the opaque cursor stored in ``result["openai_cursor"]``, its
   events stored like the local worker's; a poll that did not get through backs off with
   :func:`~engine.backends.openai_ft.poll_delay`. OpenAI's ``failed`` fails the job with its error
   in plain words; ``cancelled`` on OpenAI's side cancels it.
5. **evaluating**: the ``ft:`` model on the same prompts, then ``engine.pipeline.finish_evaluation`` (the same
   report, verdict, predictions JSONL, evaluation chart and promotion rule as local jobs); the
   model is registered with kind ``openai``, its id and ``remote_name`` the ``ft:`` name (also
   ``job.model_id``).

Cancel (``Engine.cancel`` -> :meth:`OpenAIPipeline.on_cancel`) asks OpenAI to cancel the remote
job; if that request fails the poller keeps trying and an alert says so.

Failures: a step's error fails the job with its message and hint (plain words, from
``openai_ft``'s translation). Trouble that may pass (network, 5xx, 429, an unexpected exception)
while creating, following or evaluating a remote job is retried :data:`MAX_RETRIES` times with
backoff first; a missing API key after the remote job exists never fails the job (an alert says
so; the job is followed again when the bot runs with a key). ``Engine.run_job`` drives an OpenAI job in
the calling thread instead (:meth:`OpenAIPipeline.run_foreground`, for the console).

Several processes may share one FTBOT_HOME (``ftbot serve`` and ``ftbot run``): a job is driven by
one of them at a time through a lease in ``result["openai_lease"]`` (owner and heartbeat), taken
over only when stale (:data:`LEASE_STALE_SECONDS`) and released on a clean stop.

Shared with the local worker (:mod:`engine.pipeline`): ``JobContext``, ``Cancelled``,
``prepare_data``, ``measure_baseline`` and ``finish_evaluation`` (same files, keys and events for
both backends). OpenAI jobs never run in a worker process: this pipeline is their only driver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import (
    BackendUnavailable,
    FtbotError,
    InvalidTransition,
    JobNotFound,
    RemoteError,
    UsageError,
)
from engine.jobs import Job, JobState
from engine.pipeline import (
    Cancelled,
    EvalData,
    Generate,
    JobContext,
    finish_evaluation,
    log_answers,
    measure_baseline,
    prepare_data,
)
from engine.progress import ProgressEvent, utcnow
from engine.scheduler import relay_events
from engine.store import ModelRecord

if TYPE_CHECKING:
    from engine.backends.openai_ft import OpenAIFineTuner, PollResult

log = logging.getLogger(__name__)

BACKEND = "openai"
# The base model when the user chose none (or kept the local default, builtin:tiny): the cheapest
# model OpenAI fine-tunes.
DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"
# Context window assumed for choosing few-shot examples (every model OpenAI fine-tunes has at least this).
CONTEXT_TOKENS = 128_000
MAX_NEW_TOKENS_CAP = 4_096
# Eval prompts per batch of chat completions; cancel and shutdown are checked between batches.
GENERATE_CHUNK = 32
GENERATE_CONCURRENCY = 8
# Another process's lease on a job counts as abandoned after this long without a heartbeat.
LEASE_STALE_SECONDS = 120.0
# Steps that meet trouble which may pass (network, 5xx, 429) while creating, following or
# evaluating a remote job are tried again this many times (with backoff) before the job fails.
MAX_RETRIES = 8
_RETRYABLE_CODES = frozenset({"connection_error", "server_error", "rate_limit_exceeded", "internal_error"})
# /ask: the finish reasons an OpenAI answer keeps (any other one is "stop"), and the note of an
# answer whose stream broke off part-way (the others come from local_generation.cut_note).
_CUT_REASONS = frozenset({"length", "content_filter", "time", "interrupted"})
INTERRUPTED_NOTE = "Answer incomplete: the connection to OpenAI broke off part-way. Ask again for the whole answer."


def is_openai_model(name: str | None) -> bool:
    """Whether ``name`` names an OpenAI model (``gpt-...``, ``ft:...``, ``o4-mini``...): such models
    have no local tokenizer and are answered through chat completions."""
    if not name:
        return False
    from engine.backends.openai_ft import looks_like_openai_model

    return looks_like_openai_model(name)


class _Stopping(Exception):
    """The engine is shutting down: leave the job as it is; the next start picks it up."""


# --------------------------------------------------------------------------- the pipeline


class _RemoteIdSink:
    """Stores the remote job id on the job the moment ``tuner.start`` announces it (before the
    event itself), so no restart can miss it."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def emit(self, event: ProgressEvent) -> None:
        remote_id = event.data.get("remote_id") if event.kind == "submitted" else None
        if remote_id:
            self._ctx.store.update_job(
                self._ctx.job_id,
                remote_id=str(remote_id),
                result={"openai_cursor": None, "openai_status": event.data.get("status")},
            )
        self._ctx.sink.emit(event)


class OpenAIPipeline:
    """Drives OpenAI jobs for one :class:`~engine.service.Engine` (see the module docstring).

    Args:
        engine: the engine whose store, settings, scheduler and ``openai_client`` are used.
        clock / sleep: given to the fine-tuner (file-processing waits, retries with backoff).
        monotonic: the time source of poll backoff.
        today: the calendar day (UTC) that OpenAI's shutdown dates are compared with; default:
            the day of the engine's clock.
    """

    def __init__(
        self,
        engine: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._today = today
        self._tuner: OpenAIFineTuner | None = None
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._running: set[str] = set()  # jobs whose tick is in progress
        self._watched: set[str] = set()
        self._recovered: set[str] = set()
        self._next_due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._retries: dict[str, int] = {}
        self._stop_flag = threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @classmethod
    def install(cls, engine: Any, **kwargs: Any) -> OpenAIPipeline:
        """Create a pipeline for ``engine`` and register it (``backend_runners["openai"]``,
        ``ask_remote``, ``engine.openai``). Called by ``Engine.__init__``; tests call it again
        to inject a clock, a sleep and the day."""
        pipeline = cls(engine, **kwargs)
        engine.openai = pipeline
        engine.ask_remote = pipeline.ask
        engine.backend_runners[BACKEND] = _Runner(pipeline)
        return pipeline

    def today(self) -> date:
        """The calendar day (UTC) the shutdown dates are compared with."""
        if self._today is not None:
            return self._today()
        return self.engine.clock().astimezone(UTC).date()

    # ----- collaborators

    @property
    def store(self) -> Any:
        return self.engine.store

    @property
    def settings(self) -> Any:
        return self.engine.settings

    def tuner(self) -> OpenAIFineTuner:
        """The fine-tuner (one per pipeline: it holds no job state).

        Raises:
            BackendUnavailable: no client was given and OPENAI_API_KEY is not set.
        """
        with self._lock:
            if self._tuner is None:
                from engine.backends import openai_ft

                client = self.engine.openai_client or openai_ft.make_client(self.settings)
                self._tuner = openai_ft.OpenAIFineTuner(
                    client, settings=self.settings, clock=self._clock, sleep=self._sleep
                )
            return self._tuner

    def _context(self, job_id: str) -> JobContext:
        return JobContext(store=self.store, settings=self.settings, job_id=job_id, stop_flag=self._stop_flag)

    # ----- submit / confirm / cancel (called by the Engine)

    def check(self, job: Job) -> None:
        """Refuse a job OpenAI cannot run, before ``Engine.submit`` stores it (see the module
        docstring, step 0). Cheap: no request to OpenAI, no data read.

        Raises:
            BackendUnavailable: OpenAI creates no fine-tuning jobs any more (from the end date),
                there is no API key, or the base model has retired.
            UsageError: the base model is not an OpenAI model.
        """
        from engine.backends import openai_ft

        today = self.today()
        openai_ft.check_fine_tuning_open(today, self.settings)
        self.tuner()  # BackendUnavailable without OPENAI_API_KEY
        base_model = self.base_model_for(job)
        openai_ft.check_base_model(base_model)
        openai_ft.check_not_retired(base_model, today, self.settings)

    @staticmethod
    def base_model_for(job: Job) -> str:
        """The OpenAI model a job fine-tunes: the user's choice, else the engine's default when
        it is an OpenAI model, else :data:`DEFAULT_BASE_MODEL`."""
        from engine.config import TrainConfig

        chosen = "base_model" in TrainConfig.from_dict(job.config).user_set
        return job.base_model if chosen or is_openai_model(job.base_model) else DEFAULT_BASE_MODEL

    def submit(self, job: Job) -> None:
        """Check the job, estimate its cost, and start following it. A problem fails the job and
        is raised (the Engine's caller shows it)."""
        try:
            self._prepare(job)
        except FtbotError as exc:
            self._end(job.id, JobState.FAILED, exc.message, hint=exc.hint)
            raise
        self.watch(job.id)

    def _prepare(self, job: Job) -> None:
        from engine.backends import openai_ft
        from engine.config import TrainConfig

        config = TrainConfig.from_dict(job.config)
        ctx = self._context(job.id)
        if self.base_model_for(job) != job.base_model:
            ctx.store.save_job(replace(ctx.job, base_model=DEFAULT_BASE_MODEL))
            ctx.emit(
                "log",
                f"No OpenAI base model chosen: using {DEFAULT_BASE_MODEL} (choose another with "
                "base_model=..., e.g. gpt-4.1-mini-2025-04-14).",
                data={"notify": True},
            )
        job = ctx.job
        openai_ft.check_base_model(job.base_model)
        tuner = self.tuner()
        data = prepare_data(ctx)  # queued: only reads and splits, records nothing
        if len(data.train) < openai_ft.OPENAI_MIN_EXAMPLES:
            raise UsageError(
                f"OpenAI needs at least {openai_ft.OPENAI_MIN_EXAMPLES} training examples; this dataset has "
                f"{len(data.train)} left after holding out {len(data.eval)} for evaluation.",
                hint="Add more examples, or give a separate eval file.",
            )
        estimate = tuner.estimate(data.train, job.base_model, epochs=config.n_epochs)
        confirmed = bool(job.result.get("confirmed"))
        waiting = estimate.confirmation_required and not confirmed
        notice = openai_ft.shutdown_notice(job.base_model, self.today(), self.settings)
        details = {
            **estimate.to_dict(),
            "backend": BACKEND,
            "tokens": estimate.total_tokens,
            "cost_usd": estimate.usd,
            "confirmation_required": waiting,
            "confirmed": confirmed,
            **self._shutdown_dates(job.base_model),
        }
        # The shutdown notice leads: it decides whether this job is worth starting at all.
        message = f"{notice} {estimate.message}" if notice else estimate.message
        ctx.emit("preflight", message, data=details)
        ctx.record(cost_estimate=estimate.to_dict(), awaiting_confirmation=waiting)
        if waiting:
            cost = "an unknown amount" if estimate.usd is None else f"about ${estimate.usd:,.2f}"
            ctx.emit(
                "log",
                f"Waiting for confirmation: this job would cost {cost} on OpenAI. Press Start in "
                f"Slack, type /confirm {job.id} in `ftbot chat`, or run `ftbot run` with --yes.",
                data={"code": "awaiting_confirmation", "usd": estimate.usd},
            )

    def _shutdown_dates(self, base_model: str) -> dict[str, Any]:
        """The pre-flight's dates: when OpenAI stops creating fine-tuning jobs and when this base
        model retires (ISO dates), with the days left from today."""
        from engine.backends import openai_ft

        today = self.today()
        ends = openai_ft.fine_tuning_end(self.settings)
        retires = openai_ft.retirement_date(base_model, self.settings.openai_retirements)
        return {
            "openai_fine_tuning_ends": ends.isoformat(),
            "openai_fine_tuning_days_left": max(0, (ends - today).days),
            "base_model_retires": retires.isoformat() if retires else None,
        }

    def confirmed(self, job_id: str) -> None:
        """A waiting job was confirmed: start it now rather than at the next tick."""
        with contextlib.suppress(JobNotFound):
            if self.store.get_job(job_id).backend == BACKEND:
                self.watch(job_id)

    def on_cancel(self, job: Job) -> None:
        """The job was cancelled here: cancel the remote job too. Never raises; when OpenAI cannot
        be reached, an alert says so and the poller keeps trying."""
        if job.backend != BACKEND:
            return
        if not job.remote_id:
            return  # not created yet; a start in progress cancels what it creates
        self._cancel_remote(job)

    def _cancel_remote(self, job: Job) -> bool:
        try:
            status = self.tuner().cancel(job.remote_id)  # type: ignore[arg-type]
        except FtbotError as exc:
            first = not job.result.get("remote_cancel_pending")
            self.store.update_job(job.id, result={"remote_cancel_pending": True})
            if first:
                self.store.add_event(
                    ProgressEvent(
                        job.id,
                        "alert",
                        f"Could not ask OpenAI to cancel {job.remote_id}: {exc.message} ftbot keeps trying; you can "
                        "also cancel it in OpenAI's dashboard.",
                        data={"code": "remote_cancel_failed", "remote_id": job.remote_id},
                        at=utcnow(),
                    )
                )
            if job.id not in self._watched:  # the poller tries again (with backoff)
                self.watch(job.id)
            return False
        self.store.update_job(job.id, result={"remote_cancel_pending": False, "openai_status": status})
        self.store.add_event(
            ProgressEvent(
                job.id,
                "log",
                f"OpenAI job {job.remote_id} cancelled (status {status}).",
                data={"remote_id": job.remote_id, "remote_status": status},
                at=utcnow(),
            )
        )
        return True

    # ----- pollers

    def watch(self, job_id: str) -> None:
        """Drive ``job_id`` with a poller (first tick now; every ``openai_poll_seconds`` after)."""
        with self._lock:
            self._watched.add(job_id)
            self._next_due.pop(job_id, None)
        self.engine.scheduler.add_poller(
            self._key(job_id), lambda: self.tick(job_id), self.settings.openai_poll_seconds
        )

    def _unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watched.discard(job_id)
            for table in (self._next_due, self._failures, self._retries):
                table.pop(job_id, None)
        self.engine.scheduler.remove_poller(self._key(job_id))

    @staticmethod
    def _key(job_id: str) -> str:
        return f"openai:{job_id}"

    def recover(self) -> list[str]:
        """Follow every unfinished OpenAI job again (``Engine.start``): jobs in training with a
        remote id resume polling from their stored cursor; the others redo their current step."""
        self._stop_flag.clear()
        found: list[str] = []
        for job in self.store.jobs(states=tuple(s for s in JobState if not s.is_final), limit=1000):
            if job.backend != BACKEND:
                continue
            found.append(job.id)
            with self._lock:
                if job.state is not JobState.QUEUED:
                    self._recovered.add(job.id)
            self.watch(job.id)
        return found

    def stop(self, timeout: float = 30.0) -> None:
        """Stop driving jobs (``Engine.stop``): steps in progress stop at their next check, the
        leases are released so another process (or the next start) takes over at once."""
        self._stop_flag.set()
        with self._lock:
            watched = list(self._watched)
        for job_id in watched:
            self.engine.scheduler.remove_poller(self._key(job_id))
        deadline = self._monotonic() + timeout
        with self._idle:
            while self._running and self._monotonic() < deadline:
                self._idle.wait(0.05)
            self._watched.clear()
        for job_id in watched:
            with contextlib.suppress(JobNotFound):
                lease = self.store.get_job(job_id).result.get("openai_lease") or {}
                if lease.get("owner") == self.owner:
                    self.store.update_job(job_id, result={"openai_lease": None})

    def run_foreground(
        self,
        job_id: str,
        sink: Any,
        *,
        poll_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """Drive ``job_id`` in the calling thread (``Engine.run_job``: the console, scripts) and
        pass its events to ``sink`` until it ends, or until it waits for a cost confirmation
        (then it is returned still queued: confirm it and call again). Ctrl-C cancels the job,
        the remote one included. Works beside a running scheduler: a job is never driven twice."""
        after = 0
        next_tick = 0.0

        def pump() -> None:
            nonlocal after
            after = relay_events(self.store, job_id, sink, after)

        try:
            while True:
                pump()
                job = self.store.get_job(job_id)
                if job.is_final or (job.state is JobState.QUEUED and job.result.get("awaiting_confirmation")):
                    return job
                if self._stop_flag.is_set():  # the engine is stopping: the job goes on at the next start
                    return job
                if self._monotonic() >= next_tick:
                    self.tick(job_id)
                    next_tick = self._monotonic() + self.settings.openai_poll_seconds
                    continue
                sleep(poll_seconds)
        except KeyboardInterrupt:
            with contextlib.suppress(FtbotError):
                self.engine.cancel(job_id, user=self.store.get_job(job_id).owner, is_admin=True)
            pump()
            return self.store.get_job(job_id)

    # ----- one tick

    def tick(self, job_id: str) -> None:
        """One step of ``job_id`` (the poller's function). Never raises."""
        with self._lock:
            if job_id in self._running or self._stop_flag.is_set():
                return
            due = self._next_due.get(job_id)
            if due is not None and self._monotonic() < due:
                return
            self._running.add(job_id)
        try:
            self._tick(job_id)
        except _Stopping:
            pass
        except Exception:  # the poller runs on a timer thread: log, never die
            log.exception("OpenAI pipeline tick failed for %s", job_id)
        finally:
            with self._idle:
                self._running.discard(job_id)
                self._idle.notify_all()

    def _tick(self, job_id: str) -> None:
        try:
            job = self.store.get_job(job_id)
        except JobNotFound:
            self._unwatch(job_id)
            return
        if job.is_final:
            pending = (
                job.state is JobState.CANCELLED and job.remote_id and job.result.get("remote_cancel_pending")
            )
            if pending and not self._cancel_remote(job):
                self._backoff(job_id, None)
                return
            self._unwatch(job_id)
            return
        if job.state is JobState.QUEUED and job.result.get("awaiting_confirmation"):
            return
        if not self._claim(job):
            return
        ctx = self._context(job_id)
        try:
            self._advance(ctx, job)
        except Cancelled:
            if not self._job_final(job_id):
                raise _Stopping() from None  # the engine is stopping, not the job
        except (BackendUnavailable, RemoteError) as exc:
            if not self._job_final(job_id) and not self._retry_later(ctx, exc):
                self._end(job_id, JobState.FAILED, exc.message, hint=exc.hint)
        except FtbotError as exc:
            if not self._job_final(job_id):
                self._end(job_id, JobState.FAILED, exc.message, hint=exc.hint)
        except Exception as exc:
            log.exception("OpenAI job %s failed", job_id)
            error = RemoteError(
                f"The OpenAI pipeline hit an internal error: {type(exc).__name__}: {str(exc)[:300]}",
                code="internal_error",
                hint="Start the job again; report it with the job id if it repeats.",
            )
            if not self._job_final(job_id) and not self._retry_later(ctx, error):
                self._end(job_id, JobState.FAILED, error.message, hint=error.hint)
                failed = self.store.get_job(job_id)
                if failed.state is JobState.FAILED and failed.remote_id and job.state is JobState.TRAINING:
                    self._cancel_remote(failed)  # nobody will use what it trains: stop paying for it
        if self._job_final(job_id):
            job = self.store.get_job(job_id)
            if not (job.state is JobState.CANCELLED and job.result.get("remote_cancel_pending")):
                self._unwatch(job_id)

    def _retry_later(self, ctx: JobContext, exc: FtbotError) -> bool:
        """Whether a failed step should be tried again later instead of failing the job: trouble
        that may pass (network, 5xx, 429, an internal error) while creating, following or evaluating a remote job
        (retried :data:`MAX_RETRIES` times with backoff), and a missing API key once a remote job
        exists (it keeps running on OpenAI: never lose it; an alert says what to do)."""
        job = ctx.job
        remote_started = job.remote_id is not None or job.state is JobState.EVALUATING
        if isinstance(exc, BackendUnavailable):
            if not remote_started:
                return False
            if not job.result.get("backend_unavailable"):
                ctx.record(backend_unavailable=True)
                ctx.alert(
                    "backend_unavailable",
                    f"{exc.message} The OpenAI job {job.remote_id or ''} keeps running; "
                    f"ftbot follows it again when it runs with a key. {exc.hint or ''}".strip(),
                )
            self._backoff(job.id, None)
            return True
        code = getattr(exc, "code", None)
        if code not in _RETRYABLE_CODES or job.state not in (JobState.TRAINING, JobState.EVALUATING):
            return False
        with self._lock:
            attempts = self._retries.get(job.id, 0) + 1
            self._retries[job.id] = attempts
        if attempts > MAX_RETRIES:
            return False
        ctx.alert(
            code or "remote_error",
            f"{exc.message} ftbot tries again shortly ({attempts}/{MAX_RETRIES}).",
            attempt=attempts,
        )
        self._backoff(job.id, None, failures=attempts)
        return True

    def _job_final(self, job_id: str) -> bool:
        try:
            return self.store.get_job(job_id).is_final
        except JobNotFound:
            return True

    def _claim(self, job: Job) -> bool:
        """Take (or keep) the job's lease; False when another live process drives it."""
        lease = job.result.get("openai_lease") or {}
        now = time.time()
        owner, at = lease.get("owner"), float(lease.get("at") or 0.0)
        if (
            owner
            and owner != self.owner
            and now - at < max(LEASE_STALE_SECONDS, 4 * self.settings.openai_poll_seconds)
        ):
            return False
        if self._stop_flag.is_set():
            return False
        if owner != self.owner or now - at >= min(10.0, LEASE_STALE_SECONDS / 4):
            self.store.update_job(job.id, result={"openai_lease": {"owner": self.owner, "at": now}})
        return True

    def _advance(self, ctx: JobContext, job: Job) -> None:
        with self._lock:
            resumed = job.id in self._recovered
            self._recovered.discard(job.id)
        if resumed:
            what = f"the OpenAI job {job.remote_id}" if job.remote_id else f"the {job.state.value} step"
            ctx.emit(
                "log",
                f"Picked up this job again after a restart: following {what}.",
                data={"code": "resumed", "remote_id": job.remote_id},
            )
        if job.state is JobState.QUEUED:
            try:
                self.store.transition(
                    job.id,
                    JobState.VALIDATING,
                    expect=JobState.QUEUED,
                    message="Started: checking the dataset.",
                )
            except InvalidTransition:
                return
        job = ctx.job
        data: EvalData | None = None
        if job.state in (JobState.VALIDATING, JobState.BASELINE):
            data = prepare_data(ctx)  # validating -> baseline (records the split)
            self._baseline(ctx, data)  # baseline -> training
            job = ctx.job
        if job.state is JobState.TRAINING:
            if not job.remote_id:
                self._start_remote(ctx, data or prepare_data(ctx))
                return  # the first poll comes with the next tick
            if not self._poll(ctx, job):
                return
            job = ctx.job
        if job.state is JobState.EVALUATING:
            self._evaluate(ctx, data or prepare_data(ctx))

    # ----- steps

    def _config(self, ctx: JobContext) -> Any:
        from engine.config import TrainConfig

        return TrainConfig.from_dict(ctx.job.config)

    def _generate_fn(self, ctx: JobContext, model: str) -> Generate:
        tuner = self.tuner()

        def generate(
            conversations: Sequence[Sequence[Mapping[str, Any]]], max_new: int, label: str
        ) -> list[str]:
            answers: list[str] = []
            for start in range(0, len(conversations), GENERATE_CHUNK):
                ctx.check()
                if not self._claim(ctx.job):  # keeps the lease fresh through long steps
                    raise _Stopping()
                chunk = conversations[start : start + GENERATE_CHUNK]
                answers.extend(
                    tuner.generate(model, chunk, max_new_tokens=max_new, concurrency=GENERATE_CONCURRENCY)
                )
                log_answers(ctx, label, len(answers), len(conversations))
            return answers

        return generate

    def _token_counter(self) -> Callable[[list[dict[str, Any]]], int]:
        from engine.backends import openai_ft

        counter = openai_ft.default_token_counter()
        return lambda messages: openai_ft.count_example_tokens(messages, counter)

    def _baseline(self, ctx: JobContext, data: EvalData) -> dict[str, Any]:
        if ctx.job.state is JobState.BASELINE and not (ctx.job.result.get("versions") or {}).get("openai"):
            ctx.record(versions={**dict(ctx.job.result.get("versions") or {}), **_openai_version()})
        config = self._config(ctx)
        return measure_baseline(
            ctx,
            data,
            generate=self._generate_fn(ctx, ctx.job.base_model),
            token_counter=self._token_counter(),
            context_tokens=CONTEXT_TOKENS,
            max_new_tokens_cap=MAX_NEW_TOKENS_CAP,
            metric=config.metric,
            seed=config.seed,
        )

    def _start_remote(self, ctx: JobContext, data: EvalData) -> None:
        from engine.backends import openai_ft

        job = ctx.job
        # A job checked before the end date may reach this step after it (a late confirmation, a
        # long baseline): fail it in plain words rather than upload files OpenAI will not train on.
        openai_ft.check_fine_tuning_open(self.today(), self.settings)
        config = self._config(ctx)
        train_path = _write_jsonl(ctx.dir / "openai-train.jsonl", data.train)
        eval_path = _write_jsonl(ctx.dir / "openai-eval.jsonl", data.eval)
        hyper = {
            "n_epochs": config.n_epochs,
            "batch_size": config.openai_batch_size,
            "learning_rate_multiplier": config.learning_rate_multiplier,
        }
        ctx.check()
        remote_id = self.tuner().start(
            job.id,
            train_path,
            eval_path,
            model=job.base_model,
            hyperparameters=hyper,
            seed=config.seed,
            sink=_RemoteIdSink(ctx),
        )
        if ctx.job.remote_id != remote_id:  # the sink stored it already, unless start() found an old job
            self.store.update_job(job.id, remote_id=remote_id, result={"openai_cursor": None})
        if self._job_final(job.id):  # cancelled while the files were uploading
            self._cancel_remote(self.store.get_job(job.id))

    def _poll(self, ctx: JobContext, job: Job) -> bool:
        """One poll of the remote job. True when the job moved on to evaluating."""
        tuner = self.tuner()
        result: PollResult = tuner.poll(job.remote_id, job.result.get("openai_cursor"), job_id=job.id)  # type: ignore[arg-type]
        for event in result.events:
            ctx.sink.emit(event)
        changes: dict[str, Any] = {"openai_cursor": result.cursor, "openai_status": result.status}
        if result.eta_seconds is not None:
            changes["openai_eta_seconds"] = result.eta_seconds
        self.store.update_job(job.id, result=changes)
        if result.transient:
            self._backoff(job.id, result.retry_after)
            return False
        with self._lock:
            for table in (self._failures, self._next_due, self._retries):
                table.pop(job.id, None)
        if job.result.get("backend_unavailable"):
            ctx.record(backend_unavailable=False)
        if not result.done:
            return False
        if result.succeeded and result.model_name:
            self._loss_chart(ctx)
            ctx.advance(
                JobState.EVALUATING,
                f"OpenAI finished fine-tuning: {result.model_name}. Evaluating it on the same examples.",
                result={
                    "openai_model": result.model_name,
                    "training": {"trained_tokens": result.trained_tokens, "remote_id": job.remote_id},
                },
            )
            return True
        if result.status == "cancelled":
            self._end(job.id, JobState.CANCELLED, result.error or "The OpenAI job was cancelled.")
        else:
            error = result.error or f"The OpenAI job ended with status {result.status}."
            self._end(job.id, JobState.FAILED, error + self._where_in_dataset(ctx, error))
        return False

    def _where_in_dataset(self, ctx: JobContext, error: str) -> str:
        """OpenAI names lines of the file ftbot uploaded (the training split, or the eval split
        as the validation file); say which line of the user's own file that is."""
        from engine import dataset
        from engine.backends.openai_ft import named_line

        line = named_line(error)
        if line is None:
            return ""
        validation = "validation" in error
        uploaded = ctx.dir / ("openai-eval.jsonl" if validation else "openai-train.jsonl")
        try:
            with open(uploaded, encoding="utf-8") as f:
                rows = f.read().splitlines()
            messages = json.loads(rows[line - 1])["messages"] if 0 < line <= len(rows) else None
            job = ctx.job
            source_hash = job.eval_dataset_hash if validation and job.eval_dataset_hash else job.dataset_hash
            record = ctx.store.get_dataset(source_hash)
            found = next(
                (ex.line for ex in dataset.read_examples(record.path) if ex.messages == messages), None
            )
        except (OSError, ValueError, KeyError, FtbotError):
            return ""
        if found is None:
            return ""
        what = "evaluation examples" if validation else "training examples"
        return f" (Line {line} of the {what} ftbot sent to OpenAI is line {found} of {record.name}.)"

    def _backoff(self, job_id: str, retry_after: float | None, *, failures: int | None = None) -> None:
        from engine.backends.openai_ft import poll_delay

        with self._lock:
            count = failures if failures is not None else self._failures.get(job_id, 0) + 1
            self._failures[job_id] = count
            delay = poll_delay(self.settings.openai_poll_seconds, count, retry_after=retry_after)
            self._next_due[job_id] = self._monotonic() + delay

    def _loss_chart(self, ctx: JobContext) -> None:
        with contextlib.suppress(Exception):  # a chart is a nicety
            from engine import charts

            events = self.store.events(ctx.job_id, kinds=("step", "eval"))
            if events:
                chart = charts.loss_chart(events, ctx.dir / "loss.png")
                ctx.emit("artifact", "Training curves.", data={"kind": "loss_chart", "path": str(chart)})

    def _evaluate(self, ctx: JobContext, data: EvalData) -> None:
        job = ctx.job
        model_name = str(job.result.get("openai_model") or "")
        if not model_name:
            raise RemoteError(
                "OpenAI reported success but ftbot has no fine-tuned model name to evaluate.", code="no_model"
            )
        config = self._config(ctx)
        base = self._baseline(ctx, data)  # read back from baseline.json (measured again if it is gone)
        tuned = self._generate_fn(ctx, model_name)(base["prompts"], base["max_new_tokens"], "fine-tuned")
        record = ModelRecord(
            id=model_name,
            kind="openai",
            base_model=job.base_model,
            job_id=job.id,
            team=job.team,
            channel=job.channel,
            created_at=utcnow(),
            remote_name=model_name,
            system_prompt=data.system_prompt,
        )
        finish_evaluation(ctx, base, tuned, model=record, metric=config.metric, seed=config.seed)

    def _end(self, job_id: str, to: JobState, message: str, *, hint: str | None = None) -> None:
        """Fail (or, for a job cancelled on OpenAI's side, cancel) the job with ``message`` as its
        error, unless it already ended."""
        with contextlib.suppress(InvalidTransition, JobNotFound):
            self.store.transition(
                job_id,
                to,
                error=f"{message} {hint}" if hint else message,
                message=message,
                data={"hint": hint} if hint else None,
            )

    # ----- /ask

    def ask(
        self,
        record: ModelRecord,
        prompt: str,
        *,
        compare: bool = False,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> Any:
        """Answer with an OpenAI model from the registry (``Engine.ask`` routes kind ``openai``
        here, with ``temperature`` and ``max_tokens`` already checked): an ``Answer``, or
        ``(base, tuned)`` with ``compare``. ``max_tokens`` (default ``settings.ask_max_new_tokens``)
        is sent as ``max_completion_tokens``. The answer reports what OpenAI said: its
        ``finish_reason`` (``length``: cut at the limit, ``content_filter``; both with the same
        ``note`` as a local answer cut short) and ``usage.completion_tokens`` as ``tokens`` (an
        estimate only when the response carries no usage).

        Time limit (``settings.ask_timeout_seconds``, FTBOT_ASK_TIMEOUT_SECONDS, as for local
        models): each answer is a streamed chat completion (``tuner.stream_answer``) that stops
        at the limit; the text so far comes back with ``finish_reason`` ``time`` and the local
        note ("Answer cut at the N-second time limit."). A stream that broke off part-way gives
        ``finish_reason`` ``interrupted`` and :data:`INTERRUPTED_NOTE`. With ``compare`` both
        models are asked at once, each within the limit, so the whole call takes about the limit
        at most (``Engine.ask``'s callers wait the limit + 30 s).

        A model whose base model has retired (on or after its date in ``openai_ft.RETIREMENTS``
        or FTBOT_OPENAI_RETIREMENTS) is not asked: OpenAI would only answer with an error.

        Raises:
            BackendUnavailable: the model's base model has retired (the message says since when).
            GenerationError: a model sent nothing within the time limit.
            RemoteError: OpenAI refused or failed before any text came (after retries that fit
                in the time limit)."""
        from engine.backends.local_generation import Answer, cut_note
        from engine.backends.openai_ft import check_not_retired, estimate_tokens

        if record.kind != BACKEND:
            raise BackendUnavailable(f"Model {record.id} is not an OpenAI model.")
        check_not_retired(record.remote_name or record.base_model or record.id, self.today(), self.settings)
        messages: list[dict[str, Any]] = []
        if record.system_prompt:
            messages.append({"role": "system", "content": record.system_prompt})
        messages.append({"role": "user", "content": prompt})
        tuner = self.tuner()
        limit = int(max_tokens if max_tokens is not None else self.settings.ask_max_new_tokens)
        timeout = float(self.settings.ask_timeout_seconds)

        def one(model: str, label: str) -> Answer:
            started = time.monotonic()
            done = tuner.stream_answer(
                model, messages, max_new_tokens=limit, temperature=temperature, timeout=timeout
            )
            # OpenAI's other reasons (tool_calls, function_call) do not apply: no tools are sent.
            reason = done.finish_reason if done.finish_reason in _CUT_REASONS else "stop"
            if reason == "interrupted":
                log.warning("An answer from %s broke off: %s", model, done.error)
            tokens = (
                done.completion_tokens if done.completion_tokens is not None else estimate_tokens(done.text)
            )
            return Answer(
                text=done.text,
                model=label,
                base_model=record.base_model,
                adapter=None,
                tokens=tokens,
                finish_reason=reason,  # type: ignore[arg-type]
                seconds=time.monotonic() - started,
                note=(
                    INTERRUPTED_NOTE
                    if reason == "interrupted"
                    else cut_note(reason, max_new_tokens=limit, timeout=timeout)
                ),
            )

        if not compare:
            return one(record.remote_name or record.id, record.id)
        # Both sides at once, each within the time limit: the pair takes the limit at most, not
        # twice it. A side that fails raises its error (after the other side has ended).
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="openai-compare") as pool:
            tuned_f = pool.submit(one, record.remote_name or record.id, record.id)
            base_f = pool.submit(one, record.base_model, f"base:{record.base_model}")
            return base_f.result(), tuned_f.result()


class _Runner:
    """``engine.backend_runners["openai"]``: calling it starts following a stored job
    (:meth:`OpenAIPipeline.submit`); ``check`` refuses a job before it is stored
    (:meth:`OpenAIPipeline.check`; ``Engine.submit`` calls a runner's ``check`` when it has one)."""

    def __init__(self, pipeline: OpenAIPipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, engine: Any, job: Job) -> None:
        self.pipeline.submit(job)

    def check(self, engine: Any, job: Job) -> None:
        self.pipeline.check(job)


def _write_jsonl(path: Path, examples: Sequence[Sequence[Mapping[str, Any]]]) -> Path:
    """The examples as OpenAI's chat JSONL (one ``{"messages": [...]}`` per line)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for messages in examples:
            out.write(json.dumps({"messages": [dict(m) for m in messages]}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _openai_version() -> dict[str, str]:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return {"openai": metadata.version("openai")}
    return {}
