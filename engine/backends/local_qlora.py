"""Local QLoRA fine-tuning: the recipe, top to bottom.

:func:`train` runs one job's training on this machine with transformers + peft + trl + bitsandbytes
(all imported inside functions: ``import engine`` never loads torch). The steps, in order:

1. **Tokenizer.** Load it; give it a pad token if it has none (the EOS token, masked out of the loss
   by the collator); refuse a model without a chat template; check that the template ends assistant
   turns with the EOS token (otherwise the tuned model may not learn to stop: a note says so).
2. **Loss mask.** Loss on assistant tokens only (``loss=assistant``, the default): TRL's
   ``assistant_only_loss`` when the template has ``{% generation %}`` markers or TRL can patch it
   in; otherwise the examples become prompt/completion pairs (the last assistant turn is the
   completion), which TRL masks by itself (ARCHITECTURE.md, "Library facts").
3. **The recipe** (:func:`engine.recipe.plan_training`, through ``make_plan``): the learning rate,
   epochs and batch the user did not set, chosen for the model's size, the amount of data and the
   device; 4-bit or not; the answer-only loss on a CPU; and a validation split held back from the
   training examples for early stopping (the caller's eval split is never used for that).
4. **Model.** 4-bit NF4 with double quantization and a bf16 (GPU) compute dtype when the plan says
   so (on a GPU where bitsandbytes can quantize; probed, not assumed), then
   ``prepare_model_for_kbit_training``; otherwise LoRA on full-precision weights (the CPU recipe).
5. **LoRA + SFTTrainer.** ``LoraConfig`` from the config (on the upper layers only with
   ``layers=N``); ``SFTConfig`` with every setting that matters set explicitly (TRL's own defaults
   differ from the guide's: lr 2e-5, gradient checkpointing on, bf16 on); no packing (without
   FlashAttention it lets examples attend to each other); length-grouped batches (less padding,
   the same steps); the validation loss and a checkpoint each epoch, ``EarlyStoppingCallback`` and
   the best checkpoint loaded at the end; ``resume_from_checkpoint`` when resuming. On a CPU the
   trainer's loss runs the output head only on answer tokens (:func:`_answer_only_trainer`).
6. **Progress.** A ``TrainerCallback`` (``local_progress``) turns the trainer's logs into
   ``step``/``eval``/``alert`` events on the injected sink, reports the measured pace against the
   pre-flight after the first steps, and stops training when ``should_stop()`` says so (cancel).
7. **Save.** The adapter in PEFT format with the tokenizer and a model card (``README.md`` and
   ``ftbot_card.json``: base model, data hash, config, metrics). The loss chart is drawn by the
   worker from the stored events (``engine.charts.loss_chart``), not here.

:func:`preflight` (in ``local_preflight.py``, re-exported here) estimates tokens, steps, time and
memory before any of that, and says whether the job fits the GPU (or, on the CPU, the RAM) here.

Sits on ``local_model`` (tokenizer, model, precision, template, context length), ``local_preflight``
(the plan, the model's shape) and ``local_progress``; the checkpoint search is
``engine.paths.latest_checkpoint`` (the one the worker resumes from).

Layout of ``output_dir``: ``checkpoints/checkpoint-<step>/`` (one per epoch, the last two kept),
``adapter/`` (the result).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.local_model import (
    choose_precision,
    clean_messages,
    load_model,
    load_tokenizer,
    model_context_length,
    render,
    require_chat_template,
    token_length,
)
from engine.backends.local_preflight import (
    ModelShape,
    check_environment,
    device_info,
    estimate_memory,
    make_plan,
    preflight,
    shape_of_model,
)
from engine.backends.local_progress import Emitter, make_progress_callback
from engine.config import TrainConfig
from engine.errors import ConfigError, ResourceExhausted, TrainingFailed
from engine.paths import latest_checkpoint
from engine.progress import ProgressSink, utcnow
from engine.recipe import Plan, validation_split

#: ``preflight`` is re-exported: the worker and tests call it as ``local_qlora.preflight``.
__all__ = ["TrainResult", "preflight", "train"]

Messages = list[dict[str, Any]]

ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
CARD_FILE = "ftbot_card.json"

# At most this many step events per run: every step on short runs, every k-th step on long ones
# (each event is a database row and, on a GPU, a host sync for the loss).
MAX_STEP_EVENTS = 1000


@dataclass(frozen=True)
class TrainResult:
    """What training produced.

    ``adapter_dir`` holds the PEFT adapter, the tokenizer and the model card (it does not exist when
    ``cancelled`` is true: a cancelled run saves nothing but its epoch checkpoints). ``metrics`` are
    numbers (train_loss, final_loss, first_loss, eval_loss, steps, epochs, train_seconds, tokens,
    tokens_per_second, peak_memory_gb, trainable_params, ...). ``notes`` are sentences for the user
    about decisions made (quantization fallback, demo settings, loss mask, ...). ``resolved`` records
    the settings decided at run time (optimizer, precision, max_length, loss_mode, gradient
    checkpointing, device, library versions).
    """

    adapter_dir: Path
    metrics: dict[str, float]
    quantized: bool
    notes: list[str]
    cancelled: bool = False
    resolved: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------


def train(
    *,
    job_id: str,
    base_model: str,
    train_examples: Sequence[Messages],
    eval_examples: Sequence[Messages],
    config: TrainConfig,
    output_dir: Path,
    sink: ProgressSink,
    should_stop: Callable[[], bool],
    resume_from: Path | None = None,
    dataset_hash: str | None = None,
    preflight_seconds: float | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` with LoRA (4-bit QLoRA when possible) on chat examples.

    ``train_examples``/``eval_examples`` are message lists (``[{"role", "content"}, ...]``), already
    validated and split; ``eval_examples`` may be empty (no per-epoch evaluation then). Events go
    to ``sink`` as they happen (``log`` for each decision in ``notes``, ``step``, ``eval``,
    ``alert``). ``should_stop`` is polled every step; when it returns true training stops at
    the end of that step and the result has ``cancelled=True`` (no adapter is saved).
    ``resume_from`` is a ``checkpoint-<step>`` directory or a directory holding them (the latest
    complete one is used); training continues at the saved step with the same data and config.
    When no complete checkpoint is there, training starts over and a note says so. ``dataset_hash``
    (the stored file's hash) goes into the model card beside the hash of the examples themselves.
    ``preflight_seconds`` (the pre-flight's training time) is compared with the measured pace of
    the first steps in a ``log`` event.

    ``eval_examples`` are *validation* examples (their loss after each epoch picks the checkpoint
    kept, and may stop training early): never pass the eval split the verdict is measured on. When
    empty, the recipe holds back its own validation split from ``train_examples`` when there are
    enough (engine/recipe.py).

    Raises:
        ConfigError: options this machine cannot honour; a max_length that leaves no example.
        BackendUnavailable: the model or tokenizer cannot be loaded, or has no chat template.
        ResourceExhausted: out of memory (the message says what to change).
        TrainingFailed: the loss became NaN or infinite (diverged).
    """
    check_environment(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = list(config.notes)
    emit = Emitter(job_id, sink)
    for note in config.notes:
        emit("log", note)
    if should_stop():
        return TrainResult(output_dir / ADAPTER_DIR, {}, False, notes, cancelled=True)

    import torch  # lazy: keeps torch out of `import engine`

    torch.manual_seed(config.seed)
    cuda = torch.cuda.is_available()
    # 1. Tokenizer: pad token, chat template, EOS at the end of assistant turns.
    tokenizer = _load_tokenizer(base_model, notes)
    # 2. Loss mask and max_length; the examples that fit.
    examples = _prepare_examples(tokenizer, base_model, train_examples, eval_examples, config, notes)
    # 3. The recipe for this model, this much data and this device (engine/recipe.py).
    plan = _plan(base_model, config, examples, notes)
    config = plan.config
    early_stopping = plan.early_stopping and bool(examples.validation)
    # 4. Model: 4-bit NF4 + double quantization when the plan says so, else full-precision LoRA.
    model, setup = _load_model(base_model, config, plan, examples.max_length, notes, cuda=cuda)
    # 5. LoRA + SFTTrainer with every setting that matters set explicitly.
    args = _sft_config(config, setup, examples, output_dir=output_dir, early_stopping=early_stopping)
    decided = _announce(emit, notes, config, plan, setup, examples, early_stopping=early_stopping)
    # 6. Progress events and cancel, through a TrainerCallback; early stopping on the validation loss.
    progress = make_progress_callback(emit, should_stop, preflight_seconds=preflight_seconds)
    trainer = _make_trainer(
        model, tokenizer, args, config, plan, examples, progress, early_stopping=early_stopping
    )
    resume = _resume_point(resume_from, notes, emit)
    if should_stop():  # loading a large model takes minutes: a cancel may have come meanwhile
        return TrainResult(
            output_dir / ADAPTER_DIR, {}, setup.quantized, notes, cancelled=True, resolved=decided
        )
    output, started = _run_trainer(trainer, resume, cuda=cuda)
    if progress.diverged:
        raise TrainingFailed(
            progress.diverged, hint="Try a lower lr (for example half of it) or a larger batch."
        )
    metrics = _metrics(trainer, output, started=started, cuda=cuda, shape=setup.shape)
    if progress.cancelled:
        return TrainResult(
            output_dir / ADAPTER_DIR, metrics, setup.quantized, notes, cancelled=True, resolved=decided
        )
    if early_stopping:
        kept_note = _early_stopping_note(trainer.state, planned_epochs=config.epochs, metrics=metrics)
        if kept_note:
            notes.append(kept_note)
            emit("log", kept_note, data={"best_epoch": metrics.get("best_epoch"), "notify": True})
    # 7. Save: adapter (PEFT format) + tokenizer + model card.
    adapter_dir = output_dir / ADAPTER_DIR
    trainer.model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    _write_card(
        adapter_dir,
        base_model=base_model,
        config=config,
        metrics=metrics,
        resolved=decided,
        notes=notes,
        data_hash=_examples_hash(examples.train),
        dataset_hash=dataset_hash,
    )
    return TrainResult(adapter_dir, metrics, setup.quantized, notes, resolved=decided)


# ---------------------------------------------------------------------------------------------------
# Recipe steps, in the order train() runs them
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Examples:
    """The examples training sees: those that fit ``max_length`` (and, in prompt/completion form,
    end with an assistant turn), and the validation examples (the plan may carve them out)."""

    train: list[Messages]
    validation: list[Messages]
    loss_mode: str
    max_length: int


@dataclass(frozen=True)
class _Setup:
    """What was decided when the model was loaded."""

    device: str
    precision: str
    quantized: bool
    checkpointing: bool
    optimizer: str
    shape: ModelShape


def _load_tokenizer(base_model: str, notes: list[str]) -> Any:
    """Step 1: the tokenizer, right-padded, with a pad token and a chat template (refused without)."""
    tokenizer = load_tokenizer(base_model, padding_side="right", notes=notes)
    require_chat_template(tokenizer, base_model)
    if not _eos_ends_assistant_turn(tokenizer):
        notes.append(
            f"The chat template does not end assistant turns with the EOS token {tokenizer.eos_token!r}; "
            "the tuned model may not stop by itself (answers are cut at max_new_tokens)."
        )
    return tokenizer


def _prepare_examples(
    tokenizer: Any,
    base_model: str,
    train_examples: Sequence[Messages],
    eval_examples: Sequence[Messages],
    config: TrainConfig,
    notes: list[str],
) -> _Examples:
    """Step 2: the loss mask and ``max_length`` (the config's, else the longest example within the
    context length); the examples that leave room for an answer.

    Raises:
        ConfigError: no training examples, or none leaves room for its answer.
    """
    loss_mode = _choose_loss_mode(tokenizer, config)
    if loss_mode == "prompt_completion":
        notes.append(
            "This model's chat template has no assistant markers TRL can use, so each example trains on its "
            "last assistant turn only (prompt/completion form)."
        )
    if any(m.get("weight") == 0 for ex in train_examples for m in ex if m.get("role") == "assistant"):
        notes.append("Assistant turns with weight 0 are trained like the others by the local backend.")
    if not train_examples:
        raise ConfigError([("dataset", "there are no training examples")])
    lengths = [token_length(tokenizer, ex) for ex in train_examples]
    max_length = config.max_length or min(max(lengths), model_context_length(base_model, tokenizer))
    kept = [ex for ex in train_examples if _prompt_fits(tokenizer, ex, max_length)]
    if len(kept) < len(train_examples):
        notes.append(
            f"{len(train_examples) - len(kept)} example(s) whose prompt alone fills max_length={max_length} "
            "were left out of training."
        )
    if loss_mode == "prompt_completion":  # the completion is the last turn: it must be the assistant's
        answered = [ex for ex in kept if ex and ex[-1].get("role") == "assistant"]
        if len(answered) < len(kept):
            notes.append(
                f"{len(kept) - len(answered)} example(s) not ending with an assistant turn were left out."
            )
        kept = answered
    if not kept:
        raise ConfigError(
            [("max_length", f"{max_length} tokens leaves no example with room for its answer")],
            hint=f"The longest example has {max(lengths)} tokens; raise max_length or shorten the prompts.",
        )
    truncated = sum(1 for n in lengths if n > max_length)
    if truncated:
        notes.append(f"{truncated} example(s) longer than max_length={max_length} tokens are truncated.")
    validation = [
        ex
        for ex in eval_examples
        if _prompt_fits(tokenizer, ex, max_length)
        and (loss_mode != "prompt_completion" or ex[-1].get("role") == "assistant")
    ]
    return _Examples(list(kept), validation, loss_mode, max_length)


def _plan(base_model: str, config: TrainConfig, examples: _Examples, notes: list[str]) -> Plan:
    """Step 3: the recipe (``make_plan``): it may change the learning rate, epochs and batch the
    user did not set, picks the precision and the output head's loss, and holds back a validation
    split for early stopping (taken out of ``examples.train`` here). Its reasons are the
    pre-flight's (preflight() returns them; the job's thread shows them there)."""
    plan, _ = make_plan(
        base_model,
        config,
        train_examples=len(examples.train),
        device=device_info(),
        given_validation=len(examples.validation),
    )
    notes.extend(plan.reasons)
    if plan.validation_examples and not examples.validation:
        examples.train, examples.validation = validation_split(
            examples.train, plan.validation_examples, seed=plan.config.seed
        )
    return plan


def _load_model(
    base_model: str, config: TrainConfig, plan: Plan, max_length: int, notes: list[str], *, cuda: bool
) -> tuple[Any, _Setup]:
    """Step 4: the base model in the plan's precision and quantization, ready for LoRA (the KV
    cache off; ``prepare_model_for_kbit_training`` when 4-bit)."""
    import torch
    from peft import prepare_model_for_kbit_training

    precision = choose_precision(config.precision, cuda=cuda, bf16_ok=cuda and torch.cuda.is_bf16_supported())
    quantized = plan.quantize
    if not quantized and config.quantize == "off":
        notes.append("quantize=off: LoRA on the unquantized weights, as asked (more memory, usually faster).")
    model = load_model(base_model, precision=precision, quantize=quantized)
    shape = shape_of_model(model, config)
    checkpointing = _choose_checkpointing(
        config, shape, cuda=cuda, quantized=quantized, max_length=max_length
    )
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    optimizer = config.resolve_optimizer(cuda=cuda)
    if config.optimizer not in ("auto", optimizer):
        notes.append(f"optimizer={config.optimizer} needs CUDA; using {optimizer} on the CPU.")
    device = "cuda" if cuda else "cpu"
    return model, _Setup(device, precision, quantized, checkpointing, optimizer, shape)


def _sft_config(
    config: TrainConfig, setup: _Setup, examples: _Examples, *, output_dir: Path, early_stopping: bool
) -> Any:
    """Step 5a: the ``SFTConfig``, every setting that matters set explicitly (TRL's own defaults
    differ from the guide's: lr 2e-5, gradient checkpointing on, bf16 on)."""
    from trl import SFTConfig

    cuda = setup.device == "cuda"
    checkpointing = setup.checkpointing
    loss_mode = examples.loss_mode
    total_steps = config.epochs * math.ceil(
        math.ceil(len(examples.train) / config.batch_size) / config.grad_accum
    )
    return SFTConfig(
        output_dir=str(output_dir / CHECKPOINTS_DIR),
        seed=config.seed,
        data_seed=config.seed,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        optim=setup.optimizer,
        bf16=setup.precision == "bf16",
        fp16=setup.precision == "fp16",
        use_cpu=not cuda,
        activation_checkpointing=checkpointing,  # transformers 5.24's name for gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        max_length=examples.max_length,
        packing=False,  # without FlashAttention, packed examples would attend to each other
        padding_free=False,
        assistant_only_loss=loss_mode == "assistant_only",
        completion_only_loss=None if loss_mode == "prompt_completion" else False,
        train_sampling_strategy="group_by_length",  # similar lengths share a batch: less padding
        pad_to_multiple_of=8 if cuda else None,
        logging_strategy="steps",
        logging_steps=max(1, math.ceil(total_steps / MAX_STEP_EVENTS)),
        eval_strategy="epoch" if examples.validation else "no",
        save_strategy="epoch",
        save_total_limit=2,  # with load_best_model_at_end the best one is never deleted
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss" if early_stopping else None,
        greater_is_better=False if early_stopping else None,
        prediction_loss_only=True,
        report_to="none" if config.report == "none" else [config.report],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _announce(
    emit: Emitter,
    notes: list[str],
    config: TrainConfig,
    plan: Plan,
    setup: _Setup,
    examples: _Examples,
    *,
    early_stopping: bool,
) -> dict[str, Any]:
    """Step 5b: the notes decided so far as ``log`` events (the plan's reasons are the
    pre-flight's, shown with it), then one summary line with the resolved settings. Returns them."""
    decided = {
        "device": setup.device,
        "quantized": setup.quantized,
        "precision": setup.precision,
        "optimizer": setup.optimizer,
        "gradient_checkpointing": setup.checkpointing,
        "max_length": examples.max_length,
        "loss_mode": examples.loss_mode,
        "target_modules": config.target,
        "plan": plan.to_dict(),
        "train_examples": len(examples.train),
        "validation_examples": len(examples.validation),
        "versions": _versions(),
    }
    for note in notes[len(config.notes) :]:
        if note not in plan.reasons:
            emit("log", note)
    summary = (
        f"Training {'4-bit QLoRA' if setup.quantized else 'LoRA'} on {setup.device} in {setup.precision} "
        f"({plan.recipe} recipe): lr {config.learning_rate:g}, {'up to ' if early_stopping else ''}"
        f"{config.epochs} epochs, batch {config.batch_size} x {config.grad_accum}, r {config.lora_r}, "
        + (f"layers {plan.layers[0]}-{plan.layers[-1]}" if plan.layers else "every layer")
        + f", optimizer {setup.optimizer}, max_length {examples.max_length}, gradient checkpointing "
        f"{'on' if setup.checkpointing else 'off'}."
    )
    notes.append(summary)
    emit("log", summary, data={"resolved": decided})
    return decided


def _make_trainer(
    model: Any,
    tokenizer: Any,
    args: Any,
    config: TrainConfig,
    plan: Plan,
    examples: _Examples,
    progress: Any,
    *,
    early_stopping: bool,
) -> Any:
    """Step 6: the SFTTrainer with LoRA (on the upper layers only with ``layers=N``), the progress
    callback and, when validating, ``EarlyStoppingCallback``. On a CPU plan its loss runs the output
    head only on answer tokens (:func:`_answer_only_trainer`)."""
    import datasets
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTTrainer

    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target,
        layers_to_transform=list(plan.layers) if plan.layers is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    callbacks: list[Any] = [progress]
    if early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=plan.patience))
    datasets.disable_progress_bars()  # our events are the progress display; keep the worker log readable
    trainer_class = _answer_only_trainer(SFTTrainer) if plan.answer_only_logits else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=_to_dataset(examples.train, examples.loss_mode),
        eval_dataset=_to_dataset(examples.validation, examples.loss_mode) if examples.validation else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer


