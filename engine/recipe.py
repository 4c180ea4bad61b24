"""How a local job trains: the recipe chosen for this model, this much data and this device. Pure.

The guide's QLoRA values (lr 2e-4, r 16, alpha 32, batch 4 x accumulation 4, 3 epochs, cosine
schedule with 10% warm-up, 4-bit NF4 weights, LoRA on q/k/v/o_proj of every layer) are tuned for
models of billions of parameters on a GPU. :func:`plan_training` keeps them where they fit and says
what it changes, and why, everywhere else (``Plan.reasons``, shown in the job's thread):

- **Learning rate by model size** (when the user did not set ``lr=``): small models need a larger
  step. Measured on SmolLM2-135M: a 189-example routing task (issue 8) scored 0% at lr 2e-4 (it
  learned the one-word form, not the labels) and 76% at 1e-3; examples/labels.jsonl (252 training
  examples, 3 epochs, every layer, this CPU) 82% at 1e-3 and 93% at 2e-3. So 2e-3 up to 300M
  parameters; 5e-4 up to 1.5B, 3e-4 up to 4B (interpolated, not measured here); the guide's 2e-4
  above.
- **The CPU recipe** (no CUDA here): LoRA on full-precision weights (bitsandbytes' 4-bit CPU path
  trains at about half the speed: 59 vs ~100 tokens/s on SmolLM2 here; 4-bit only when the fp32
  weights would not fit in the free RAM); the output head evaluated only where there is an answer
  token to learn (the loss is the same number; the prompt's logits are never computed: about 40%
  less work per step with a 49k-token vocabulary); micro-batches of 8 (matrix products are more
  efficient on a CPU at that size) and an effective batch of 8 for a few hundred examples (more
  optimizer steps on little data), 16 from 400. LoRA stays on every layer: training only the upper
  layers stops the backward pass early (the upper third: 1.6x faster per step), but on SmolLM2's
  280-example routing task it reached 64% (upper third or half) where every layer reached 82%, so
  it is an option (``layers=N``), not the default.
- **Epochs by the amount of data** (when the user did not set ``epochs=``): about 80 optimizer steps
  at an effective batch of 8, so few examples get more passes: ``ceil(640 / examples)`` epochs,
  between 2 and 8 (160 examples: 4; 270: 3; 1,000 and more: 2).
- **Early stopping with the best checkpoint kept** (every recipe, when there are enough examples):
  a validation split is carved out of the *training* examples (10%, 8 to 64 of them; never the eval
  split, which must stay unseen for the verdict), its loss is measured after each epoch, training
  stops when it has not improved for ``patience`` epochs, and the adapter saved is the epoch with
  the lowest validation loss.

``recipe=guide`` (an option) trains with the guide's values exactly, on any device (4-bit wherever
bitsandbytes can): the reference that ``bench/train.py`` compares with. Values the user set
(``config.user_set``, or any value that differs from :class:`~engine.config.TrainConfig`'s default,
such as the builtin:tiny demo's) are always kept.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.config import DEMO_NOTE_PREFIX, TrainConfig

__all__ = ["ModelSize", "Plan", "lr_for_size", "plan_training", "validation_split"]

_DEFAULTS = TrainConfig()

#: (largest parameter count, learning rate) for LoRA when the user did not choose one.
LR_BY_SIZE: tuple[tuple[float, float], ...] = ((3e8, 2e-3), (1.5e9, 5e-4), (4e9, 3e-4), (math.inf, 2e-4))
CPU_MICRO_BATCH = 8
#: Effective batch: 8 below this many training examples, 16 from it.
LARGE_DATA_EXAMPLES = 400
#: Epochs when not set: about this many examples seen (80 steps x 8), clamped to EPOCH_RANGE.
EXAMPLES_TO_SEE = 640
EPOCH_RANGE = (2, 8)
#: Early stopping needs at least this many training examples (a validation split of 8 or more
#: leaves enough to train on); the split is VALIDATION_SHARE of them, clamped to VALIDATION_RANGE.
EARLY_STOPPING_MIN_EXAMPLES = 60
VALIDATION_SHARE = 0.1
VALIDATION_RANGE = (8, 64)
PATIENCE_EPOCHS = 1


@dataclass(frozen=True)
class ModelSize:
    """What the recipe needs to know about the base model (from its config, no weights)."""

    params: int
    num_layers: int
    fp32_gb: float = 0.0  # the weights in fp32, for the CPU's "does it fit in RAM" question


@dataclass(frozen=True)
class Plan:
    """The decided recipe. ``config`` is the job's config with the decided values filled in (what
    the trainer reads); the other fields are decisions TrainConfig has no field for."""

    recipe: str  # "cpu" | "gpu" | "guide"
    config: TrainConfig
    quantize: bool
    layers: tuple[int, ...] | None  # LoRA on these decoder layers only; None: every layer
    answer_only_logits: bool  # the output head only at answer tokens (our loss, the CPU recipe)
    validation_examples: int  # carved out of the training examples for early stopping (0: none)
    patience: int  # epochs without a better validation loss before stopping (0: no early stopping)
    reasons: tuple[str, ...]

    @property
    def early_stopping(self) -> bool:
        return self.patience > 0

    def to_dict(self) -> dict[str, Any]:
        """The decisions for the job's record (``resolved``) and the pre-flight event."""
        c = self.config
        return {
            "recipe": self.recipe,
            "quantize": self.quantize,
            "learning_rate": c.learning_rate,
            "epochs": c.epochs,
            "batch_size": c.batch_size,
            "grad_accum": c.grad_accum,
            "lora_layers": list(self.layers) if self.layers is not None else "all",
            "answer_only_logits": self.answer_only_logits,
            "validation_examples": self.validation_examples,
            "early_stopping_patience": self.patience if self.early_stopping else 0,
            "reasons": list(self.reasons),
        }


