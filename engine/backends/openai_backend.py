"""The OpenAI backend of the job runner: fine-tuning through OpenAI's API, chat completions for
the evaluation and /ask.

:class:`OpenAIBackend` implements :class:`engine.backends.Backend` for ``openai`` jobs; the job
runner (:mod:`engine.runner`) drives its steps and :mod:`engine.openai_pipeline` schedules them
(one poller per job, a tick every ``settings.openai_poll_seconds``). It never imports ``openai``:
the remote work goes through :class:`engine.backends.openai_tuner.OpenAIFineTuner`, built on the
Engine's ``openai_client`` or on :func:`engine.backends.openai_client.make_client`
(``BackendUnavailable`` without OPENAI_API_KEY).

- **check** (:meth:`OpenAIBackend.check`, before ``Engine.submit`` stores a job): OpenAI still
  creates fine-tuning jobs (before ``openai_dates.FINE_TUNING_ENDS``, FTBOT_OPENAI_FINE_TUNING_ENDS),
  a client can be made, the base model is an OpenAI model (``builtin:tiny`` or no choice means
  :data:`DEFAULT_BASE_MODEL`) and has not retired. "Today" is injected.
- **estimate** (:meth:`OpenAIBackend.estimate`, at submit): the split and the cost: a
  ``preflight`` event whose data is ``CostEstimate.to_dict()`` (plus ``tokens``/``cost_usd`` for
  the cards), led by the shutdown notice while there is one. Above ``settings.openai_confirm_usd``
  (or when the price is unknown) the job stays queued with ``result["awaiting_confirmation"]``
  until ``Engine.confirm``.
- **baseline / evaluation**: chat completions (``tuner.generate``) in batches of
  :data:`GENERATE_CHUNK`; the job's lease is renewed before each batch.
- **training**: the end date is checked again, then ``tuner.start`` uploads the split and creates
  the remote job; its id is stored on the job the moment OpenAI answers (before the ``submitted``
  event), so a restart follows it instead of creating a second one. Then one ``tuner.poll`` per
  tick, the cursor in ``result["openai_cursor"]``; a poll that did not get through backs off with
  :func:`~engine.backends.openai_events.poll_delay`. OpenAI's ``failed`` fails the job with its error in
  plain words (and the line of the user's file it names); ``cancelled`` on OpenAI's side cancels it.
- **the model**: registered with kind ``openai``, its id and ``remote_name`` the ``ft:`` name.

Several processes may share one FTBOT_HOME (``ftbot serve`` and ``ftbot run``): a job is driven by
one of them at a time through a lease in ``result["openai_lease"]`` (owner and heartbeat), taken
over only when stale (:data:`LEASE_STALE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import dataset
from engine.backends import TrainedModel, openai_costs, openai_dates, openai_models
from engine.backends.local_generation import Answer, cut_note
from engine.config import TrainConfig
from engine.errors import BackendUnavailable, FtbotError, JobNotFound, RemoteError, UsageError
from engine.failures import fail_job
from engine.jobs import Job, JobState
from engine.pipeline import EvalData, JobContext, job_model_record, prepare_data
from engine.progress import ProgressEvent, utcnow
from engine.settings import Settings
from engine.store import ModelRecord, Store

if TYPE_CHECKING:
    from engine.backends.openai_events import PollResult
    from engine.backends.openai_tuner import OpenAIFineTuner

log = logging.getLogger("engine.openai_pipeline")

BACKEND = "openai"
# The base model when the user chose none (or kept the local default, builtin:tiny): the cheapest
# model OpenAI fine-tunes.
DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"
# Context window assumed for choosing few-shot examples (every model OpenAI fine-tunes has at least this).
CONTEXT_TOKENS = 128_000
MAX_NEW_TOKENS_CAP = 4_096
# Eval prompts per batch of chat completions; cancel and shutdown are checked between batches.
GENERATE_CHUNK = 32
GENERATE_CONCURRENCY = 8
# Another process's lease on a job counts as abandoned after this long without a heartbeat.
LEASE_STALE_SECONDS = 120.0
# /ask: the finish reasons an OpenAI answer keeps (any other one is "stop"), and the note of an
# answer whose stream broke off part-way (the others come from local_serving.cut_note).
_CUT_REASONS = frozenset({"length", "content_filter", "time", "interrupted"})
INTERRUPTED_NOTE = (
    "Answer incomplete: the connection to OpenAI broke off part-way. Ask again for the whole answer."
)


def is_openai_model(name: str | None) -> bool:
    """Whether ``name`` names an OpenAI model (``gpt-...``, ``ft:...``, ``o4-mini``...): such models
    have no local tokenizer and are answered through chat completions."""
    if not name:
        return False
    return openai_models.looks_like_openai_model(name)


class Stopping(Exception):
    """This process stops driving the job (the engine is shutting down, or another process holds
    its lease): leave the job as it is; the next start (or the other process) picks it up."""


class _RemoteIdSink:
    """Stores the remote job id on the job the moment ``tuner.start`` announces it (before the
    event itself), so no restart can miss it."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def emit(self, event: ProgressEvent) -> None:
        remote_id = event.data.get("remote_id") if event.kind == "submitted" else None
        if remote_id:
            self._ctx.store.update_job(
                self._ctx.job_id,
                remote_id=str(remote_id),
                result={"openai_cursor": None, "openai_status": event.data.get("status")},
            )
        self._ctx.sink.emit(event)


