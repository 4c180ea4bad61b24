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

Backend seam: the pipeline above is :func:`run_pipeline`; what differs between backends is a
:class:`PipelineBackend` (a generator for the base model, one for the fine-tune, and ``train``).
:data:`PIPELINES` maps ``job.backend`` to the function that runs a job: ``local`` is
:class:`LocalBackend`; an OpenAI backend is ``run_pipeline(ctx, OpenAIBackend(ctx))`` with
``generate`` = chat completions and ``train`` = upload + create + follow (resuming by remote id).
A pipeline that drives its job some other way (engine/openai_pipeline.py polls from the
scheduler) shares the generation-agnostic halves: :func:`prepare_data`, :func:`measure_baseline`
and :func:`finish_evaluation` (same files, keys and events for every backend).

torch/transformers/peft are imported inside functions only (DESIGN.md's import rules).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from engine.errors import (
    BackendError,
    DatasetNotFound,
    FtbotError,
    InvalidTransition,
    JobNotFound,
    ResourceExhausted,
    UsageError,
)
from engine.jobs import Job, JobState
from engine.progress import ProgressEvent, utcnow
from engine.scheduler import (
    OOM_HINT,
    adapter_dir,
    checkpoints_dir,
    latest_checkpoint,
    remove_partial_files,
    run_dir,
)
from engine.settings import Settings
from engine.store import ModelRecord, Store

log = logging.getLogger("engine.worker")

EVAL_BATCH_SIZE = 16
# How often should_stop() looks at the job's state in the database (seconds).
_STATE_POLL_SECONDS = 0.5


class Cancelled(Exception):
    """The job was cancelled (or ended from outside) while this worker ran."""


# --------------------------------------------------------------------------- context


class StoreSink:
    """A progress sink that appends every event to the job's log in SQLite (the parent relays it)."""

    def __init__(self, store: Store, job_id: str) -> None:
        self._store = store
        self._job_id = job_id

    def emit(self, event: ProgressEvent) -> None:
        if event.job_id != self._job_id:
            event = replace(event, job_id=self._job_id)
        if event.at is None:
            event = replace(event, at=utcnow())
        self._store.add_event(event)


@dataclass
class JobContext:
    """What a pipeline needs: the job, where to write, how to report, whether to stop."""

    store: Store
    settings: Settings
    job_id: str
    stop_flag: threading.Event = field(default_factory=threading.Event)
    resume: bool = False
    _last_check: float = -1e9
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.sink = StoreSink(self.store, self.job_id)
        self.dir = run_dir(self.settings, self.job_id)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def job(self) -> Job:
        return self.store.get_job(self.job_id)

    def emit(self, kind: str, message: str = "", **kw: Any) -> None:
        self.sink.emit(ProgressEvent(self.job_id, kind, message, **kw))

    def alert(self, code: str, message: str, **data: Any) -> None:
        self.emit("alert", message, data={"code": code, **data})

    def record(self, **result: Any) -> None:
        self.store.update_job(self.job_id, result=result)

    def should_stop(self) -> bool:
        """True once the job was cancelled (SIGTERM, or its state became final in the database)."""
        if self._stopped or self.stop_flag.is_set():
            self._stopped = True
            return True
        now = time.monotonic()
        if now - self._last_check >= _STATE_POLL_SECONDS:
            self._last_check = now
            with contextlib.suppress(JobNotFound):
                self._stopped = self.store.get_job(self.job_id).is_final
        return self._stopped

    def check(self) -> None:
        if self.should_stop():
            raise Cancelled()

    def advance(self, to: JobState, message: str, **changes: Any) -> Job:
        """Move the job on; raise :class:`Cancelled` when it was ended from outside meanwhile."""
        try:
            return self.store.transition(self.job_id, to, message=message, changes=changes or None)
        except InvalidTransition as exc:
            raise Cancelled() from exc


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class EvalData:
    train: list[list[dict[str, Any]]]  # messages lists
    eval: list[list[dict[str, Any]]]
    source: str  # "file" | "holdout"
    leakage: int
    system_prompt: str | None


def _messages(example: Any) -> list[dict[str, Any]]:
    messages = example.messages if hasattr(example, "messages") else example["messages"]
    return [dict(m) for m in messages]


def _common_system_prompt(examples: Sequence[Sequence[Mapping[str, Any]]]) -> str | None:
    """The system prompt most training examples use (so /ask can use it too), if any."""
    prompts = Counter(
        m.get("content")
        for ex in examples
        for m in ex[:1]
        if m.get("role") == "system" and isinstance(m.get("content"), str)
    )
    if not prompts:
        return None
    text, count = prompts.most_common(1)[0]
    return text if count * 2 >= len(examples) else None


