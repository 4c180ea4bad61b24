"""Scheduling OpenAI jobs: one poller per job, each tick one :func:`engine.runner.advance`.

:class:`OpenAIPipeline` is made by ``Engine.use_openai`` (called by ``Engine.__init__``; tests
call it again to inject a clock, a sleep and the day) and held as ``engine.openai``. The steps
of a job are the job runner's (:mod:`engine.runner`) with the OpenAI backend
(:class:`engine.backends.openai_backend.OpenAIBackend`, also ``engine.openai.backend``: /ask for
OpenAI models); what is here is only what polling needs.

There is no GPU work and no child process: every job is driven by one **poller** registered with
the engine's scheduler (``Scheduler.add_poller``: an APScheduler interval job, every
``settings.openai_poll_seconds``; the scheduler is the only apscheduler user). Each tick reads the
job from the store and does its next steps, so a restart needs nothing but a new poller
(:meth:`OpenAIPipeline.recover`, called by ``Engine.start``): a job in training with a remote id
resumes polling from its stored cursor, the others redo their current step.

- **submit** (:meth:`OpenAIPipeline.submit`, synchronous, inside ``Engine.submit``; before it,
  :meth:`OpenAIBackend.check` refuses what OpenAI cannot run and nothing is stored): the cost
  estimate (:meth:`OpenAIBackend.estimate`); a problem found here fails the job and is raised to
  the caller. A job awaiting confirmation is left alone until ``Engine.confirm``.
- **cancel** (``Engine.cancel`` -> :meth:`OpenAIPipeline.on_cancel`) asks OpenAI to cancel the
  remote job; if that request fails the poller keeps trying and an alert says so.
- **failures**: a step's error fails the job with its message and hint
  (:func:`engine.failures.fail_job`). Trouble that may pass (network, 5xx, 429, an unexpected
  exception) while creating, following or evaluating a remote job is retried :data:`MAX_RETRIES`
  times with backoff first; a missing API key after the remote job exists never fails the job (an
  alert says so; the job is followed again when the bot runs with a key).
- **leases**: several processes may share one FTBOT_HOME; a job is driven by one of them at a time
  (``OpenAIBackend.claim``); the leases are released on a clean stop.

``Engine.run_job`` drives an OpenAI job in the calling thread instead
(:meth:`OpenAIPipeline.run_foreground`, for the console and ``ftbot run``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date
from typing import Any

from engine import runner
from engine.backends.openai_backend import BACKEND, OpenAIBackend, Stopping
from engine.errors import BackendUnavailable, FtbotError, JobNotFound, RemoteError
from engine.failures import fail_job, internal_error
from engine.follow import follow
from engine.jobs import Job, JobState
from engine.pipeline import Cancelled, JobContext
from engine.progress import ProgressSink

log = logging.getLogger(__name__)

# Steps that meet trouble which may pass (network, 5xx, 429) while creating, following or
# evaluating a remote job are tried again this many times (with backoff) before the job fails.
MAX_RETRIES = 8
_RETRYABLE_CODES = frozenset({"connection_error", "server_error", "rate_limit_exceeded", "internal_error"})


class OpenAIPipeline:
    """Drives OpenAI jobs for one :class:`~engine.service.Engine` (see the module docstring).

    Args:
        engine: the engine whose store, settings, scheduler, clock and ``openai_client`` are used.
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
        self.store = engine.store
        self.settings = engine.settings
        self._monotonic = monotonic
        self._today = today
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._running: set[str] = set()  # jobs whose tick is in progress
        self._watched: set[str] = set()
        self._recovered: set[str] = set()
        self._stop_flag = threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.backend = OpenAIBackend(
            store=engine.store,
            settings=engine.settings,
            client=engine.openai_client,
            today=self.today,
            clock=clock,
            sleep=sleep,
            monotonic=monotonic,
            owner=self.owner,
            stop_flag=self._stop_flag,
            follow=self._keep_following,
        )

    def today(self) -> date:
        """The calendar day (UTC) the shutdown dates are compared with."""
        if self._today is not None:
            return self._today()
        return self.engine.clock().astimezone(UTC).date()

    def _context(self, job_id: str) -> JobContext:
        return JobContext(store=self.store, settings=self.settings, job_id=job_id, stop_flag=self._stop_flag)

    # ----- submit / confirm / cancel (called by the Engine)

    def __call__(self, engine: Any, job: Job) -> None:
        """``engine.backend_runners["openai"]``: start following a stored job (:meth:`submit`)."""
        self.submit(job)

    def check(self, engine: Any, job: Job) -> None:
        """``Engine.submit`` calls a runner's ``check`` before it stores a job:
        :meth:`OpenAIBackend.check`."""
        self.backend.check(job)

    def submit(self, job: Job) -> None:
        """Estimate the job's cost and start following it. A problem fails the job and is raised
        (the Engine's caller shows it)."""
        try:
            self.backend.estimate(self._context(job.id))
        except FtbotError as exc:
            self._end(job.id, exc.message, hint=exc.hint)
            raise
        self.watch(job.id)

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
        self.backend.cancel_remote(job)

    def _keep_following(self, job_id: str) -> None:
        """A remote cancel failed: the poller tries again (with backoff)."""
        if job_id not in self._watched:
            self.watch(job_id)

    # ----- pollers

    def watch(self, job_id: str) -> None:
        """Drive ``job_id`` with a poller (first tick now; every ``openai_poll_seconds`` after)."""
        with self._lock:
            self._watched.add(job_id)
            self.backend.poll_now(job_id)
        self.engine.scheduler.add_poller(
            self._key(job_id), lambda: self.tick(job_id), self.settings.openai_poll_seconds
        )

    def _unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watched.discard(job_id)
            self.backend.forget(job_id)
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
        sink: ProgressSink,
        *,
        poll_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """Drive ``job_id`` in the calling thread (``Engine.run_job``: the console, scripts) and
        pass its events to ``sink`` (:func:`engine.follow.follow`) until it ends, or until it
        waits for a cost confirmation (then it is returned still queued: confirm it and call
        again). Ctrl-C cancels the job, the remote one included. Works beside a running
        scheduler: a job is never driven twice."""
        next_tick = 0.0

        def step(job: Job) -> float | None:
            nonlocal next_tick
            if job.is_final or (job.state is JobState.QUEUED and job.result.get("awaiting_confirmation")):
                return None
            if self._stop_flag.is_set():  # the engine is stopping: the job goes on at the next start
                return None
            if self._monotonic() >= next_tick:
                self.tick(job_id)
                next_tick = self._monotonic() + self.settings.openai_poll_seconds
                return 0.0
            return poll_seconds

        def interrupted() -> None:
            with contextlib.suppress(FtbotError):
                self.engine.cancel(job_id, user=self.store.get_job(job_id).owner, is_admin=True)

        return follow(self.store, job_id, sink, step=step, on_interrupt=interrupted, sleep=sleep)

    # ----- one tick

    def tick(self, job_id: str) -> None:
        """One step of ``job_id`` (the poller's function). Never raises."""
        with self._lock:
            if job_id in self._running or self._stop_flag.is_set():
                return
            if not self.backend.due(job_id):
                return
            self._running.add(job_id)
        try:
            self._tick(job_id)
        except Stopping:
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
            if pending and not self.backend.cancel_remote(job):
                self.backend.backoff(job_id, None)
                return
            self._unwatch(job_id)
            return
        if job.state is JobState.QUEUED and job.result.get("awaiting_confirmation"):
            return
        if not self.backend.claim(job):
            return
        ctx = self._context(job_id)
        try:
            self._advance(ctx, job)
        except Cancelled:
            if not self._job_final(job_id):
                raise Stopping() from None  # the engine is stopping, not the job
        except (BackendUnavailable, RemoteError) as exc:
            if not self._job_final(job_id) and not self._retry_later(ctx, exc):
                self._end(job_id, exc.message, hint=exc.hint)
        except FtbotError as exc:
            if not self._job_final(job_id):
                self._end(job_id, exc.message, hint=exc.hint)
        except Stopping:
            raise
        except Exception as exc:
            log.exception("OpenAI job %s failed", job_id)
            error = RemoteError(
                internal_error(exc, "OpenAI pipeline"),
                code="internal_error",
                hint="Start the job again; report it with the job id if it repeats.",
            )
            if not self._job_final(job_id) and not self._retry_later(ctx, error):
                self._end(job_id, error.message, hint=error.hint)
                failed = self.store.get_job(job_id)
                if failed.state is JobState.FAILED and failed.remote_id and job.state is JobState.TRAINING:
                    self.backend.cancel_remote(failed)  # nobody will use what it trains: stop paying for it
        if self._job_final(job_id):
            job = self.store.get_job(job_id)
            if not (job.state is JobState.CANCELLED and job.result.get("remote_cancel_pending")):
                self._unwatch(job_id)

    def _advance(self, ctx: JobContext, job: Job) -> None:
        """Say so when the job was picked up after a restart, then :func:`engine.runner.advance`."""
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
        runner.advance(ctx, self.backend)

    def _retry_later(self, ctx: JobContext, exc: FtbotError) -> bool:
        """Whether a failed step should be tried again later instead of failing the job: trouble
        that may pass (network, 5xx, 429, an internal error) while creating, following or
        evaluating a remote job (retried :data:`MAX_RETRIES` times with backoff), and a missing
        API key once a remote job exists (it keeps running on OpenAI: never lose it; an alert
        says what to do)."""
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
            self.backend.backoff(job.id, None)
            return True
        code = getattr(exc, "code", None)
        if code not in _RETRYABLE_CODES or job.state not in (JobState.TRAINING, JobState.EVALUATING):
            return False
        attempts = self.backend.count_retry(job.id)
        if attempts > MAX_RETRIES:
            return False
        ctx.alert(
            code or "remote_error",
            f"{exc.message} ftbot tries again shortly ({attempts}/{MAX_RETRIES}).",
            attempt=attempts,
        )
        self.backend.backoff(job.id, None, failures=attempts)
        return True

    def _job_final(self, job_id: str) -> bool:
        try:
            return self.store.get_job(job_id).is_final
        except JobNotFound:
            return True

    def _end(self, job_id: str, message: str, *, hint: str | None = None) -> None:
        """Fail the job with ``message`` (and ``hint``) unless it already ended."""
        refused = fail_job(self.store, job_id, message, hint)
        if refused is not None:
            log.error("could not record that job %s failed (%s): %s", job_id, message, refused)
