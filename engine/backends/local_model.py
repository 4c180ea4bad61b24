"""The local-model layer: how a base model and its tokenizer are loaded, rendered and measured,
the same way for training (``local_qlora``), pre-flight (``local_preflight``), generation
(``local_generation``), the model server (``local_serving``) and dataset validation.

What lives here, each defined once:

* **4-bit probe** (:func:`probe_4bit`, :func:`four_bit_available`) and the NF4 quantization
  config (:func:`nf4_config`): an adapter trained on a 4-bit NF4 base with double quantization is
  served on the same kind of base, in the same compute dtype.
* **Precision** (:func:`choose_precision`, :func:`torch_dtype`): bf16 on GPUs that have it, else
  fp16; fp32 on the CPU; an explicit ``precision=`` is honoured except half precision on a CPU.
* **Tokenizer** (:func:`load_tokenizer`): the one loader. Refuses a path that is not a directory,
  turns any loading failure into a :class:`BackendUnavailable` in words fit for a channel (the
  library's text goes to the log), gives a tokenizer without a pad token the EOS token, and pads
  on the side the caller asks for (``left`` for generation, ``right`` for training). Whether a
  chat template is required is the caller's choice (:func:`require_chat_template`).
* **Model** (:func:`load_model`, :func:`load_base`): ``from_pretrained`` with the dtype, the
  whole model on the current GPU when there is one, and NF4 when quantizing; :func:`load_base`
  adds the tokenizer, eval mode and optionally a LoRA adapter on top.
* **Template rendering and token counting** (:func:`render_prompt`, :func:`render`,
  :func:`token_length`, :func:`answer_length`, :class:`ChatTokenCounter`, :func:`token_counter_for`).
* **Context length** (:func:`context_length`): the smaller of the model's
  ``max_position_embeddings`` and the tokenizer's ``model_max_length`` (a tokenizer "no limit"
  placeholder does not count), 2048 when neither is known.

Imports: no other backend module except ``local_builtin`` (builtin model names; it imports only
the builders ``local_tiny`` and ``local_smollm2``, which import no backend module).
torch/transformers/peft/bitsandbytes are imported inside functions, so importing this is cheap.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.backends.local_builtin import is_builtin, resolve_base_model
from engine.errors import BackendUnavailable, FtbotError, GenerationError, ResourceExhausted, UsageError
from engine.messages import message_text
from engine.settings import BUILTIN_TINY

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
Message = Mapping[str, Any]

#: A context length at or above this is a tokenizer's "no limit" placeholder (they say int(1e30)).
NO_LIMIT = 1_000_000
#: The context length when neither the model nor the tokenizer states one.
DEFAULT_CONTEXT = 2048
#: The keys chat templates understand (``weight`` is OpenAI's, not the template's).
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")

__all__ = [
    "DEFAULT_CONTEXT",
    "ChatTokenCounter",
    "answer_length",
    "choose_precision",
    "clean_messages",
    "context_length",
    "first_line",
    "four_bit_available",
    "load_base",
    "load_failure",
    "load_model",
    "load_tokenizer",
    "model_context_length",
    "model_load_kwargs",
    "nf4_config",
    "pad_with_eos",
    "probe_4bit",
    "render",
    "render_prompt",
    "require_chat_template",
    "token_counter_for",
    "token_length",
    "tokenizer_limit",
    "torch_dtype",
]


def first_line(exc: BaseException, limit: int = 240) -> str:
    """First line of an exception's text, bounded: enough to act on, never a traceback."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# 4-bit and precision


def probe_4bit(device: str) -> tuple[bool, str]:
    """Can bitsandbytes quantize to NF4 on ``device`` ("cuda" or "cpu")? Tries it on a small tensor
    rather than trusting version numbers. Returns (ok, reason when not)."""
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"bitsandbytes cannot be loaded ({type(exc).__name__}: {exc})"
    try:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        weight = torch.randn(64, 64, dtype=dtype, device=device)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
        restored = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
        if restored.shape != weight.shape or not torch.isfinite(restored).all():
            return False, "bitsandbytes 4-bit round trip gave wrong values"
    except Exception as exc:
        return False, f"bitsandbytes cannot quantize on {device} ({type(exc).__name__}: {exc})"
    return True, ""


@functools.cache
def four_bit_available() -> bool:
    """Whether bitsandbytes can hold a model in 4-bit NF4 on this machine's device (CUDA, or the
    CPU with bitsandbytes >= 0.50): :func:`probe_4bit`, run once per process."""
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