def _load_examples(path: Path) -> list[Any]:
    from engine import dataset

    if not Path(path).is_file():
        raise DatasetNotFound(
            f"The stored copy of this dataset ({Path(path).name}) is missing from the data directory.",
            hint="Upload the file again and start a new job.",
        )

    # read_examples yields the usable examples (invalid lines were reported at upload time).
    return [ex for ex in dataset.read_examples(path) if getattr(ex, "ok", True)]


def prepare_data(ctx: JobContext) -> EvalData:
    """Step 1: the training and eval examples (deterministic: a resumed job gets the same split)."""
    from engine import dataset
    from engine.config import TrainConfig

    job = ctx.job
    config = TrainConfig.from_dict(job.config)
    record = ctx.store.get_dataset(job.dataset_hash)
    examples = _load_examples(record.path)
    if job.eval_dataset_hash:
        eval_record = ctx.store.get_dataset(job.eval_dataset_hash)
        train_ex, eval_ex = examples, _load_examples(eval_record.path)
        source = "file"
    else:
        train_ex, eval_ex = dataset.split(examples, eval_fraction=config.eval_fraction, seed=config.seed)
        source = "holdout"
    leaks = list(dataset.leakage(train_ex, eval_ex))
    leaked_lines = {pair[0] for pair in leaks}
    if leaked_lines:  # train on them and the eval would measure memory, not skill
        train_ex = [ex for ex in train_ex if getattr(ex, "line", None) not in leaked_lines]
    train = [_messages(ex) for ex in train_ex]
    evals = [_messages(ex) for ex in eval_ex]
    if not train or not evals:
        raise UsageError(
            f"Not enough examples to train and evaluate: {len(train)} for training, {len(evals)} for evaluation.",
            hint="Add more examples (at least 10 usable ones), or give a separate eval file.",
        )
    if job.state is JobState.VALIDATING:
        if leaks:
            ctx.alert(
                "leakage",
                f"{len(leaked_lines)} training example(s) ask the same question as an eval example; they were "
                "left out of training so the evaluation stays honest.",
                pairs=[list(p)[:2] for p in leaks[:20]],
            )
        split_info = {
            "source": source,
            "train_examples": len(train),
            "eval_examples": len(evals),
            "leakage": len(leaks),  # (train line, eval line) pairs with the same prompt
            "left_out_of_training": len(leaked_lines),
            "eval_dataset_hash": job.eval_dataset_hash,
            "eval_fraction": None if source == "file" else config.eval_fraction,
            "seed": config.seed,
        }
        ctx.record(eval_split=split_info, versions=library_versions())
        what = "your eval file" if source == "file" else f"a held-out {config.eval_fraction:.0%} split"
        ctx.advance(
            JobState.BASELINE,
            f"Dataset ready: {len(train)} training examples; evaluating on {len(evals)} examples from {what}. "
            "Measuring the base model first.",
        )
    return EvalData(train, evals, source, len(leaks), _common_system_prompt(train))


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


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
    """What training produced: a local adapter directory or a remote model name."""

    kind: str  # "local_adapter" | "openai" (engine.store.MODEL_KINDS)
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
    a backend only generates and trains. ``engine.backends.openai_ft`` plugs in the same way."""

    def base_generator(self) -> Generator: ...

    def tuned_generator(self, model: TrainedModel) -> Generator: ...

    def train(self, data: EvalData) -> TrainedModel:
        """Train (or resume training) and return the model; raise :class:`Cancelled` when the
        job was stopped. Emits its own progress events through the context's sink."""
        ...


# --------------------------------------------------------------------------- the local backend


def token_counter_for(tokenizer: Any) -> Callable[[list[dict[str, Any]]], int]:
    """Count a conversation's tokens as the model sees them (its chat template)."""
    from engine.backends.local_serving import render_prompt

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
        from engine.backends.local_serving import context_length

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
        from engine.backends.local_serving import generate_batch

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
        from engine.backends.local_tiny import resolve_base_model

        self.ctx = ctx
        self.base_path = resolve_base_model(ctx.job.base_model, ctx.settings.builtin_dir)

    def _load(self, adapter: Path | None) -> LocalGenerator:
        from engine.backends.local_serving import load_base

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
        estimate = local_qlora.preflight(
            base_model=self.base_path, train_examples=data.train, eval_examples=data.eval, config=config
        )
        estimate = dict(estimate)
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
            eval_examples=data.eval,
            config=config,
            output_dir=checkpoints_dir(ctx.settings, job.id),
            sink=ctx.sink,
            should_stop=ctx.should_stop,
            resume_from=resume_from,
            dataset_hash=job.dataset_hash,
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
    ctx.emit(
        "log",
        f"{label}: {len(answers)}/{len(conversations)} answers",
        step=len(answers),
        total=len(conversations),
        data={"phase": label},
    )
    return answers


