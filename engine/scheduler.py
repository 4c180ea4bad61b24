"""The job queue's engine room: start worker processes, follow them, relay their events.

The only module that imports ``apscheduler`` (inside :meth:`Scheduler.start`, so importing this
module stays cheap). Everything that decides anything lives in :class:`Dispatcher`, whose
:meth:`~Dispatcher.tick` is a plain method: tests call it directly, and the APScheduler
``BackgroundScheduler`` merely calls it every ``interval`` seconds (guarded so ticks never
overlap, and coalesced).

One tick:

1. **Supervise** each worker. Exited while its job is not final: the job fails with the
   cause in plain words (:func:`diagnose_exit`: killed by the system, out of memory, crash) and a
   hint. Alive while its job is final (someone cancelled it): SIGTERM, and SIGKILL after
   ``grace_seconds``. After a cancel, partial files (checkpoints, the half-written adapter) go.
2. **Dispatch** the oldest queued local job when no local job is running anywhere (one GPU, one
   job; another process, e.g. ``ftbot run``, may be running one). Claiming is a compare-and-set
   ``queued -> validating``, so two dispatchers never start the same job. Only local jobs run in
   workers; OpenAI jobs are driven in this process by pollers (below), never by the queue.
3. **Relay** new events from SQLite (written by the workers) to each job's sink, through a
   :class:`~engine.progress.ThrottledSink` per job. The relay cursor is kept in the database, so
   events written while the bot was down reach their cards after a restart. The cursor says what
   was *handed over*, not what reached the user: a sink that shows events on its own thread (the
   Slack cards) keeps a per-job delivery record (``Engine.set_delivered_seq``) and replays what
   it never showed after a restart (bot/slack/progress.py says why the relay is not the place).

:class:`Scheduler` also runs **pollers** (:meth:`Scheduler.add_poller`): periodic work of backends
driven in-process, such as the OpenAI pipeline (engine/openai_pipeline.py).

Restart (:meth:`Dispatcher.recover`, called on start, and for orphans every few seconds): a job in
an active state whose worker is alive keeps being followed; one whose worker is gone resumes
(re-launches the worker with ``--resume``) when it can: before training (validating, baseline:
those steps simply run again), during training when a checkpoint exists, during evaluation when
the adapter was saved. Otherwise it fails with a message that says what happened.

The launch command is one function, :func:`launch_command`; a cluster scheduler (or
``accelerate launch`` for several GPUs) replaces it, or the whole ``launcher`` callable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import FtbotError, InvalidTransition, JobNotFound
from engine.jobs import ACTIVE_STATES, Job, JobState
from engine.progress import NullSink, ProgressEvent, ProgressSink, ThrottledSink, utcnow
from engine.settings import Settings
from engine.store import Store

log = logging.getLogger(__name__)

WORKER_MODULE = "engine.worker"
GRACE_SECONDS = 5.0
RELAY_CURSOR_KEY = "relay_cursor"
MAX_RESUMES = 3
# A claimed job gets its worker pid within moments; before that, do not take it for an orphan.
_STARTING_GRACE_SECONDS = 60.0
_ORPHAN_CHECK_SECONDS = 5.0
# A dead worker found by the periodic check waits this long before its job is resumed or failed.
_ORPHAN_DEAD_GRACE_SECONDS = 4.0

OOM_HINT = (
    "Try a smaller batch (batch=2 or batch=1 with a larger accum=), a shorter max_length= "
    "(e.g. 512), or a smaller LoRA rank (r=8)."
)


# --------------------------------------------------------------------------- paths


def run_dir(settings: Settings, job_id: str) -> Path:
    """The job's working directory: checkpoints, charts, predictions, the worker's log."""
    return settings.runs_dir / job_id


def worker_log_path(settings: Settings, job_id: str) -> Path:
    return run_dir(settings, job_id) / "worker.log"


def checkpoints_dir(settings: Settings, job_id: str) -> Path:
    """Where training writes its checkpoints (``checkpoint-<step>`` folders)."""
    return run_dir(settings, job_id) / "train"


def adapter_dir(settings: Settings, job_id: str) -> Path:
    """Where a finished local job's adapter lives (the model registry points here)."""
    return settings.models_dir / job_id


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step under ``directory`` (searched
    one level deep too: the trainer writes ``<output_dir>/checkpoints/checkpoint-<step>``), or None."""
    if not directory.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for candidate in [*directory.glob("checkpoint-*"), *directory.glob("*/checkpoint-*")]:
        suffix = candidate.name.rpartition("-")[2]
        # Only complete checkpoints: the trainer writes trainer_state.json last.
        if suffix.isdigit() and (candidate / "trainer_state.json").exists():
            found.append((int(suffix), candidate))
    return max(found)[1] if found else None


def remove_partial_files(settings: Settings, job_id: str) -> None:
    """Delete what a stopped job leaves half done: checkpoints and the adapter. Keeps the log."""
    for path in (checkpoints_dir(settings, job_id), adapter_dir(settings, job_id)):
        shutil.rmtree(path, ignore_errors=True)


def relay_events(store: Store, job_id: str, sink: ProgressSink, after_seq: int = 0) -> int:
    """Pass ``job_id``'s events after ``after_seq`` to ``sink``, unthrottled (a job followed in
    the foreground). Returns the sequence number of the last one passed (``after_seq`` if none)."""
    for event in store.events(job_id, after_seq=after_seq):
        after_seq = event.seq or after_seq
        sink.emit(event)
    return after_seq


# --------------------------------------------------------------------------- processes


def launch_command(job_id: str, *, home: Path, resume: bool = False, python: str | None = None) -> list[str]:
    """The command that runs one job's heavy steps. The single place to change how workers start
    (e.g. ``accelerate launch --num_processes N -m engine.worker ...`` on a multi-GPU host)."""
    # -u: unbuffered, so the log shows the worker's last words even when it is killed.
    command = [python or sys.executable, "-u", "-m", WORKER_MODULE, job_id, "--home", str(home)]
    if resume:
        command.append("--resume")
    return command


def pid_alive(pid: int | None, job_id: str | None = None) -> bool:
    """True when process ``pid`` exists (and, where /proc tells, is the worker of ``job_id``:
    a reused pid must not pass for our worker)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if status and status[0] == "Z":  # a zombie is dead; its parent just has not reaped it
                return False
            if job_id is not None:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                return WORKER_MODULE.encode() in cmdline and job_id.encode() in cmdline
        except (OSError, IndexError):
            return True
    return True


