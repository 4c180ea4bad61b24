"""Local jobs on a Ray cluster (``FTBOT_RAY_ADDRESS``): the only module that imports ``ray``, inside
functions, so ``import engine`` stays light and Ray stays an optional extra (``ftbot[cluster]``).

Each local job runs in a Ray actor named ``ftbot-<job id>`` in the namespace ``ftbot``, asking for
``FTBOT_RAY_GPUS`` GPUs and ``FTBOT_RAY_CPUS`` CPUs. The actor runs the same job driver as the
worker process (:func:`engine.worker.run`: :mod:`engine.runner` with the
:class:`~engine.backends.local_job.LocalBackend`), with the bot's :class:`~engine.settings.Settings`.

**Shared storage.** FTBOT_HOME is on a filesystem every Ray node mounts at the same path (NFS, a
Kubernetes ReadWriteMany volume, ...): the actor writes the job's state changes and progress events
to the same SQLite store as a worker process does, and its artifacts (checkpoints, the adapter,
charts, predictions, ``worker.log``) under FTBOT_HOME. The bot's relay shows the events as they
arrive, exactly as for a worker (engine/relay.py); nothing is copied back. Builtin base models are
built on the node under FTBOT_HOME/builtin; a hub id is loaded by the node; a path must be one the
node sees.

**Following a job** (:class:`RayJob`, the :class:`~engine.workers.WorkerProcess` interface the
:class:`~engine.scheduler.Dispatcher` supervises): ``poll`` is "has the actor's ``run`` returned,
or has the actor died", ``terminate`` sets the job's stop flag in the actor (the runner stops at its
next check and cleans up, as after a SIGTERM), ``kill`` is ``ray.kill``. The actors are detached,
so they outlive a bot restart: the restarted bot finds them by name (:meth:`RayCluster.attach`).
An actor whose ``run`` has returned and that nobody collects exits by itself after
:data:`LINGER_SECONDS`, so a finished job never holds the cluster's resources.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import BackendUnavailable
from engine.paths import worker_log_path
from engine.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "ftbot"
#: How long an actor whose job ended waits for the bot to collect its result before it exits.
LINGER_SECONDS = 60.0
_CONNECT_LOCK = threading.Lock()


def actor_name(job_id: str) -> str:
    """The Ray actor of a job: ``ftbot-<job id>`` (in the namespace :data:`NAMESPACE`)."""
    return f"ftbot-{job_id}"


# --------------------------------------------------------------------------- the actor (on the node)


class JobActor:
    """Runs one local job on a Ray node. ``max_concurrency`` > 1 (threads), so ``stop`` and
    ``wait`` are served while ``run`` trains."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx: Any = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._code: int | None = None

    def ready(self) -> dict[str, Any]:
        """Where the actor runs (answered once Ray has placed it)."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def run(self, job_id: str, resume: bool) -> int:
        """The job's steps to a final state (:func:`engine.worker.run`); returns its exit code."""
        # The job's modules (the runner, the local backend) load on the node, never in the bot.
        from engine.pipeline import JobContext
        from engine.store import Store
        from engine.worker import run as run_job

        log_path = worker_log_path(self.settings, job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        store = None
        try:
            logging.getLogger("engine.worker").info(
                "ray actor %s starting (resume=%s, pid %s)", actor_name(job_id), resume, os.getpid()
            )
            store = Store.open(self.settings.db_path, datasets_dir=self.settings.datasets_dir)
            self._ctx = JobContext(store=store, settings=self.settings, job_id=job_id)
            if self._stop.is_set():
                self._ctx.stop_flag.set()
            self._code = run_job(self._ctx)
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
            root.removeHandler(handler)
            handler.close()
            self._done.set()
            threading.Thread(target=_exit_later, args=(LINGER_SECONDS,), daemon=True).start()
        return self._code

    def stop(self) -> None:
        """Stop the job at its next check (what SIGTERM does to a worker process)."""
        self._stop.set()
        if self._ctx is not None:
            self._ctx.stop_flag.set()

    def wait(self, timeout: float = 30.0) -> int | None:
        """``run``'s exit code once it returned, waiting up to ``timeout`` seconds; None while it
        runs (a restarted bot's way to follow the job: it asks again, so a call left behind by a
        bot that went away holds one of the actor's threads for ``timeout`` at most)."""
        if not self._done.wait(timeout):
            return None
        return self._code if self._code is not None else 1


def _exit_later(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(0)


# --------------------------------------------------------------------------- the bot's side


@dataclass(eq=False)
class RayJob:
    """A job's actor, followed like a worker process (see :class:`~engine.workers.WorkerProcess`)."""

    job_id: str
    handle: Any
    result_ref: Any
    ready_ref: Any = None
    log_path: Path | None = None
    stop_requested_at: float | None = None
    pid: int | None = None
    exit_code: int | None = field(default=None, init=False)
    #: Why the job ended when the actor died (message, hint); None otherwise.
    cause: tuple[str, str] | None = field(default=None, init=False)
    #: When it was handed to the cluster (time.monotonic), and whether the job was told it waits.
    launched_at: float = field(default_factory=time.monotonic)
    told_unplaced: bool = field(default=False, init=False)
    _placed: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return actor_name(self.job_id)

    def placed(self) -> bool:
        """True once Ray has placed the actor (it runs on a node), or it has ended."""
        import ray

        if not self._placed and self.ready_ref is not None:
            done, _ = ray.wait([self.ready_ref], timeout=0)
            self._placed = bool(done)
        return self._placed or self.ready_ref is None or self.poll() is not None

    def poll(self) -> int | None:
        """The job driver's exit code once ``run`` returned; ``-9`` when the actor died (then
        :attr:`cause` says so). The actor is let go (``ray.kill``) once its result is read."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        if self.exit_code is not None:
            return self.exit_code
        done, _ = ray.wait([self.result_ref], timeout=0)
        if not done:
            return None
        try:
            code = ray.get(self.result_ref, timeout=30)
            if code is None:  # ``wait`` timed out: the job still runs; ask again
                self.result_ref = self.handle.wait.remote()
                return None
            self.exit_code = int(code)
        except GetTimeoutError:
            return None
        except RayActorError as exc:
            self.exit_code = -9
            self.cause = (
                f"The Ray actor {self.name} that ran this job died (it was killed, its node was lost, "
                f"or it ran out of memory): {_first_line(exc)}",
                "Check the Ray cluster (`ray status`, the actor's logs), then start the job again.",
            )
        except RayError as exc:
            self.exit_code = 1
            self.cause = (
                f"The Ray actor {self.name} failed: {_first_line(exc)}",
                "See the job's worker.log and the actor's logs on the Ray cluster.",
            )
        self._let_go()
        return self.exit_code

    def terminate(self) -> None:
        """Ask the job to stop at its next check (the actor's ``stop``)."""
        if self.poll() is None:
            with contextlib.suppress(Exception):
                self.handle.stop.remote()

    def kill(self) -> None:
        """``ray.kill`` the actor."""
        if self.poll() is None:
            self._let_go()

    def _let_go(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.handle, no_restart=True)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.poll()

    def sample_memory(self) -> None:
        """Memory is Ray's to watch (its OOM killer names the actor)."""

    def memory_evidence(self) -> None:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


class RayCluster:
    """The bot's connection to the Ray cluster at ``settings.ray_address``, made on first use."""

    def __init__(self, settings: Settings) -> None:
        if not settings.ray_address:
            raise ValueError("RayCluster needs settings.ray_address (FTBOT_RAY_ADDRESS)")
        self.settings = settings
        self.address = settings.ray_address
        self._actor_class: Any = None
        self._last_warning = -1e9

    def connect(self) -> None:
        """Connect this process to the cluster (once; a process holds one Ray connection).

        Raises:
            BackendUnavailable: Ray is not installed, or the cluster cannot be reached.
        """
        try:
            import ray
        except ImportError as exc:
            raise BackendUnavailable(
                "FTBOT_RAY_ADDRESS is set but Ray is not installed.",
                hint='Install the cluster extra: pip install "ftbot[cluster]".',
            ) from exc
        with _CONNECT_LOCK:
            if ray.is_initialized():
                return
            # A cluster on loopback (a one-machine cluster, the tests): this process is on its node,
            # which Ray would otherwise look for at the machine's interface address.
            host = self.address.rpartition(":")[0]
            loopback = {"_node_ip_address": "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {}
            try:
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                    **loopback,
                )
            except Exception as exc:
                raise BackendUnavailable(
                    f"Cannot reach the Ray cluster at {self.address}: {_first_line(exc)}",
                    hint="Check FTBOT_RAY_ADDRESS and that the cluster runs (`ray status`).",
                ) from exc

    def _remote_class(self) -> Any:
        import ray

        if self._actor_class is None:
            self._actor_class = ray.remote(JobActor)
        return self._actor_class

    def launch(self, job_id: str, resume: bool) -> RayJob:
        """Start ``job_id``'s actor (one left over from an earlier attempt is killed first)."""
        import ray

        self.connect()
        old = self._lookup(job_id)
        if old is not None:
            with contextlib.suppress(Exception):
                ray.kill(old, no_restart=True)
            _wait_until(lambda: self._lookup(job_id) is None, timeout=30)
        # A local job needs no OpenAI key: it does not travel to the cluster.
        job_settings = replace(self.settings, openai_api_key=None)
        try:
            handle = (
                self._remote_class()
                .options(
                    name=actor_name(job_id),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    num_cpus=self.settings.ray_cpus,
                    num_gpus=self.settings.ray_gpus,
                    max_concurrency=8,
                    max_restarts=0,
                )
                .remote(job_settings)
            )
            return RayJob(
                job_id=job_id,
                handle=handle,
                result_ref=handle.run.remote(job_id, resume),
                ready_ref=handle.ready.remote(),
                log_path=worker_log_path(self.settings, job_id),
            )
        except Exception as exc:  # Ray's own errors (a lost connection, a name still taken)
            raise BackendUnavailable(
                f"The Ray cluster at {self.address} did not take the job: {_first_line(exc)}",
                hint="Check the cluster (`ray status`) and start the job again.",
            ) from exc

    def _lookup(self, job_id: str) -> Any:
        import ray

        try:
            return ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return None

    def attach(self, job_id: str) -> RayJob | None:
        """Follow ``job_id``'s actor again after a restart; None when it is gone."""
        self.connect()
        handle = self._lookup(job_id)
        if handle is None:
            return None
        return RayJob(
            job_id=job_id,
            handle=handle,
            result_ref=handle.wait.remote(),
            log_path=worker_log_path(self.settings, job_id),
        )

    def stop(self, job_id: str) -> None:
        """Ask ``job_id``'s actor to stop, wherever it is followed from (a cancel)."""
        self.connect()
        handle = self._lookup(job_id)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.stop.remote()

    def has_room(self, running: list[RayJob]) -> bool:
        """Whether to hand the cluster another job now: when every job handed to it so far has been
        placed (Ray queues what it cannot place; the bot's queue keeps the rest in order). False
        while the cluster cannot be reached (the jobs wait in the queue; logged once a minute)."""
        try:
            self.connect()
        except BackendUnavailable as exc:
            now = time.monotonic()
            if now - self._last_warning >= 60:
                self._last_warning = now
                log.warning("%s (queued local jobs wait)", exc)
            return False
        return all(job.placed() for job in running)


def _wait_until(condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
