"""The job queue's engine room: start worker processes, follow them, relay their events.

The only module that imports ``apscheduler`` (inside :meth:`Scheduler.start`, so importing this
module stays cheap). Everything that decides anything lives in :class:`Dispatcher`, whose
:meth:`~Dispatcher.tick` is a plain method: tests call it directly, and the APScheduler
``BackgroundScheduler`` merely calls it every ``interval`` seconds (guarded so ticks never
overlap, and coalesced).

One tick:

1. **Supervise** each worker. Exited while its job is not final: the job fails with the
   cause in plain words (:func:`diagnose_exit`: a full disk, out of memory with the kernel's or
   the worker's own evidence, killed from outside, crash) and a hint. Alive while its job is final
   (someone cancelled it): SIGTERM, and SIGKILL after ``grace_seconds``. After a cancel, partial
   files (checkpoints, the half-written adapter) go.
2. **Dispatch** the oldest queued local job when no local job is running anywhere on this host
   (one GPU, one job). The rule holds across processes (``ftbot serve``, ``ftbot chat``, each
   ``ftbot run``) through :class:`HostLock`, an ``flock`` on ``FTBOT_HOME/local-job.lock`` that
   the dispatcher takes before it claims a job and its worker inherits, so the kernel frees it when
   the last of the two is gone (a crashed holder never blocks the host). Claiming is a
   compare-and-set ``queued -> validating``, so two dispatchers never start the same job. Only
   local jobs run in workers; OpenAI jobs are driven in this process by pollers (below), never by
   the queue. ``ftbot run`` (:func:`engine.follow.run_local`) waits in the queue for the slot and
   says which job holds it.
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
import errno
import fcntl
import json
import logging
import os
import re
import resource
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

from engine.errors import BackendUnavailable, FtbotError, InvalidTransition, JobNotFound, StoreError
from engine.failures import fail_job
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

# How a waiting job describes the one that holds the host.
_DOING = {
    JobState.VALIDATING: "is checking its data",
    JobState.BASELINE: "is measuring its baseline",
    JobState.TRAINING: "is training",
    JobState.EVALUATING: "is evaluating",
}

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


# --------------------------------------------------------------------------- one local job per host

LOCK_FILE_NAME = "local-job.lock"

# What ``started_by`` says for each ftbot command (the waiting message names the holder's).
_COMMAND_LABELS = {
    "run": "ftbot run",
    "chat": "the console, ftbot chat",
    "serve": "the bot, ftbot serve",
}


def host_lock_path(settings: Settings) -> Path:
    """The file whose ``flock`` is the host's one local-job slot (see :class:`HostLock`)."""
    return settings.home / LOCK_FILE_NAME


def process_label(argv: list[str] | None = None) -> str:
    """Who this process is, for a person reading the waiting message: ``ftbot run``, the bot
    (``ftbot serve``), the console (``ftbot chat``), or the program's name."""
    argv = list(sys.argv if argv is None else argv)
    for word in argv[1:3]:
        if word in _COMMAND_LABELS:
            return _COMMAND_LABELS[word]
    return Path(argv[0]).name if argv and argv[0] else "an ftbot process"


