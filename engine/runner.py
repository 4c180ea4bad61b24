"""The job runner: one driver for every backend, read top to bottom.

A job goes through these states, each step the state of the same name; :func:`advance` does
the next steps of a job from whatever state it is in, with any :class:`~engine.backends.Backend`:

1. **validating**: the dataset, the user's eval file or a deterministic held-out split, the
   leakage check (examples that ask an eval prompt leave training), the recorded split
   (:func:`engine.pipeline.prepare_data`).
2. **baseline**: the base model zero-shot and few-shot on the eval prompts, scored; a
   ``baseline`` event; ``baseline.json`` (a resumed job reuses it and loads no model).
3. **training**: the backend trains (local: to the end, in this call) or starts a remote job
   that later calls :func:`advance` poll (``Backend.poll``); then the loss chart and the move to
   ``evaluating``.
4. **evaluating**: the fine-tune on the same prompts with the same settings, then the report,
   the predictions file, the registry and the promotion rule (:func:`engine.pipeline.finish_evaluation`).

Generation for the baseline and the evaluation goes in the generator's batches, with a cancel
check before each batch and a ``log`` event after it (:func:`generate`).

:func:`run` is the error-to-failure path of a job driven to its end in one process (the local
worker): a :class:`~engine.errors.FtbotError` fails the job with its message and hint, a full
disk or an out-of-memory error with its diagnosis, anything else as an internal error; a
cancelled job leaves no partial files. Every failure is written by :func:`engine.failures.fail_job`.
The OpenAI poller (:mod:`engine.openai_pipeline`) calls :func:`advance` once per tick and adds
only what polling needs (leases, retries with backoff).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine import charts
from engine.backends import Backend, Generator, TrainedModel
from engine.config import TrainConfig
from engine.diagnosis import EXIT_STORAGE_FULL, OOM_HINT, storage_problem
from engine.errors import FtbotError, InvalidTransition, JobNotFound
from engine.failures import fail_job, internal_error, is_out_of_memory
from engine.jobs import Job, JobState
from engine.paths import remove_partial_files
from engine.pipeline import (
    Cancelled,
    EvalData,
    JobContext,
    finish_evaluation,
    log_answers,
    measure_baseline,
    prepare_data,
    saved_baseline,
)

log = logging.getLogger("engine.runner")

#: What a job driven by :func:`run` does: its steps (tests pass their own).
Step = Callable[[JobContext], None]


# --------------------------------------------------------------------------- the steps


def begin(ctx: JobContext, message: str) -> bool:
    """Move a queued job on to ``validating`` with ``message``. False when the job ended, or
    someone else started it meanwhile (then this caller leaves it alone)."""
    job = ctx.job
    if job.is_final:
        return False
    if job.state is JobState.QUEUED:
        try:
            ctx.store.transition(job.id, JobState.VALIDATING, expect=JobState.QUEUED, message=message)
        except InvalidTransition:
            return False
    return True


def generate(
    ctx: JobContext,
    generator: Generator,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    *,
    max_new_tokens: int,
    label: str,
) -> list[str]:
    """Answer ``conversations`` in the generator's batches: a cancel check (:class:`Cancelled`)
    before each batch and a ``log`` event (``label: done/total answers``) after it."""
    answers: list[str] = []
    size = max(1, int(generator.batch_size))
    for start in range(0, len(conversations), size):
        ctx.check()
        chunk = conversations[start : start + size]
        answers.extend(generator.generate(chunk, max_new_tokens=max_new_tokens))
        log_answers(ctx, label, len(answers), len(conversations))
    return answers


def baseline(ctx: JobContext, data: EvalData, backend: Backend) -> dict[str, Any]:
    """Step 2: the base model zero-shot and few-shot (:func:`measure_baseline` with the backend's
    base generator). Returns the saved baseline record; a saved one loads no model at all."""
    saved = saved_baseline(ctx, data)
    if saved is not None:
        if ctx.job.state is JobState.BASELINE:
            ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
        return saved
    config = TrainConfig.from_dict(ctx.job.config)
    generator = backend.base_generator(ctx)
    try:
        return measure_baseline(
            ctx,
            data,
            generate=lambda conversations, max_new, label: generate(
                ctx, generator, conversations, max_new_tokens=max_new, label=label
            ),
            token_counter=generator.count_tokens,
            context_tokens=generator.context_tokens,
            max_new_tokens_cap=generator.max_new_tokens_cap,
            metric=config.metric,
            seed=config.seed,
        )
    finally:
        generator.close()


def train(ctx: JobContext, data: EvalData, backend: Backend) -> TrainedModel | None:
    """Step 3: train, or read back what training made when the job is already evaluating. None
    when the backend started training elsewhere (follow it with :func:`advance` later)."""
    if ctx.job.state is not JobState.TRAINING:
        return backend.trained_model(ctx)
    model = backend.train(ctx, data)
    if model is not None:
        finish_training(ctx, backend, model)
    return model


def finish_training(ctx: JobContext, backend: Backend, model: TrainedModel) -> None:
    """Training is done: the loss chart (when there were training events), the move to
    ``evaluating`` with what the backend records, then the backend's clean-up."""
    events = ctx.store.events(ctx.job_id, kinds=("step", "eval"))
    if events:
        with contextlib.suppress(Exception):  # a chart is a nicety; never fail a trained job for it
            chart = charts.loss_chart(events, ctx.dir / "loss.png")
            ctx.emit("artifact", "Training curves.", data={"kind": "loss_chart", "path": str(chart)})
    message, result = backend.finished_training(ctx, model)
    ctx.advance(JobState.EVALUATING, message, result=result)
    backend.after_training(ctx, model)


