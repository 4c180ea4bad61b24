"""``python -m engine.worker JOB_ID [--home DIR] [--resume]``: one local job, in a child process.

The scheduler starts this module as a separate process (see ``engine.workers.launch_command``),
so a crash, an out-of-memory kill or a hung CUDA kernel never takes down the bot. Everything the
worker has to say goes into SQLite: state changes (each with its event, in one transaction) and
progress events, which the parent relays to the job's sink. Its stdout/stderr go to the job's
``worker.log``.

The steps are the job runner's (:mod:`engine.runner`) with the local backend
(:class:`engine.backends.local_job.LocalBackend`); the runner also turns errors into a failed
job with a reason (:func:`engine.runner.run`). A resumed worker (the bot restarted, the child
died) re-enters the job's current state: earlier steps' results are read back (the split is
deterministic), later ones run as usual. ``--resume`` says the job was started before (the
scheduler adds it); the job's state alone decides what runs. SIGTERM stops the job at its next
check; a second SIGTERM exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import runner
from engine.backends.local_job import LocalBackend
from engine.errors import BackendError, JobNotFound
from engine.pipeline import JobContext
from engine.settings import Settings
from engine.store import Store

log = logging.getLogger("engine.worker")

#: The only backend whose jobs run in this worker (OpenAI jobs are driven by engine.openai_pipeline).
BACKEND = "local"


def run_local(ctx: JobContext) -> None:
    """The local job's steps (:func:`engine.runner.advance` with :class:`LocalBackend`)."""
    if ctx.job.backend != BACKEND:
        raise BackendError(
            f"The worker cannot run {ctx.job.backend!r} jobs.", hint=f"Backends it runs: {BACKEND}."
        )
    runner.advance(ctx, LocalBackend(ctx))


def run(ctx: JobContext, pipeline: runner.Step | None = None) -> int:
    """Run the job to a final state (:func:`engine.runner.run`). Returns the process exit code (0
    unless it failed; :data:`~engine.diagnosis.EXIT_STORAGE_FULL` when not even the failure could be
    written). ``pipeline`` (default :func:`run_local`) is what runs the steps; tests pass their own
    to see how failures and cancels end the job."""
    return runner.run(ctx, pipeline or run_local)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.splitlines()[0])
    parser.add_argument("job_id")
    parser.add_argument("--home", type=Path, default=None, help="FTBOT_HOME (default: from the environment)")
    parser.add_argument(
        "--resume", action="store_true", help="the job was started before (its state decides what runs)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.home is not None:
        settings = replace(settings, home=args.home)
    store = Store.open(settings.db_path, datasets_dir=settings.datasets_dir)
    ctx = JobContext(store=store, settings=settings, job_id=args.job_id)

    def on_term(signum: int, frame: Any) -> None:
        if ctx.stop_flag.is_set():  # asked twice: stop now
            raise SystemExit(143)
        ctx.stop_flag.set()

    signal.signal(signal.SIGTERM, on_term)
    log.info("worker for %s starting (resume=%s, pid %s)", args.job_id, args.resume, os.getpid())
    try:
        return run(ctx)
    except JobNotFound:
        print(f"No job {args.job_id} in {settings.db_path}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):  # closing checkpoints the WAL: a full disk may refuse
            store.close()


if __name__ == "__main__":
    sys.exit(main())