class HostLock:
    """The host's one local-job slot, shared by every process on one FTBOT_HOME.

    An exclusive ``flock`` on ``FTBOT_HOME/local-job.lock``. The kernel drops it when the last file
    descriptor of the open file goes, so a holder that dies (even by SIGKILL) never blocks the
    host. The dispatcher takes it before it claims a job and hands the descriptor to the worker
    (``pass_fds``): the slot stays taken while either of them lives, and a worker that outlives its
    bot (a restart) still holds it. :meth:`release` therefore only closes this process's
    descriptor, never unlocks (``LOCK_UN`` would free the worker's lock too).

    Two ``HostLock`` objects conflict even inside one process (each opens the file anew), so an
    in-process test sees exactly what two processes see. While held, the file says who holds it
    (:meth:`holder`): job id, pid, ``started_by``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: Any = None  # an open file object: closed (and the lock dropped) on GC too
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._file is not None

    def fileno(self) -> int | None:
        """The locked descriptor while held (for ``pass_fds``), else None."""
        return self._file.fileno() if self._file is not None else None

    def acquire(self, *, job_id: str, started_by: str) -> bool:
        """Take the slot for ``job_id`` without waiting. True when this object holds it now
        (False when another process, or another object, holds it; also when this one already
        does: one job per slot).

        Raises:
            StoreError: the lock file cannot be opened (FTBOT_HOME read-only, or its disk full).
        """
        with self._mutex:
            if self._file is not None:
                return False
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:  # a read-only or full FTBOT_HOME: say so, never a traceback
                raise StoreError(
                    f"The lock file {self.path} that keeps local jobs one at a time cannot be opened: {exc}.",
                    hint="Check that FTBOT_HOME is writable and its disk has room.",
                ) from exc
            handle = os.fdopen(fd, "r+b", buffering=0)  # held open: it is the lock
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            self._file = handle
        self._write_holder(
            {"job_id": job_id, "pid": os.getpid(), "started_by": started_by, "since": time.time()}
        )
        return True

    def note_worker(self, pid: int) -> None:
        """Add the worker's pid to what :meth:`holder` says."""
        info = self.holder() or {}
        self._write_holder({**info, "worker_pid": pid})

    def release(self) -> None:
        """Close this process's descriptor (the slot frees once a worker that inherited it ends)."""
        with self._mutex:
            handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def holder(self) -> dict[str, Any] | None:
        """What the current holder wrote into the file (job_id, pid, started_by, worker_pid), or
        None when unreadable. Meaningful only while someone holds the lock."""
        try:
            raw = self.path.read_bytes()
            info = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _write_holder(self, info: dict[str, Any]) -> None:
        handle = self._file
        if handle is None:
            return
        # A full disk must not stop a job over a courtesy note: the lock is the flock, not this.
        with contextlib.suppress(OSError):
            data = json.dumps(info).encode()
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), data, 0)


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
    #: Follows its memory so a SIGKILL can be explained (made on the first :meth:`sample_memory`).
    memory: MemoryWatch | None = field(default=None, init=False)

    def sample_memory(self) -> None:
        """Note the worker's peak memory so far (while it runs; see :class:`MemoryWatch`)."""
        if self.memory is None:
            self.memory = MemoryWatch(self.pid)
        if self.exit_code is None:
            self.memory.sample()

    def memory_evidence(self) -> MemoryEvidence | None:
        """What is known about its memory, once it died (None when it was never followed)."""
        return self.memory.evidence() if self.memory is not None else None

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


def start_worker(
    settings: Settings, job_id: str, *, resume: bool = False, pass_fds: Iterable[int] = ()
) -> WorkerProcess:
    """Start ``python -m engine.worker JOB_ID`` as a child, output appended to the job's log.

    The child gets its own session, so a Ctrl-C in the terminal reaches only the parent, which
    then cancels the job properly instead of leaving half a run behind. ``pass_fds`` stay open in
    the child: the dispatcher passes the :class:`HostLock`'s descriptor, so the host's slot stays
    taken until the worker is gone, whatever happens to this process.
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
            pass_fds=tuple(pass_fds),
        )
    return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log_path)


def _tail(path: Path | None, max_bytes: int = 20_000) -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - max_bytes))
        return f.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------- why a worker died

#: The worker's exit code when FTBOT_HOME's disk was full and it could not even record that.
EXIT_STORAGE_FULL = 75  # EX_TEMPFAIL
#: With less free space than this on FTBOT_HOME's disk, a failed write counts as a full disk:
#: torch's checkpoint writer reports ENOSPC as "iostream error", without the errno.
STORAGE_FULL_MARGIN_MB = 64.0
_MB = 1024 * 1024

_FULL_MARKERS = (
    "no space left on device",
    "os error 28",
    "errno 28",
    "database or disk is full",
    "disk quota exceeded",
    "os error 122",
    "errno 122",
)
_TOO_LARGE_MARKERS = ("file too large", "os error 27", "errno 27")
_WRITE_FAILED_MARKERS = ("iostream error", "file write failed", "unexpected pos", "disk i/o error")


def free_mb(path: Path) -> float | None:
    """Free space (MB) on the disk that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free / _MB
            except OSError:
                return None
    return None


