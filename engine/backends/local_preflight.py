"""Pre-flight for local training: tokens, steps, time and memory before any weight is loaded.

:func:`preflight` reads the tokenizer and the model *config* (the model is built on the meta device:
no weights, no memory), looks at the device that is here, and returns the estimate with ``fits``
and a message that says what to change when the job cannot fit. :func:`estimate` is the pure
arithmetic behind it (tests feed it hypothetical GPUs); :func:`estimate_memory` documents the
memory formula. Also here, shared with the recipe: :func:`check_environment` (options this machine
cannot honour) and :func:`device_info`. Sits on ``local_model`` (tokenizer, token counts, the 4-bit
probe); imports no other backend module.

Heavy libraries are imported inside functions, like every ``engine/backends/local_*`` module.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.backends.local_model import (
    answer_length,
    load_tokenizer,
    probe_4bit,
    require_chat_template,
    token_length,
)
from engine.config import ALL_LINEAR, TrainConfig
from engine.errors import ConfigError
from engine.progress import format_duration
from engine.recipe import ModelSize, Plan, plan_training, validation_split

Messages = list[dict[str, Any]]

# Pre-flight constants. Dense bf16 peaks (no 2:4 sparsity), TFLOP/s, matched on the device name.
GPU_PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)
DEFAULT_GPU_TFLOPS = 100.0
# Model FLOPs utilisation assumed for the time estimate: HF QLoRA lands around 15-30%, bf16 LoRA a
# little higher (reference/ml-performance.md section 3). CPUs: an effective FLOP/s for small models.
ASSUMED_MFU_QLORA = 0.20
ASSUMED_MFU_LORA = 0.30
CPU_EFFECTIVE_FLOPS = 2e10  # when the CPU cannot be measured
# LoRA training reaches this share of the CPU's measured fp32 matrix-product rate (measured on a
# 2-core AMD EPYC with AVX-512: SmolLM2-135M, every layer, batches of 8, examples/labels.jsonl:
# about 200 tokens/s against a 1024x576x1536 GEMM at 130-145 GFLOP/s).
CPU_TRAIN_EFFICIENCY = 0.65
STEP_OVERHEAD_S = {"cuda": 0.05, "cpu": 0.05}  # per micro-batch: Python, collation, optimizer, logging
SETUP_OVERHEAD_S = {"cuda": 30.0, "cpu": 8.0}  # loading the weights, building the trainer, saving
CUDA_CONTEXT_GB = 1.0  # CUDA context + cuBLAS workspace + allocator slack
MEMORY_MARGIN = 1.10  # fragmentation


# ---------------------------------------------------------------------------------------------------
# Environment checks shared by preflight and train
# ---------------------------------------------------------------------------------------------------


def check_environment(config: TrainConfig) -> None:
    """Refuse, before any work, options this machine cannot honour.

    Raises:
        ConfigError: ``report=wandb|tensorboard`` without the package installed.
    """
    if config.report == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            [("report", "wandb is not installed on the training host")],
            hint="Install it (pip install wandb) or use report=none; progress reaches the channel either way.",
        )
    if (
        config.report == "tensorboard"
        and importlib.util.find_spec("tensorboard") is None
        and importlib.util.find_spec("tensorboardX") is None
    ):
        raise ConfigError(
            [("report", "tensorboard is not installed on the training host")],
            hint="Install it (pip install tensorboard) or use report=none; progress reaches the channel either way.",
        )


def device_info() -> dict[str, Any]:
    """The device training would use: ``kind`` cuda|cpu, ``name``, ``total_gb``, ``free_gb``,
    ``bf16`` (supported), ``peak_tflops`` (dense bf16, GPUs only)."""
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        name = props.name
        peak = next((tf for key, tf in GPU_PEAK_BF16_TFLOPS if key in name), DEFAULT_GPU_TFLOPS)
        return {
            "kind": "cuda",
            "name": name,
            "total_gb": total / 1e9,
            "free_gb": free / 1e9,
            "bf16": bool(torch.cuda.is_bf16_supported()),
            "peak_tflops": peak,
        }
    total, free = _ram_bytes()
    return {
        "kind": "cpu",
        "name": platform.processor() or platform.machine() or "CPU",
        "total_gb": total / 1e9,
        "free_gb": free / 1e9,
        "bf16": False,  # bf16 autocast on most CPUs is slower than fp32; we train the CPU in fp32
        "peak_tflops": None,
    }


def _ram_bytes() -> tuple[int, int]:
    """(total, available) RAM from /proc/meminfo; (0, 0) when unknown."""
    try:
        fields_ = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        total = int(fields_["MemTotal"].split()[0]) * 1024
        free = int(fields_.get("MemAvailable", fields_["MemFree"]).split()[0]) * 1024
        return total, free
    except (OSError, KeyError, ValueError):
        return 0, 0


# ---------------------------------------------------------------------------------------------------
# Pre-flight estimate
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts that the estimates need, read from the model config on the meta device."""

    total_params: int
    linear_params: int  # weights of nn.Linear layers inside the blocks: what 4-bit quantizes
    other_params: int  # embeddings, lm_head, norms: kept in fp32 by prepare_model_for_kbit_training
    lora_params: int  # trainable LoRA parameters for the config's r and target modules
    hidden_size: int
    num_layers: int
    vocab_size: int
    context_length: int


