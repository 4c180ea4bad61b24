"""The local backend of the job runner: QLoRA on this machine, generation with local_generation.

:class:`LocalBackend` implements :class:`engine.backends.Backend` for ``local`` jobs, which run in
the worker process (``python -m engine.worker``, started by the scheduler): training runs to its
end in one call (checkpoints each epoch; a resumed job continues from the latest one), after a
pre-flight estimate that refuses a job that cannot fit. :class:`LocalGenerator` answers the
baseline's and the evaluation's prompts with a local model (base, or base + adapter).

torch and peft are imported inside functions only (``import engine`` stays light).
"""

from __future__ import annotations

import contextlib
import gc
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.backends import TrainedModel, local_qlora
from engine.backends.local_builtin import resolve_base_model
from engine.backends.local_generation import generate_batch
from engine.backends.local_model import context_length, load_base, prompt_token_counter
from engine.config import TrainConfig
from engine.diagnosis import OOM_HINT
from engine.errors import ResourceExhausted
from engine.paths import adapter_dir, checkpoints_dir, latest_checkpoint
from engine.pipeline import Cancelled, EvalData, JobContext, job_model_record, saved_baseline
from engine.progress import format_duration
from engine.store import ModelRecord

#: Eval prompts per batch of local generation; a cancel is noticed between batches.
EVAL_BATCH_SIZE = 16


class LocalGenerator:
    """A local model (base, or base + adapter) in this process: :class:`engine.backends.Generator`."""

    batch_size = EVAL_BATCH_SIZE

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = context_length(model, tokenizer)
        self.max_new_tokens_cap = max(16, self.context_tokens // 2)
        self._count = prompt_token_counter(tokenizer)

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._count(messages)

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]:
        return generate_batch(
            self.model,
            self.tokenizer,
            conversations,
            max_new_tokens=max_new_tokens,
            batch_size=EVAL_BATCH_SIZE,
        )

    def close(self) -> None:
        self.model = self.tokenizer = None
        gc.collect()
        with contextlib.suppress(Exception):
            # lazy: torch stays out of `import engine`
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class LocalBackend:
    """QLoRA on this machine (engine.backends.local_qlora): :class:`engine.backends.Backend`.

    A builtin base model is built when the backend is made (builtin:smollm2: a conversion of
    about half a minute); its stages go to the job's thread as ``log`` events."""

    name = "local"
    start_message = "Started."

    def __init__(self, ctx: JobContext) -> None:
        self.base_path = resolve_base_model(
            ctx.job.base_model, ctx.settings.builtin_dir, progress=lambda message: ctx.emit("log", message)
        )

    def _load(self, adapter: Path | None) -> LocalGenerator:
        model, tokenizer = load_base(self.base_path, adapter=adapter)
        return LocalGenerator(model, tokenizer)

    def prepare(self, ctx: JobContext, data: EvalData) -> None:
        """Nothing to record: the library versions are part of the split's record."""

    def base_generator(self, ctx: JobContext) -> LocalGenerator:
        return self._load(None)

    def tuned_generator(self, ctx: JobContext, model: TrainedModel) -> LocalGenerator:
        return self._load(model.path)

    def started(self, ctx: JobContext) -> bool:
        """Never: local training runs to its end in :meth:`train` (a resumed job trains again
        from its latest checkpoint)."""
        return False

    def poll(self, ctx: JobContext) -> TrainedModel | None:
        return None

    def _preflight(self, ctx: JobContext, data: EvalData, config: TrainConfig) -> dict[str, Any]:
        """The pre-flight estimate (a ``preflight`` event, ``result["preflight"]``), with the
        evaluation's time (about the zero-shot baseline's again). Raises ResourceExhausted when
        the job cannot fit here."""
        # The eval split is never shown to training, not even for early stopping: the recipe holds
        # back its own validation split from the training examples (engine/recipe.py).
        estimate = dict(
            local_qlora.preflight(base_model=self.base_path, train_examples=data.train, config=config)
        )
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
        return estimate

    def train(self, ctx: JobContext, data: EvalData) -> TrainedModel:
        """Pre-flight, then QLoRA to the end (from the latest checkpoint when there is one); the
        adapter is copied to the job's adapter directory. Raises Cancelled when stopped."""
        job = ctx.job
        config = TrainConfig.from_dict(job.config)
        estimate = self._preflight(ctx, data, config)
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
        ctx.record(
            training=dict(getattr(result, "metrics", {}) or {}),
            quantized=bool(getattr(result, "quantized", False)),
            resolved=dict(getattr(result, "resolved", {}) or {}),
        )
        return TrainedModel(kind="local_adapter", path=target)

    def finished_training(self, ctx: JobContext, model: TrainedModel) -> tuple[str, dict[str, Any]]:
        return (
            "Training finished. Evaluating the fine-tuned model on the same examples.",
            {"trained": model.to_dict(), "adapter_dir": str(model.path) if model.path else None},
        )

    def after_training(self, ctx: JobContext, model: TrainedModel) -> None:
        """Checkpoints (adapter + optimizer state, large on real models) and the trainer's copy of
        the adapter are no longer needed; the chart next to them stays."""
        train_dir = checkpoints_dir(ctx.settings, ctx.job_id)
        for name in ("checkpoints", "adapter"):
            path = train_dir / name
            if model.path is None or path.resolve() != model.path.resolve():
                shutil.rmtree(path, ignore_errors=True)

    def trained_model(self, ctx: JobContext) -> TrainedModel:
        saved = ctx.job.result.get("trained")
        model = TrainedModel.from_dict(saved) if saved else None
        if model is None or not model.exists():
            raise ResourceExhausted(
                "The trained model of this job is missing, so it cannot be evaluated.",
                hint="Start the job again.",
            )
        return model

    def model_record(self, ctx: JobContext, model: TrainedModel, system_prompt: str | None) -> ModelRecord:
        """The fine-tune's id is the job's id; it is its adapter directory."""
        return job_model_record(
            ctx, model_id=ctx.job.id, kind=model.kind, path=model.path, system_prompt=system_prompt
        )
