"""``python -m engine.worker JOB_ID [--home DIR] [--resume]``: one job's heavy steps, in a child process.

The scheduler starts this module as a separate process (see ``engine.scheduler.launch_command``),
so a crash, an out-of-memory kill or a hung CUDA kernel never takes down the bot. Everything the
worker has to say goes into SQLite: state changes (each with its event, in one transaction) and
progress events, which the parent relays to the job's sink. Its stdout/stderr go to the job's
``worker.log``.

The local pipeline, step by step (each step is the job state of the same name):

1. **validating**: load the dataset, take the user's eval file or a deterministic held-out split,
   check the two for leakage (the same prompt in both; such examples leave the training set), and
   record which eval set was used.
2. **baseline**: the base model zero-shot, and few-shot with k training examples in the prompt, on
   the eval split (batched generation), scored with the task's metrics; a ``baseline`` event
   carries the numbers while training runs. Saved to ``baseline.json`` so a resumed job reuses them.
3. **training**: pre-flight estimate first (refuse when it cannot fit), then QLoRA. Checkpoints
   each epoch; cancel stops at the next step. A resumed job continues from the latest checkpoint.
4. **evaluating**: the fine-tuned model on the same prompts with the same generation settings, the
   report (verdict, flags, flips), charts, the predictions file (``prompt``, ``reference``,
   ``zero_shot``, ``few_shot``, ``finetuned`` per line), the model registered, and the promotion
   rule: it becomes the channel's default only when its verdict is not ``worse``.

A resumed worker (the bot restarted, the child died) re-enters the job's current state: earlier
steps' results are read back (the split is deterministic), later ones run as usual.

The backend-independent halves of these steps (the job context, the split, the baseline's
scoring, the report / predictions / registry / promotion) are :mod:`engine.pipeline`, shared with
the OpenAI pipeline (engine/openai_pipeline.py, which runs in the bot process through scheduler
pollers, never in this worker). What is local is here: :class:`LocalBackend` (generation with
local_serving, QLoRA with local_qlora) behind the small :class:`PipelineBackend` protocol that
:func:`run_pipeline` drives.

torch/transformers/peft are imported inside functions only (DESIGN.md's import rules).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from engine.errors import BackendError, FtbotError, InvalidTransition, JobNotFound, ResourceExhausted
from engine.jobs import Job, JobState
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
from engine.progress import format_duration, utcnow
from engine.scheduler import (
    EXIT_STORAGE_FULL,
    OOM_HINT,
    adapter_dir,
    checkpoints_dir,
    latest_checkpoint,
    remove_partial_files,
    storage_problem,
)
from engine.settings import Settings
from engine.store import ModelRecord, Store

log = logging.getLogger("engine.worker")

EVAL_BATCH_SIZE = 16


# --------------------------------------------------------------------------- the backend seam


class Generator(Protocol):
    """Answers chat conversations with one model (the base, or the fine-tune)."""

    #: The most tokens (prompt + answer) the model accepts.
    context_tokens: int

    def count_tokens(self, messages: list[dict[str, Any]]) -> int: ...

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TrainedModel:
    """What training produced (recorded as ``job.result["trained"]`` so a resumed evaluation finds it)."""

    kind: str  # engine.store.MODEL_KINDS: "local_adapter" here
    path: Path | None = None
    remote_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "remote_name": self.remote_name,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainedModel:
        path = raw.get("path")
        return cls(
            kind=str(raw["kind"]), path=Path(path) if path else None, remote_name=raw.get("remote_name")
        )

    def exists(self) -> bool:
        return self.path.exists() if self.kind == "local_adapter" and self.path else bool(self.remote_name)


class PipelineBackend(Protocol):
    """What a backend gives the pipeline (:func:`run_pipeline`). The pipeline owns the states,
    the eval split, the prompts, the scoring, the predictions file, the registry and promotion;
    a backend only generates and trains. :class:`LocalBackend` is the one this worker runs."""

    def base_generator(self) -> Generator: ...

    def tuned_generator(self, model: TrainedModel) -> Generator: ...

    def train(self, data: EvalData) -> TrainedModel:
        """Train (or resume training) and return the model; raise :class:`Cancelled` when the
        job was stopped. Emits its own progress events through the context's sink."""
        ...


