"""A real, local Ray instance for the tests and bench/cluster.py: one head on 127.0.0.1, started by
``ray start --head --block`` in its own session, and stopped exactly (every process of that
session, nothing else)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_RAY_WORKER_PORTS = range(10002, 20000)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside Ray's worker port range."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RAY_WORKER_PORTS:
            return port
    raise RuntimeError("no free port outside 10002-19999")


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def stop_session(sid: int, timeout: float = 20.0) -> None:
    """Stop every process of session ``sid``: the Ray instance started here (``ray start
    --block``, whose pid is ``sid``, stops its own processes on SIGTERM), and nothing else.
    Whatever is left after ``timeout`` gets SIGTERM, then SIGKILL."""
    steps = (
        (lambda: [sid], signal.SIGTERM),
        (lambda: session_pids(sid), signal.SIGTERM),
        (lambda: session_pids(sid), signal.SIGKILL),
    )
    for targets, signum in steps:
        for pid in targets():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + timeout
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


@contextlib.contextmanager
def ray_head(
    num_cpus: int = 2, *, num_gpus: int = 0, connect: bool = True, start_timeout: float = 180.0
) -> Iterator[str]:
    """Start a Ray head on 127.0.0.1 with ``num_cpus`` CPUs and ``num_gpus`` GPUs (none unless told:
    bench/scale_check.py gives it the GPU); yield its address
    (``127.0.0.1:PORT``), this process connected to it (namespace ``ftbot``) when ``connect``."""
    import ray

    from engine.cluster import NAMESPACE

    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ftr", dir="/tmp")  # short: Ray's socket paths must fit
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "wb") as log_file:
        head = subprocess.Popen(
            [
                *command,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--dashboard-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--num-cpus={num_cpus}",
                f"--num-gpus={num_gpus}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={temp_dir}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:  # up when the GCS answers
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited: {log_path.read_text()[-3000:]}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start within {start_timeout:g} s")
            time.sleep(0.2)
        while connect:  # the GCS answers before the node registers: retry until ray.init connects
            try:
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    configure_logging=False,
                    _node_ip_address="127.0.0.1",
                )
                break
            except (ConnectionError, RuntimeError):
                with contextlib.suppress(Exception):
                    ray.shutdown()
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        stop_session(head.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
