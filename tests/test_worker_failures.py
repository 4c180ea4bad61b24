"""How a worker's hard deaths end a job (issue 12, point 6): a full disk, a file over the size
limit, a SIGKILL.

A full disk during training used to crash ``ftbot run`` with a traceback and leave the job
"training"; every SIGKILL was reported as "ran out of memory". All real here: ``python -m bot run``
training builtin:tiny, and the disk really full:

- **ENOSPC**: FTBOT_HOME on a 3 MB tmpfs, mounted in a user + mount namespace (``unshare``; no
  root needed where the kernel lets users make namespaces, skipped elsewhere). Training with
  ``r=256`` on every linear layer writes a first checkpoint of about 6 MB: torch's writer fails
  with the disk full (it says "iostream error", without the errno) and SQLite cannot write either
  ("database or disk is full") until the worker frees the partial checkpoint.
- **EFBIG**: ``ulimit -f`` (RLIMIT_FSIZE, set in the child before it runs) of 1 MB, which every
  host allows. The same write of the same checkpoint fails in the same place (safetensors: "File
  too large (os error 27)"): the same path through the worker, only the errno differs, so it is
  reported the same way with its own words.
- **SIGKILL**: the real worker killed in the middle of training.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.diagnosis import MemoryEvidence, MemoryWatch, diagnose_exit, memory_limit_mb
from engine.jobs import JobState
from engine.service import Engine
from engine.settings import Settings
from tests.fakes.datasets import write_price_dataset
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
# A checkpoint of about 6 MB on builtin:tiny (LoRA r=256 on every linear layer): bigger than the
# small disk and the file size limit below, while the database stays well under both.
BIG_CHECKPOINT = ["--epochs", "2", "-o", "r=256", "-o", "target=all-linear"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": "builtin:tiny", "OMP_NUM_THREADS": "1"}


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ a full disk (ENOSPC)


def _can_mount_a_small_disk(where: Path) -> bool:
    """Whether this host lets us mount a tmpfs in a user + mount namespace (no root needed on most
    Linux hosts; some forbid unprivileged namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=1m t '{where}'",
        ],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def _on_a_small_disk(tmp_path: Path, builtin: Path, script: str, *, size: str = "3m") -> Path:
    """Run the shell ``script`` with FTBOT_HOME ($FTBOT_HOME) on a tmpfs of ``size`` that only it
    sees (its own mount namespace: gone when it ends). The builtin models stay outside (linked).
    Returns the directory where the script leaves what it reports (``$OUT``)."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    if not _can_mount_a_small_disk(disk):
        pytest.skip("this host does not let an unprivileged user mount a small tmpfs (unshare)")
    home = disk / "home"
    wrapper = textwrap.dedent(
        f"""
        set -e
        mount -t tmpfs -o size={size} ftbot-test '{disk}'
        mkdir '{home}'
        ln -s '{builtin}' '{home}/builtin'
        cd '{ROOT}'
        set +e
        """
    )
    env = {**_env(home), "OUT": str(out), "PY": sys.executable}
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", wrapper + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_a_full_disk_during_training_fails_the_job_with_a_clear_message(
    settings: Settings, tmp_path: Path
) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl", n=24)
    out = _on_a_small_disk(
        tmp_path,
        (settings.home / "builtin").resolve(),
        f"""
        "$PY" -m bot run '{data}' {" ".join(BIG_CHECKPOINT)} --json > "$OUT/stdout" 2> "$OUT/stderr"
        echo $? > "$OUT/code"
        "$PY" -m bot jobs --json > "$OUT/jobs.json" 2> "$OUT/jobs.err"
        ls -R "$FTBOT_HOME/runs" > "$OUT/files"
        """,
    )
    stderr = (out / "stderr").read_text()
    assert (out / "code").read_text().strip() == "1", stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = _summary((out / "stdout").read_text())
    assert summary["status"] == "failed"
    assert "The disk of FTBOT_HOME" in summary["error"] and "is full: 0 MB free" in summary["error"]
    assert "start the job again" in summary["error"]
    assert "[failed] The disk of FTBOT_HOME" in stderr  # said as it happened, too
    (job,) = json.loads((out / "jobs.json").read_text())
    assert job["job_id"] == summary["job_id"] and job["status"] == "failed"  # never left "training"
    assert "checkpoint-" not in (out / "files").read_text()  # the partial checkpoint went


@pytest.mark.slow
def test_a_worker_that_cannot_record_the_full_disk_gets_it_said_by_ftbot_run(
    settings: Settings, tmp_path: Path
) -> None:
    """The worst case: the worker dies of the full disk and even its parent cannot write the
    failure. The run still ends with the reason in one line (an FtbotError), no traceback."""
    data = write_price_dataset(tmp_path / "prices.jsonl", n=24)
    # A stand-in worker that fills the disk to the last byte and dies, as a real one would; it
    # starts once its parent has recorded its pid (what a real worker's first steps leave time for).
    worker = (
        "import os, sqlite3, sys, time\n"
        "home, job_id = os.environ['FTBOT_HOME'], sys.argv[2]\n"
        "db = sqlite3.connect(os.path.join(home, 'ftbot.db'))\n"
        "while not db.execute('select worker_pid from jobs where id = ?', (job_id,)).fetchone()[0]:\n"
        "    time.sleep(0.02)\n"
        "f = open(os.path.join(home, 'filler'), 'wb', buffering=0)\n"
        "try:\n"
        "    while True: f.write(b'x' * 4096)\n"
        "except OSError: pass\n"
        "try:\n"
        "    while True: f.write(b'x')\n"
        "except OSError: sys.exit(1)\n"
    )
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        from pathlib import Path
        from engine.errors import FtbotError
        from engine.progress import ListSink
        from engine.paths import worker_log_path
        from engine.workers import WorkerProcess
        from engine.service import Engine
        from engine.settings import Settings

        settings = Settings.from_env()

        def launch(job_id, resume):
            log = worker_log_path(settings, job_id)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as f:
                popen = subprocess.Popen([sys.executable, "-c", {worker!r}, "engine.worker", job_id], stdout=f, stderr=f)
            return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log)

        engine = Engine(settings, launcher=launch)
        job = engine.submit(engine.add_dataset(Path({str(data)!r})).hash)
        try:
            engine.run_job(job.id, ListSink())
            print("no error")
        except FtbotError as exc:
            print(type(exc).__name__, str(exc))
        print(engine.job(job.id).state.value)
        """
    )
    (tmp_path / "script.py").write_text(script)
    out = _on_a_small_disk(
        tmp_path,
        (settings.home / "builtin").resolve(),
        f"""
        "$PY" '{tmp_path / "script.py"}' > "$OUT/stdout" 2> "$OUT/stderr"
        echo $? > "$OUT/code"
        """,
        size="2m",
    )
    stdout, stderr = (out / "stdout").read_text(), (out / "stderr").read_text()
    assert (out / "code").read_text().strip() == "0", stderr[-3000:]
    error, state = stdout.strip().splitlines()
    assert error.startswith("StoreError The disk of FTBOT_HOME") and "is full: 0 MB free" in error, stdout
    assert "could not be marked as failed" in error and "start the job again" in error
    assert state == "validating"  # recorded as far as the disk allowed; the message says so