def parent_alive(pid: int) -> bool:
    """True when ``pid``'s parent is a live process other than init and this one: someone else is
    following that worker (an orphan's parent is init, or a container's reaper)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ppid = int(fields[1])
    except (OSError, IndexError, ValueError):
        return False
    if ppid in (0, 1, os.getpid()):
        return False
    try:
        comm = Path(f"/proc/{ppid}/cmdline").read_bytes()
    except OSError:
        return False
    # A reaper (tini, dumb-init, systemd --user) is not a follower; a Python process (the CLI) is.
    return b"python" in comm or b"ftbot" in comm


@dataclass
class WorkerProcess:
    """A worker: a child this process started (``popen`` set) or one adopted after a restart."""

    job_id: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    stop_requested_at: float | None = None
    exit_code: int | None = field(default=None, init=False)

    def poll(self) -> int | None:
        """The exit code once the process ended (``-N``: killed by signal N; for an adopted
        process, whose code nobody can read, ``0`` if its job ended normally is unknowable, so -1)."""
        if self.exit_code is not None:
            return self.exit_code
        if self.popen is not None:
            self.exit_code = self.popen.poll()
        elif not pid_alive(self.pid, self.job_id):
            self.exit_code = -1
        return self.exit_code

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM: it stops at the next training step and cleans up)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.poll()


Launcher = Callable[[str, bool], WorkerProcess]


def start_worker(settings: Settings, job_id: str, *, resume: bool = False) -> WorkerProcess:
    """Start ``python -m engine.worker JOB_ID`` as a child, output appended to the job's log.

    The child gets its own session, so a Ctrl-C in the terminal reaches only the parent, which
    then cancels the job properly instead of leaving half a run behind.
    """
    log_path = worker_log_path(settings, job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            launch_command(job_id, home=settings.home, resume=resume),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the child inherits the environment (FTBOT_*, OPENAI_*, CUDA_*)
        )
    return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log_path)


def _tail(path: Path | None, max_bytes: int = 20_000) -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - max_bytes))
        return f.read().decode("utf-8", "replace")


_OOM_MARKERS = (
    "out of memory",
    "outofmemoryerror",
    "memoryerror",
    "cannot allocate memory",
    "std::bad_alloc",
)


def diagnose_exit(exit_code: int | None, log_tail: str, *, state: str = "") -> tuple[str, str | None]:
    """Plain words for a worker that died without finishing its job: ``(message, hint)``."""
    during = f" while the job was {state}" if state else ""
    lowered = log_tail.lower()
    if any(marker in lowered for marker in _OOM_MARKERS):
        return f"Training ran out of memory{during}.", OOM_HINT
    if exit_code is not None and exit_code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return (
            f"The worker was killed by the system{during} (signal 9). This usually means the machine ran "
            "out of memory.",
            OOM_HINT,
        )
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return (
            f"The worker was stopped by {name}{during}.",
            "Start the job again; if it keeps happening, check the host.",
        )
    if exit_code == -1 or exit_code is None:
        return f"The worker process disappeared{during}.", "Start the job again."
    last = next((line.strip() for line in reversed(log_tail.splitlines()) if line.strip()), "")
    detail = f" Its last words: {last[:300]}" if last else ""
    return (
        f"The worker stopped unexpectedly{during} (exit code {exit_code}).{detail}",
        "Start the job again; if it fails the same way, report it with the job id.",
    )


# --------------------------------------------------------------------------- dispatcher


class Dispatcher:
    """Runs the job queue. Thread-safe; see the module docstring.

    ``local_backends`` (default ``{"local"}``) are the backends whose jobs run in worker processes;
    they need the GPU: one such job runs at a time, across processes. Jobs of other backends are
    left alone (the OpenAI pipeline drives its own through :meth:`Scheduler.add_poller`).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        sink_for: Callable[[Job], ProgressSink] | None = None,
        launcher: Launcher | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        throttle_seconds: float = 1.0,
        grace_seconds: float = GRACE_SECONDS,
        local_backends: Iterable[str] = ("local",),
    ) -> None:
        self.store = store
        self.settings = settings
        self._sink_for = sink_for
        self._launcher: Launcher = launcher or (
            lambda job_id, resume: start_worker(settings, job_id, resume=resume)
        )
        self._clock = clock
        self._monotonic = monotonic
        self._throttle = throttle_seconds
        self._grace = grace_seconds
        self.local_backends = frozenset(local_backends)
        self._lock = threading.RLock()
        self._relay_lock = threading.RLock()
        self.current: WorkerProcess | None = None  # the GPU slot
        self._resume_next: list[str] = []
        # Relay from where the last relaying process stopped, so a job that moved on while the bot
        # was down still reaches its card; a fresh database starts from now.
        stored = store.get_meta(RELAY_CURSOR_KEY) if sink_for is not None else None
        self._cursor = int(stored) if stored and stored.isdigit() else store.event_feed_cursor()
        self._sinks: dict[str, ThrottledSink] = {}
        # Jobs whose sink must be rebuilt (see refresh_sink). Guarded by a leaf lock that is never
        # held while calling out: a sink may call back into the engine (the Slack card stores
        # where it was posted), and taking the relay lock there would deadlock against the relay.
        self._stale_sinks: set[str] = set()
        self._stale_lock = threading.Lock()
        self._last_orphan_check = -1e9
        self._dead_since: dict[str, float] = {}

    def workers(self) -> list[WorkerProcess]:
        """Every worker this dispatcher follows (at most one: the GPU slot)."""
        with self._lock:
            return [self.current] if self.current is not None else []

    def _worker_of(self, job_id: str) -> WorkerProcess | None:
        return next((proc for proc in self.workers() if proc.job_id == job_id), None)

    def _release(self, proc: WorkerProcess) -> None:
        if self.current is proc:
            self.current = None

    # ----- starting jobs

    def start(self, job_id: str, *, resume: bool = False) -> WorkerProcess:
        """Claim a queued job (or resume an interrupted one) and launch its worker.

        Raises:
            InvalidTransition: the job is not queued any more (another dispatcher took it, or it
                was cancelled).
        """
        with self._lock:
            job = self.store.get_job(job_id)
            if resume:
                resumes = int(job.result.get("resumes", 0)) + 1
                self.store.update_job(job_id, result={"resumes": resumes})
                self.store.add_event(
                    ProgressEvent(
                        job_id,
                        "alert",
                        f"Resuming the job (it was {job.state.value}).",
                        data={"code": "resumed", "state": job.state.value},
                    )
                )
            else:
                self.store.transition(
                    job_id,
                    JobState.VALIDATING,
                    now=self._clock(),
                    expect=JobState.QUEUED,
                    message="Started: checking the dataset.",
                )
            try:
                proc = self._launcher(job_id, resume)
            except (OSError, FtbotError) as exc:
                self._fail(job_id, f"The worker process could not be started: {exc}.", None)
                raise
            self.store.update_job(job_id, worker_pid=proc.pid)
            self.current = proc
            return proc

    def _dispatch_next(self) -> None:
        while self._resume_next:
            job_id = self._resume_next[0]
            try:
                job = self.store.get_job(job_id)
            except JobNotFound:
                self._resume_next.pop(0)
                continue
            if job.is_final:
                self._resume_next.pop(0)
                continue
            if self.current is not None:
                break  # the GPU is busy; resume it next
            self._resume_next.pop(0)
            self.start(job_id, resume=True)
        queued = self.store.queued_jobs()
        for job in queued:
            if job.result.get("awaiting_confirmation"):
                continue
            if job.backend not in self.local_backends:
                continue  # a backend this dispatcher does not run (see Engine.backend_runners)
            if self.current is not None or self._resume_next or self._busy_elsewhere():
                continue
            try:
                self.start(job.id)
            except InvalidTransition:
                continue  # someone else claimed it first
            except (OSError, FtbotError):
                log.exception("could not start job %s", job.id)

    def _busy_elsewhere(self) -> bool:
        """A GPU job is active in another process (``ftbot run``) with a live worker."""
        for job in self.store.jobs(states=tuple(ACTIVE_STATES), limit=100):
            if job.backend in self.local_backends and (
                pid_alive(job.worker_pid, job.id) or self._starting(job)
            ):
                return True
        return False

    def _starting(self, job: Job) -> bool:
        return (
            job.worker_pid is None
            and (self._clock() - job.updated_at).total_seconds() < _STARTING_GRACE_SECONDS
        )

    # ----- supervising

    def _supervise(self) -> None:
        for proc in self.workers():
            try:
                job = self.store.get_job(proc.job_id)
            except JobNotFound:
                proc.kill()
                self._release(proc)
                continue
            code = proc.poll()
            if code is None:
                if job.is_final:  # cancelled (or failed) from outside while the worker still runs
                    now = self._monotonic()
                    if proc.stop_requested_at is None:
                        proc.stop_requested_at = now
                        proc.terminate()
                    elif now - proc.stop_requested_at >= self._grace:
                        proc.kill()
                continue
            self._release(proc)
            self._finish(job, proc, code)

    def _finish(self, job: Job, proc: WorkerProcess, code: int) -> None:
        """The worker exited: make sure its job ends in a final state that says why."""
        job = self.store.get_job(job.id)
        if not job.is_final:
            message, hint = diagnose_exit(code, _tail(proc.log_path), state=job.state.value)
            self._fail(job.id, message, hint)
            job = self.store.get_job(job.id)
        if job.state is JobState.CANCELLED:
            remove_partial_files(self.settings, job.id)
        with contextlib.suppress(JobNotFound):
            self.store.update_job(job.id, worker_pid=None)

    def _fail(self, job_id: str, message: str, hint: str | None) -> None:
        with contextlib.suppress(InvalidTransition, JobNotFound):
            self.store.transition(
                job_id,
                JobState.FAILED,
                now=self._clock(),
                error=f"{message} {hint}" if hint else message,
                message=message,
                data={"hint": hint} if hint else None,
            )

    def terminate(self, job_id: str) -> None:
        """Ask the job's worker to stop now (the job was cancelled). Returns at once; the next
        ticks escalate to SIGKILL after the grace period and clean up."""
        with self._lock:
            proc = self._worker_of(job_id)
            if proc is not None:
                if proc.stop_requested_at is None:
                    proc.stop_requested_at = self._monotonic()
                proc.terminate()
                return
        job = self.store.get_job(job_id)
        if pid_alive(job.worker_pid, job_id):  # a worker of another process (``ftbot run``)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job.worker_pid, signal.SIGTERM)  # type: ignore[arg-type]

    # ----- restart recovery

    def recover(self, *, dead_grace: float = 0.0) -> list[str]:
        """Find jobs left active by a previous run and follow, resume or fail each. Returns the
        ids handled (for logs).

        A live worker whose parent is alive (``ftbot run`` in another terminal) is left to that
        parent; an orphaned one (its bot is gone) is adopted. A worker found dead is acted on only
        once it has been seen dead for ``dead_grace`` seconds, so a parent that is following it
        gets to record the real cause first.
        """
        handled = []
        with self._lock:
            followed = {proc.job_id for proc in self.workers()}
            now = self._monotonic()
            # Oldest first: resumed jobs keep their order in the queue.
            for job in reversed(self.store.jobs(states=tuple(ACTIVE_STATES), limit=1000)):
                if (
                    job.backend not in self.local_backends
                    or job.id in followed
                    or job.id in self._resume_next
                ):
                    continue
                if pid_alive(job.worker_pid, job.id):
                    self._dead_since.pop(job.id, None)
                    if self.current is None and not parent_alive(job.worker_pid):  # type: ignore[arg-type]
                        self.current = WorkerProcess(
                            job_id=job.id,
                            pid=job.worker_pid,  # type: ignore[arg-type]
                            log_path=worker_log_path(self.settings, job.id),
                        )
                        handled.append(job.id)
                    continue
                if self._starting(job):
                    continue
                first_seen = self._dead_since.setdefault(job.id, now)
                if now - first_seen < dead_grace:
                    continue
                self._dead_since.pop(job.id, None)
                if self.store.get_job(job.id).is_final:  # its parent recorded the end meanwhile
                    continue
                handled.append(job.id)
                if self.resumable(job) is None:
                    self._fail(
                        job.id,
                        f"The worker of this job stopped while the job was {job.state.value} (the bot was "
                        "restarted or the process was killed), and there is no checkpoint to resume from.",
                        "Start the job again.",
                    )
                elif int(job.result.get("resumes", 0)) >= MAX_RESUMES:
                    self._fail(
                        job.id,
                        f"The worker of this job stopped {MAX_RESUMES + 1} times; not resuming again.",
                        "Check the worker log and the host's memory, then start the job again.",
                    )
                else:
                    self.store.update_job(job.id, worker_pid=None)
                    self._resume_next.append(job.id)
        return handled

    def resumable(self, job: Job) -> str | None:
        """How a job whose worker is gone can go on, or None when it cannot."""
        if job.state in (JobState.VALIDATING, JobState.BASELINE):
            return "rerun step"
        if job.state is JobState.TRAINING:
            checkpoint = latest_checkpoint(checkpoints_dir(self.settings, job.id))
            return f"from {checkpoint.name}" if checkpoint else None
        if job.state is JobState.EVALUATING:
            path = (job.result.get("trained") or {}).get("path") or job.result.get("adapter_dir")
            return "evaluate again" if path and Path(path).exists() else None
        return None

    # ----- relaying

    def _relay(self) -> None:
        if self._sink_for is None:
            self._cursor = self.store.event_feed_cursor()
            return
        start = self._cursor
        while True:
            batch = self.store.event_feed(after=self._cursor, limit=500)
            if not batch:
                break
            for cursor, event in batch:
                self._cursor = cursor
                self._deliver(event)
        if self._cursor != start:
            self.store.set_meta(RELAY_CURSOR_KEY, str(self._cursor))

    def refresh_sink(self, job_id: str) -> None:
        """Build the job's sink again at its next event (its ``reply_to`` changed: the card moved).

        Safe to call from inside a sink, on any thread: it only leaves a note for the relay."""
        with self._stale_lock:
            self._stale_sinks.add(job_id)

    def _deliver(self, event: ProgressEvent) -> None:
        with self._stale_lock:
            stale = event.job_id in self._stale_sinks
            self._stale_sinks.discard(event.job_id)
        if stale and (old := self._sinks.pop(event.job_id, None)) is not None:
            with contextlib.suppress(Exception):
                old.flush()
        sink = self._sinks.get(event.job_id)
        if sink is None:
            try:
                job = self.store.get_job(event.job_id)
                inner = self._sink_for(job) if self._sink_for else NullSink()
            except Exception:  # a broken sink must never stop the queue
                log.exception("no sink for job %s", event.job_id)
                inner = NullSink()
            sink = ThrottledSink(inner, min_interval=self._throttle, clock=self._monotonic)
            self._sinks[event.job_id] = sink
        try:
            sink.emit(event)
            if event.kind == "state" and JobState(event.data.get("state", "queued")).is_final:
                sink.flush()
                self._sinks.pop(event.job_id, None)
        except Exception:
            log.exception("progress sink failed for job %s", event.job_id)

    # ----- the tick

    def tick(self) -> None:
        """Supervise, dispatch, relay. Never raises (it runs on a timer)."""
        with self._lock:
            for step in (self._supervise, self._check_orphans, self._dispatch_next):
                try:
                    step()
                except Exception:
                    log.exception("scheduler step %s failed", step.__name__)
        # Sinks may be slow (a Slack card edit is an HTTP call): relay outside the dispatcher's
        # lock so a cancel from another thread never waits for them.
        with self._relay_lock:
            try:
                self._relay()
            except Exception:
                log.exception("scheduler step _relay failed")

    def _check_orphans(self) -> None:
        now = self._monotonic()
        if now - self._last_orphan_check < _ORPHAN_CHECK_SECONDS:
            return
        self._last_orphan_check = now
        self.recover(dead_grace=_ORPHAN_DEAD_GRACE_SECONDS)

    # ----- one job, in the foreground (``ftbot run``)

    def run_foreground(
        self,
        job_id: str,
        sink: ProgressSink,
        *,
        poll_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """Start ``job_id`` now (it must be queued) and follow it to the end, passing its events to
        ``sink`` unthrottled. Ctrl-C cancels the job and waits for the worker to stop. Returns the
        final job."""
        after = self.store.last_event_seq(job_id)
        for event in self.store.events(job_id):
            sink.emit(event)
        proc = self.start(job_id)

        def pump() -> None:
            nonlocal after
            after = relay_events(self.store, job_id, sink, after)

        try:
            while True:
                pump()
                code = proc.poll()
                job = self.store.get_job(job_id)
                if code is not None:
                    with self._lock:
                        self._release(proc)
                    self._finish(job, proc, code)
                    break
                if job.is_final:
                    if proc.stop_requested_at is None:
                        proc.stop_requested_at = self._monotonic()
                        proc.terminate()
                    elif self._monotonic() - proc.stop_requested_at >= self._grace:
                        proc.kill()
                sleep(poll_seconds)
        except KeyboardInterrupt:
            with contextlib.suppress(InvalidTransition):
                self.store.transition(
                    job_id, JobState.CANCELLED, now=self._clock(), message="Cancelled (Ctrl-C)."
                )
            proc.terminate()
            if proc.wait(self._grace) is None:
                proc.kill()
                proc.wait(self._grace)
            with self._lock:
                self._release(proc)
            self._finish(self.store.get_job(job_id), proc, proc.poll() or -1)
        pump()
        return self.store.get_job(job_id)


# --------------------------------------------------------------------------- the timer


class Scheduler:
    """Calls :meth:`Dispatcher.tick` every ``interval`` seconds on an APScheduler background thread."""

    def __init__(self, dispatcher: Dispatcher, *, interval: float = 0.5) -> None:
        self.dispatcher = dispatcher
        self.interval = interval
        self._scheduler: Any = None
        # key -> (fn, interval): periodic jobs of remote backends (see add_poller).
        self._pollers: dict[str, tuple[Callable[[], None], float]] = {}
        self._pollers_lock = threading.RLock()

    def start(self, *, run_queue: bool = True) -> None:
        """Start the timer thread. ``run_queue=False`` runs only the pollers: a process that follows
        one remote job (``ftbot run --backend openai``) must not start the shared queue's jobs."""
        from apscheduler.schedulers.background import BackgroundScheduler

        if self._scheduler is not None:
            return
        scheduler = BackgroundScheduler(daemon=True)
        if run_queue:
            self.dispatcher.recover()
            _add_guarded_job(scheduler, "ftbot-dispatch", self.dispatcher.tick, self.interval)
        scheduler.start()
        self._scheduler = scheduler
        self._start_pollers()

    def stop(self) -> None:
        """Stop ticking. Running workers keep running: a restart finds and follows them."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    # ----- pollers: periodic work of remote backends (the OpenAI pipeline follows its jobs here)

    def add_poller(self, key: str, fn: Callable[[], None], interval: float) -> None:
        """Call ``fn`` every ``interval`` seconds, the first time at once, until
        :meth:`remove_poller`. Calls of one poller never overlap (missed runs coalesce); pollers
        run on their own thread pool, so a slow one never delays the queue's tick. Adding a key
        again replaces it and runs it at once. Added before :meth:`start`, it begins then (and it
        survives :meth:`stop` / :meth:`start`). ``fn`` should not raise (APScheduler only logs)."""
        with self._pollers_lock:
            self._pollers[key] = (fn, interval)
            if self._scheduler is not None:
                self._schedule_poller(key, fn, interval)

    def remove_poller(self, key: str) -> None:
        """Stop calling the poller ``key`` (a call in progress finishes). Unknown keys are ignored."""
        from apscheduler.jobstores.base import JobLookupError

        with self._pollers_lock:
            self._pollers.pop(key, None)
            if self._scheduler is not None:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(_POLLER_PREFIX + key)

    def pollers(self) -> list[str]:
        """The keys of the registered pollers."""
        with self._pollers_lock:
            return sorted(self._pollers)

    def _start_pollers(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor

        with self._pollers_lock:
            self._scheduler.add_executor(
                ThreadPoolExecutor(max_workers=_POLLER_THREADS), alias=_POLLER_EXECUTOR
            )
            for key, (fn, interval) in self._pollers.items():
                self._schedule_poller(key, fn, interval)

    def _schedule_poller(self, key: str, fn: Callable[[], None], interval: float) -> None:
        _add_guarded_job(self._scheduler, _POLLER_PREFIX + key, fn, interval, executor=_POLLER_EXECUTOR)


def _add_guarded_job(
    scheduler: Any, job_id: str, fn: Callable[[], None], interval: float, *, executor: str = "default"
) -> None:
    """Call ``fn`` every ``interval`` seconds, the first time at once; calls never overlap.

    A call that finds the previous one still running (a long tick, a slow poll) returns at once.
    APScheduler's own ``max_instances=1`` would skip it too, but log a warning for every skipped
    run: a busy bot's log would fill with them.
    """
    busy = threading.Lock()

    def run_once() -> None:
        if not busy.acquire(blocking=False):
            return
        try:
            fn()
        finally:
            busy.release()

    scheduler.add_job(
        run_once,
        "interval",
        seconds=interval,
        id=job_id,
        name=job_id,
        executor=executor,
        replace_existing=True,
        max_instances=3,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=utcnow(),
    )


_POLLER_PREFIX = "ftbot-poll:"
_POLLER_EXECUTOR = "pollers"
_POLLER_THREADS = 8