def baseline(ctx: JobContext, data: EvalData, backend: PipelineBackend) -> dict[str, Any]:
    """Step 2: the base model zero-shot and few-shot (:func:`measure_baseline` with the backend's
    base generator). Returns the saved baseline record."""
    from engine.config import TrainConfig

    config = TrainConfig.from_dict(ctx.job.config)
    saved = _saved_baseline(ctx, data)
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


def _saved_baseline(ctx: JobContext, data: EvalData) -> dict[str, Any] | None:
    """``baseline.json`` when it was measured on exactly these eval prompts, else None."""
    from engine import prompts

    path = ctx.dir / "baseline.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    eval_prompts = [prompts.eval_prompt(ex) for ex in data.eval]
    references = [prompts.reference(ex) for ex in data.eval]
    if saved.get("references") == references and saved.get("prompts") == eval_prompts:
        return saved
    return None


Generate = Callable[[Sequence[Sequence[Mapping[str, Any]]], int, str], list[str]]
"""``generate(conversations, max_new_tokens, label) -> answers``, in order."""


def measure_baseline(
    ctx: JobContext,
    data: EvalData,
    *,
    generate: Generate,
    token_counter: Callable[[list[dict[str, Any]]], int],
    context_tokens: int,
    max_new_tokens_cap: int,
    metric: str | None,
    seed: int,
) -> dict[str, Any]:
    """The base model zero-shot and few-shot on the eval split, scored, for any backend (generation
    injected). Saved to ``<run dir>/baseline.json`` (reused when a resumed job asks again with the
    same prompts), the job's ``result`` (``baseline``, ``task``, ``metric``) and a ``baseline``
    event. Moves a job in ``baseline`` on to ``training``. Returns the saved record."""
    from engine import evaluate, prompts

    eval_prompts = [prompts.eval_prompt(ex) for ex in data.eval]
    references = [prompts.reference(ex) for ex in data.eval]
    path = ctx.dir / "baseline.json"
    saved = _saved_baseline(ctx, data)
    if saved is not None:
        if ctx.job.state is JobState.BASELINE:
            ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
        return saved

    max_new = prompts.max_new_tokens(references, token_counter, cap=max_new_tokens_cap)
    shots = prompts.select_shots(
        data.train,
        eval_prompts=eval_prompts,
        token_counter=token_counter,
        context_tokens=context_tokens,
        max_new_tokens=max_new,
        seed=seed,
    )
    zero = generate(eval_prompts, max_new, "baseline zero-shot")
    ctx.check()
    few = generate([prompts.few_shot_prompt(p, shots) for p in eval_prompts], max_new, "baseline few-shot")
    report = evaluate.build_report(references, {"zero_shot": zero, "few_shot": few}, metric=metric, seed=seed)
    saved = {
        "task": report["task"],
        "metric": report["metric"],
        "higher_is_better": report["higher_is_better"],
        "k": len(shots),
        "max_new_tokens": max_new,
        "prompts": eval_prompts,
        "references": references,
        "zero_shot": zero,
        "few_shot": few,
        "metrics": report["baseline"],
        "flags": report["flags"],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, ensure_ascii=False))
    tmp.replace(path)  # atomic: a resumed job never reads half a file
    summary = {
        "task": report["task"],
        "metric": report["metric"],
        "n": report["n"],
        "k": len(shots),
        "zero_shot": report["baseline"]["zero_shot"],
        "few_shot": report["baseline"]["few_shot"],
    }
    ctx.record(baseline=summary, task=report["task"], metric=report["metric"])
    primary = report["metric"]
    ctx.emit(
        "baseline",
        f"Baseline on {report['n']} eval examples ({report['task']} task, metric {primary}): "
        f"zero-shot {evaluate.format_metric(primary, report['baseline']['zero_shot'].get(primary))}, "
        f"few-shot with {len(shots)} examples "
        f"{evaluate.format_metric(primary, report['baseline']['few_shot'].get(primary))}.",
        data=summary,
    )
    if ctx.job.state is JobState.BASELINE:
        ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
    return saved


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