def model_shape(base_model: str, config: TrainConfig) -> ModelShape:
    """Build the model on the meta device (no weights, no memory) and count its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(base_model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return shape_of_model(model, config)


def shape_of_model(model: Any, config: TrainConfig) -> ModelShape:
    import torch

    targets = config.target
    linear = lora = 0
    packed = 0  # a 4-bit weight's numel() counts bytes, not parameters: count in x out instead
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        linear += module.in_features * module.out_features
        packed += module.weight.numel()
        short = name.rsplit(".", 1)[-1]
        if targets == ALL_LINEAR or short in targets:
            lora += config.lora_r * (module.in_features + module.out_features)
    total = sum(p.numel() for p in model.parameters()) - packed + linear
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return ModelShape(
        total_params=total,
        linear_params=linear,
        other_params=total - linear,
        lora_params=lora,
        hidden_size=int(getattr(text, "hidden_size", 0) or 0),
        num_layers=int(getattr(text, "num_hidden_layers", 0) or 0),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        context_length=int(getattr(text, "max_position_embeddings", 0) or 0),
    )


def estimate_memory(
    shape: ModelShape,
    config: TrainConfig,
    *,
    quantized: bool,
    micro_batch_tokens: int,
    checkpointing: bool,
    device_kind: str,
) -> dict[str, float]:
    """Peak training memory in GB, by part. The formula (bytes):

    * weights: 4-bit: ``linear x (0.5 + 0.127/8)`` (NF4 + double-quantized scales) + ``other x 4``
      (prepare_model_for_kbit_training keeps embeddings/norms/lm_head in fp32); full precision:
      ``total x 2`` (bf16 on a GPU) or ``x 4`` (fp32 on the CPU).
    * LoRA: ``lora x 16`` (weights + fp32 gradients + AdamW moments + headroom; small either way).
    * activations: ``tokens x hidden x layers x 34 x 2`` bytes in 16-bit without checkpointing
      (Korthikanti et al.'s per-layer count without the attention-score term, which SDPA avoids;
      doubled on the CPU for fp32); with checkpointing only each layer's input is kept
      (``tokens x hidden x layers x 2``) plus one layer's full set.
    * logits: ``tokens x vocab x 4 x 2`` (fp32 logits and their gradient; TRL fuses the lm_head with
      the loss, so this is an upper bound).
    * overhead: 1 GB CUDA context on a GPU; and x1.10 for fragmentation.

    ``micro_batch_tokens`` is batch size x the longest sequence in a batch (padding included).
    """
    act_bytes = 2 if device_kind == "cuda" else 4
    if quantized:
        weights = shape.linear_params * (0.5 + 0.127 / 8) + shape.other_params * 4
    else:
        weights = shape.total_params * (2 if device_kind == "cuda" else 4)
    lora = shape.lora_params * 16
    per_layer_full = micro_batch_tokens * shape.hidden_size * 34 * act_bytes / 2
    if checkpointing:
        activations = micro_batch_tokens * shape.hidden_size * act_bytes * shape.num_layers + per_layer_full
    else:
        activations = per_layer_full * shape.num_layers
    logits = micro_batch_tokens * shape.vocab_size * 4 * 2
    overhead = CUDA_CONTEXT_GB * 1e9 if device_kind == "cuda" else 0.0
    parts = {
        "weights_gb": weights / 1e9,
        "lora_gb": lora / 1e9,
        "activations_gb": activations / 1e9,
        "logits_gb": logits / 1e9,
        "overhead_gb": overhead / 1e9,
    }
    parts["total_gb"] = sum(parts.values()) * MEMORY_MARGIN
    return parts


def estimate(
    shape: ModelShape,
    token_lengths: Sequence[int],
    config: TrainConfig,
    device: Mapping[str, Any],
    *,
    quantized: bool,
    eval_token_lengths: Sequence[int] = (),
    trained_layers: int | None = None,
    answer_tokens: int | None = None,
    cpu_flops: float | None = None,
    early_stopping: bool = False,
) -> dict[str, Any]:
    """Pure arithmetic behind :func:`preflight` (tests feed it hypothetical GPUs).

    ``eval_token_lengths``: the validation examples whose loss is measured after each epoch.
    ``trained_layers``: LoRA on the upper ``trained_layers`` layers only (the backward pass stops
    there); None: every layer. ``answer_tokens``: the output head runs only on this many tokens
    per epoch (the CPU recipe); None: on every token. ``cpu_flops``: the CPU's measured matrix
    rate (:func:`measured_cpu_flops`); training reaches CPU_TRAIN_EFFICIENCY of it.

    Returns tokens (training tokens over all epochs, no padding), steps (optimizer steps), seconds
    (estimate), gpu_memory_gb (or memory_gb on the CPU), checkpointing (whether it is needed to
    fit), fits, message, and the inputs it used.
    """
    if not token_lengths:
        raise ConfigError([("dataset", "no training examples")])
    device_kind = device.get("kind", "cpu")
    counts = _Counts.of(shape, token_lengths, config)
    memory = _fit_memory(shape, config, device, counts, quantized=quantized)
    seconds = _seconds(
        shape,
        config,
        device,
        counts,
        quantized=quantized,
        checkpointing=memory.checkpointing,
        eval_token_lengths=eval_token_lengths,
        trained_layers=trained_layers,
        answer_tokens=answer_tokens,
        cpu_flops=cpu_flops,
    )
    mem_key = "gpu_memory_gb" if device_kind == "cuda" else "memory_gb"
    return {
        "tokens": counts.tokens,
        "tokens_per_epoch": counts.tokens_per_epoch,
        "examples": counts.examples,
        "steps": counts.steps,
        "steps_per_epoch": counts.steps_per_epoch,
        "seconds": seconds,
        mem_key: memory.needed,
        "memory_breakdown_gb": memory.breakdown,
        "capacity_gb": memory.capacity,
        "checkpointing": memory.checkpointing,
        "quantized": quantized,
        "max_length": counts.max_length,
        "params": shape.total_params,
        "trainable_params": shape.lora_params,
        "device": dict(device),
        "fits": memory.fits,
        "message": _message(config, device, counts, memory, seconds, early_stopping=early_stopping),
    }


@dataclass(frozen=True)
class _Counts:
    """Tokens and steps of a job: what the estimate's memory and time are computed from."""

    examples: int
    max_length: int
    tokens_per_epoch: int  # clipped to max_length, no padding
    tokens: int  # over all epochs
    micro_batches_per_epoch: int
    steps_per_epoch: int
    steps: int

    @classmethod
    def of(cls, shape: ModelShape, token_lengths: Sequence[int], config: TrainConfig) -> _Counts:
        n = len(token_lengths)
        max_length = config.max_length or max(token_lengths)
        if shape.context_length:
            max_length = min(max_length, shape.context_length)
        tokens_per_epoch = sum(min(t, max_length) for t in token_lengths)
        micro_batches_per_epoch = math.ceil(n / config.batch_size)
        steps_per_epoch = max(1, math.ceil(micro_batches_per_epoch / config.grad_accum))
        return cls(
            examples=n,
            max_length=max_length,
            tokens_per_epoch=tokens_per_epoch,
            tokens=tokens_per_epoch * config.epochs,
            micro_batches_per_epoch=micro_batches_per_epoch,
            steps_per_epoch=steps_per_epoch,
            steps=steps_per_epoch * config.epochs,
        )


