"""How a local base model is loaded, the same way for training (local_qlora) and serving
(local_serving): the 4-bit probe, the NF4 quantization config, the dtype/device arguments of
``from_pretrained``, and the pad-token fix.

Training and serving must agree here: an adapter trained on a 4-bit NF4 base with double
quantization is served on the same kind of base, in the same compute dtype.

torch/transformers/bitsandbytes are imported inside functions (DESIGN.md's import rules), so
importing this module is cheap.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from engine.backends.local_preflight import probe_4bit

log = logging.getLogger(__name__)

__all__ = [
    "four_bit_available",
    "load_failure",
    "model_load_kwargs",
    "nf4_config",
    "pad_with_eos",
    "probe_4bit",
]


@functools.cache
def four_bit_available() -> bool:
    """Whether bitsandbytes can hold a model in 4-bit NF4 here (CUDA, and the CPU with
    bitsandbytes >= 0.50). The same probe as training (:func:`probe_4bit`: a real NF4 round trip
    on a small tensor), run once per process."""
    try:
        import torch
    except Exception:  # torch missing or broken: full precision
        return False
    ok, why_not = probe_4bit("cuda" if torch.cuda.is_available() else "cpu")
    if not ok:
        log.info("model server: serving in full precision: %s", why_not)
    return ok


def nf4_config(compute_dtype: Any) -> Any:
    """The QLoRA quantization: 4-bit NF4 weights, double quantization, ``compute_dtype`` matmuls."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def model_load_kwargs(compute_dtype: Any, *, cuda: bool, quantize: bool) -> dict[str, Any]:
    """The keyword arguments of ``AutoModelForCausalLM.from_pretrained``: the dtype, the whole
    model on the current GPU when there is one, and :func:`nf4_config` when ``quantize``."""
    kwargs: dict[str, Any] = {"dtype": compute_dtype}
    if cuda:
        import torch

        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if quantize:
        kwargs["quantization_config"] = nf4_config(compute_dtype)
    return kwargs


def pad_with_eos(tokenizer: Any) -> bool:
    """Give a tokenizer without a pad token the EOS token as its pad token (safe: the attention
    mask, and in training the collator's loss mask, leave padding out). True when it had none."""
    if tokenizer.pad_token is not None:
        return False
    tokenizer.pad_token = tokenizer.eos_token
    return True


def load_failure(what: str, name: str, exc: BaseException) -> str:
    """A loading failure in words fit for a channel: what could not be loaded and the kind of
    problem, never the library's own text (it can quote local paths, hub URLs and file lists).
    The full error goes to this process's log (the worker's log, the bot's log) for the operator."""
    log.warning("%s %r could not be loaded: %s: %s", what, name, type(exc).__name__, exc)
    text = str(exc)
    missing = ("not a valid model identifier", "not a local folder", "Repo id must be", "does not exist")
    if isinstance(exc, OSError) and any(phrase in text for phrase in missing):
        kind = "there is no such local model directory, and no Hugging Face model by that name is reachable"
    elif isinstance(exc, OSError) and ("does not appear to have" in text or "no file named" in text):
        kind = "the directory or repository has no model files"
    elif isinstance(exc, OSError):
        kind = "its files could not be read or downloaded"
    elif isinstance(exc, ValueError | KeyError) and ("Unrecognized" in text or "model_type" in text):
        kind = "it is not a model this version of transformers can load"
    elif isinstance(exc, MemoryError) or "out of memory" in text.lower():
        kind = "there is not enough memory for it"
    else:
        kind = f"{type(exc).__name__} (details in the log)"
    return f"{what} {name!r} could not be loaded: {kind}."