def _resume_point(resume_from: Path | None, notes: list[str], emit: Emitter) -> Path | None:
    """The checkpoint to resume from (``resume_from`` itself, or the latest complete one in it);
    a note when there is none."""
    if resume_from is None:
        return None
    resume = _find_checkpoint(Path(resume_from))
    if resume is None:
        note = f"No complete checkpoint in {resume_from}; training starts from the beginning."
        notes.append(note)
        emit("log", note)
    return resume


def _run_trainer(trainer: Any, resume: Path | None, *, cuda: bool) -> tuple[Any, float]:
    """Step 6b: train; returns the trainer's output and when it started (monotonic).

    Raises:
        ResourceExhausted: out of (GPU) memory.
    """
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError as exc:
        raise ResourceExhausted(
            "Training ran out of GPU memory.",
            hint="Try a smaller batch (with more accum), a shorter max_length, a smaller r, or checkpointing=on.",
        ) from exc
    except MemoryError as exc:
        raise ResourceExhausted(
            "Training ran out of memory.", hint="Try a smaller batch or max_length."
        ) from exc
    return output, started


def _answer_only_trainer(base: type) -> type:
    """``base`` (SFTTrainer) with a loss whose output head runs only where a label is: the same
    cross-entropy as the model's own loss, without the (tokens x vocabulary) logits of the prompt.

    TRL's fused head does this on GPUs with Triton; elsewhere it scores every position (and computes
    entropy and top-1 accuracy over the whole vocabulary for its metrics). On a CPU with a 49k-token
    vocabulary and one-word answers that head is a third of the step. Falls back to ``base``'s
    loss for models without ``get_decoder``/``get_output_embeddings``.
    """
    import torch

    class AnswerOnlyTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
            head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
            if decoder is None or head is None or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            keep = labels != -100
            kwargs = {k: inputs[k] for k in ("attention_mask", "position_ids") if k in inputs}
            hidden = decoder(input_ids=inputs["input_ids"], use_cache=False, **kwargs).last_hidden_state
            picked = hidden[:, :-1][keep]
            logits = head(picked).float()
            total = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
            return (loss, {"loss": loss}) if return_outputs else loss

    return AnswerOnlyTrainer