class OpenAIGenerator:
    """One OpenAI model (the base model, or the ``ft:`` model) answering through chat completions:
    :class:`engine.backends.Generator`. Before each batch it renews the job's lease and raises
    :class:`Stopping` when this process no longer drives the job."""

    batch_size = GENERATE_CHUNK
    context_tokens = CONTEXT_TOKENS
    max_new_tokens_cap = MAX_NEW_TOKENS_CAP

    def __init__(self, backend: OpenAIBackend, ctx: JobContext, model: str) -> None:
        self._backend = backend
        self._ctx = ctx
        self._model = model
        self._tuner = backend.tuner()
        self._counter = openai_costs.default_token_counter()
        self._count_example_tokens = openai_costs.count_example_tokens

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._count_example_tokens(messages, self._counter)

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]:
        if not self._backend.claim(self._ctx.job):  # keeps the lease fresh through long steps
            raise Stopping()
        return self._tuner.generate(
            self._model, conversations, max_new_tokens=max_new_tokens, concurrency=GENERATE_CONCURRENCY
        )

    def close(self) -> None:
        """Nothing to free: the model lives at OpenAI."""


class OpenAIBackend:
    """OpenAI's fine-tuning for the job runner (:class:`engine.backends.Backend`), the checks and
    the cost estimate before a job starts, the remote cancel, and /ask for OpenAI models.

    Args:
        store / settings: the engine's.
        client: an OpenAI client (tests give one pointed at a fake server); None: made from
            the settings on first use (OPENAI_API_KEY).
        today: the calendar day (UTC) that OpenAI's shutdown dates are compared with.
        clock / sleep: given to the fine-tuner (file-processing waits, retries with backoff).
        monotonic: the time source of poll backoff.
        owner: this process's name in job leases.
        stop_flag: set when the engine stops (no lease is taken or kept then).
        follow: ``follow(job_id)`` keeps a job's poller going (a remote cancel to try again).
    """

    name = BACKEND
    start_message = "Started: checking the dataset."

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        client: Any,
        today: Callable[[], date],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        owner: str,
        stop_flag: threading.Event,
        follow: Callable[[str], None],
    ) -> None:
        self.store = store
        self.settings = settings
        self.today = today
        self.owner = owner
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._stop_flag = stop_flag
        self._follow = follow
        self._tuner: OpenAIFineTuner | None = None
        self._lock = threading.RLock()
        self._next_due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._retries: dict[str, int] = {}

    def tuner(self) -> OpenAIFineTuner:
        """The fine-tuner (one per backend: it holds no job state).

        Raises:
            BackendUnavailable: no client was given and OPENAI_API_KEY is not set.
        """
        with self._lock:
            if self._tuner is None:
                # lazy: keeps `openai` out of `import engine`
                from engine.backends.openai_client import make_client
                from engine.backends.openai_tuner import OpenAIFineTuner

                client = self._client or make_client(self.settings)
                self._tuner = OpenAIFineTuner(
                    client, settings=self.settings, clock=self._clock, sleep=self._sleep
                )
            return self._tuner

    # ----- before the job starts (Engine.submit)

    def check(self, job: Job) -> None:
        """Refuse a job OpenAI cannot run, before ``Engine.submit`` stores it. Cheap: no request
        to OpenAI, no data read.

        Raises:
            BackendUnavailable: OpenAI creates no fine-tuning jobs any more (from the end date),
                there is no API key, or the base model has retired.
            UsageError: the base model is not an OpenAI model.
        """
        today = self.today()
        openai_dates.check_fine_tuning_open(today, self.settings)
        self.tuner()  # BackendUnavailable without OPENAI_API_KEY
        base_model = self.base_model_for(job)
        openai_models.check_base_model(base_model)
        openai_dates.check_not_retired(base_model, today, self.settings)

    @staticmethod
    def base_model_for(job: Job) -> str:
        """The OpenAI model a job fine-tunes: the user's choice, else the engine's default when
        it is an OpenAI model, else :data:`DEFAULT_BASE_MODEL`."""
        chosen = "base_model" in TrainConfig.from_dict(job.config).user_set
        return job.base_model if chosen or is_openai_model(job.base_model) else DEFAULT_BASE_MODEL

    def estimate(self, ctx: JobContext) -> None:
        """The queued job's split and cost: the ``preflight`` event, ``result["cost_estimate"]``
        and ``result["awaiting_confirmation"]`` (see the module docstring). Records no split."""
        job = ctx.job
        config = TrainConfig.from_dict(job.config)
        if self.base_model_for(job) != job.base_model:
            ctx.store.save_job(replace(job, base_model=DEFAULT_BASE_MODEL))
            ctx.emit(
                "log",
                f"No OpenAI base model chosen: using {DEFAULT_BASE_MODEL} (choose another with "
                "base_model=..., e.g. gpt-4.1-mini-2025-04-14).",
                data={"notify": True},
            )
        job = ctx.job
        openai_models.check_base_model(job.base_model)
        tuner = self.tuner()
        data = prepare_data(ctx)  # queued: only reads and splits, records nothing
        if len(data.train) < openai_models.OPENAI_MIN_EXAMPLES:
            raise UsageError(
                f"OpenAI needs at least {openai_models.OPENAI_MIN_EXAMPLES} training examples; this dataset has "
                f"{len(data.train)} left after holding out {len(data.eval)} for evaluation.",
                hint="Add more examples, or give a separate eval file.",
            )
        estimate = tuner.estimate(data.train, job.base_model, epochs=config.n_epochs)
        confirmed = bool(job.result.get("confirmed"))
        waiting = estimate.confirmation_required and not confirmed
        notice = openai_dates.shutdown_notice(job.base_model, self.today(), self.settings)
        details = {
            **estimate.to_dict(),
            "backend": BACKEND,
            "tokens": estimate.total_tokens,
            "cost_usd": estimate.usd,
            "confirmation_required": waiting,
            "confirmed": confirmed,
            **self._shutdown_dates(job.base_model),
        }
        # The shutdown notice leads: it decides whether this job is worth starting at all.
        message = f"{notice} {estimate.message}" if notice else estimate.message
        ctx.emit("preflight", message, data=details)
        ctx.record(cost_estimate=estimate.to_dict(), awaiting_confirmation=waiting)
        if waiting:
            cost = "an unknown amount" if estimate.usd is None else f"about ${estimate.usd:,.2f}"
            ctx.emit(
                "log",
                f"Waiting for confirmation: this job would cost {cost} on OpenAI. Press Start in "
                f"Slack, type /confirm {job.id} in `ftbot chat`, or run `ftbot run` with --yes.",
                data={"code": "awaiting_confirmation", "usd": estimate.usd},
            )

    def _shutdown_dates(self, base_model: str) -> dict[str, Any]:
        """The pre-flight's dates: when OpenAI stops creating fine-tuning jobs and when this base
        model retires (ISO dates), with the days left from today."""
        today = self.today()
        ends = openai_dates.fine_tuning_end(self.settings)
        retires = openai_dates.retirement_date(base_model, self.settings.openai_retirements)
        return {
            "openai_fine_tuning_ends": ends.isoformat(),
            "openai_fine_tuning_days_left": max(0, (ends - today).days),
            "base_model_retires": retires.isoformat() if retires else None,
        }

    def price_families(self) -> list[str]:
        """The OpenAI model families with a known training price (``openai_costs``'s table plus
        FTBOT_OPENAI_PRICES), without those retired today."""
        today = self.today()
        names = sorted(
            {*openai_costs.TRAINING_PRICES_USD_PER_1M, *self.settings.openai_training_prices}, key=str.lower
        )
        return [
            name
            for name in names
            if is_openai_model(name)
            and not name.startswith("ft:")
            and not (
                (retired := openai_dates.retirement_date(name, self.settings.openai_retirements))
                and today >= retired
            )
        ]

    # ----- leases and poll backoff

    def claim(self, job: Job) -> bool:
        """Take (or keep) the job's lease; False when another live process drives it, or this
        one is stopping."""
        lease = job.result.get("openai_lease") or {}
        now = time.time()
        owner, at = lease.get("owner"), float(lease.get("at") or 0.0)
        if (
            owner
            and owner != self.owner
            and now - at < max(LEASE_STALE_SECONDS, 4 * self.settings.openai_poll_seconds)
        ):
            return False
        if self._stop_flag.is_set():
            return False
        if owner != self.owner or now - at >= min(10.0, LEASE_STALE_SECONDS / 4):
            self.store.update_job(job.id, result={"openai_lease": {"owner": self.owner, "at": now}})
        return True

    def backoff(self, job_id: str, retry_after: float | None, *, failures: int | None = None) -> None:
        """Poll ``job_id`` again only after :func:`~engine.backends.openai_events.poll_delay` (the
        ``failures``-th try in a row; default: one more than so far)."""
        # lazy: openai_events imports openai_errors, which imports `openai` (kept out of `import engine`)
        from engine.backends.openai_events import poll_delay

        with self._lock:
            count = failures if failures is not None else self._failures.get(job_id, 0) + 1
            self._failures[job_id] = count
            delay = poll_delay(self.settings.openai_poll_seconds, count, retry_after=retry_after)
            self._next_due[job_id] = self._monotonic() + delay

    def due(self, job_id: str) -> bool:
        """Whether a backed-off job may be polled now."""
        with self._lock:
            due = self._next_due.get(job_id)
        return due is None or self._monotonic() >= due

    def forget(self, job_id: str) -> None:
        """The job polled fine (or is no longer followed): no backoff, no retries counted."""
        with self._lock:
            for table in (self._failures, self._next_due, self._retries):
                table.pop(job_id, None)

    def count_retry(self, job_id: str) -> int:
        """One more try of a step that met trouble which may pass; returns the tries so far
        (counted until a poll gets through)."""
        with self._lock:
            attempts = self._retries.get(job_id, 0) + 1
            self._retries[job_id] = attempts
            return attempts

    def poll_now(self, job_id: str) -> None:
        """Poll ``job_id`` at the next tick, whatever its backoff (its count of failures stays)."""
        with self._lock:
            self._next_due.pop(job_id, None)

    # ----- the runner's steps (engine.backends.Backend)

    def prepare(self, ctx: JobContext, data: EvalData) -> None:
        """Record the openai library's version beside the others when the baseline starts."""
        if ctx.job.state is JobState.BASELINE and not (ctx.job.result.get("versions") or {}).get("openai"):
            ctx.record(versions={**dict(ctx.job.result.get("versions") or {}), **_openai_version()})

    def base_generator(self, ctx: JobContext) -> OpenAIGenerator:
        return OpenAIGenerator(self, ctx, ctx.job.base_model)

    def tuned_generator(self, ctx: JobContext, model: TrainedModel) -> OpenAIGenerator:
        return OpenAIGenerator(self, ctx, str(model.name))

    def started(self, ctx: JobContext) -> bool:
        """Whether the remote job exists (its id is stored on the job)."""
        return bool(ctx.job.remote_id)

    def train(self, ctx: JobContext, data: EvalData) -> None:
        """Upload the split and create the remote job (the first poll comes with the next tick)."""
        job = ctx.job
        # A job checked before the end date may reach this step after it (a late confirmation, a
        # long baseline): fail it in plain words rather than upload files OpenAI will not train on.
        openai_dates.check_fine_tuning_open(self.today(), self.settings)
        config = TrainConfig.from_dict(job.config)
        train_path = _write_jsonl(ctx.dir / "openai-train.jsonl", data.train)
        eval_path = _write_jsonl(ctx.dir / "openai-eval.jsonl", data.eval)
        hyper = {
            "n_epochs": config.n_epochs,
            "batch_size": config.openai_batch_size,
            "learning_rate_multiplier": config.learning_rate_multiplier,
        }
        ctx.check()
        remote_id = self.tuner().start(
            job.id,
            train_path,
            eval_path,
            model=job.base_model,
            hyperparameters=hyper,
            seed=config.seed,
            sink=_RemoteIdSink(ctx),
        )
        if ctx.job.remote_id != remote_id:  # the sink stored it already, unless start() found an old job
            self.store.update_job(job.id, remote_id=remote_id, result={"openai_cursor": None})
        with contextlib.suppress(JobNotFound):
            latest = ctx.job
            if latest.is_final:  # cancelled while the files were uploading
                self.cancel_remote(latest)
        return None

    def poll(self, ctx: JobContext) -> TrainedModel | None:
        """One poll of the remote job: its events stored, the cursor and status recorded. The
        model when OpenAI finished; None while it runs, after a poll that did not get through
        (backed off), or when OpenAI failed or cancelled it (the job then ends here too)."""
        job = ctx.job
        result: PollResult = self.tuner().poll(job.remote_id, job.result.get("openai_cursor"), job_id=job.id)  # type: ignore[arg-type]
        for event in result.events:
            ctx.sink.emit(event)
        changes: dict[str, Any] = {"openai_cursor": result.cursor, "openai_status": result.status}
        if result.eta_seconds is not None:
            changes["openai_eta_seconds"] = result.eta_seconds
        self.store.update_job(job.id, result=changes)
        if result.transient:
            self.backoff(job.id, result.retry_after)
            return None
        self.forget(job.id)
        if job.result.get("backend_unavailable"):
            ctx.record(backend_unavailable=False)
        if not result.done:
            return None
        if result.succeeded and result.model_name:
            ctx.record(training={"trained_tokens": result.trained_tokens, "remote_id": job.remote_id})
            return TrainedModel(kind=BACKEND, name=result.model_name)
        if result.status == "cancelled":
            message, to = result.error or "The OpenAI job was cancelled.", JobState.CANCELLED
        else:
            error = result.error or f"The OpenAI job ended with status {result.status}."
            message, to = error + self._where_in_dataset(ctx, error), JobState.FAILED
        refused = fail_job(self.store, job.id, message, to=to)
        if refused is not None:
            log.error("could not record that job %s ended (%s): %s", job.id, message, refused)
        return None

    def finished_training(self, ctx: JobContext, model: TrainedModel) -> tuple[str, dict[str, Any]]:
        return (
            f"OpenAI finished fine-tuning: {model.name}. Evaluating it on the same examples.",
            {"openai_model": model.name},
        )

    def after_training(self, ctx: JobContext, model: TrainedModel) -> None:
        """Nothing to clean up: the model lives at OpenAI."""

    def trained_model(self, ctx: JobContext) -> TrainedModel:
        model_name = str(ctx.job.result.get("openai_model") or "")
        if not model_name:
            raise RemoteError(
                "OpenAI reported success but ftbot has no fine-tuned model name to evaluate.", code="no_model"
            )
        return TrainedModel(kind=BACKEND, name=model_name)

    def model_record(self, ctx: JobContext, model: TrainedModel, system_prompt: str | None) -> ModelRecord:
        """The fine-tune's id and remote name are OpenAI's ``ft:`` name."""
        return job_model_record(
            ctx, model_id=str(model.name), kind=BACKEND, remote_name=model.name, system_prompt=system_prompt
        )

    def _where_in_dataset(self, ctx: JobContext, error: str) -> str:
        """OpenAI names lines of the file ftbot uploaded (the training split, or the eval split
        as the validation file); say which line of the user's own file that is."""
        # lazy: openai_errors imports `openai` (kept out of `import engine`)
        from engine.backends.openai_errors import named_line

        line = named_line(error)
        if line is None:
            return ""
        validation = "validation" in error
        uploaded = ctx.dir / ("openai-eval.jsonl" if validation else "openai-train.jsonl")
        try:
            with open(uploaded, encoding="utf-8") as f:
                rows = f.read().splitlines()
            messages = json.loads(rows[line - 1])["messages"] if 0 < line <= len(rows) else None
            job = ctx.job
            source_hash = job.eval_dataset_hash if validation and job.eval_dataset_hash else job.dataset_hash
            record = ctx.store.get_dataset(source_hash)
            found = next(
                (ex.line for ex in dataset.read_examples(record.path) if ex.messages == messages), None
            )
        except (OSError, ValueError, KeyError, FtbotError):
            return ""
        if found is None:
            return ""
        what = "evaluation examples" if validation else "training examples"
        return f" (Line {line} of the {what} ftbot sent to OpenAI is line {found} of {record.name}.)"

    # ----- cancel

    def cancel_remote(self, job: Job) -> bool:
        """Ask OpenAI to cancel the job's remote job. Never raises: when OpenAI cannot be
        reached, the job records ``remote_cancel_pending``, the first failure says so in an
        alert, and the job's poller keeps trying (``follow``). True when OpenAI cancelled it."""
        try:
            status = self.tuner().cancel(job.remote_id)  # type: ignore[arg-type]
        except FtbotError as exc:
            first = not job.result.get("remote_cancel_pending")
            self.store.update_job(job.id, result={"remote_cancel_pending": True})
            if first:
                self.store.add_event(
                    ProgressEvent(
                        job.id,
                        "alert",
                        f"Could not ask OpenAI to cancel {job.remote_id}: {exc.message} ftbot keeps trying; you can "
                        "also cancel it in OpenAI's dashboard.",
                        data={"code": "remote_cancel_failed", "remote_id": job.remote_id},
                        at=utcnow(),
                    )
                )
            self._follow(job.id)
            return False
        self.store.update_job(job.id, result={"remote_cancel_pending": False, "openai_status": status})
        self.store.add_event(
            ProgressEvent(
                job.id,
                "log",
                f"OpenAI job {job.remote_id} cancelled (status {status}).",
                data={"remote_id": job.remote_id, "remote_status": status},
                at=utcnow(),
            )
        )
        return True

    # ----- /ask

    def ask(
        self,
        record: ModelRecord,
        prompt: str,
        *,
        compare: bool = False,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> Any:
        """Answer with an OpenAI model from the registry (``Engine.ask`` routes kind ``openai``
        here, with ``temperature`` and ``max_tokens`` already checked): an ``Answer``, or
        ``(base, tuned)`` with ``compare``. ``max_tokens`` (default ``settings.ask_max_new_tokens``)
        is sent as ``max_completion_tokens``. The answer reports what OpenAI said: its
        ``finish_reason`` (``length``: cut at the limit, ``content_filter``; both with the same
        ``note`` as a local answer cut short) and ``usage.completion_tokens`` as ``tokens`` (an
        estimate only when the response carries no usage).

        Time limit (``settings.ask_timeout_seconds``, FTBOT_ASK_TIMEOUT_SECONDS, as for local
        models): each answer is a streamed chat completion (``tuner.stream_answer``) that stops
        at the limit; the text so far comes back with ``finish_reason`` ``time`` and the local
        note ("Answer cut at the N-second time limit."). A stream that broke off part-way gives
        ``finish_reason`` ``interrupted`` and :data:`INTERRUPTED_NOTE`. With ``compare`` both
        models are asked at once, each within the limit, so the whole call takes about the limit
        at most (``Engine.ask``'s callers wait the limit + 30 s).

        A model whose base model has retired (on or after its date in ``openai_dates.RETIREMENTS``
        or FTBOT_OPENAI_RETIREMENTS) is not asked: OpenAI would only answer with an error.

        Raises:
            BackendUnavailable: the model's base model has retired (the message says since when).
            GenerationError: a model sent nothing within the time limit.
            RemoteError: OpenAI refused or failed before any text came (after retries that fit
                in the time limit)."""
        if record.kind != BACKEND:
            raise BackendUnavailable(f"Model {record.id} is not an OpenAI model.")
        openai_dates.check_not_retired(
            record.remote_name or record.base_model or record.id, self.today(), self.settings
        )
        messages: list[dict[str, Any]] = []
        if record.system_prompt:
            messages.append({"role": "system", "content": record.system_prompt})
        messages.append({"role": "user", "content": prompt})
        tuner = self.tuner()
        limit = int(max_tokens if max_tokens is not None else self.settings.ask_max_new_tokens)
        timeout = float(self.settings.ask_timeout_seconds)

        def one(model: str, label: str) -> Answer:
            started = time.monotonic()
            done = tuner.stream_answer(
                model, messages, max_new_tokens=limit, temperature=temperature, timeout=timeout
            )
            # OpenAI's other reasons (tool_calls, function_call) do not apply: no tools are sent.
            reason = done.finish_reason if done.finish_reason in _CUT_REASONS else "stop"
            if reason == "interrupted":
                log.warning("An answer from %s broke off: %s", model, done.error)
            tokens = (
                done.completion_tokens
                if done.completion_tokens is not None
                else openai_costs.estimate_tokens(done.text)
            )
            return Answer(
                text=done.text,
                model=label,
                base_model=record.base_model,
                adapter=None,
                tokens=tokens,
                finish_reason=reason,  # type: ignore[arg-type]
                seconds=time.monotonic() - started,
                note=(
                    INTERRUPTED_NOTE
                    if reason == "interrupted"
                    else cut_note(reason, max_new_tokens=limit, timeout=timeout)
                ),
            )

        if not compare:
            return one(record.remote_name or record.id, record.id)
        # Both sides at once, each within the time limit: the pair takes the limit at most, not
        # twice it. A side that fails raises its error (after the other side has ended).
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="openai-compare") as pool:
            tuned_f = pool.submit(one, record.remote_name or record.id, record.id)
            base_f = pool.submit(one, record.base_model, f"base:{record.base_model}")
            return base_f.result(), tuned_f.result()


def _write_jsonl(path: Path, examples: Sequence[Sequence[Mapping[str, Any]]]) -> Path:
    """The examples as OpenAI's chat JSONL (one ``{"messages": [...]}`` per line)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for messages in examples:
            out.write(json.dumps({"messages": [dict(m) for m in messages]}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _openai_version() -> dict[str, str]:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return {"openai": metadata.version("openai")}
    return {}