# --------------------------------------------------------------------------- the local backend


def token_counter_for(tokenizer: Any) -> Callable[[list[dict[str, Any]]], int]:
    """Count a conversation's tokens as the model sees them (its chat template)."""
    from engine.backends.local_model import render_prompt

    def count(messages: list[dict[str, Any]]) -> int:
        try:
            text = render_prompt(tokenizer, messages)
        except FtbotError:
            text = "\n".join(str(m.get("content", "")) for m in messages)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


class LocalGenerator:
    """A local model (base, or base + adapter) in this process; batched, cancel between batches."""

    def __init__(self, ctx: JobContext, model: Any, tokenizer: Any) -> None:
        from engine.backends.local_model import context_length

        self.ctx = ctx
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = context_length(model, tokenizer)
        self._count = token_counter_for(tokenizer)

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._count(messages)

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]:
        from engine.backends.local_generation import generate_batch

        answers: list[str] = []
        for start in range(0, len(conversations), EVAL_BATCH_SIZE):
            self.ctx.check()
            chunk = conversations[start : start + EVAL_BATCH_SIZE]
            answers.extend(
                generate_batch(
                    self.model,
                    self.tokenizer,
                    chunk,
                    max_new_tokens=max_new_tokens,
                    batch_size=EVAL_BATCH_SIZE,
                )
            )
        return answers

    def close(self) -> None:
        self.model = self.tokenizer = None
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class LocalBackend:
    """QLoRA on this machine (engine.backends.local_qlora); generation with local_serving."""

    def __init__(self, ctx: JobContext) -> None:
        from engine.backends.local_builtin import resolve_base_model

        self.ctx = ctx
        # A builtin model is built on first use (builtin:smollm2: a conversion of about half a
        # minute): its stages go to the job's thread.
        self.base_path = resolve_base_model(
            ctx.job.base_model, ctx.settings.builtin_dir, progress=lambda message: ctx.emit("log", message)
        )

    def _load(self, adapter: Path | None) -> LocalGenerator:
        from engine.backends.local_model import load_base

        model, tokenizer = load_base(self.base_path)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
            model.eval()
        return LocalGenerator(self.ctx, model, tokenizer)

    def base_generator(self) -> LocalGenerator:
        return self._load(None)

    def tuned_generator(self, model: TrainedModel) -> LocalGenerator:
        return self._load(model.path)

    def train(self, data: EvalData) -> TrainedModel:
        from engine.backends import local_qlora
        from engine.config import TrainConfig

        ctx, job = self.ctx, self.ctx.job
        config = TrainConfig.from_dict(job.config)
        # The eval split is never shown to training, not even for early stopping: the recipe holds
        # back its own validation split from the training examples (engine/recipe.py).
        estimate = local_qlora.preflight(base_model=self.base_path, train_examples=data.train, config=config)
        estimate = dict(estimate)
        measured = (saved_baseline(ctx, data) or {}).get("seconds") or {}
        if measured.get("zero_shot"):  # the fine-tune answers the same prompts: about as long again
            estimate["evaluation_seconds"] = float(measured["zero_shot"])
            estimate["message"] = (
                f"{estimate.get('message', '')} Then the evaluation, about as long as the zero-shot baseline took "
                f"({format_duration(float(measured['zero_shot']))})."
            ).strip()
        ctx.emit("preflight", str(estimate.get("message") or "Pre-flight estimate."), data=estimate)
        ctx.record(preflight=estimate)
        if estimate.get("fits") is False:
            raise ResourceExhausted(
                str(estimate.get("message") or "This job does not fit here."), hint=OOM_HINT
            )
        resume_from = latest_checkpoint(checkpoints_dir(ctx.settings, job.id))
        if resume_from is not None:
            ctx.alert(
                "resume_checkpoint",
                f"Resuming training from {resume_from.name}.",
                checkpoint=str(resume_from),
            )
        ctx.check()
        result = local_qlora.train(
            job_id=job.id,
            base_model=self.base_path,
            train_examples=data.train,
            eval_examples=(),
            config=config,
            output_dir=checkpoints_dir(ctx.settings, job.id),
            sink=ctx.sink,
            should_stop=ctx.should_stop,
            resume_from=resume_from,
            dataset_hash=job.dataset_hash,
            preflight_seconds=float(estimate["seconds"]) if estimate.get("seconds") else None,
        )
        if getattr(result, "cancelled", False):
            raise Cancelled()
        ctx.check()
        target = adapter_dir(ctx.settings, job.id)
        produced = Path(result.adapter_dir)
        if produced.resolve() != target.resolve():
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(produced, target)
        if getattr(result, "chart_path", None) is None:  # the recipe draws it when it can
            with contextlib.suppress(Exception):  # a chart is a nicety; never fail a trained job for it
                from engine import charts

                chart = charts.loss_chart(
                    ctx.store.events(job.id, kinds=("step", "eval")), ctx.dir / "loss.png"
                )
                ctx.emit("artifact", "Training curves.", data={"kind": "loss_chart", "path": str(chart)})
        ctx.record(
            training=dict(getattr(result, "metrics", {}) or {}),
            quantized=bool(getattr(result, "quantized", False)),
            resolved=dict(getattr(result, "resolved", {}) or {}),
        )
        return TrainedModel(kind="local_adapter", path=target)

    def after_training(self, model: TrainedModel) -> None:
        """The job is evaluating: checkpoints (adapter + optimizer state, large on real models) and
        the trainer's copy of the adapter are no longer needed; the chart next to them stays."""
        train_dir = checkpoints_dir(self.ctx.settings, self.ctx.job_id)
        for name in ("checkpoints", "adapter"):
            path = train_dir / name
            if model.path is None or path.resolve() != model.path.resolve():
                shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- step 2: baseline


