"""The use-case layer: :class:`Engine`, the one facade ``bot/`` and the CLI use.

Validate and store datasets, submit / confirm / cancel jobs, list jobs and their events, run the
queue (the scheduler), run one job in the foreground (``ftbot run``), the model registry and
channel defaults, and ``ask``. Every method raises only :class:`~engine.errors.FtbotError`
subclasses for things a user can cause; their messages are safe to show.

Who may see what: methods that take ``team`` never return another team's jobs, datasets or
models (a missing and a foreign id look the same: ``*NotFound``).

Heavy work never happens here: training and evaluation run in a worker process
(``engine.worker``) that the scheduler starts; ``ask`` hands the question to the model server's
generation thread. Backends are picked by ``job.backend``: ``local`` jobs go through the
dispatcher's queue one at a time (the GPU), each in a worker process; ``openai`` jobs are driven in
this process by :class:`~engine.openai_pipeline.OpenAIPipeline` through scheduler pollers (the
Engine holds it as :attr:`Engine.openai`, set by :meth:`Engine.use_openai`, and registers it in
:attr:`Engine.backend_runners`, called on submit). Both run the same job runner (engine/runner.py).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from engine import dataset, follow
from engine.backends import local_model
from engine.backends.local_builtin import is_builtin, resolve_base_model
from engine.backends.openai_backend import DEFAULT_BASE_MODEL, is_openai_model
from engine.backends.openai_models import model_family
from engine.backends.serving import model_server
from engine.cluster import RayCluster
from engine.config import parse_options
from engine.errors import (
    BackendUnavailable,
    DatasetError,
    DatasetNotFound,
    InvalidTransition,
    ModelNotFound,
    PermissionDenied,
    UsageError,
)
from engine.jobs import ACTIVE_STATES, Job, JobState, new_job_id
from engine.openai_pipeline import OpenAIPipeline
from engine.progress import ProgressEvent, ProgressSink, utcnow
from engine.scheduler import Dispatcher, Scheduler
from engine.settings import BUILTIN_SMOLLM2, BUILTIN_TINY, Settings
from engine.store import (
    CHOICE_AUTO,
    CHOICE_BASE,
    CHOICE_MODEL,
    DatasetRecord,
    DefaultChoice,
    ModelRecord,
    Store,
)
from engine.workers import Launcher

SinkFactory = Callable[[Job], ProgressSink]


class Engine:
    """ftbot's engine, assembled from settings.

    Args:
        settings: paths and limits (``Settings.from_env()``).
        store: an open :class:`Store` (default: the database under ``settings.home``).
        clock: the time source for jobs and events.
        openai_client: passed to the OpenAI backend (tests give one pointed at a fake server).
        sink_for: ``job -> ProgressSink`` where the relay shows each job's events (the bot's
            Slack card); the same as :meth:`subscribe` later. None: events are only stored.
        launcher: how worker processes start (default: ``python -m engine.worker``).
        scheduler_interval: seconds between scheduler ticks.
        throttle_seconds: at most one ``step`` event per job per this many seconds reaches a sink.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        clock: Callable[[], datetime] = utcnow,
        openai_client: Any = None,
        sink_for: SinkFactory | None = None,
        launcher: Launcher | None = None,
        cluster: RayCluster | None = None,
        scheduler_interval: float = 0.5,
        throttle_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.openai_client = openai_client
        self._owns_store = store is None
        self.store = store or Store.open(settings.db_path, datasets_dir=settings.datasets_dir, clock=clock)
        self.dispatcher = Dispatcher(
            self.store,
            settings,
            sink_for=sink_for,
            launcher=launcher,
            clock=clock,
            throttle_seconds=throttle_seconds,
            # FTBOT_RAY_ADDRESS: local jobs run as Ray actors (engine/cluster.py), not child processes.
            # ``cluster``: a stand-in (tests).
            cluster=cluster or (RayCluster(settings) if settings.ray_address and launcher is None else None),
        )
        self.scheduler = Scheduler(self.dispatcher, interval=scheduler_interval)
        # backend name -> callable(engine, job) run on submit for backends the local queue does not
        # run (the OpenAI pipeline registers here; no backend runs both ways).
        self.backend_runners: dict[str, Callable[[Engine, Job], None]] = {}
        # The OpenAI backend: jobs driven by scheduler pollers, /ask through chat completions.
        self.openai = self.use_openai()
        self._server: Any = None
        self._server_lock = threading.Lock()
        self._submit_lock = threading.Lock()  # see submit: the per-person limit's count + insert
        self._start_hooks: list[Callable[[], None]] = []
        self._stop_hooks: list[Callable[[], None]] = []

    def use_openai(self, **kwargs: Any) -> OpenAIPipeline:
        """Drive OpenAI jobs (and answer /ask for OpenAI models) with a new
        :class:`~engine.openai_pipeline.OpenAIPipeline` (``kwargs``: its ``clock``, ``sleep``,
        ``monotonic`` and ``today``): it becomes :attr:`openai` and ``backend_runners["openai"]``.
        Called by ``__init__``; tests call it again, before :meth:`start`, to inject time."""
        self.openai = OpenAIPipeline(self, **kwargs)
        self.backend_runners[OPENAI] = self.openai
        return self.openai

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, run_queue: bool = True) -> None:
        """Start the scheduler: recover jobs a previous run left behind, then run the queue.
        ``run_queue=False``: only the remote backends' pollers (a CLI following one remote job)."""
        self.scheduler.start(run_queue=run_queue)
        self.openai.recover()
        self.dispatcher.relay.catch_up()  # what an earlier process was handed but never showed
        for hook in list(self._start_hooks):
            hook()

    def stop(self) -> None:
        """Stop the scheduler (running workers keep going; a restart follows them again), then
        run the stop hooks (:meth:`add_stop_hook`)."""
        self.openai.stop()
        self.scheduler.stop()
        for hook in list(self._stop_hooks):
            hook()

    def prepare_base_model(self, progress: Callable[[str], None] | None = None) -> str | None:
        """Build the default base model now when it is a builtin one that is not built yet
        (builtin:smollm2 is converted once, in about half a minute), so that the first job or
        ``/ask`` does not wait for it in silence; ``progress`` hears each stage. Returns what
        ``from_pretrained`` loads, or None when the base model is not a builtin one (a hub id or a
        directory is loaded by the job that needs it).

        Raises:
            BackendUnavailable: the builtin model cannot be built here (the message says what to do).
        """
        name = self.settings.base_model
        if not is_builtin(name):
            return None
        return resolve_base_model(name, self.settings.builtin_dir, progress=progress)

    def subscribe(self, sink_for: SinkFactory, *, min_interval: float | None = None) -> None:
        """Show every job's events through ``sink_for(job)`` (see :meth:`engine.relay.Relay.subscribe`)."""
        self.dispatcher.relay.subscribe(sink_for, min_interval=min_interval)

    def add_start_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time the engine starts, once the scheduler runs and the relay has
        caught up on what a previous process never showed (see :meth:`undelivered_jobs`). It must
        not block for long."""
        self._start_hooks.append(hook)

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time the engine stops, after the last event was relayed and before
        the store closes: a sink that works on its own thread finishes there (the Slack cards)."""
        self._stop_hooks.append(hook)

    def close(self) -> None:
        self.stop()
        with self._server_lock:
            if self._server is not None:
                # Wait for the generation thread to free the models (see ModelServer.close); a
                # request still running is bounded by the answer's own time limit.
                self._server.close(timeout=self.settings.ask_timeout_seconds + 5)
                self._server = None
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- datasets

    def validate_file(self, path: Path, *, base_model: str | None = None) -> Any:
        """Validate a dataset file; returns the ``ValidationReport`` (never raises for bad data).

        With ``base_model`` (or a local default base model), token counts use that model's
        tokenizer and chat template; otherwise they are estimates, and the report says so.
        """
        counter = self._token_counter(base_model)
        kwargs: dict[str, Any] = {}
        if counter is not None:
            kwargs["token_counter"] = counter
        return dataset.validate_file(Path(path), **kwargs)

    def _token_counter(self, base_model: str | None) -> Callable[[list[dict[str, Any]]], int] | None:
        if base_model is None:
            return None
        if is_openai_model(base_model):  # no local tokenizer: the report's counts are estimates
            return None
        try:
            # By name (not the resolved directory): reports say "builtin:tiny" and what it is.
            return local_model.token_counter_for(base_model, self.settings.builtin_dir)
        except BackendUnavailable:  # transformers is missing: the report's counts are estimates
            return None

    def add_dataset(
        self,
        path: Path,
        *,
        name: str | None = None,
        uploaded_by: str = "",
        team: str = "",
        channel: str = "",
        base_model: str | None = None,
        source_id: str | None = None,
    ) -> DatasetRecord:
        """Validate a file and store it (content-addressed), usable or not; the record carries the
        report (``record.report``, ``record.usable``). ``source_id`` records where the upload came
        from (a Slack file id) for :meth:`dataset_by_source`."""
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFound(f"The file {path} does not exist.", hint="Check the path.")
        report = self.validate_file(path, base_model=base_model)
        record = self.store.add_dataset(
            path,
            name=name or path.name,
            uploaded_by=uploaded_by,
            team=team,
            channel=channel,
            report=report.to_dict(),
            source_id=source_id,
        )
        self.store.audit(
            uploaded_by, "dataset.add", record.hash, {"name": record.name, "usable": record.usable}
        )
        return record

    def dataset(self, dataset_hash: str, *, team: str | None = None) -> DatasetRecord:
        return self.store.get_dataset(dataset_hash, team=team)

    def dataset_by_source(
        self, source_id: str, *, team: str, channel: str | None = None
    ) -> DatasetRecord | None:
        """The team's latest dataset stored from ``source_id`` (e.g. a Slack file id), usable or
        not, or None: a repeated delivery of an upload, or ``/finetune F0123ABC``, finds it even
        after a restart. With ``channel``, only the record of that channel: a file shared into
        several channels is stored once (content-addressed) with one record per channel."""
        return self.store.dataset_by_source(source_id, team=team, channel=channel)

    def latest_dataset(self, team: str, channel: str) -> DatasetRecord | None:
        """The channel's latest usable dataset, or None."""
        return self.store.latest_dataset(team, channel)

    # ----------------------------------------------------------------- jobs

    def submit(
        self,
        dataset_hash: str,
        *,
        options: Mapping[str, str] | None = None,
        owner: str = "",
        team: str = "",
        channel: str = "",
        reply_to: Mapping[str, Any] | None = None,
        eval_dataset_hash: str | None = None,
        confirmed: bool = False,
        is_admin: bool = False,
    ) -> Job:
        """Queue a fine-tuning job. Checks everything that can be checked without a GPU first; a
        refused job is never stored.

        Who may do what is decided here, so Slack, the console and the CLI share one rule.
        ``is_admin`` is True for FTBOT_ADMINS in Slack and for the local operator (``ftbot run``,
        ``ftbot chat``: whoever runs the process already controls FTBOT_HOME and the settings),
        False for everyone else and by default. Someone who is not an admin may choose only the
        base models of :meth:`allowed_base_models` and may have at most
        ``settings.max_queued_per_user`` jobs not finished yet (FTBOT_MAX_QUEUED_PER_USER).

        A backend runner (:attr:`backend_runners`) that has a ``check(engine, job)`` method is
        asked first, with the job not stored yet: what it raises refuses the job.

        Raises:
            ConfigError: bad options (every problem listed, with what is accepted).
            DatasetNotFound: no such dataset in this team.
            DatasetError: the dataset (or eval file) is not usable; ``report`` says why.
            PermissionDenied: a base model this person may not choose (the message lists those
                allowed), or as many unfinished jobs as the limit (it names them and how to cancel).
            UsageError: a chosen base model that names a local path which is not a model directory.
            BackendUnavailable: the backend cannot run here (e.g. no OpenAI key, OpenAI no longer
                creates fine-tuning jobs, a retired OpenAI base model).
        """
        options = {str(k): str(v) for k, v in (options or {}).items()}
        config = parse_options(options, base_model=self.settings.base_model)
        base_model = config.base_model or self.settings.base_model
        scope = team if team else None
        record = self._usable_dataset(dataset_hash, scope, "dataset")
        eval_record = (
            self._usable_dataset(eval_dataset_hash, scope, "eval file") if eval_dataset_hash else None
        )
        runner = self.backend_runners.get(config.backend)
        if config.backend not in self.dispatcher.local_backends and runner is None:
            raise BackendUnavailable(
                f"The {config.backend} backend is not available in this installation.",
                hint="Use backend=local.",
            )
        now = self.clock()
        job = Job(
            id=new_job_id(),
            backend=config.backend,
            base_model=base_model,
            dataset_hash=record.hash,
            eval_dataset_hash=eval_record.hash if eval_record else None,
            created_at=now,
            updated_at=now,
            config=config.to_dict(),
            owner=owner,
            team=team,
            channel=channel,
            reply_to=dict(reply_to or {}),
            result={"dataset_name": record.name, **({"confirmed": True} if confirmed else {})},
        )
        check = getattr(runner, "check", None)
        if check is not None:  # e.g. OpenAI: no key, fine-tuning closed, a retired base model
            check(self, job)
        if "base_model" in config.user_set:
            self._check_base_model(config.backend, base_model, is_admin=is_admin)
        # One submission at a time counts and stores: a burst of requests from one person (Slack's
        # listeners run in parallel) cannot slip past the limit between the count and the insert.
        with self._submit_lock:
            if not is_admin:
                self._check_unfinished_jobs(owner, team)
            ahead = len([j for j in self.store.queued_jobs() if not j.result.get("awaiting_confirmation")])
            running = bool(self.store.jobs(states=tuple(ACTIVE_STATES), limit=1))
            where = "next in line" if not ahead and not running else f"position {ahead + 1} in the queue"
            what = f"fine-tune {describe_base_model(base_model)} on {record.name}"
            self.store.add_job(job, message=f"Queued ({where}): {what}.")
        self.store.audit(
            owner, "job.submit", job.id, {"dataset": record.hash, "options": options, "admin": is_admin}
        )
        if runner is not None:
            runner(self, job)
        return self.store.get_job(job.id)

    def allowed_base_models(self, backend: str = "local") -> tuple[str, ...]:
        """The base models someone who is not an admin may choose for ``backend`` (admins and the
        local operator may choose any).

        FTBOT_BASE_MODELS when set: its OpenAI names (``gpt-...``) for backend=openai, the others
        for the local backend. Unset: FTBOT_BASE_MODEL and the builtin models for the local
        backend; for OpenAI the model families of the price table (``openai_costs``, plus
        FTBOT_OPENAI_PRICES) that have not retired today. An OpenAI family (``gpt-4o-mini``)
        allows each of its dated snapshots (``gpt-4o-mini-2024-07-18``), never a fine-tune
        (``ft:...``). The default base model of the backend is always allowed: it is what a job
        gets without ``base=``.
        """
        configured = self.settings.base_models
        if backend == OPENAI:
            if configured:
                names = [m for m in configured if is_openai_model(m)]
            else:
                names = self.openai.backend.price_families()
            return tuple(dict.fromkeys([self._default_base_model(backend), *names]))
        names = (
            [m for m in configured if not is_openai_model(m)]
            if configured
            else [self.settings.base_model, BUILTIN_SMOLLM2, BUILTIN_TINY]
        )
        return tuple(dict.fromkeys([self.settings.base_model, *names]))

    def _default_base_model(self, backend: str) -> str:
        """What a job of ``backend`` fine-tunes when nobody chose a base model."""
        if backend == OPENAI and not is_openai_model(self.settings.base_model):
            return DEFAULT_BASE_MODEL
        return self.settings.base_model

    def _check_base_model(self, backend: str, name: str, *, is_admin: bool) -> None:
        """A base model the user chose: one of :meth:`allowed_base_models` unless ``is_admin``; a
        local path must be a model directory (for everyone: a clear message now rather than the
        loader's own error text later, in the job's thread).

        Raises:
            PermissionDenied: not allowed; the message lists what is.
            UsageError: a path that is not a model directory.
        """
        allowed = self.allowed_base_models(backend)
        if not is_admin and not _is_allowed(name, allowed, openai=backend == OPENAI):
            shown = name if len(name) <= 80 else name[:79] + "…"
            snapshots = " (each also as a dated snapshot, e.g. gpt-4o-mini-2024-07-18)"
            if backend != OPENAI:
                snapshots = ""
            raise PermissionDenied(
                f"You cannot fine-tune the base model {shown!r} here: it is not one of the base models "
                f"this bot lets everyone choose for backend={backend}.",
                hint=f"Choose one of: {', '.join(allowed)}{snapshots}, or leave base= out for the default "
                f"({self._default_base_model(backend)}). Only an admin (FTBOT_ADMINS) may use another "
                "model, and can allow more for everyone with FTBOT_BASE_MODELS.",
            )
        if backend != OPENAI and _looks_like_path(name) and not _is_model_directory(name):
            raise UsageError(
                f"The base model {name!r} names a path, but there is no model directory there "
                "(a directory with a config.json, as `save_pretrained` writes it).",
                hint="Give the directory of a saved model, a Hugging Face id, or a builtin model "
                "(builtin:smollm2, builtin:tiny).",
            )

    def _check_unfinished_jobs(self, owner: str, team: str) -> None:
        """At most ``settings.max_queued_per_user`` jobs of ``owner`` (in ``team``) not finished
        yet: queued (waiting for a confirmation too), validating, baseline, training, evaluating.

        Raises:
            PermissionDenied: the limit is reached; the message names the jobs and how to cancel.
        """
        limit = self.settings.max_queued_per_user
        if limit <= 0:
            return
        active = self.store.jobs(states=UNFINISHED_STATES, owner=owner, team=team, limit=limit + 20)
        if len(active) < limit:
            return
        states = ", ".join(f"{j.id} ({j.state.value})" for j in active)
        raise PermissionDenied(
            f"You already have {len(active)} fine-tuning job{'s' if len(active) != 1 else ''} queued or "
            f"running: {states}. The limit is {limit} per person (FTBOT_MAX_QUEUED_PER_USER).",
            hint="Wait for one to finish, or cancel one: `/finetune cancel JOB` in Slack, `/cancel JOB` "
            "in `ftbot chat` (`/finetune list` shows your jobs).",
        )

    def _usable_dataset(self, dataset_hash: str, team: str | None, what: str) -> DatasetRecord:
        record = self.store.get_dataset(dataset_hash, team=team)
        if not record.usable:
            errors = list((record.report or {}).get("errors") or [])
            first = errors[0].get("message") if errors and isinstance(errors[0], Mapping) else None
            raise DatasetError(
                f"The {what} {record.name} is not usable" + (f": {first}" if first else "."),
                report=record.report,
                hint="Fix the errors the validation reported and upload it again.",
            )
        return record

    def confirm(self, job_id: str, *, user: str, team: str | None = None) -> Job:
        """Accept a job's cost estimate so it can start (jobs waiting for a confirmation)."""
        job = self.store.get_job(job_id, team=team)
        if job.owner and user != job.owner:
            raise PermissionDenied("Only the person who started this job can confirm its cost.")
        self.store.audit(user, "job.confirm", job_id)
        job = self.store.update_job(job_id, result={"awaiting_confirmation": False, "confirmed": True})
        self.openai.confirmed(job_id)  # an OpenAI job starts now rather than at its next poll
        return job

    def cancel(self, job_id: str, *, user: str, is_admin: bool = False, team: str | None = None) -> Job:
        """Cancel a job (its owner or an admin). A running worker is told to stop at once and is
        ended within seconds; partial files are removed.

        Raises:
            JobNotFound, PermissionDenied, UsageError (the job already finished).
        """
        job = self.store.get_job(job_id, team=team)
        if not is_admin and job.owner and user != job.owner:
            raise PermissionDenied(
                f"Only the job's owner (<@{job.owner}>) or an admin can cancel {job_id}.",
            )
        if job.is_final:
            raise UsageError(
                f"Job {job_id} already finished ({job.state.value}); there is nothing to cancel."
            )
        try:
            job = self.store.transition(
                job_id,
                JobState.CANCELLED,
                now=self.clock(),
                message=f"Cancelled by {user or 'a user'}.",
                data={"by": user},
            )
        except InvalidTransition as exc:  # it finished in the meantime
            raise UsageError(f"Job {job_id} finished before it could be cancelled.") from exc
        self.store.audit(user, "job.cancel", job_id, {"admin": is_admin})
        self.dispatcher.terminate(job_id)
        self.openai.on_cancel(job)  # an OpenAI job: cancel the remote job too
        return job

    def job(self, job_id: str, *, team: str | None = None) -> Job:
        return self.store.get_job(job_id, team=team)

    def jobs(
        self,
        *,
        team: str | None = None,
        channel: str | None = None,
        state: JobState | str | None = None,
        active_only: bool = False,
        limit: int = 20,
    ) -> list[Job]:
        """Jobs, newest first. ``active_only``: queued and running ones."""
        states = None
        if active_only:
            states = tuple(s for s in JobState if not s.is_final)
        return self.store.jobs(state=state, states=states, team=team, channel=channel, limit=limit)

    def queue_position(self, job_id: str) -> int | None:
        return self.store.queue_position(job_id)

    def events(self, job_id: str, after_seq: int = 0) -> list[ProgressEvent]:
        return self.store.events(job_id, after_seq=after_seq)

    def set_reply_to(self, job_id: str, reply_to: Mapping[str, Any]) -> Job:
        """Record where the job's card lives (opaque to the engine) so progress survives restarts."""
        job = self.store.update_job(job_id, reply_to=dict(reply_to))
        self.dispatcher.relay.refresh(job_id)
        return job

    # The relay's delivery cursor per job (engine/relay.py keeps it; read here for tests and tools).

    def delivered_seq(self, job_id: str) -> int | None:
        """The last of ``job_id``'s events (its ``seq``) a display recorded as shown; None when
        none was recorded (the job is not tracked)."""
        return self.store.delivered_seq(job_id)

    def undelivered_jobs(self, *, limit: int = 200) -> list[Job]:
        """Tracked jobs with events after the one recorded as shown, oldest first."""
        return self.store.undelivered_jobs(limit=limit)

    def evaluation(self, job_id: str, *, team: str | None = None) -> dict[str, Any] | None:
        """The job's evaluation report (``engine.evaluate.build_report`` dict), or None."""
        self.store.get_job(job_id, team=team)
        return self.store.get_eval(job_id)

    def run_job(self, job_id: str, sink: ProgressSink, *, poll_seconds: float = 0.2) -> Job:
        """Run a queued local job now, in a worker process, following it to the end (blocking).
        Events go to ``sink`` as they happen. Ctrl-C cancels the job. Returns the final job."""
        job = self.store.get_job(job_id)
        if job.backend == "openai":  # driven here, in this thread (no worker)
            return self.openai.run_foreground(job_id, sink, poll_seconds=poll_seconds)
        if job.backend not in self.dispatcher.local_backends:
            raise BackendUnavailable(f"Jobs of the {job.backend} backend do not run in a worker here.")
        if job.state is not JobState.QUEUED:
            raise UsageError(f"Job {job_id} is {job.state.value}; only a queued job can be run.")
        return follow.run_local(self.dispatcher, job_id, sink, poll_seconds=poll_seconds)

    # ----------------------------------------------------------------- models

    def models(self, team: str, *, channel: str | None = None) -> list[ModelRecord]:
        return self.store.models(team, channel=channel)

    def model(self, model_id: str, *, team: str) -> ModelRecord:
        return self.store.get_model(model_id, team=team)

    def current_model(self, team: str, channel: str) -> ModelRecord | None:
        """The channel's current model (what ``ask`` uses without ``model``): the latest
        fine-tune that passed the promotion rule (evaluate.promotion_decision), unless a user chose
        another (see :meth:`use_model`). None when the base model answers: nothing promoted yet, or a user
        chose ``base``. :meth:`model_choice` also says who chose it."""
        return self.store.default_model(team, channel)

    def model_choice(self, team: str, channel: str) -> DefaultChoice:
        """The channel's current model and who chose it, for display: ``mode`` is ``auto`` (the
        promotion rule), ``model`` or ``base`` (a user's choice, ``by_user``), with ``model``,
        ``set_by``, ``set_at`` and the rule's latest pick ``promoted`` (:class:`DefaultChoice`)."""
        return self.store.default_choice(team, channel)

    def use_model(self, team: str, channel: str, choice: str, *, user: str) -> DefaultChoice:
        """Change the channel's current model (what ``/ask`` and ``ftbot ask`` use without a
        model). ``choice`` is:

        * a model id of this workspace (or an OpenAI ``ft:`` name), whatever its verdict or
          channel: it stays current until a user changes it. Later promotions are registered but
          do not replace it; their job's promotion message says so and how to switch.
        * ``base``: the base model alone answers (``settings.base_model``) until changed;
          promotions do not replace it either.
        * ``auto``: back to the promotion rule: the latest promoted fine-tune of this channel is
          current again (none yet: the base model), and each later promotion replaces it.

        The choice is stored (it survives restarts) and audited (action ``model.use`` by
        ``user``, with the previous choice). Who may call this is the caller's rule (the Slack
        app: anyone ``FTBOT_ALLOWED_USERS`` lets in). Returns the channel's choice afterwards.

        Raises:
            UsageError: ``choice`` is empty.
            ModelNotFound: no such model in this workspace (another workspace's models look the
                same); the message says how to list the models.
        """
        raw = (choice or "").strip()
        if not raw:
            raise UsageError(
                "Say which model this channel should use: a model id, `base` or `auto`.",
                hint=USE_CHOICES_HINT,
            )
        before = self.store.default_choice(team, channel)
        key = raw.lower()
        if key == BASE_MODEL_ID:
            after = self.store.set_default_choice(team, channel, CHOICE_BASE, set_by=user)
            subject = BASE_MODEL_ID
        elif key == AUTO_CHOICE:
            after = self.store.set_default_choice(team, channel, CHOICE_AUTO, set_by=user)
            subject = AUTO_CHOICE
        else:
            try:
                record = self.store.get_model(raw, team=team)
            except ModelNotFound:
                raise ModelNotFound(
                    f"There is no model {raw!r} in this workspace.", hint=USE_CHOICES_HINT
                ) from None
            after = self.store.set_default_choice(team, channel, CHOICE_MODEL, record.id, set_by=user)
            subject = record.id
        self.store.audit(
            user,
            "model.use",
            subject,
            {
                "team": team,
                "channel": channel,
                "mode": after.mode,
                "model": after.model_id,
                "previous": {"mode": before.mode, "model": before.model_id, "set_by": before.set_by},
            },
        )
        return after

    def set_default_model(self, team: str, channel: str, model_id: str | None, *, user: str = "") -> None:
        """Choose the channel's model (any of the team's models, whatever its verdict), as
        :meth:`use_model` does; None goes back to the promotion rule (``auto``)."""
        self.use_model(team, channel, model_id if model_id is not None else AUTO_CHOICE, user=user)

    def _model_server(self) -> Any:
        with self._server_lock:
            if self._server is None:
                self._server = model_server(self.settings)  # vLLM with FTBOT_VLLM_URL
            return self._server

    def ask(
        self,
        prompt: str,
        *,
        model: str | None = None,
        team: str = "",
        channel: str = "",
        compare: bool = False,
        wait_seconds: float | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Any:
        """Answer ``prompt`` with ``model`` (an id of the team's, or :data:`BASE_MODEL_ID` for the
        base model itself), else the channel's current model, else the base model. Returns an
        ``Answer``; with ``compare``, ``(base_answer, tuned_answer)``. Blocking: call it off the
        Slack listener threads.

        ``temperature`` (0 to :data:`ASK_MAX_TEMPERATURE`; None or 0 = greedy, the default) and
        ``max_tokens`` (1 to ``settings.ask_max_new_tokens``, the admin's cap and the default) apply
        to every answer of the request (both sides of ``compare``), local or OpenAI. An answer cut
        by the token, time or context limit has ``finish_reason`` other than ``stop`` and a ``note``.

        An answer of the base model alone also says why the base model answered, in
        ``base_reason`` (a field that only such answers have; ``to_dict()`` includes it), so every
        surface can tell a newcomer that no fine-tune answered:

        * :data:`BASE_REASON_NO_FINETUNE`: the channel has no fine-tune yet (nothing promoted,
          nothing chosen, no model made in this channel);
        * :data:`BASE_REASON_NONE_PROMOTED`: the channel has fine-tunes, but none became its
          current model (none passed the promotion rule) and nobody chose one;
        * :data:`BASE_REASON_CHOSEN`: a user made the base model the channel's model
          (``/finetune use base``);
        * :data:`BASE_REASON_REQUESTED`: the request named it (``model=base``).

        Raises:
            ModelNotFound: ``model`` is not one of the team's, or its adapter was never recorded.
            UsageError: empty prompt; ``compare`` without a fine-tuned model; ``temperature`` or
                ``max_tokens`` out of range (:meth:`check_ask_options`).
            BackendUnavailable / GenerationError / ResourceExhausted: the model could not answer.
        """
        if not prompt or not prompt.strip():
            raise UsageError("The question is empty.", hint="Write a question after the command.")
        temperature, max_tokens = self.check_ask_options(temperature=temperature, max_tokens=max_tokens)
        if model == BASE_MODEL_ID:
            record = None
        elif model:
            record = self.store.get_model(model, team=team)
        else:
            record = self.current_model(team, channel)
        wait = wait_seconds if wait_seconds is not None else self.settings.ask_timeout_seconds + 30
        if record is not None and record.kind != "local_adapter":
            return self.openai.backend.ask(
                record, prompt, compare=compare, temperature=temperature, max_tokens=max_tokens
            )
        if record is not None and record.path is None:
            # Answering with the bare base model instead would pass it off as the fine-tune.
            raise ModelNotFound(
                f"Model {record.id} has no adapter recorded, so it cannot answer.",
                hint="Choose another model (see the model list), or fine-tune again.",
            )
        server = self._model_server()
        if record is None:
            if compare:
                if model == BASE_MODEL_ID:
                    what = "model=base answers with the base model alone"
                elif self.store.default_choice(team, channel).mode == CHOICE_BASE:
                    what = "This channel's current model is the base model alone (`/finetune use base`)"
                else:
                    what = "There is no fine-tuned model here yet"
                raise UsageError(
                    f"{what}, so there is nothing to compare it with.",
                    hint="Fine-tune a model first (/finetune in Slack, `ftbot run FILE` on the command line), "
                    "or name one with model=ID (`ftbot ask --model ID`).",
                )
            answer = server.ask(
                prompt,
                base_model=self.settings.base_model,
                wait_seconds=wait,
                label=f"base:{self.settings.base_model}",
                temperature=temperature,
                max_new_tokens=max_tokens,
            )
            return with_base_reason(
                answer, self._base_reason(team, channel, requested=model == BASE_MODEL_ID)
            )
        tuned = {
            "base_model": record.base_model,
            "adapter": record.path,
            "system_prompt": record.system_prompt,
            "label": record.id,
            "wait_seconds": wait,
            "temperature": temperature,
            "max_new_tokens": max_tokens,
        }
        return server.compare(prompt, **tuned) if compare else server.ask(prompt, **tuned)

    def _base_reason(self, team: str, channel: str, *, requested: bool) -> str:
        """Why the base model alone answers the channel (see :meth:`ask`)."""
        if requested:
            return BASE_REASON_REQUESTED
        if self.store.default_choice(team, channel).mode == CHOICE_BASE:
            return BASE_REASON_CHOSEN
        if self.store.models(team, channel=channel, limit=1):
            return BASE_REASON_NONE_PROMOTED
        return BASE_REASON_NO_FINETUNE

    def check_ask_options(
        self, *, temperature: float | None = None, max_tokens: int | None = None
    ) -> tuple[float, int]:
        """``(temperature, max_tokens)`` for :meth:`ask`, defaults filled in: greedy (0.0) and
        ``settings.ask_max_new_tokens``. Cheap and pure: the Slack app calls it before it
        acknowledges ``/ask``, so a bad value gets its error at once.

        Raises:
            UsageError: ``temperature`` is not a number from 0 to :data:`ASK_MAX_TEMPERATURE`, or
                ``max_tokens`` not a whole number from 1 to ``settings.ask_max_new_tokens``; the
                message names the accepted range.
        """
        cap = int(self.settings.ask_max_new_tokens)
        if temperature is None:
            temperature = 0.0
        elif (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0.0 <= float(temperature) <= ASK_MAX_TEMPERATURE  # also refuses NaN
        ):
            raise UsageError(
                f"temperature must be a number from 0 to {ASK_MAX_TEMPERATURE:g} (got {temperature!r}).",
                hint="0 answers greedily (the default, the same answer every time); higher values "
                "sample more varied answers.",
            )
        if max_tokens is None:
            max_tokens = cap
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= cap:
            raise UsageError(
                f"max_tokens must be a whole number from 1 to {cap} (got {max_tokens!r}).",
                hint=f"Leave it out for the default, {cap}: this installation's limit "
                "(FTBOT_ASK_MAX_NEW_TOKENS, set by the bot's admin).",
            )
        return float(temperature), int(max_tokens)


OPENAI = "openai"  # the OpenAI backend's name (engine.backends.openai_backend.BACKEND)
#: Job states of a job not finished yet (FTBOT_MAX_QUEUED_PER_USER counts these).
UNFINISHED_STATES = tuple(s for s in JobState if not s.is_final)


def _is_allowed(name: str, allowed: tuple[str, ...], *, openai: bool) -> bool:
    """Whether ``name`` is in ``allowed``; for OpenAI, a dated snapshot of an allowed family is
    too (``gpt-4o-mini-2024-07-18`` under ``gpt-4o-mini``), but never a fine-tune (``ft:...``)."""
    if name in allowed:
        return True
    if not openai or name.startswith("ft:"):
        return False
    return model_family(name) in allowed


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hugging Face id (``org/name``) or a builtin model name."""
    return name.startswith(("/", ".", "~")) or "\\" in name


def _is_model_directory(name: str) -> bool:
    """Whether ``name`` is a directory holding a saved model (its ``config.json``)."""
    try:
        return (Path(name).expanduser() / "config.json").is_file()
    except OSError:
        return False


#: ``ask(model=BASE_MODEL_ID)`` answers with the base model itself (``/ask model=base``);
#: ``use_model(choice=BASE_MODEL_ID)`` makes the base model the channel's current model.
BASE_MODEL_ID = "base"
#: ``use_model(choice=AUTO_CHOICE)``: the promotion rule chooses the channel's current model.
AUTO_CHOICE = "auto"
USE_CHOICES_HINT = (
    "Accepted: a model id from `/finetune models` (`ftbot models` on the command line), `base` (the "
    "base model alone) or `auto` (the latest promoted fine-tune of this channel; new ones replace it)."
)
#: The highest ``temperature`` :meth:`Engine.ask` accepts (OpenAI's own limit; 0 = greedy).
ASK_MAX_TEMPERATURE = 2.0
#: ``Answer.base_reason`` values: why the base model alone answered (see :meth:`Engine.ask`).
#: Plain strings, part of the ``ask`` contract: bot/ renders them (blocks.ask_answer, ``ftbot ask``).
BASE_REASON_NO_FINETUNE = "no_finetune"
BASE_REASON_NONE_PROMOTED = "none_promoted"
BASE_REASON_CHOSEN = "chosen"
BASE_REASON_REQUESTED = "requested"


def with_base_reason(answer: Any, reason: str) -> Any:
    """``answer`` (an ``Answer``) with a ``base_reason`` field set to ``reason``. Anything that
    is not a dataclass is returned as it is."""
    if not dataclasses.is_dataclass(answer) or isinstance(answer, type):
        return answer
    values = {f.name: getattr(answer, f.name) for f in dataclasses.fields(answer) if f.init}
    values["base_reason"] = reason
    return _base_model_answer_type(type(answer))(**values)


@functools.cache
def _base_model_answer_type(answer_type: type) -> type:
    """``answer_type`` (the serving layer's frozen ``Answer``) plus a ``base_reason`` field.

    A subclass rather than a field of ``Answer`` itself: the serving backends build answers and
    know nothing of channels, so only the base-model answers this layer hands out carry it, and
    ``isinstance(answer, Answer)``, ``to_dict()`` and ``dataclasses.asdict`` keep working.
    """
    return dataclasses.make_dataclass(
        "BaseModelAnswer",
        [("base_reason", str, dataclasses.field(default=BASE_REASON_NO_FINETUNE))],
        bases=(answer_type,),
        frozen=True,
        namespace={"__doc__": "An answer of the base model alone; ``base_reason`` says why."},
    )


def describe_base_model(name: str) -> str:
    """A base model's name for messages; builtin:tiny always says what it is (ARCHITECTURE.md)."""
    if name == BUILTIN_TINY:
        return f"{name} (a tiny demo model with random weights, for trying the workflow; its answers mean nothing)"
    if name == BUILTIN_SMOLLM2:
        return f"{name} (SmolLM2-135M-Instruct, a small real model that runs on a CPU)"
    return name


def job_summary(job: Job) -> dict[str, Any]:
    """The ``ftbot run --json`` object (ARCHITECTURE.md contract) for a job, plus ``error`` and a few
    extras (``promoted``, ``report``) that consumers may ignore."""
    result = dict(job.result or {})
    baseline = result.get("baseline") or {}
    out: dict[str, Any] = {
        "job_id": job.id,
        "status": job.state.value,
        "backend": job.backend,
        "base_model": job.base_model,
        "model_id": job.model_id,
        "task": result.get("task"),
        "metric": result.get("metric"),
        "baseline": {
            "zero_shot": dict(baseline.get("zero_shot") or {}),
            "few_shot": dict(baseline.get("few_shot") or {}),
        },
        "finetuned": dict(result.get("finetuned") or {}),
        "verdict": result.get("verdict"),
        "predictions": result.get("predictions"),
        "error": job.error,
        "promoted": result.get("promoted"),
        "report": result.get("report_path"),
        "summary": result.get("summary"),
    }
    return out
