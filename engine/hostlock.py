"""One local job per host: :class:`HostLock`, an ``flock`` on ``FTBOT_HOME/local-job.lock``.

The dispatcher takes it before it claims a local job and its worker inherits the descriptor, so the
kernel frees it when the last of the two is gone (a crashed holder never blocks the host). The
holder writes who it is (job id, which ftbot command, pid), which the waiting message names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.settings import Settings

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