def finish_evaluation(
    ctx: JobContext,
    base: Mapping[str, Any],
    tuned: Sequence[str],
    *,
    model: ModelRecord,
    metric: str | None,
    seed: int,
) -> Job:
    """Score the fine-tuned answers against the saved baseline and finish the job, for any
    backend: the report (``report.json``, the ``evals`` table, an ``evaluation`` event, the chart,
    one alert per flag), the predictions file (``prompt``, ``reference``, ``zero_shot``,
    ``few_shot``, ``finetuned`` per line), ``model`` registered with the verdict, the promotion
    rule (not ``worse`` -> the channel's default; the job records which), and the job
    ``succeeded`` with ``model_id = model.id``."""
    from engine import evaluate, prompts

    job = ctx.job
    references = list(base["references"])
    texts = [prompts.prompt_text(p) for p in base["prompts"]]
    report = evaluate.build_report(
        references,
        {"zero_shot": base["zero_shot"], "few_shot": base["few_shot"], "finetuned": list(tuned)},
        task=base["task"],
        metric=metric,
        prompts=texts,
        seed=seed,
    )
    report["k"] = base["k"]
    report["max_new_tokens"] = base["max_new_tokens"]
    report["eval_split"] = dict(job.result.get("eval_split") or {})
    report["text"] = evaluate.render_text(report)

    predictions = ctx.dir / "predictions.jsonl"
    with open(predictions, "w", encoding="utf-8") as out:
        for i, reference in enumerate(references):
            line = {
                "prompt": texts[i],
                "reference": reference,
                "zero_shot": base["zero_shot"][i],
                "few_shot": base["few_shot"][i],
                "finetuned": tuned[i],
                "messages": base["prompts"][i],
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    (ctx.dir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
    ctx.store.save_eval(job.id, report)
    ctx.emit(
        "evaluation", report.get("summary", ""), data={k: v for k, v in report.items() if k != "per_example"}
    )
    with contextlib.suppress(Exception):  # a chart is a nicety; never fail an evaluated job for it
        from engine import charts

        chart = charts.eval_chart(report, ctx.dir / "eval.png")
        ctx.emit("artifact", "Evaluation chart.", data={"kind": "eval_chart", "path": str(chart)})
    for flag in report.get("flags") or []:
        ctx.alert(str(flag.get("code", "flag")), str(flag.get("message", "")))

    verdict = report.get("verdict")
    with contextlib.suppress(FtbotError):  # a resumed evaluation registered it already
        ctx.store.add_model(replace(model, verdict=verdict, metrics=report.get("finetuned") or {}))
    promoted = evaluate.should_promote(verdict)
    if promoted:
        ctx.store.set_default(job.team, job.channel, model.id, set_by="ftbot (promotion rule)")
        promotion = (
            f"The fine-tuned model {model.id} is now this channel's default model (verdict: {verdict})."
        )
    else:
        promotion = (
            f"The fine-tuned model {model.id} was NOT made the channel's default: it did worse than the "
            f"baseline. You can still use it with model={model.id}."
        )
    ctx.alert("promotion", promotion, promoted=promoted, model_id=model.id)
    result = {
        "task": report["task"],
        "metric": report["metric"],
        "baseline": report["baseline"],
        "finetuned": report["finetuned"],
        "verdict": verdict,
        "predictions": str(predictions),
        "report_path": str(ctx.dir / "report.json"),
        "promoted": promoted,
        "promotion": promotion,
        "summary": report.get("summary"),
    }
    return ctx.advance(JobState.SUCCEEDED, report.get("summary") or "Done.", model_id=model.id, result=result)


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


#: ``job.backend`` -> the function that runs such a job in this worker.
PIPELINES: dict[str, Callable[[JobContext], None]] = {"local": run_local}


def _fail(ctx: JobContext, message: str, hint: str | None) -> None:
    with contextlib.suppress(InvalidTransition, JobNotFound):
        ctx.store.transition(
            ctx.job_id,
            JobState.FAILED,
            error=f"{message} {hint}" if hint else message,
            message=message,
            data={"hint": hint} if hint else None,
        )


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def run(ctx: JobContext) -> int:
    """Run the job's pipeline to a final state. Returns the process exit code (0 unless it failed)."""
    job = ctx.job
    if job.is_final:
        return 0
    if job.state is JobState.QUEUED:  # started by hand, not by the scheduler
        try:
            ctx.store.transition(job.id, JobState.VALIDATING, expect=JobState.QUEUED, message="Started.")
        except InvalidTransition:
            return 0
    pipeline = PIPELINES.get(job.backend)
    try:
        if pipeline is None:
            raise BackendError(
                f"The worker cannot run {job.backend!r} jobs.",
                hint=f"Backends it runs: {', '.join(sorted(PIPELINES))}.",
            )
        pipeline(ctx)
        return 0
    except Cancelled:
        pass
    except FtbotError as exc:
        if not ctx.should_stop():
            log.info("job %s failed: %s", ctx.job_id, exc)
            _fail(ctx, exc.message, exc.hint)
            return 1
    except BaseException as exc:
        if ctx.should_stop() and not isinstance(exc, KeyboardInterrupt):
            pass  # stopping may break things half way; the job is cancelled anyway
        else:
            traceback.print_exc()
            if _is_oom(exc):
                _fail(ctx, f"Ran out of memory while the job was {ctx.job.state.value}.", OOM_HINT)
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
        store.close()


if __name__ == "__main__":
    sys.exit(main())