def file_size_limit_mb() -> float | None:
    """This process's largest writable file (``ulimit -f``, RLIMIT_FSIZE) in MB, or None: no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft / _MB


def _error_text(error: BaseException | str | None) -> tuple[set[int], str]:
    """The errnos and the lowered text of ``error`` and every exception it came from."""
    if error is None or isinstance(error, str):
        return set(), (error or "").lower()
    errnos: set[int] = set()
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        exc = todo.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            errnos.add(exc.errno)
        texts.append(f"{type(exc).__name__}: {exc}")
        todo.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
    return errnos, "\n".join(texts).lower()


def storage_problem(
    error: BaseException | str | None, home: Path, *, state: str = "", exit_code: int | None = None
) -> tuple[str, str] | None:
    """``(message, hint)`` when a failure was FTBOT_HOME's storage, else None.

    ``error`` is the exception (its causes are searched too) or a worker log's text. A full disk is
    ENOSPC / EDQUOT (or their words: SQLite says "database or disk is full"), any failure while the
    disk has under :data:`STORAGE_FULL_MARGIN_MB` free, or the worker's :data:`EXIT_STORAGE_FULL`.
    EFBIG (a file beyond ``ulimit -f`` or the filesystem's largest file) is treated the same way,
    since the cure is the same kind (room to write), with its own words: the disk is not full then.
    """
    errnos, text = _error_text(error)
    free = free_mb(home)
    limit = file_size_limit_mb()
    kind = None
    if errnos & {errno.ENOSPC, errno.EDQUOT} or any(m in text for m in _FULL_MARKERS):
        kind = "full"
    elif errno.EFBIG in errnos or any(m in text for m in _TOO_LARGE_MARKERS):
        kind = "too_large"
    elif free is not None and free < STORAGE_FULL_MARGIN_MB:
        kind = "full"
    elif limit is not None and any(m in text for m in _WRITE_FAILED_MARKERS):
        kind = "too_large"
    elif exit_code == EXIT_STORAGE_FULL:
        kind = "full"
    if kind is None:
        return None
    during = f" while the job was {state}" if state else ""
    free_text = f"{free:,.0f} MB free" if free is not None else "free space unknown"
    if kind == "full":
        return (
            f"The disk of FTBOT_HOME ({home}) is full: {free_text}; the job's files could not be "
            f"written{during}.",
            "Free space on that disk (or point FTBOT_HOME at a larger one) and start the job again.",
        )
    limit_text = (
        f" (this process may write files of up to {limit:,.0f} MB: ulimit -f)" if limit is not None else ""
    )
    return (
        f"A file of this job grew past the largest file allowed in FTBOT_HOME ({home}){limit_text}; "
        f"the job's files could not be written{during} ({free_text} on the disk).",
        "Raise the file size limit (ulimit -f), or point FTBOT_HOME at a filesystem that takes larger "
        "files, and start the job again.",
    )


#: A SIGKILL counts as out of memory when the worker's peak memory reached this share of the limit.
OOM_RSS_FRACTION = 0.8
_SYS_CGROUP = Path("/sys/fs/cgroup")


def _memory_cgroup_dir() -> Path | None:
    """This process's memory cgroup directory (v1 memory controller, or v2), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    for _, controllers, rel in entries:
        if "memory" in controllers.split(","):
            candidate = _SYS_CGROUP / "memory" / rel.lstrip("/")
            if (candidate / "memory.oom_control").exists():
                return candidate
    for hierarchy, _, rel in entries:
        if hierarchy == "0":
            for base in (_SYS_CGROUP, _SYS_CGROUP / "unified"):
                if (base / rel.lstrip("/") / "memory.events").exists():
                    return base / rel.lstrip("/")
    return None


def cgroup_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (``oom_kill`` in memory.events, or memory.oom_control on cgroup v1), or None: unknown."""
    directory = _memory_cgroup_dir()
    if directory is None:
        return None
    for name in ("memory.events", "memory.oom_control"):
        try:
            text = (directory / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def memory_limit_mb() -> float | None:
    """The memory a process here may use (MB): the machine's, or its cgroup's limit when lower."""
    limits: list[float] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) / 1024)
    directory = _memory_cgroup_dir()
    while directory is not None and _SYS_CGROUP in (directory, *directory.parents):
        for name in ("memory.max", "memory.limit_in_bytes"):
            with contextlib.suppress(OSError, ValueError):
                limits.append(int((directory / name).read_text().strip()) / _MB)
        if directory in (_SYS_CGROUP, _SYS_CGROUP / "memory", _SYS_CGROUP / "unified"):
            break
        directory = directory.parent
    return min(limits) if limits else None


def kernel_oom_record(
    pid: int, *, since: float | None = None, kmsg: Path = Path("/dev/kmsg")
) -> tuple[bool, str | None]:
    """Search the kernel's log for an out-of-memory kill of ``pid``: ``(readable, the record or
    None)``. ``since`` (``time.monotonic()`` seconds, the kernel log's clock) skips older records
    of a reused pid. Reading /dev/kmsg needs privileges many hosts do not give: unreadable is
    ``(False, None)``, which is no evidence either way."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False, None
    found = None
    pattern = re.compile(rf"(killed process {pid}\b|oom.kill.*\bpid={pid}\b)", re.IGNORECASE)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # the record was overwritten while we read: skip it
                    continue
                break
            if not record:
                break
            head, _, message = record.decode("utf-8", "replace").partition(";")
            fields = head.split(",")
            stamp = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else None
            if since is not None and stamp is not None and stamp < since - 60:
                continue  # older than the worker (a minute's slack: the clocks differ a little)
            if pattern.search(message):
                found = message.strip().splitlines()[0][:300]
    finally:
        os.close(fd)
    return True, found


@dataclass(frozen=True)
class MemoryEvidence:
    """What is known about a killed worker's memory: the kernel's log, the cgroup's OOM-kill
    counter before and after, and its peak resident memory against the limit."""

    kernel_log_read: bool = False
    kernel_record: str | None = None
    oom_kills: tuple[int, int] | None = None  # the cgroup's counter when the worker started, now
    peak_mb: float | None = None
    limit_mb: float | None = None

    @property
    def near_limit(self) -> bool:
        return bool(self.peak_mb and self.limit_mb and self.peak_mb >= OOM_RSS_FRACTION * self.limit_mb)

    @property
    def out_of_memory(self) -> bool:
        """True only with evidence: the kernel's record, its counter, or memory near the limit."""
        counted = self.oom_kills is not None and self.oom_kills[1] > self.oom_kills[0]
        return bool(self.kernel_record) or counted or self.near_limit

    def describe(self) -> str:
        """The evidence in words (for the failure message), whichever way it points."""
        peak = (
            f"its memory peaked at {self.peak_mb:,.0f} MB of the {self.limit_mb:,.0f} MB it may use"
            if self.peak_mb and self.limit_mb
            else None
        )
        if self.out_of_memory:
            found = []
            if self.kernel_record:
                found.append(f"the kernel's log says: {self.kernel_record}")
            if self.oom_kills is not None and self.oom_kills[1] > self.oom_kills[0]:
                found.append(
                    f"the kernel's memory killer struck in its cgroup (count {self.oom_kills[0]} -> {self.oom_kills[1]})"
                )
            if self.near_limit and peak:
                found.append(peak)
            return "; ".join(found)
        checked = []
        if self.kernel_log_read:
            checked.append("the kernel's log has no memory kill of it")
        if self.oom_kills is not None:
            checked.append(f"its cgroup's memory-kill count did not change ({self.oom_kills[1]})")
        if peak:
            checked.append(peak)
        return "no sign of a memory shortage: " + "; ".join(checked) if checked else ""


@dataclass
class MemoryWatch:
    """Follows a worker's memory while it runs, so that its death can be explained: the cgroup's
    OOM-kill count at the start and the peak resident memory (VmHWM) seen by :meth:`sample`."""

    pid: int
    started: float = field(default_factory=time.monotonic)
    oom_kills_at_start: int | None = field(default_factory=cgroup_oom_kills)
    peak_mb: float | None = None

    def sample(self) -> None:
        """Read the worker's peak resident memory so far (cheap: one /proc read)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
                    self.peak_mb = max(self.peak_mb or 0.0, peak)
                    return

    def evidence(self) -> MemoryEvidence:
        """Everything known now (call it after the worker died)."""
        readable, record = kernel_oom_record(self.pid, since=self.started)
        now = cgroup_oom_kills()
        counts = (
            (self.oom_kills_at_start, now)
            if self.oom_kills_at_start is not None and now is not None
            else None
        )
        return MemoryEvidence(
            kernel_log_read=readable,
            kernel_record=record,
            oom_kills=counts,
            peak_mb=self.peak_mb,
            limit_mb=memory_limit_mb(),
        )


_OOM_MARKERS = (
    "out of memory",
    "outofmemoryerror",
    "memoryerror",
    "cannot allocate memory",
    "std::bad_alloc",
)

KILLED_HINT = (
    "Find out what sent it: a person or a script (kill -9), a container's or a batch system's limit "
    "(time or memory), a shutdown; `dmesg` or `journalctl -k` show the kernel's own kills. Then start "
    "the job again (if memory was tight after all: r=8, or batch=1 with a larger accum=)."
)


def diagnose_exit(
    exit_code: int | None,
    log_tail: str,
    *,
    state: str = "",
    memory: MemoryEvidence | None = None,
    home: Path | None = None,
) -> tuple[str, str | None]:
    """Plain words for a worker that died without finishing its job: ``(message, hint)``.

    ``home`` (FTBOT_HOME) lets a failed worker's exit be recognised as a full disk. A SIGKILL is
    called out of memory only with evidence in ``memory`` (:class:`MemoryEvidence`: the kernel's
    record, its cgroup counter, the worker's peak memory near the limit); otherwise the message says
    the worker was killed from outside ftbot, with what was checked, and what to look at."""
    during = f" while the job was {state}" if state else ""
    if home is not None and exit_code is not None and exit_code > 0:
        problem = storage_problem(log_tail, home, state=state, exit_code=exit_code)
        if problem is not None:
            return problem
    lowered = log_tail.lower()
    if any(marker in lowered for marker in _OOM_MARKERS):
        return f"Training ran out of memory{during}.", OOM_HINT
    if exit_code is not None and exit_code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        evidence = memory.describe() if memory is not None else ""
        if memory is not None and memory.out_of_memory:
            return (
                f"The worker ran out of memory{during}: the kernel killed it (signal 9); {evidence}.",
                OOM_HINT,
            )
        checked = f" ({evidence})" if evidence else ""
        return (
            f"The worker was killed by the system{during}: a SIGKILL (signal 9) from outside ftbot{checked}.",
            KILLED_HINT,
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
        sink_for: Callable[[Job], ProgressSink] | None = None,
        launcher: Launcher | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        throttle_seconds: float = 1.0,
        grace_seconds: float = GRACE_SECONDS,
        local_backends: Iterable[str] = ("local",),
        started_by: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._sink_for = sink_for
        self.host_lock = HostLock(host_lock_path(settings))
        self.started_by = started_by or process_label()
        # The default worker inherits the host lock's descriptor (see HostLock); a custom launcher
        # does not, and the slot is then held by this process until the worker is seen to end.
        self._launcher: Launcher = launcher or (
            lambda job_id, resume: start_worker(
                settings,
                job_id,
                resume=resume,
                pass_fds=[fd for fd in [self.host_lock.fileno()] if fd is not None],
            )
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
            if self.current is not None or (not self.host_lock.held and not self._take_slot(job_id)):
                busy = self._busy_with(job_id)
                raise BackendUnavailable(f"{busy[0].upper()}{busy[1:]}: job {job_id} was not started.")
            try:
                return self._claim_and_launch(job_id, resume=resume)
            except BaseException:
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
            self.store.update_job(job_id, worker_pid=proc.pid)
            self.host_lock.note_worker(proc.pid)
            proc.sample_memory()
            self.current = proc
            return proc

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
            if self.current is not None or not self._take_slot(job_id):
                break  # the GPU is busy (here or in another process); resume it next
            self._resume_next.pop(0)
            self.start(job_id, resume=True)
        if self.current is not None or self._resume_next:
            return
        for job in self.store.queued_jobs():
            if job.result.get("awaiting_confirmation"):
                continue
            if job.backend not in self.local_backends:
                continue  # a backend this dispatcher does not run (see Engine.backend_runners)
            if not self._take_slot(job.id):
                return  # another process runs a local job on this host
            try:
                self.start(job.id)
                return
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
            code = proc.poll()
            if code is None:
                proc.sample_memory()
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
        """The worker exited: make sure its job ends in a final state that says why.

        A worker that died of a full disk (it could not even record it) leaves its partial files:
        they go first, which is often what gives the database room to record the failure.

        Raises:
            StoreError: the database refused to record the failure (FTBOT_HOME's disk is full);
                the message says why the worker stopped and that the job could not be marked.
        """
        job = self.store.get_job(job.id)
        if not job.is_final:
            state, tail = job.state.value, _tail(proc.log_path)
            storage = (
                storage_problem(tail, self.settings.home, state=state, exit_code=code) if code > 0 else None
            )
            if storage is not None:
                remove_partial_files(self.settings, job.id)
            killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
            message, hint = storage or diagnose_exit(
                code, tail, state=state, memory=proc.memory_evidence() if killed else None
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
