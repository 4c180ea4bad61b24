"""Why a worker died, in plain words: a full disk or a file size limit (:func:`storage_problem`),
out of memory with the kernel's or the worker's own evidence (:class:`MemoryEvidence`,
:class:`MemoryWatch`), killed from outside, a crash (:func:`diagnose_exit`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

OOM_HINT = (
    "Try a smaller batch (batch=2 or batch=1 with a larger accum=), a shorter max_length= "
    "(e.g. 512), or a smaller LoRA rank (r=8)."
)


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