def _generate(
    ctx: JobContext,
    generator: Generator,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    *,
    max_new_tokens: int,
    label: str,
) -> list[str]:
    answers = generator.generate(conversations, max_new_tokens=max_new_tokens)
    log_answers(ctx, label, len(answers), len(conversations))
    return answers


def baseline(ctx: JobContext, data: EvalData, backend: PipelineBackend) -> dict[str, Any]:
    """Step 2: the base model zero-shot and few-shot (:func:`measure_baseline` with the backend's
    base generator). Returns the saved baseline record."""
    from engine.config import TrainConfig

    config = TrainConfig.from_dict(ctx.job.config)
    saved = saved_baseline(ctx, data)
    if saved is not None:  # a resumed job: no need to load the model at all
        if ctx.job.state is JobState.BASELINE:
            ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
        return saved
    generator = backend.base_generator()
    try:
        return measure_baseline(
            ctx,
            data,
            generate=lambda conversations, max_new, label: _generate(
                ctx, generator, conversations, max_new_tokens=max_new, label=label
            ),
            token_counter=generator.count_tokens,
            context_tokens=generator.context_tokens,
            max_new_tokens_cap=max(16, generator.context_tokens // 2),
            metric=config.metric,
            seed=config.seed,
        )
    finally:
        generator.close()


# --------------------------------------------------------------------------- step 3: training


def train(ctx: JobContext, data: EvalData, backend: PipelineBackend) -> TrainedModel:
    """Step 3: train (or, when the job is already evaluating, read back what training made)."""
    job = ctx.job
    if job.state is not JobState.TRAINING:
        saved = job.result.get("trained")
        model = TrainedModel.from_dict(saved) if saved else None
        if model is None or not model.exists():
            raise ResourceExhausted(
                "The trained model of this job is missing, so it cannot be evaluated.",
                hint="Start the job again.",
            )
        return model
    model = backend.train(data)
    ctx.advance(
        JobState.EVALUATING,
        "Training finished. Evaluating the fine-tuned model on the same examples.",
        result={"trained": model.to_dict(), "adapter_dir": str(model.path) if model.path else None},
    )
    after = getattr(backend, "after_training", None)
    if after is not None:
        after(model)
    return model


# --------------------------------------------------------------------------- step 4: evaluation


def evaluate_and_register(
    ctx: JobContext, data: EvalData, backend: PipelineBackend, base: Mapping[str, Any], model: TrainedModel
) -> Job:
    """Step 4: the fine-tuned model on the same prompts (the backend's tuned generator), then
    :func:`finish_evaluation`. The model's id is the job's id."""
    from engine.config import TrainConfig

    job = ctx.job
    config = TrainConfig.from_dict(job.config)
    generator = backend.tuned_generator(model)
    try:
        tuned = _generate(
            ctx, generator, base["prompts"], max_new_tokens=base["max_new_tokens"], label="fine-tuned"
        )
    finally:
        generator.close()
    record = ModelRecord(
        id=job.id,
        kind=model.kind,
        base_model=job.base_model,
        job_id=job.id,
        team=job.team,
        channel=job.channel,
        created_at=utcnow(),
        path=model.path,
        remote_name=model.remote_name,
        system_prompt=data.system_prompt,
    )
    return finish_evaluation(ctx, base, tuned, model=record, metric=config.metric, seed=config.seed)


# --------------------------------------------------------------------------- pipelines


def run_pipeline(ctx: JobContext, backend: PipelineBackend) -> None:
    """The pipeline (module docstring), from whatever state the job is in."""
    data = prepare_data(ctx)
    ctx.check()
    base = baseline(ctx, data, backend)
    ctx.check()
    model = train(ctx, data, backend)
    ctx.check()
    evaluate_and_register(ctx, data, backend, base, model)


def run_local(ctx: JobContext) -> None:
    run_pipeline(ctx, LocalBackend(ctx))


#: The only backend whose jobs run in this worker (OpenAI jobs are driven by engine.openai_pipeline).
BACKEND = "local"


def _fail(ctx: JobContext, message: str, hint: str | None) -> bool:
    """Mark the job failed. False when the database refused (a full disk); never raises: the
    worker's exit code then tells the parent (:data:`~engine.scheduler.EXIT_STORAGE_FULL`)."""
    try:
        ctx.store.transition(
            ctx.job_id,
            JobState.FAILED,
            error=f"{message} {hint}" if hint else message,
            message=message,
            data={"hint": hint} if hint else None,
        )
    except (InvalidTransition, JobNotFound):
        pass
    except Exception as exc:  # sqlite3.OperationalError "database or disk is full"
        _say(f"could not record that job {ctx.job_id} failed: {exc}")
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


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def run(ctx: JobContext, pipeline: Callable[[JobContext], None] | None = None) -> int:
    """Run the job's pipeline to a final state. Returns the process exit code (0 unless it failed).

    A failure to write because FTBOT_HOME's disk is full (ENOSPC, or EFBIG past the file size
    limit: :func:`~engine.scheduler.storage_problem`) fails the job with that message, never
    leaves it active; when even that cannot be written, the exit code is
    :data:`~engine.scheduler.EXIT_STORAGE_FULL` and the parent says it.

    ``pipeline`` (default :func:`run_local`, for ``local`` jobs only) is what runs the steps; tests
    pass their own to see how failures and cancels end the job."""
    job = ctx.job
    state = job.state.value
    if job.is_final:
        return 0
    if job.state is JobState.QUEUED:  # started by hand, not by the scheduler
        try:
            ctx.store.transition(job.id, JobState.VALIDATING, expect=JobState.QUEUED, message="Started.")
        except InvalidTransition:
            return 0
    try:
        if pipeline is None:
            if job.backend != BACKEND:
                raise BackendError(
                    f"The worker cannot run {job.backend!r} jobs.", hint=f"Backends it runs: {BACKEND}."
                )
            pipeline = run_local
        pipeline(ctx)
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
            if _is_oom(exc):
                _fail(ctx, f"Ran out of memory while the job was {state}.", OOM_HINT)
            else:
                _fail(
                    ctx,
                    f"The worker hit an internal error: {type(exc).__name__}: {str(exc)[:300]}",
                    f"Details are in {ctx.dir / 'worker.log'}. Start the job again; report it if it repeats.",
                )
            return 1
    # Stopped: the job was cancelled (or failed from outside). Leave no half-done files.
    with contextlib.suppress(JobNotFound):
        if ctx.job.state is JobState.CANCELLED:
            remove_partial_files(ctx.settings, ctx.job_id)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.splitlines()[0])
    parser.add_argument("job_id")
    parser.add_argument("--home", type=Path, default=None, help="FTBOT_HOME (default: from the environment)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.home is not None:
        settings = replace(settings, home=args.home)
    store = Store.open(settings.db_path, datasets_dir=settings.datasets_dir)
    ctx = JobContext(store=store, settings=settings, job_id=args.job_id, resume=args.resume)

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
