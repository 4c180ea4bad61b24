"""Benchmark training on a Ray cluster against the local queue: N jobs on builtin:tiny.

    python bench/cluster.py                 # 4 jobs, 1 epoch each
    python bench/cluster.py --jobs 6 --epochs 2

Three runs of the same N jobs, each in a fresh FTBOT_HOME, all submitted at once:
1. the local queue (one worker process at a time on this host, no FTBOT_RAY_ADDRESS);
2. a local Ray instance (tests/ray_local.py: a head on 127.0.0.1) with 1 CPU slot;
3. the same with 2 CPU slots (each job asks for 1 CPU and 0 GPUs).

For each: the total time (first submit to the last job's end) and the queue wait (submit until the
job's driver, a worker process or a Ray actor, writes its first event: mean and max), and the
speed-up against the local queue. Needs the cluster
extra (``pip install -e ".[cluster]"``). On a 2-core machine the jobs share two cores, so 2 slots
gain less than 2x; on a cluster, each slot is a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.jobs import JobState
from engine.service import Engine
from engine.settings import BUILTIN_TINY, Settings
from tests.fakes.datasets import write_price_dataset
from tests.ray_local import ray_head


def run_jobs(settings: Settings, jobs: int, epochs: int, workdir: Path) -> dict[str, float]:
    """Submit ``jobs`` jobs at once and wait for all; the total time and the queue waits."""
    data = write_price_dataset(workdir / "prices.jsonl")
    with Engine(settings, scheduler_interval=0.1) as engine:
        record = engine.add_dataset(data, team="T", channel="C")
        t0 = time.monotonic()
        ids = [
            engine.submit(
                record.hash, options={"epochs": str(epochs)}, owner=f"U{i}", team="T", channel="C"
            ).id
            for i in range(jobs)
        ]
        engine.start()
        deadline = t0 + 1800
        while time.monotonic() < deadline:
            if all(engine.job(job_id).is_final for job_id in ids):
                break
            time.sleep(0.1)
        total = time.monotonic() - t0
        failed = [j for j in ids if engine.job(j).state is not JobState.SUCCEEDED]
        if failed:
            raise SystemExit(f"jobs did not succeed: {[(j, engine.job(j).error) for j in failed]}")
        # The wait ends when the job's driver writes its first event (the worker or the actor runs),
        # not when the queue hands it over: a job Ray has not placed yet is still waiting.
        waits = [first_driver_event(engine, j) - engine.job(j).created_at.timestamp() for j in ids]
    return {"total": total, "wait_mean": statistics.mean(waits), "wait_max": max(waits)}


def first_driver_event(engine: Engine, job_id: str) -> float:
    """When the job's driver wrote its first event: the first one after the queue's "Started"."""
    events = engine.events(job_id)
    handed = next(i for i, e in enumerate(events) if e.message.startswith("Started"))
    return events[handed + 1].at.timestamp()


def fresh_settings(root: Path, name: str, builtin: Path) -> Settings:
    home = root / name
    home.mkdir()
    (home / "builtin").symlink_to(builtin, target_is_directory=True)
    return Settings.from_env({"FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": BUILTIN_TINY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    from engine.backends.local_tiny import ensure_builtin_tiny

    with tempfile.TemporaryDirectory(prefix="ftbot-bench-cluster-") as tmp:
        root = Path(tmp)
        builtin = root / "builtin"
        builtin.mkdir()
        ensure_builtin_tiny(builtin)
        results: dict[str, dict[str, float]] = {}
        print(f"{args.jobs} jobs on builtin:tiny, {args.epochs} epoch(s) each, {os.cpu_count()} cores")
        settings = fresh_settings(root, "local", builtin)
        results["local queue"] = run_jobs(settings, args.jobs, args.epochs, root / "local")
        for slots in (1, 2):
            with ray_head(num_cpus=slots) as address:
                settings = replace(
                    fresh_settings(root, f"ray{slots}", builtin),
                    ray_address=address,
                    ray_gpus=0.0,
                    ray_cpus=1.0,
                )
                results[f"ray, {slots} slot(s)"] = run_jobs(
                    settings, args.jobs, args.epochs, root / f"ray{slots}"
                )
        base = results["local queue"]["total"]
        print(f"{'':16} {'total s':>8} {'wait mean s':>12} {'wait max s':>11} {'speed-up':>9}")
        for name, r in results.items():
            print(
                f"{name:16} {r['total']:8.1f} {r['wait_mean']:12.1f} {r['wait_max']:11.1f} "
                f"{base / r['total']:8.2f}x"
            )


if __name__ == "__main__":
    main()
