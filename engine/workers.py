"""Worker processes: the launch command, starting a worker, following one (alive, exit code, its
memory), and the tail of its log. A cluster scheduler (or ``accelerate launch``) replaces
:func:`launch_command`, or the whole :data:`Launcher`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.diagnosis import MemoryEvidence, MemoryWatch
from engine.paths import worker_log_path
from engine.settings import Settings

WORKER_MODULE = "engine.worker"


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


def log_tail(path: Path | None, max_bytes: int = 20_000) -> str:
    """The last ``max_bytes`` of a worker's log (decoded leniently); "" when there is none."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - max_bytes))
        return f.read().decode("utf-8", "replace")