@dataclass(frozen=True)
class _Memory:
    """The memory side of the estimate: what is needed (GB) against the device's capacity."""

    checkpointing: bool
    needed: float
    breakdown: dict[str, float]
    capacity: float
    fits: bool


def _fit_memory(
    shape: ModelShape, config: TrainConfig, device: Mapping[str, Any], counts: _Counts, *, quantized: bool
) -> _Memory:
    """Peak memory with and without gradient checkpointing, and whether it is needed to fit
    (``gradient_checkpointing=auto`` turns it on, on a GPU, only then: it costs about 20% speed)."""
    device_kind = device.get("kind", "cpu")

    def memory(checkpointing: bool) -> dict[str, float]:
        return estimate_memory(
            shape,
            config,
            quantized=quantized,
            micro_batch_tokens=config.batch_size * counts.max_length,  # worst case: the longest examples
            checkpointing=checkpointing,
            device_kind=device_kind,
        )

    capacity = float(device.get("total_gb") or 0.0)
    if device_kind == "cpu":
        capacity = float(device.get("free_gb") or capacity)
    without = memory(False)
    with_ckpt = memory(True)
    if config.gradient_checkpointing == "on":
        checkpointing = True
    elif config.gradient_checkpointing == "off" or device_kind == "cpu":
        checkpointing = False
    else:
        checkpointing = capacity > 0 and without["total_gb"] > capacity
    breakdown = with_ckpt if checkpointing else without
    needed = breakdown["total_gb"]
    return _Memory(checkpointing, needed, breakdown, capacity, capacity <= 0 or needed <= capacity)