def _prompt_fits(tokenizer: Any, messages: Messages, max_length: int) -> bool:
    """Whether the prompt (everything before the last assistant turn) leaves room for an answer."""
    prompt = render(tokenizer, messages[:-1], add_generation_prompt=True)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) < max_length


def _eos_ends_assistant_turn(tokenizer: Any) -> bool:
    probe = "ftbot-probe-answer"
    text = render(tokenizer, [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}])
    tail = text[text.rfind(probe) + len(probe) :]
    return bool(tokenizer.eos_token) and tokenizer.eos_token in tail


def _choose_loss_mode(tokenizer: Any, config: TrainConfig) -> str:
    """``assistant_only`` (TRL masks via generation markers), ``prompt_completion`` (the template
    cannot carry markers: train on the last assistant turn) or ``all`` (loss=all)."""
    if config.loss == "all":
        return "all"
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return "assistant_only"
    try:
        patched = get_training_chat_template(tokenizer)
    except (ValueError, NotImplementedError):
        return "prompt_completion"
    return "assistant_only" if patched is not None else "prompt_completion"


def _choose_checkpointing(
    config: TrainConfig, shape: ModelShape, *, cuda: bool, quantized: bool, max_length: int
) -> bool:
    if config.gradient_checkpointing != "auto":
        return config.gradient_checkpointing == "on"
    if not cuda or shape.total_params < 200_000_000:
        return False  # the CPU and small models: memory is not the constraint, speed is
    import torch

    # The estimate includes the weights, which are loaded by now: compare with the whole GPU, as
    # preflight does, not with what is still free.
    _free, total = torch.cuda.mem_get_info()
    need = estimate_memory(
        shape,
        config,
        quantized=quantized,
        micro_batch_tokens=config.batch_size * max_length,
        checkpointing=False,
        device_kind="cuda",
    )["total_gb"]
    return need > total / 1e9