def evaluate(
    ctx: JobContext, data: EvalData, backend: Backend, base: Mapping[str, Any], model: TrainedModel
) -> Job:
    """Step 4: the fine-tuned model on the baseline's prompts (the backend's tuned generator),
    then :func:`finish_evaluation`: report, predictions, registry, promotion; the job succeeds."""
    config = TrainConfig.from_dict(ctx.job.config)
    generator = backend.tuned_generator(ctx, model)
    try:
        tuned = generate(
            ctx, generator, base["prompts"], max_new_tokens=base["max_new_tokens"], label="fine-tuned"
        )
    finally:
        generator.close()
    record = backend.model_record(ctx, model, data.system_prompt)
    return finish_evaluation(ctx, base, tuned, model=record, metric=config.metric, seed=config.seed)


def advance(ctx: JobContext, backend: Backend) -> bool:
    """Do the job's next steps (module docstring) from the state it is in. Returns True when the
    backend trains elsewhere and the job should be polled again (call :func:`advance` later);
    False when the job ended or there is nothing to do.

    Raises:
        Cancelled: the job was cancelled (or the context's stop flag set) meanwhile.
        FtbotError: a step failed (the caller fails the job: :func:`run`, or the OpenAI poller).
    """
    if not begin(ctx, backend.start_message):
        return False
    if ctx.job.state is JobState.TRAINING and backend.started(ctx):
        model = backend.poll(ctx)
        if model is None:
            return not ctx.job.is_final
        finish_training(ctx, backend, model)
        data = prepare_data(ctx)
        base = baseline(ctx, data, backend)  # read back from baseline.json (measured again if gone)
    else:
        data = prepare_data(ctx)  # validating -> baseline (records the split)
        backend.prepare(ctx, data)
        ctx.check()
        base = baseline(ctx, data, backend)  # baseline -> training
        ctx.check()
        trained = train(ctx, data, backend)
        if trained is None:
            return True  # started elsewhere: the first poll comes later
        model = trained
    ctx.check()
    evaluate(ctx, data, backend, base, model)
    return False


# --------------------------------------------------------------------------- to the end, in one process


def run(ctx: JobContext, step: Step, *, who: str = "worker") -> int:
    """Run ``step`` (the job's steps: ``lambda ctx: advance(ctx, backend)``) to a final state.
    Returns the process exit code: 0 unless the job failed.

    The error-to-failure path: a :class:`~engine.errors.FtbotError` fails the job with its message
    and hint; a failure to write because FTBOT_HOME's disk is full (ENOSPC, or EFBIG past the file
    size limit: :func:`~engine.diagnosis.storage_problem`) with that message, after the job's
    partial files went; an out-of-memory error with :data:`~engine.diagnosis.OOM_HINT`; anything
    else as an internal error of ``who`` (details in the job's ``worker.log``). When even the
    failure cannot be written the exit code is :data:`~engine.diagnosis.EXIT_STORAGE_FULL` and
    the parent says it. A job that was stopped (cancelled) ends quietly without partial files."""
    job = ctx.job
    state = job.state.value
    if not begin(ctx, "Started."):
        return 0
    try:
        step(ctx)
        return 0
    except Cancelled:
        pass
    except FtbotError as exc:
        if not ctx.should_stop():
            log.info("job %s failed: %s", ctx.job_id, exc)
            return 1 if _fail(ctx, exc.message, exc.hint) else EXIT_STORAGE_FULL
    except BaseException as exc:
        state = _current_state(ctx, state)
        if ctx.should_stop() and not isinstance(exc, KeyboardInterrupt):
            pass  # stopping may break things half way; the job is cancelled anyway
        elif (code := _fail_for_storage(ctx, exc, state)) is not None:
            return code
        else:
            traceback.print_exc()
            if is_out_of_memory(exc):
                _fail(ctx, f"Ran out of memory while the job was {state}.", OOM_HINT)
            else:
                _fail(
                    ctx,
                    internal_error(exc, who),
                    f"Details are in {ctx.dir / 'worker.log'}. Start the job again; report it if it repeats.",
                )
            return 1
    # Stopped: the job was cancelled (or failed from outside). Leave no half-done files.
    with contextlib.suppress(JobNotFound):
        if ctx.job.state is JobState.CANCELLED:
            remove_partial_files(ctx.settings, ctx.job_id)
    return 0


def _fail(ctx: JobContext, message: str, hint: str | None) -> bool:
    """:func:`fail_job`; False when the database refused (a full disk), with a line in the log."""
    refused = fail_job(ctx.store, ctx.job_id, message, hint)
    if refused is not None:
        _say(f"could not record that job {ctx.job_id} failed: {refused}")
        return False
    return True


def _say(text: str) -> None:
    """A line in the worker's log, which may sit on the full disk itself: best effort."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _fail_for_storage(ctx: JobContext, exc: BaseException, state: str) -> int | None:
    """When ``exc`` was FTBOT_HOME's storage (a full disk, a file over the size limit), fail the
    job with that message and return the exit code; None when it was something else.

    The job's partial files (the half-written checkpoint, earlier checkpoints, the adapter) go
    first: the job cannot go on without room anyway, and the space they free is often what lets
    the database record the failure. The message gives the free space when the write failed."""
    problem = storage_problem(exc, ctx.settings.home, state=state)
    if problem is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        traceback.print_exc()
    remove_partial_files(ctx.settings, ctx.job_id)
    message, hint = problem
    _say(f"job {ctx.job_id} failed: {message} {hint}")
    return 1 if _fail(ctx, message, hint) else EXIT_STORAGE_FULL


def _current_state(ctx: JobContext, default: str) -> str:
    """The job's state now (``default`` when the database cannot say)."""
    try:
        return ctx.job.state.value
    except Exception:
        return default