def _seconds(
    shape: ModelShape,
    config: TrainConfig,
    device: Mapping[str, Any],
    counts: _Counts,
    *,
    quantized: bool,
    checkpointing: bool,
    eval_token_lengths: Sequence[int],
    trained_layers: int | None,
    answer_tokens: int | None,
    cpu_flops: float | None,
) -> float:
    """Training time: FLOPs at an assumed utilisation (GPU) or the measured rate (CPU), plus the
    per-step and setup overheads.

    FLOPs: the blocks' matrices forward (2 per weight per token), backward through the trained
    layers only (activation gradients: 2 more; LoRA's own are negligible), checkpointing's second
    forward; the output head (2 x hidden x vocab per token, forward and backward) on every token,
    or on the answer tokens only."""
    device_kind = device.get("kind", "cpu")
    tokens, tokens_per_epoch = counts.tokens, counts.tokens_per_epoch
    layers = max(shape.num_layers, 1)
    share = 1.0 if trained_layers is None else min(trained_layers, layers) / layers
    blocks = shape.linear_params or shape.total_params
    head = 2 * shape.hidden_size * shape.vocab_size
    head_tokens = tokens if answer_tokens is None else answer_tokens * config.epochs
    # Attention scores and their use: about 4 x length x hidden per layer and token forward.
    attention = 4 * (tokens_per_epoch / counts.examples) * shape.hidden_size * layers
    train_flops = (
        tokens * blocks * (2 + 2 * share + (2 * share if checkpointing else 0))
        + tokens * attention * (1 + 2 * share)
        + 2 * head * head_tokens
    )
    eval_tokens = sum(min(t, counts.max_length) for t in eval_token_lengths) * config.epochs
    eval_head = (
        eval_tokens if answer_tokens is None else eval_tokens * answer_tokens / max(tokens_per_epoch, 1)
    )
    eval_flops = eval_tokens * 2 * blocks + head * eval_head
    if device_kind == "cuda":
        rate = float(device.get("peak_tflops") or DEFAULT_GPU_TFLOPS) * 1e12
        rate *= ASSUMED_MFU_QLORA if quantized else ASSUMED_MFU_LORA
    else:
        rate = (cpu_flops or CPU_EFFECTIVE_FLOPS / CPU_TRAIN_EFFICIENCY) * CPU_TRAIN_EFFICIENCY
        if quantized:
            rate *= 0.5  # bitsandbytes dequantizes every weight on every CPU matmul (measured ~0.55x)
    compute_s = (train_flops + eval_flops) / rate
    overhead_s = counts.micro_batches_per_epoch * config.epochs * STEP_OVERHEAD_S.get(device_kind, 0.05)
    return compute_s + overhead_s + SETUP_OVERHEAD_S.get(device_kind, 8.0)


def _message(
    config: TrainConfig,
    device: Mapping[str, Any],
    counts: _Counts,
    memory: _Memory,
    seconds: float,
    *,
    early_stopping: bool,
) -> str:
    """The estimate in one sentence; when it does not fit, what to change."""
    device_kind = device.get("kind", "cpu")
    where = device.get("name") or device_kind
    what = "GPU memory" if device_kind == "cuda" else "RAM"
    tokens, steps, capacity = counts.tokens, counts.steps, memory.capacity
    if not memory.fits:
        return (
            f"This job does not fit: it needs {_gigabytes(memory.needed)} of {what} and {where} has "
            f"{capacity:.1f} GB. "
            f"Try a smaller batch (batch={max(1, config.batch_size // 2)} accum={config.grad_accum * 2} keeps "
            f"the effective batch), a shorter max_length (now {counts.max_length}), a smaller r, or a smaller base model."
        )
    return (
        (
            f"Training: at most {steps:,} steps over {config.epochs} epochs ({tokens:,} tokens; fewer if the "
            f"validation loss stops falling), about {_duration(seconds)} at most"
            if early_stopping
            else f"Training: {tokens:,} tokens, {steps:,} steps over {config.epochs} epochs, about {_duration(seconds)}"
        )
        + f"; needs {_gigabytes(memory.needed)} of {what}"
        + (f" ({where}: {capacity:.0f} GB)" if capacity else "")
        + (", with gradient checkpointing" if memory.checkpointing else "")
        + "."
    )


