"""The job queue's engine room: start worker processes, follow them, relay their events.

The only module that imports ``apscheduler`` (inside :meth:`Scheduler.start`, so importing this
module stays cheap). Everything that decides anything lives in :class:`Dispatcher`, whose
:meth:`~Dispatcher.tick` is a plain method: tests call it directly, and the APScheduler
``BackgroundScheduler`` merely calls it every ``interval`` seconds (guarded so ticks never
overlap, and coalesced).

One tick:

1. **Supervise** each worker (engine/workers.py). Exited while its job is not final: the job
   fails with the cause in plain words (:func:`~engine.diagnosis.diagnose_exit`: a full disk, out
   of memory with the kernel's or the worker's own evidence, killed from outside, crash) and a
   hint. Alive while its job is final (someone cancelled it): SIGTERM, and SIGKILL after
   ``grace_seconds``. After a cancel, partial files (checkpoints, the half-written adapter) go.
2. **Dispatch** the oldest queued local job when no local job is running anywhere on this host
   (one GPU, one job). The rule holds across processes (``ftbot serve``, ``ftbot chat``, each
   ``ftbot run``) through :class:`~engine.hostlock.HostLock`, an ``flock`` on
   ``FTBOT_HOME/local-job.lock`` that the dispatcher takes before it claims a job and its worker
   inherits. Claiming is a compare-and-set ``queued -> validating``, so two dispatchers never start
   the same job. Only local jobs run in workers; OpenAI jobs are driven in this process by pollers
   (below), never by the queue. ``ftbot run`` (:func:`engine.follow.run_local`) waits in the
   queue for the slot and says which job holds it.
3. **Relay** new events from SQLite to the subscribed display (:class:`~engine.relay.Relay`: one
   throttle and one delivery cursor per job, so a restart catches up without repeats).

:class:`Scheduler` also runs **pollers** (:meth:`Scheduler.add_poller`): periodic work of backends
driven in-process, such as the OpenAI pipeline (engine/openai_pipeline.py).

Restart (:meth:`Dispatcher.recover`, called on start, and for orphans every few seconds): a job in
an active state whose worker is alive keeps being followed; one whose worker is gone resumes
(re-launches the worker with ``--resume``) when it can: before training (validating, baseline:
those steps simply run again), during training when a checkpoint exists, during evaluation when
the adapter was saved. Otherwise it fails with a message that says what happened.

The launch command is one function, :func:`engine.workers.launch_command`; ``accelerate launch``
for several GPUs replaces it, or the whole ``launcher`` callable.

**On a Ray cluster** (``cluster``, a :class:`~engine.cluster.RayCluster`, when FTBOT_RAY_ADDRESS is
set): each local job runs in a Ray actor instead of a worker process, followed through the same
interface (:class:`~engine.cluster.RayJob`: poll, terminate, kill). The host's slot does not apply:
as many jobs run at once as the cluster places (the next queued job is handed over once every job
handed over so far is placed). A job remembers its actor's name (``result["ray_actor"]``); a restart
follows it again by that name, or fails the job when the actor is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.cluster import RayCluster, RayJob
from engine.diagnosis import diagnose_exit, storage_problem
from engine.errors import BackendUnavailable, FtbotError, InvalidTransition, JobNotFound, StoreError
from engine.failures import fail_job
from engine.hostlock import HostLock, host_lock_path, process_label
from engine.jobs import ACTIVE_STATES, Job, JobState
from engine.paths import checkpoints_dir, latest_checkpoint, remove_partial_files, worker_log_path
from engine.progress import ProgressEvent, utcnow
from engine.relay import Relay, SinkFactory
from engine.settings import Settings
from engine.store import Store
from engine.workers import Launcher, WorkerProcess, log_tail, parent_alive, pid_alive, start_worker

log = logging.getLogger(__name__)

WORKER_MODULE = "engine.worker"
GRACE_SECONDS = 5.0
MAX_RESUMES = 3
# A claimed job gets its worker pid within moments; before that, do not take it for an orphan.
_STARTING_GRACE_SECONDS = 60.0
_ORPHAN_CHECK_SECONDS = 5.0
# A dead worker found by the periodic check waits this long before its job is resumed or failed.
_ORPHAN_DEAD_GRACE_SECONDS = 4.0
# A job handed to the Ray cluster that is not placed after this long tells why it waits.
_UNPLACED_ALERT_SECONDS = 30.0

# How a waiting job describes the one that holds the host.
_DOING = {
    JobState.VALIDATING: "is checking its data",
    JobState.BASELINE: "is measuring its baseline",
    JobState.TRAINING: "is training",
    JobState.EVALUATING: "is evaluating",
}


# --------------------------------------------------------------------------- dispatcher


class Dispatcher:
    """Runs the job queue. Thread-safe; see the module docstring.

    ``local_backends`` (default ``{"local"}``) are the backends whose jobs run in worker processes;
    they need the GPU: one such job runs at a time on this host, across processes (the
    :class:`HostLock` on FTBOT_HOME). Jobs of other backends are left alone (the OpenAI pipeline
    drives its own through :meth:`Scheduler.add_poller`). ``started_by`` names this process in what
    a waiting ``ftbot run`` prints (default: :func:`process_label`).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        sink_for: SinkFactory | None = None,
        launcher: Launcher | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        throttle_seconds: float = 1.0,
        grace_seconds: float = GRACE_SECONDS,
        local_backends: Iterable[str] = ("local",),
        started_by: str | None = None,
        cluster: RayCluster | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.host_lock = HostLock(host_lock_path(settings))
        self.started_by = started_by or process_label()
        # The default worker inherits the host lock's descriptor (see HostLock); a custom launcher
        # does not, and the slot is then held by this process until the worker is seen to end.
        self.cluster = cluster
        self._launcher: Launcher = launcher or (
            cluster.launch  # type: ignore[assignment]
            if cluster is not None
            else lambda job_id, resume: start_worker(
                settings,
                job_id,
                resume=resume,
                pass_fds=[fd for fd in [self.host_lock.fileno()] if fd is not None],
            )
        )
        self._clock = clock
        self._monotonic = monotonic
        self._grace = grace_seconds
        self.local_backends = frozenset(local_backends)
        self._lock = threading.RLock()
        self.current: WorkerProcess | None = None  # the GPU slot
        self.remote: dict[str, RayJob] = {}  # job id -> its actor on the Ray cluster
        self._resume_next: list[str] = []
        #: Job events from the store to the subscribed display (one throttle, one cursor per job).
        self.relay = Relay(store, sink_for=sink_for, min_interval=throttle_seconds, clock=monotonic)
        self._last_orphan_check = -1e9
        self._dead_since: dict[str, float] = {}

    def workers(self) -> list[WorkerProcess]:
        """Every worker this dispatcher follows (the GPU slot, and the jobs on the Ray cluster)."""
        with self._lock:
            return ([self.current] if self.current is not None else []) + list(self.remote.values())

    def _worker_of(self, job_id: str) -> WorkerProcess | None:
        return next((proc for proc in self.workers() if proc.job_id == job_id), None)

    def _release(self, proc: WorkerProcess) -> None:
        if self.remote.get(proc.job_id) is proc:
            del self.remote[proc.job_id]
        elif self.current is proc:
            self.current = None
            self.host_lock.release()

    def close(self) -> None:
        """Give up this process's hold on the host's slot (the engine stops). A worker still
        running keeps it (it inherited the lock) until it ends; a restart follows it again."""
        with self._lock:
            self.host_lock.release()

    # ----- starting jobs

    def start(self, job_id: str, *, resume: bool = False) -> WorkerProcess:
        """Claim a queued job (or resume an interrupted one) and launch its worker.

        The host's slot (:class:`HostLock`) is taken first, unless this dispatcher holds it already
        (:meth:`_take_slot`); it is given back when the job cannot start.

        Raises:
            InvalidTransition: the job is not queued any more (another dispatcher took it, or it
                was cancelled).
            BackendUnavailable: another local job runs on this host (another process holds the
                slot); the message names it.
        """
        with self._lock:
            if self.cluster is None and (
                self.current is not None or (not self.host_lock.held and not self._take_slot(job_id))
            ):
                busy = self._busy_with(job_id)
                raise BackendUnavailable(f"{busy[0].upper()}{busy[1:]}: job {job_id} was not started.")
            try:
                return self._claim_and_launch(job_id, resume=resume)
            except BaseException:
                if self.cluster is None:
                    self.host_lock.release()
                raise

    def _claim_and_launch(self, job_id: str, *, resume: bool) -> WorkerProcess:
        """:meth:`start`'s work, with the host's slot held."""
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
            if isinstance(proc, RayJob):
                self.store.update_job(job_id, worker_pid=None, result={"ray_actor": proc.name})
                self.remote[job_id] = proc
                return proc  # type: ignore[return-value]
            self.store.update_job(job_id, worker_pid=proc.pid)
            self.host_lock.note_worker(proc.pid)
            proc.sample_memory()
            self.current = proc
            return proc

    def _has_room(self, job_id: str) -> bool:
        """Whether ``job_id`` may start now: on a Ray cluster, when every job handed to it has been
        placed; on this host, when the host's slot is free (it is then taken)."""
        if self.cluster is not None:
            return self.cluster.has_room(list(self.remote.values()))
        return self.current is None and self._take_slot(job_id)

    def _take_slot(self, job_id: str) -> bool:
        """Take the host's slot for ``job_id``: True when it was free (and no local job of a
        process that predates the lock is running either)."""
        if not self.host_lock.acquire(job_id=job_id, started_by=f"{self.started_by}, pid {os.getpid()}"):
            return False
        if self._running_elsewhere() is not None:
            self.host_lock.release()
            return False
        return True

    def _slot_holder(self, job_id: str) -> tuple[Job | None, dict[str, Any]]:
        """The job that holds the host's slot (None: unknown) and what its holder wrote."""
        info = self.host_lock.holder() or {}
        holder_id = str(info.get("job_id") or "")
        holder: Job | None = None
        if holder_id and holder_id != job_id:
            with contextlib.suppress(JobNotFound):
                holder = self.store.get_job(holder_id)
        if holder is None or holder.is_final:
            holder, info = self._running_elsewhere(), {}
        return holder, info

    def _busy_with(self, job_id: str) -> str:
        """Which job holds the host, in what state, started by whom: ``job ft-... is training on
        this host (started by ftbot run, pid 123)``."""
        if self.cluster is not None:
            return f"the Ray cluster at {self.cluster.address} has no room for it yet (or cannot be reached)"
        holder, info = self._slot_holder(job_id)
        if holder is None:
            return "another local job is running on this host"
        doing = _DOING.get(holder.state, f"is {holder.state.value}")
        who = f" (started by {info['started_by']})" if info.get("started_by") else ""
        return f"job {holder.id} {doing} on this host{who}"

    def waiting_message(self, job_id: str) -> str:
        """What a job that waits for the host's slot says: which job holds it, in what state, and
        who started it. ``waiting: job ft-... is training on this host (started by ftbot run, pid
        123); this job starts when it ends.``"""
        if self.cluster is not None:
            return f"waiting: {self._busy_with(job_id)}; this job starts when the cluster places it."
        return f"waiting: {self._busy_with(job_id)}; this job starts when it ends."

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
            if not self._has_room(job_id):
                break  # the GPU is busy (here or in another process); resume it next
            self._resume_next.pop(0)
            self.start(job_id, resume=True)
        if (self.cluster is None and self.current is not None) or self._resume_next:
            return
        for job in self.store.queued_jobs():
            if job.result.get("awaiting_confirmation"):
                continue
            if job.backend not in self.local_backends:
                continue  # a backend this dispatcher does not run (see Engine.backend_runners)
            if not self._has_room(job.id):
                return  # another process runs a local job on this host, or the cluster is full
            try:
                self.start(job.id)
                if self.cluster is None:
                    return
                continue
            except InvalidTransition:
                continue  # someone else claimed it first (start gave the slot back)
            except (OSError, FtbotError):
                log.exception("could not start job %s", job.id)

    def _running_elsewhere(self) -> Job | None:
        """A local job active in another process with a live worker (or one about to get it). The
        host lock says the same for workers started since it exists; this also covers a worker of
        an older ftbot, or one started by hand (``python -m engine.worker``)."""
        for job in self.store.jobs(states=tuple(ACTIVE_STATES), limit=100):
            if self._worker_of(job.id) is not None or job.id in self._resume_next:
                continue  # this dispatcher's own
            if job.result.get("ray_actor"):
                continue  # it runs on the Ray cluster, not on this host
            if job.backend in self.local_backends and (
                pid_alive(job.worker_pid, job.id) or self._starting(job)
            ):
                return job
        return None

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
            self.supervise(proc, job)

    def supervise(self, proc: WorkerProcess, job: Job) -> bool:
        """One look at ``job``'s worker: True when it has exited (the slot is given back and the job
        ends in a final state that says why, :meth:`_finish`); while it runs, its memory is sampled,
        and a job made final from outside (a cancel) has it stopped: SIGTERM, then SIGKILL after
        the grace period.

        Raises:
            StoreError: see :meth:`_finish`.
        """
        code = proc.poll()
        if code is None:
            proc.sample_memory()
            if isinstance(proc, RayJob) and not job.is_final:
                self._tell_unplaced(proc)
            if job.is_final:  # cancelled (or failed) from outside while the worker still runs
                now = self._monotonic()
                if proc.stop_requested_at is None:
                    proc.stop_requested_at = now
                    proc.terminate()
                elif now - proc.stop_requested_at >= self._grace:
                    proc.kill()
            return False
        with self._lock:
            self._release(proc)
        self._finish(job, proc, code)
        return True

    def _tell_unplaced(self, proc: RayJob) -> None:
        """A job the Ray cluster has not placed within :data:`_UNPLACED_ALERT_SECONDS` says so,
        once (the cluster is busy, or lacks what the job asks for)."""
        if proc.told_unplaced or time.monotonic() - proc.launched_at < _UNPLACED_ALERT_SECONDS:
            return
        if proc.placed():
            return
        proc.told_unplaced = True
        self.store.add_event(
            ProgressEvent(
                proc.job_id,
                "alert",
                f"Waiting for the Ray cluster to place this job: it asks for {self.settings.ray_gpus:g} "
                f"GPU(s) and {self.settings.ray_cpus:g} CPU(s) (FTBOT_RAY_GPUS, FTBOT_RAY_CPUS); "
                "`ray status` shows what the cluster has free.",
                data={"code": "waiting_for_cluster"},
            )
        )

    def stop_now(self, proc: WorkerProcess) -> None:
        """Stop ``proc`` at once (Ctrl-C in ``ftbot run``; its job is already cancelled): SIGTERM,
        SIGKILL after the grace period, then the slot is given back and the job ended."""
        proc.terminate()
        if proc.wait(self._grace) is None:
            proc.kill()
            proc.wait(self._grace)
        with self._lock:
            self._release(proc)
        self._finish(self.store.get_job(proc.job_id), proc, proc.poll() or -1)

    def try_start(self, job_id: str) -> WorkerProcess | None:
        """Start the queued ``job_id`` now if the host's slot is free; None when it is taken (or
        another process claimed the job meanwhile)."""
        with self._lock:
            if (self.cluster is not None or self.current is None) and self._has_room(job_id):
                try:
                    return self.start(job_id)
                except InvalidTransition:
                    return None  # claimed elsewhere meanwhile (start gave the slot back)
        return None

    def waiting_alert(self, job_id: str) -> ProgressEvent:
        """The ``alert`` (code ``waiting``, not stored) that ``ftbot run`` shows while ``job_id``
        waits for the host's slot: :meth:`waiting_message`, and in ``data["holder"]`` the id of
        the job that holds the slot (None: unknown)."""
        holder, _ = self._slot_holder(job_id)
        return ProgressEvent(
            job_id,
            "alert",
            self.waiting_message(job_id),
            data={"code": "waiting", "holder": holder.id if holder is not None else None},
            at=self._clock(),
        )

    def cancel_queued(self, job_id: str, message: str) -> None:
        """Cancel ``job_id`` (Ctrl-C in ``ftbot run``) unless it has ended already."""
        with contextlib.suppress(InvalidTransition):
            self.store.transition(job_id, JobState.CANCELLED, now=self._clock(), message=message)

    def _finish(self, job: Job, proc: WorkerProcess, code: int) -> None:
        """The worker exited: make sure its job ends in a final state that says why.

        A worker that died of a full disk (it could not even record it) leaves its partial files:
        they go first, which is often what gives the database room to record the failure.

        Raises:
            StoreError: the database refused to record the failure (FTBOT_HOME's disk is full);
                the message says why the worker stopped and that the job could not be marked.
        """
        job = self.store.get_job(job.id)
        if not job.is_final:
            state, tail = job.state.value, log_tail(proc.log_path)
            storage = (
                storage_problem(tail, self.settings.home, state=state, exit_code=code) if code > 0 else None
            )
            if storage is not None:
                remove_partial_files(self.settings, job.id)
            killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
            message, hint = (
                storage
                or getattr(proc, "cause", None)  # a Ray actor says why it ended
                or diagnose_exit(code, tail, state=state, memory=proc.memory_evidence() if killed else None)
            )
            refused = self._fail(job.id, message, hint)
            if refused is not None:
                self._forget_worker(job.id)
                problem = storage_problem(refused, self.settings.home, state=state)
                raise StoreError(
                    f"{problem[0] if problem else message} Job {job.id} could not be marked as failed "
                    f"({refused}); it may still show as {state}.",
                    hint=problem[1] if problem else hint,
                )
            job = self.store.get_job(job.id)
        if job.state is JobState.CANCELLED:
            remove_partial_files(self.settings, job.id)
        self._forget_worker(job.id)

    def _forget_worker(self, job_id: str) -> None:
        # Best effort: a full disk may refuse even this, and the pid of a dead worker is harmless.
        with contextlib.suppress(Exception):
            self.store.update_job(job_id, worker_pid=None)

    def _fail(self, job_id: str, message: str, hint: str | None) -> Exception | None:
        """Mark the job failed (:func:`engine.failures.fail_job`; one already final stays as it
        is). Never raises: returns the database's error when it refused to write (a full disk)."""
        refused = fail_job(self.store, job_id, message, hint, now=self._clock())
        if refused is not None:
            log.error("could not record that job %s failed (%s): %s", job_id, message, refused)
        return refused

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
        if self.cluster is not None and job.result.get("ray_actor"):
            self.cluster.stop(job_id)  # an actor followed by another process
            return
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
                if job.result.get("ray_actor"):
                    if self._recover_remote(job, now, dead_grace):
                        handled.append(job.id)
                    continue
                if pid_alive(job.worker_pid, job.id):
                    self._dead_since.pop(job.id, None)
                    if self.current is None and not parent_alive(job.worker_pid):  # type: ignore[arg-type]
                        self.current = WorkerProcess(
                            job_id=job.id,
                            pid=job.worker_pid,  # type: ignore[arg-type]
                            log_path=worker_log_path(self.settings, job.id),
                        )
                        self.current.sample_memory()  # it holds the host lock itself (inherited)
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

    def _recover_remote(self, job: Job, now: float, dead_grace: float) -> bool:
        """A job that ran on the Ray cluster and is not followed here: follow its actor again, or
        fail the job when the actor is gone. False when nothing was done (no cluster configured in
        this process: the job is left to one that has it; the cluster unreachable: tried again)."""
        if self.cluster is None:
            return False
        try:
            proc = self.cluster.attach(job.id)
        except FtbotError as exc:
            log.warning("cannot look for the Ray actor of job %s: %s", job.id, exc)
            return False
        if proc is not None:
            self._dead_since.pop(job.id, None)
            self.remote[job.id] = proc
            return True
        first_seen = self._dead_since.setdefault(job.id, now)
        if now - first_seen < dead_grace or self.store.get_job(job.id).is_final:
            return False
        self._dead_since.pop(job.id, None)
        self._fail(
            job.id,
            f"The Ray actor {job.result['ray_actor']} that ran this job is gone (it was killed, its node "
            f"or the cluster restarted) while the job was {job.state.value}.",
            "Start the job again.",
        )
        return True

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
        try:
            self.relay.pump()
        except Exception:
            log.exception("scheduler step relay failed")

    def _check_orphans(self) -> None:
        now = self._monotonic()
        if now - self._last_orphan_check < _ORPHAN_CHECK_SECONDS:
            return
        self._last_orphan_check = now
        self.recover(dead_grace=_ORPHAN_DEAD_GRACE_SECONDS)


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
        """Stop ticking. Running workers keep running: a restart finds and follows them. This
        process lets go of the host's slot (:meth:`Dispatcher.close`); a worker keeps it."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.dispatcher.close()

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