def _to_dataset(examples: Sequence[Messages], loss_mode: str) -> Any:
    from datasets import Dataset

    if loss_mode == "prompt_completion":
        rows = [{"prompt": clean_messages(ex[:-1]), "completion": clean_messages(ex[-1:])} for ex in examples]
    else:
        rows = [{"messages": clean_messages(ex)} for ex in examples]
    return Dataset.from_list(rows)


def _find_checkpoint(path: Path) -> Path | None:
    """``path`` itself when it is a checkpoint, else its latest ``checkpoint-<step>`` (also looking
    in ``path/checkpoints``)."""
    if (path / "trainer_state.json").exists():
        return path
    if path.name.startswith("checkpoint-"):  # half written (killed while saving): the one before it
        return latest_checkpoint(path.parent)
    return latest_checkpoint(path)


# ---------------------------------------------------------------------------------------------------
# Results: metrics, model card
# ---------------------------------------------------------------------------------------------------


def _metrics(trainer: Any, output: Any, *, started: float, cuda: bool, shape: ModelShape) -> dict[str, float]:
    import torch

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    seconds = float(output.metrics.get("train_runtime", time.monotonic() - started))
    tokens = float(trainer.state.num_input_tokens_seen or 0)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics: dict[str, float] = {
        "train_loss": float(output.training_loss),
        "steps": float(trainer.state.global_step),
        "total_steps": float(trainer.state.max_steps),
        "epochs": float(trainer.state.epoch or 0.0),
        "train_seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "trainable_params": float(trainable),
        "params": float(shape.total_params),
    }
    if losses:
        metrics["first_loss"] = float(losses[0])
        metrics["final_loss"] = float(losses[-1])
    if evals:
        metrics["eval_loss"] = float(evals[-1])
        metrics["best_eval_loss"] = float(min(evals))
    if cuda:
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return metrics


