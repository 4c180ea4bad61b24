"""Following one job in the foreground (``ftbot run``, the console's ``Engine.run_job``).

:func:`follow` is the one follower, for every backend: it passes the job's events to a sink,
unthrottled, and between relays lets the backend's driver do its part (``step``) until the job
is over; Ctrl-C cancels the job (``on_interrupt``). Two drivers use it:

- :func:`run_local`: a local job, in a worker process of the :class:`~engine.scheduler.Dispatcher`
  once this host's slot for local jobs is free (meanwhile the sink hears what it waits for), or
  followed in another process's worker should that process's queue start it first.
- ``OpenAIPipeline.run_foreground`` (engine/openai_pipeline.py): an OpenAI job, its poll ticks
  run in the calling thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.jobs import Job, JobState
from engine.progress import ProgressSink
from engine.relay import relay_events
from engine.scheduler import Dispatcher
from engine.store import Store
from engine.workers import WorkerProcess

#: ``step(job) -> seconds``: the driver's part between two relays of the job's events; returns how
#: long to wait before the next relay (0: at once), or None when the job needs no more following.
Step = Callable[[Job], float | None]


def follow(
    store: Store,
    job_id: str,
    sink: ProgressSink,
    *,
    step: Step,
    on_interrupt: Callable[[], None],
    sleep: Callable[[float], None] = time.sleep,
    after_seq: int = 0,
) -> Job:
    """Pass ``job_id``'s events after ``after_seq`` to ``sink`` and call ``step`` with the job
    after each relay, until ``step`` returns None; then relay what is left and return the job.
    Ctrl-C (KeyboardInterrupt) calls ``on_interrupt`` (it cancels the job) and ends the follow."""
    after = after_seq
    try:
        while True:
            after = relay_events(store, job_id, sink, after)
            wait = step(store.get_job(job_id))
            if wait is None:
                break
            if wait > 0:
                sleep(wait)
    except KeyboardInterrupt:
        on_interrupt()
    relay_events(store, job_id, sink, after)
    return store.get_job(job_id)


def run_local(
    dispatcher: Dispatcher,
    job_id: str,
    sink: ProgressSink,
    *,
    poll_seconds: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> Job:
    """Run the local job ``job_id`` (it must be queued) as soon as the host's slot is free, and
    follow it to the end, passing its events to ``sink`` unthrottled. Returns the final job.

    The job's events so far go to ``sink`` first. While another local job holds the host (another
    ``ftbot run``, the bot, the console), the job waits in the queue and ``sink`` hears why: an
    ``alert`` (code ``waiting``, not stored) with ``Dispatcher.waiting_message``, again when the job
    it waits for changes. Should another process's queue start it meanwhile (``ftbot serve``), it is
    followed there. Ctrl-C cancels the job, waiting or running, and waits for the worker to stop.

    Raises:
        StoreError: the worker died and the database refused to record it (a full disk).
    """
    store = dispatcher.store
    after = store.last_event_seq(job_id)
    for event in store.events(job_id):
        sink.emit(event)
    try:
        proc = _wait_for_slot(dispatcher, job_id, sink, poll_seconds=poll_seconds, sleep=sleep)
    except KeyboardInterrupt:
        dispatcher.cancel_queued(job_id, "Cancelled (Ctrl-C) while it waited for the host.")
        proc = None
    if proc is None:  # cancelled while waiting, or started by another process's queue

        def elsewhere(job: Job) -> float | None:
            return None if job.is_final else poll_seconds

        def stop_elsewhere() -> None:  # its own dispatcher stops the worker; SIGTERM here too, to be quick
            dispatcher.cancel_queued(job_id, "Cancelled (Ctrl-C).")
            dispatcher.terminate(job_id)

        return follow(
            store, job_id, sink, step=elsewhere, on_interrupt=stop_elsewhere, sleep=sleep, after_seq=after
        )
    worker: WorkerProcess = proc

    def supervise(job: Job) -> float | None:
        return None if dispatcher.supervise(worker, job) else poll_seconds

    def stop() -> None:
        dispatcher.cancel_queued(job_id, "Cancelled (Ctrl-C).")
        dispatcher.stop_now(worker)

    return follow(store, job_id, sink, step=supervise, on_interrupt=stop, sleep=sleep, after_seq=after)


def _wait_for_slot(
    dispatcher: Dispatcher,
    job_id: str,
    sink: ProgressSink,
    *,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> WorkerProcess | None:
    """Start ``job_id`` once the host's slot is free; meanwhile tell ``sink`` what it waits
    for. None when the job left the queue first (cancelled, or another process started it)."""
    announced: str | None = None
    while True:
        if dispatcher.store.get_job(job_id).state is not JobState.QUEUED:
            return None
        proc = dispatcher.try_start(job_id)
        if proc is not None:
            return proc
        if dispatcher.store.get_job(job_id).state is not JobState.QUEUED:
            return None  # claimed by another process meanwhile
        alert = dispatcher.waiting_alert(job_id)
        key = alert.data["holder"] or ""
        if key != announced:
            announced = key
            sink.emit(alert)
        sleep(poll_seconds)