def choose_precision(requested: str = "auto", *, cuda: bool, bf16_ok: bool) -> str:
    """``bf16``, ``fp16`` or ``fp32``: ``requested`` (a TrainConfig ``precision``) when it can be
    honoured (half precision on the CPU is slow or unsupported: fp32 there); ``auto``: bf16 on a
    GPU that has it, else fp16; fp32 on the CPU."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not cuda:
            return "fp32"
        return requested
    if cuda:
        return "bf16" if bf16_ok else "fp16"
    return "fp32"


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a :func:`choose_precision` answer."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


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


# --------------------------------------------------------------------------------------------
# Loading


def _failure_kind(exc: BaseException) -> str:
    text = str(exc)
    missing = ("not a valid model identifier", "not a local folder", "Repo id must be", "does not exist")
    if isinstance(exc, OSError) and any(phrase in text for phrase in missing):
        return "there is no such local model directory, and no Hugging Face model by that name is reachable"
    if isinstance(exc, OSError) and ("does not appear to have" in text or "no file named" in text):
        return "the directory or repository has no model files"
    if isinstance(exc, OSError):
        return "its files could not be read or downloaded"
    if isinstance(exc, ValueError | KeyError) and ("Unrecognized" in text or "model_type" in text):
        return "it is not a model this version of transformers can load"
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "there is not enough memory for it"
    return f"{type(exc).__name__} (details in the log)"


def load_failure(what: str, name: str, exc: BaseException) -> str:
    """A loading failure in words fit for a channel: what could not be loaded and the kind of
    problem, never the library's own text (it can quote local paths, hub URLs and file lists).
    The full error goes to this process's log (the worker's log, the bot's log) for the operator."""
    log.warning("%s %r could not be loaded: %s: %s", what, name, type(exc).__name__, exc)
    return f"{what} {name!r} could not be loaded: {_failure_kind(exc)}."


def pad_with_eos(tokenizer: Any) -> bool:
    """Give a tokenizer without a pad token the EOS token as its pad token (safe: the attention
    mask, and in training the collator's loss mask, leave padding out). True when it had none."""
    if tokenizer.pad_token is not None:
        return False
    tokenizer.pad_token = tokenizer.eos_token
    return True


def load_tokenizer(base_model: str, *, padding_side: str = "left", notes: list[str] | None = None) -> Any:
    """The tokenizer of ``base_model`` (what ``from_pretrained`` loads: resolve builtin names
    first), padding on ``padding_side`` (``left`` for generation, ``right`` for training), with the
    EOS token as pad token when it has none (a sentence saying so is added to ``notes``).

    Raises:
        BackendUnavailable: ``base_model`` looks like a path and is no directory, or the tokenizer
            cannot be loaded (the message names the kind of problem; the details are logged).
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # "Loading weights" bars on every load are noise in a server's log and in `ftbot ask`.
    hf_logging.disable_progress_bar()
    what = "The tokenizer of base model"
    if base_model.startswith(("/", "./", "../", "~")) and not Path(base_model).expanduser().is_dir():
        raise BackendUnavailable(
            f"{what} {base_model!r} could not be loaded: there is no such local model directory.",
            hint="Check the path, or use a Hugging Face id or builtin:tiny.",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except Exception as exc:
        raise BackendUnavailable(
            load_failure(what, base_model, exc),
            hint="Check the base model name (a local directory or a Hugging Face id this host can download).",
        ) from exc
    if pad_with_eos(tokenizer) and notes is not None:
        notes.append("The tokenizer had no pad token; it pads with the EOS token.")
    tokenizer.padding_side = padding_side
    return tokenizer


def require_chat_template(tokenizer: Any, base_model: str) -> None:
    """Refuse a tokenizer without a chat template (chat examples cannot be formatted for it).

    Raises:
        BackendUnavailable: it has none.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise BackendUnavailable(
            f"The base model {base_model!r} has no chat template, so chat examples cannot be formatted for it.",
            hint="Use an instruction-tuned (chat) model, or builtin:tiny to try the workflow.",
        )