def _gigabytes(value: float) -> str:
    return "under 0.1 GB" if value < 0.1 else f"about {value:.1f} GB"


_duration = format_duration


def preflight(
    *,
    base_model: str,
    train_examples: Sequence[Messages],
    eval_examples: Sequence[Messages] = (),
    config: TrainConfig,
) -> dict[str, Any]:
    """Estimate a local training job before it starts (see :func:`estimate` for the keys), with
    the recipe this job will train with (:func:`make_plan`: ``plan`` in the result, its reasons
    in ``notes``).

    ``base_model`` is what ``from_pretrained`` loads (resolve builtin models first). Loads only the
    tokenizer and the model config (no weights). ``train_examples`` are all the training examples
    (the plan carves its validation split out of them, as training does); ``eval_examples``, when
    given, are the validation examples instead. ``fits`` is false, with a ``message`` that says why
    and what to change, when the job cannot fit the GPU here (or, without a GPU, the free RAM). On a
    CPU the time comes from this CPU's measured matrix rate.

    Raises:
        ConfigError: an option this machine cannot honour (see :func:`check_environment`).
        BackendUnavailable: the base model's tokenizer or config cannot be loaded.
    """
    check_environment(config)
    tokenizer = load_tokenizer(base_model, padding_side="right")  # as training loads it
    require_chat_template(tokenizer, base_model)
    device = device_info()
    plan, shape = make_plan(
        base_model,
        config,
        train_examples=len(train_examples),
        device=device,
        given_validation=len(eval_examples),
    )
    train, validation = list(train_examples), list(eval_examples)
    if plan.validation_examples and not validation:
        train, validation = validation_split(train, plan.validation_examples, seed=config.seed)
    lengths = [token_length(tokenizer, m) for m in train]
    eval_lengths = [token_length(tokenizer, m) for m in validation]
    answers = sum(answer_length(tokenizer, m) for m in train) if plan.answer_only_logits else None
    out = estimate(
        shape,
        lengths,
        plan.config,
        device,
        quantized=plan.quantize,
        eval_token_lengths=eval_lengths,
        trained_layers=len(plan.layers) if plan.layers is not None else None,
        answer_tokens=answers,
        cpu_flops=measured_cpu_flops() if device.get("kind") != "cuda" else None,
        early_stopping=plan.early_stopping,
    )
    out["plan"] = plan.to_dict()
    out["notes"] = list(plan.reasons)
    return out


@functools.cache
def measured_cpu_flops(seconds: float = 0.25) -> float:
    """This CPU's fp32 matrix-product rate (FLOP/s) at the shapes small-model training uses,
    measured once per process (about ``seconds``). Falls back to CPU_EFFECTIVE_FLOPS."""
    try:
        import torch

        a = torch.randn(1024, 576)
        b = torch.randn(576, 1536)
        for _ in range(2):  # warm-up: thread pools, caches
            a @ b
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            a @ b
            runs += 1
        return 2 * 1024 * 576 * 1536 * runs / elapsed
    except Exception:  # pragma: no cover - torch missing or broken
        return CPU_EFFECTIVE_FLOPS


def make_plan(
    base_model: str,
    config: TrainConfig,
    *,
    train_examples: int,
    device: Mapping[str, Any] | None = None,
    given_validation: int = 0,
) -> tuple[Plan, ModelShape]:
    """The recipe for this job here (:func:`engine.recipe.plan_training`) and the model's shape
    (``lora_params`` counts only the layers the plan trains). Loads the model config, no weights."""
    device = dict(device) if device is not None else device_info()
    shape = model_shape(base_model, config)
    kind = str(device.get("kind", "cpu"))
    can_quantize = probe_4bit(kind)[0] if config.quantize != "off" else False
    plan = plan_training(
        config,
        ModelSize(
            params=shape.total_params, num_layers=shape.num_layers, fp32_gb=shape.total_params * 4 / 1e9
        ),
        train_examples=train_examples,
        device_kind=kind,
        can_quantize=can_quantize,
        free_ram_gb=float(device.get("free_gb") or 0.0) if kind != "cuda" else 0.0,
        given_validation=given_validation,
    )
    if plan.layers is not None and shape.num_layers:
        shape = _replace_lora(shape, shape.lora_params * len(plan.layers) // shape.num_layers)
    return plan, shape


def _replace_lora(shape: ModelShape, lora: int) -> ModelShape:
    return replace(shape, lora_params=lora)