def lr_for_size(params: float) -> float:
    """The LoRA learning rate for a model of ``params`` parameters (:data:`LR_BY_SIZE`)."""
    return next(lr for limit, lr in LR_BY_SIZE if params <= limit)


def _chosen(config: TrainConfig, name: str) -> bool:
    """Whether ``name`` was chosen (by the user, or the builtin:tiny demo) rather than defaulted."""
    if name in config.user_set:
        return True
    if name in ("learning_rate", "epochs") and any(n.startswith(DEMO_NOTE_PREFIX) for n in config.notes):
        return True
    return getattr(config, name) != getattr(_DEFAULTS, name)


def _params(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def plan_training(
    config: TrainConfig,
    size: ModelSize,
    *,
    train_examples: int,
    device_kind: str,
    can_quantize: bool,
    free_ram_gb: float = 0.0,
    given_validation: int = 0,
) -> Plan:
    """Decide how this job trains (see the module docstring for every rule).

    ``train_examples`` counts the training examples before any validation split; ``device_kind``
    is ``"cuda"`` or ``"cpu"``; ``can_quantize`` is the 4-bit probe's answer on this device;
    ``free_ram_gb`` (CPU) decides whether full-precision weights fit (0: unknown, assume they do).
    ``given_validation``: the caller has this many validation examples of its own (nothing is
    carved out of the training examples then).
    """
    reasons: list[str] = []
    changes: dict[str, Any] = {}
    guide = config.recipe == "guide"
    cpu = device_kind != "cuda"
    recipe = "guide" if guide else ("cpu" if cpu else "gpu")
    quantize = _quantization(
        config,
        size,
        cpu=cpu,
        guide=guide,
        can_quantize=can_quantize,
        free_ram_gb=free_ram_gb,
        reasons=reasons,
    )
    if not guide:
        _learning_rate(config, size, changes, reasons)
    layers = _layers(config, size, cpu=cpu, guide=guide, reasons=reasons)
    if cpu and not guide:
        _cpu_batch(config, train_examples, changes, reasons)
    validation, patience = (
        (0, 0) if guide else _early_stopping(config, train_examples, given_validation, changes, reasons)
    )
    planned = replace(config, **changes) if changes else config
    return Plan(
        recipe=recipe,
        config=planned,
        quantize=quantize,
        layers=layers,
        answer_only_logits=cpu and not guide,
        validation_examples=validation,
        patience=patience,
        reasons=tuple(reasons),
    )


def _quantization(
    config: TrainConfig,
    size: ModelSize,
    *,
    cpu: bool,
    guide: bool,
    can_quantize: bool,
    free_ram_gb: float,
    reasons: list[str],
) -> bool:
    """Whether the weights are loaded in 4-bit."""
    if config.quantize == "off":
        return False
    if config.quantize == "on" or guide or not cpu:
        if not can_quantize:
            reasons.append("4-bit loading is not available here, so LoRA trains on full-precision weights.")
        return can_quantize
    # auto on the CPU: full precision unless it does not fit in RAM
    too_big = free_ram_gb > 0 and size.fp32_gb > 0.8 * free_ram_gb
    if too_big and can_quantize:
        reasons.append(
            f"The model's full-precision weights ({size.fp32_gb:.1f} GB) do not fit in the free RAM "
            f"({free_ram_gb:.1f} GB), so it trains in 4-bit (slower on a CPU)."
        )
        return True
    reasons.append(
        "No GPU here: LoRA on full-precision weights, which trains about twice as fast on a CPU as "
        "bitsandbytes' 4-bit path (quantize=on forces 4-bit)."
    )
    return False


def _learning_rate(config: TrainConfig, size: ModelSize, changes: dict[str, Any], reasons: list[str]) -> None:
    """The learning rate for the model's size, unless the user chose one."""
    if _chosen(config, "learning_rate"):
        return
    lr = lr_for_size(size.params)
    if lr != config.learning_rate:
        changes["learning_rate"] = lr
        reasons.append(
            f"lr {lr:g} for a {_params(size.params)}-parameter model: the guide's {config.learning_rate:g} is "
            "tuned for models of billions of parameters, and small models need a larger step (on SmolLM2-135M "
            "a routing task reached 93% at 2e-3, 82% at 1e-3 and 0% at 2e-4)."
        )


def _layers(
    config: TrainConfig, size: ModelSize, *, cpu: bool, guide: bool, reasons: list[str]
) -> tuple[int, ...] | None:
    """The layers LoRA trains (None: every layer), and the CPU recipe's output head."""
    if config.lora_layers.isdigit() and size.num_layers:
        count = min(int(config.lora_layers), size.num_layers)
        layers = tuple(range(size.num_layers - count, size.num_layers)) if count < size.num_layers else None
        reasons.append(
            f"LoRA on the upper {len(layers) if layers else size.num_layers} of {size.num_layers} layers, as asked "
            "(layers=): the backward pass stops there, so a step costs less; fewer layers usually learn less."
        )
        return layers
    if cpu and not guide:
        reasons.append(
            "LoRA on every layer (layers=N would train only the upper N: faster, but on SmolLM2 the upper third "
            "reached 64% on a routing task where every layer reached 82%); the output head runs only on "
            "answer tokens, which gives the same loss for about 40% less work per step."
        )
    return None


def _cpu_batch(config: TrainConfig, train_examples: int, changes: dict[str, Any], reasons: list[str]) -> None:
    """The CPU recipe's batch, unless the user chose the batch or the accumulation."""
    if _chosen(config, "batch_size") or _chosen(config, "grad_accum"):
        return
    effective = 8 if train_examples < LARGE_DATA_EXAMPLES else 16
    changes["batch_size"] = CPU_MICRO_BATCH
    changes["grad_accum"] = max(1, effective // CPU_MICRO_BATCH)
    reasons.append(
        f"Batches of {CPU_MICRO_BATCH} examples (an effective batch of {effective}"
        + (": more optimizer steps on few examples" if effective == 8 else "")
        + ")."
    )


def _early_stopping(
    config: TrainConfig,
    train_examples: int,
    given_validation: int,
    changes: dict[str, Any],
    reasons: list[str],
) -> tuple[int, int]:
    """The validation split carved out of the training examples, the early-stopping patience and
    the epochs (not for the guide recipe). Returns ``(validation_examples, patience)``."""
    validation = 0
    patience = 0
    if given_validation > 0:
        patience = PATIENCE_EPOCHS
    elif train_examples >= EARLY_STOPPING_MIN_EXAMPLES:
        validation = validation_size(train_examples)
        patience = PATIENCE_EPOCHS
    if not _chosen(config, "epochs"):
        remaining = max(1, train_examples - validation)
        epochs = min(max(math.ceil(EXAMPLES_TO_SEE / remaining), EPOCH_RANGE[0]), EPOCH_RANGE[1])
        if epochs != config.epochs:
            changes["epochs"] = epochs
        reasons.append(
            f"Up to {epochs} epochs for {remaining} training examples (about {EXAMPLES_TO_SEE} examples seen in all)"
            + ("; training stops early when the validation loss stops falling." if patience else ".")
        )
    if given_validation:
        reasons.append(
            f"The loss of the {given_validation} validation examples after each epoch picks the checkpoint that is kept."
        )
    elif validation:
        reasons.append(
            f"{validation} training examples are held back as a validation set: its loss after each epoch picks the "
            "checkpoint that is kept (the eval examples stay unseen for the verdict)."
        )
    else:
        reasons.append(
            f"Too few examples ({train_examples}) to hold back a validation set: no early stopping; the last epoch is kept."
        )
    return validation, patience


def validation_size(train_examples: int) -> int:
    low, high = VALIDATION_RANGE
    return min(max(round(VALIDATION_SHARE * train_examples), low), high)


def validation_split(
    examples: Sequence[Sequence[dict[str, Any]]], size: int, *, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """``(train, validation)``: ``size`` examples chosen by a hash of their content and the seed
    (deterministic: a resumed job gets the same split), the rest for training, order kept."""
    if size <= 0 or size >= len(examples):
        return list(examples), []

    def key(item: tuple[int, Sequence[dict[str, Any]]]) -> str:
        text = json.dumps(item[1], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(f"{seed}:{item[0]}:{text}".encode()).hexdigest()

    chosen = {i for i, _ in sorted(enumerate(examples), key=key)[:size]}
    train = [ex for i, ex in enumerate(examples) if i not in chosen]
    validation = [ex for i, ex in enumerate(examples) if i in chosen]
    return train, validation