# ------------------------------------------------------------------ a file over the size limit (EFBIG)


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:  # in the child, before it runs Python: ftbot run and its worker inherit it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_file_over_the_size_limit_fails_the_job_with_a_clear_message(
    settings: Settings, tmp_path: Path
) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl", n=24)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "run", str(data), *BIG_CHECKPOINT, "--json"],
        cwd=ROOT,
        env=_env(settings.home),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_file_size_limit(1024 * 1024),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = _summary(done.stdout)
    assert summary["status"] == "failed"
    error = summary["error"]
    assert "grew past the largest file allowed in FTBOT_HOME" in error, error
    assert "up to 1 MB: ulimit -f" in error and "start the job again" in error
    assert "internal error" not in error
    with Engine(settings) as engine:
        job = engine.job(summary["job_id"])
        assert job.state is JobState.FAILED and job.error == error
    assert not (settings.runs_dir / summary["job_id"] / "train").exists()  # the partial checkpoint went


# ------------------------------------------------------------------ SIGKILL


@pytest.mark.slow
def test_a_worker_killed_from_outside_is_not_called_out_of_memory(settings: Settings, tmp_path: Path) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl", n=40)
    run = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", str(data), "--epochs", "50", "--json"],
        cwd=ROOT,
        env=_env(settings.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []
        assert run.stderr is not None
        for line in run.stderr:
            seen.append(line)
            if "training [" in line:
                break
        job_id = next(line.split()[1] for line in seen if line.startswith("Job ft-"))
        with Engine(settings) as engine:
            pid = engine.job(job_id).worker_pid
            assert pid and engine.job(job_id).state is JobState.TRAINING, "".join(seen)
        os.kill(pid, signal.SIGKILL)  # as a person, a script or a container limit would
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1
    assert "Traceback" not in err
    summary = _summary(out)
    error = summary["error"]
    assert summary["status"] == "failed"
    assert "killed" in error and "signal 9" in error and "outside ftbot" in error, error
    assert "out of memory" not in error.lower() and "out-of-memory" not in error.lower(), error
    assert "its memory peaked at" in error  # what was checked is said


def test_a_sigkill_is_out_of_memory_only_with_evidence() -> None:
    quiet = MemoryEvidence(kernel_log_read=True, oom_kills=(2, 2), peak_mb=500, limit_mb=24_000)
    message, hint = diagnose_exit(-signal.SIGKILL, "", state="training", memory=quiet)
    assert "out of memory" not in message.lower() and "signal 9" in message
    assert "the kernel's log has no memory kill of it" in message and "500 MB of the 24,000 MB" in message
    assert "kill -9" in hint and "dmesg" in hint

    for evidence, said in (
        (
            MemoryEvidence(kernel_log_read=True, kernel_record="Out of memory: Killed process 4242 (python)"),
            "Killed process 4242",
        ),
        (MemoryEvidence(oom_kills=(2, 3)), "2 -> 3"),
        (MemoryEvidence(peak_mb=7_900, limit_mb=8_000), "7,900 MB of the 8,000 MB"),
    ):
        message, hint = diagnose_exit(-signal.SIGKILL, "", state="training", memory=evidence)
        assert "ran out of memory while the job was training" in message and said in message, message
        assert "r=8" in hint


def test_the_memory_watch_reads_a_real_process_peak() -> None:
    """The parent's view of its worker's memory: the peak resident memory from /proc, against the
    machine's (or cgroup's) limit."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; x = bytearray(300 * 2**20); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ok"
        watch = MemoryWatch(child.pid)
        wait_for(lambda: (watch.sample() or watch.peak_mb or 0) >= 300, 10, "the peak to show")
    finally:
        child.kill()
        child.wait()
    evidence = watch.evidence()
    assert evidence.peak_mb is not None and evidence.peak_mb >= 300
    assert evidence.limit_mb == memory_limit_mb() and evidence.limit_mb and evidence.limit_mb > 300
    assert evidence.kernel_record is None and not evidence.out_of_memory
