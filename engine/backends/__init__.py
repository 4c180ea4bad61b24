"""What a backend must do for the job runner (:mod:`engine.runner`), and the values they share.

A backend trains and generates; :mod:`engine.runner` owns everything else (the step order, the
job's states and events, the eval split, the scoring, the charts, the registry, promotion and
the single error-to-failure path). Two backends implement :class:`Backend` today:

- ``local`` (:class:`engine.backends.local_job.LocalBackend`): QLoRA on this machine, in the
  worker process (``python -m engine.worker``); training runs to the end in one call.
- ``openai`` (:class:`engine.backends.openai_backend.OpenAIBackend`): OpenAI's fine-tuning API,
  driven by scheduler pollers in the bot process; training starts a remote job that later
  ticks poll (a restart re-attaches to it: the remote id is stored on the job).

A new backend (a cluster, a serving engine) implements :class:`Backend` and gives the runner a
:class:`Generator` for evaluation. This module imports no ML library and no other project
module at run time (the types named in hints are imported for type checkers only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.pipeline import EvalData, JobContext
    from engine.store import ModelRecord


class Generator(Protocol):
    """Answers chat conversations with one model (the base model, or the fine-tune).

    The runner asks for at most :attr:`batch_size` answers per :meth:`generate` call and checks
    for a cancel between calls, so a long evaluation stops soon after the job is cancelled."""

    #: The most tokens (prompt + answer) the model accepts (for choosing few-shot examples).
    context_tokens: int
    #: The most new tokens an answer may be given (the cap of the answer length rule).
    max_new_tokens_cap: int
    #: How many conversations one :meth:`generate` call answers at most.
    batch_size: int

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of ``messages`` as the model sees them."""
        ...

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]:
        """One answer per conversation, in order (greedy: the same prompts give the same answers)."""
        ...

    def close(self) -> None:
        """Free the model (memory, GPU). The generator is not used again."""
        ...


@dataclass(frozen=True)
class TrainedModel:
    """What training produced: ``kind`` is one of ``engine.store.MODEL_KINDS``; ``path`` the
    adapter directory of a local fine-tune; ``name`` the remote model's name (OpenAI's ``ft:...``).

    A local job records it as ``job.result["trained"]`` (:meth:`to_dict`) so a resumed
    evaluation finds it."""

    kind: str
    path: Path | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path) if self.path else None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainedModel:
        path = raw.get("path")
        return cls(kind=str(raw["kind"]), path=Path(path) if path else None)

    def exists(self) -> bool:
        """Whether the model is still there to evaluate (a local adapter's directory exists)."""
        return self.path.exists() if self.path is not None else bool(self.name)


class Backend(Protocol):
    """What a backend does for :mod:`engine.runner`. Every method may raise
    :class:`~engine.errors.FtbotError` (the job fails with its message and hint) or
    :class:`~engine.pipeline.Cancelled` (the job was stopped); the runner moves the job between
    states, never the backend."""

    #: The backend's name (``Job.backend``).
    name: str
    #: The message of the job's move from ``queued`` to ``validating``.
    start_message: str

    def prepare(self, ctx: JobContext, data: EvalData) -> None:
        """The data is ready (every pass, so it must be idempotent): record or check what the
        backend needs before the baseline (e.g. its library versions)."""
        ...

    def base_generator(self, ctx: JobContext) -> Generator:
        """The base model, for the baseline (zero-shot and few-shot)."""
        ...

    def train(self, ctx: JobContext, data: EvalData) -> TrainedModel | None:
        """Train on ``data.train`` (never on the eval split). Returns the model when training is
        done; None when it was started elsewhere (a remote job) and :meth:`poll` follows it.
        Emits its own progress events (``preflight``, ``step``...) through ``ctx``."""
        ...

    def started(self, ctx: JobContext) -> bool:
        """Whether the job's training runs elsewhere already (then :meth:`poll`, not :meth:`train`)."""
        ...

    def poll(self, ctx: JobContext) -> TrainedModel | None:
        """Follow training started elsewhere once: the model when it is done, else None (still
        running, or the backend ended the job: the remote job failed or was cancelled)."""
        ...

    def finished_training(self, ctx: JobContext, model: TrainedModel) -> tuple[str, dict[str, Any]]:
        """The message and the job's ``result`` keys of the move from training to evaluating."""
        ...

    def after_training(self, ctx: JobContext, model: TrainedModel) -> None:
        """The job is evaluating: drop what training no longer needs (e.g. checkpoints)."""
        ...

    def trained_model(self, ctx: JobContext) -> TrainedModel:
        """A job resumed in ``evaluating``: the model its training recorded. Raises an
        :class:`~engine.errors.FtbotError` when it is gone."""
        ...

    def tuned_generator(self, ctx: JobContext, model: TrainedModel) -> Generator:
        """The fine-tuned model, for the evaluation (same prompts, same settings as the baseline)."""
        ...

    def model_record(self, ctx: JobContext, model: TrainedModel, system_prompt: str | None) -> ModelRecord:
        """How the fine-tune is registered (its id, kind, path or remote name)."""
        ...