def _early_stopping_note(state: Any, *, planned_epochs: int, metrics: dict[str, float]) -> str | None:
    """Which epoch was kept and whether training stopped early; records ``best_epoch``,
    ``stopped_early`` and ``best_eval_loss`` in ``metrics``."""
    evals = [(float(h["epoch"]), float(h["eval_loss"])) for h in state.log_history if "eval_loss" in h]
    if not evals:
        return None
    best_epoch, best_loss = min(evals, key=lambda item: item[1])
    last_epoch = evals[-1][0]
    stopped = last_epoch < planned_epochs - 1e-6
    metrics.update(best_epoch=best_epoch, best_eval_loss=best_loss, stopped_early=float(stopped))
    kept = f"Kept the model of epoch {best_epoch:g} (validation loss {best_loss:.4f}, the lowest)"
    if stopped:
        return (
            f"Stopped after epoch {last_epoch:g} of {planned_epochs}: the validation loss stopped falling. "
            + kept
            + "."
        )
    if best_epoch < last_epoch:
        return kept + f", not the last epoch's ({evals[-1][1]:.4f})."
    return None


def _examples_hash(examples: Sequence[Messages]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps(ex, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _write_card(
    adapter_dir: Path,
    *,
    base_model: str,
    config: TrainConfig,
    metrics: Mapping[str, float],
    resolved: Mapping[str, Any],
    notes: Sequence[str],
    data_hash: str,
    dataset_hash: str | None,
) -> None:
    card = {
        "base_model": base_model,
        "base_model_name": config.base_model,
        "dataset_hash": dataset_hash,
        "examples_sha256": data_hash,
        "config": config.to_dict(),
        "resolved": dict(resolved),
        "metrics": dict(metrics),
        "notes": list(notes),
        "created_at": utcnow().isoformat(),
    }
    (adapter_dir / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in metrics.items())
    (adapter_dir / "README.md").write_text(
        f"# LoRA adapter trained by ftbot\n\n"
        f"- Base model: `{config.base_model or base_model}`\n"
        f"- Method: {'4-bit QLoRA' if resolved.get('quantized') else 'LoRA'}, r={config.lora_r}, "
        f"alpha={config.lora_alpha}, dropout={config.lora_dropout}, target={config.target}\n"
        f"- Training: lr={config.learning_rate:g}, epochs={config.epochs}, batch={config.batch_size} x "
        f"accum={config.grad_accum}, {config.scheduler} schedule, warm-up {config.warmup_ratio:g}, seed {config.seed}\n"
        f"- Data: {dataset_hash or '(file hash not given)'}; examples sha256 {data_hash}\n\n"
        f"| metric | value |\n| --- | --- |\n{rows}\n\n"
        + ("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")
        + "\nLoad it with `PeftModel.from_pretrained(base, this_directory)`. Full details: `ftbot_card.json`.\n"
    )