def load_model(base_model: str, *, precision: str, quantize: bool) -> Any:
    """``AutoModelForCausalLM.from_pretrained(base_model)`` in ``precision`` (a
    :func:`choose_precision` answer), on the current GPU when there is one, 4-bit NF4 with double
    quantization when ``quantize``. The model is returned as loaded (training mode).

    Raises:
        ResourceExhausted: out of memory while loading.
        BackendUnavailable: any other loading failure (in words fit for a channel; details logged).
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = model_load_kwargs(torch_dtype(precision), cuda=torch.cuda.is_available(), quantize=quantize)
    try:
        return AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ResourceExhausted(
            load_failure("The base model", base_model, exc),
            hint="Use a smaller base model, or a machine with more memory.",
        ) from exc
    except Exception as exc:
        raise BackendUnavailable(
            load_failure("The base model", base_model, exc),
            hint="Check the base model name (a local directory or a Hugging Face id this host can "
            "download) and that it fits in memory.",
        ) from exc


def load_base(
    base_model: str, *, quantize: bool | None = None, adapter: str | Path | None = None
) -> tuple[Any, Any]:
    """Load ``base_model`` (a local directory or a Hugging Face id; resolve builtin names first
    with ``local_builtin.resolve_base_model``) for inference, with its tokenizer, and optionally
    the LoRA adapter directory ``adapter`` on top (a ``PeftModel``).

    ``quantize``: True = 4-bit NF4 with double quantization (raises when bitsandbytes cannot),
    False = full precision, None = 4-bit on a GPU when :func:`four_bit_available` (on a CPU,
    bitsandbytes' 4-bit matmuls generate about half as fast as fp32, and the CPU recipe trains
    adapters on full-precision weights, so a CPU serves in fp32). The precision is training's
    (:func:`choose_precision` with ``auto``).
    Returns ``(model, tokenizer)``; the model is in eval mode; the tokenizer pads on the left.

    Raises:
        BackendUnavailable: the model or tokenizer cannot be loaded, or 4-bit was required and is
            not available here.
        ResourceExhausted: out of memory while loading.
    """
    import torch

    tokenizer = load_tokenizer(base_model, padding_side="left")
    cuda = torch.cuda.is_available()
    if quantize is None:
        quantize = cuda and four_bit_available()
    elif quantize and not four_bit_available():
        raise BackendUnavailable(
            "4-bit loading was requested but bitsandbytes cannot quantize on this machine.",
            hint="Install bitsandbytes >= 0.50 (CPU) or use a CUDA GPU, or load in full precision.",
        )
    precision = choose_precision("auto", cuda=cuda, bf16_ok=cuda and torch.cuda.is_bf16_supported())
    model = load_model(base_model, precision=precision, quantize=quantize)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Context length


def tokenizer_limit(tokenizer: Any) -> int | None:
    """The tokenizer's ``model_max_length`` when it is a real limit (None for "no limit")."""
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < NO_LIMIT else None


def _config_limit(config: Any) -> int | None:
    for cfg in (config, getattr(config, "text_config", None)):
        value = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def context_length(model: Any, tokenizer: Any) -> int:
    """The most tokens (prompt + answer) the model accepts: the smaller of the model's
    ``max_position_embeddings`` (``model`` is a model or its config) and the tokenizer's limit;
    :data:`DEFAULT_CONTEXT` when neither says."""
    config = getattr(model, "config", model)
    known = [v for v in (_config_limit(config), tokenizer_limit(tokenizer)) if v is not None]
    return min(known) if known else DEFAULT_CONTEXT


def model_context_length(base_model: str, tokenizer: Any) -> int:
    """:func:`context_length` before the weights are loaded (reads the model config only; a
    config that cannot be read counts as unknown)."""
    from transformers import AutoConfig

    try:
        config: Any = AutoConfig.from_pretrained(base_model)
    except (OSError, ValueError):
        config = None
    return context_length(config, tokenizer)


# --------------------------------------------------------------------------------------------
# Template rendering and token counting


def clean_messages(messages: Sequence[Message]) -> Messages:
    """Keep the keys chat templates understand (``weight`` is OpenAI's, not the template's)."""
    return [{k: m[k] for k in MESSAGE_KEYS if k in m and m[k] is not None} for m in messages]


def render(tokenizer: Any, messages: Sequence[Message], **kwargs: Any) -> str:
    """The chat-template text of ``messages`` as training sees it (keys cleaned, not tokenized)."""
    return tokenizer.apply_chat_template(clean_messages(messages), tokenize=False, **kwargs)


def token_length(tokenizer: Any, messages: Sequence[Message]) -> int:
    """Tokens of one example as training sees it (chat template applied)."""
    return len(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])


def answer_length(tokenizer: Any, messages: Sequence[Message]) -> int:
    """Tokens of the last turn (the answer the loss is on), as the template renders it."""
    if len(messages) < 2:
        return token_length(tokenizer, messages)
    prompt = render(tokenizer, messages[:-1], add_generation_prompt=True)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return max(1, token_length(tokenizer, messages) - prompt_tokens)


def render_prompt(tokenizer: Any, conversation: Sequence[Message], chat_template: str | None = None) -> str:
    """The chat-template text of ``conversation`` ending with the assistant generation prompt.

    A template that refuses a system turn (some do) gets the system text folded into the first
    user turn instead.

    Raises:
        GenerationError: the tokenizer has no chat template, or the template rejects the messages.
    """
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if chat_template:
        kwargs["chat_template"] = chat_template
    elif not getattr(tokenizer, "chat_template", None):
        raise GenerationError(
            "This base model's tokenizer has no chat template, so prompts cannot be formatted.",
            hint="Use an instruct/chat model (its tokenizer carries a chat template).",
        )
    messages = [dict(m) for m in conversation]
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except Exception as first:
        if messages and messages[0].get("role") == "system" and len(messages) > 1:
            system = messages.pop(0)
            messages[0]["content"] = f"{system.get('content', '')}\n\n{messages[0].get('content', '')}"
            try:
                return tokenizer.apply_chat_template(messages, **kwargs)
            except Exception:
                pass
        raise GenerationError(f"The chat template rejected the conversation: {first_line(first)}") from first


def prompt_token_counter(tokenizer: Any) -> Callable[[list[dict[str, Any]]], int]:
    """Count a conversation's tokens as the model sees them when it answers: its chat template
    with the generation prompt (:func:`render_prompt`; plain joined contents when the template
    refuses the conversation). Used to fit few-shot examples into the context."""

    def count(messages: list[dict[str, Any]]) -> int:
        try:
            text = render_prompt(tokenizer, messages)
        except FtbotError:
            text = "\n".join(str(m.get("content", "")) for m in messages)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


class ChatTokenCounter:
    """A :data:`engine.dataset.TokenCounter`: one example's messages -> its token count as the
    model sees it in training (chat template applied; without a template, the roles and contents
    one per line). Also ``count_text(text)`` (plain text, no template), ``max_length`` (the
    tokenizer's limit, :func:`tokenizer_limit`, None when unknown), ``name`` and ``description``
    (how reports name it)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.description = f"the {name} tokenizer"
        self.max_length: int | None = tokenizer_limit(tokenizer)
        # The Rust tokenizer directly when there is one: the Python wrapper costs ~5x per call.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            self._encode: Callable[[str], int] = lambda text: len(
                backend.encode(text, add_special_tokens=False).ids
            )
        else:
            self._encode = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    def __call__(self, messages: list[dict[str, Any]]) -> int:
        if self._has_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        else:
            # No chat template (a base, non-chat model): the roles and contents, one per line.
            text = "\n".join(f"{m.get('role', '')}: {message_text(m.get('content'))}" for m in messages)
        return self._encode(text)

    def count_text(self, text: str) -> int:
        return self._encode(text)


def token_counter_for(base_model: str, builtin_dir: Path | None = None) -> ChatTokenCounter:
    """A token counter for ``base_model`` (``builtin:tiny``, a local directory or a Hugging Face id).

    ``builtin:tiny`` is built under ``builtin_dir`` on first use (required for it; any other name,
    e.g. an already resolved directory, needs none). Only the tokenizer is loaded
    (:func:`load_tokenizer`).

    Raises:
        UsageError: the tokenizer cannot be found or loaded (the message names the model).
        BackendUnavailable: transformers is not installed.
    """
    try:
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise BackendUnavailable(
            "Counting tokens with a base model needs the 'transformers' package.",
            hint="Install ftbot's dependencies, or validate without --base-model for an estimate.",
        ) from exc
    if is_builtin(base_model) and builtin_dir is None:
        raise UsageError(f"{base_model} needs a directory to be built in (Settings.builtin_dir).")
    resolved = resolve_base_model(base_model, Path(builtin_dir)) if builtin_dir is not None else base_model
    try:
        tokenizer = load_tokenizer(resolved)
    except BackendUnavailable as exc:
        reason = exc.message.partition(" could not be loaded: ")[2].rstrip(".") or "see the log"
        raise UsageError(
            f"Could not load the tokenizer of base model {base_model!r}: {reason}.",
            hint="Give a local model directory or a Hugging Face id this machine can load "
            "(or builtin:tiny), or leave out --base-model to get estimated token counts.",
        ) from exc
    counter = ChatTokenCounter(tokenizer, base_model)
    if base_model == BUILTIN_TINY:
        counter.description = (
            "the builtin:tiny tokenizer (a tiny built-in test model: real models count differently; "
            "pass --base-model with your model for real counts)"
        )
    return counter
