"""Token counting with a base model's own tokenizer and chat template, for dataset validation.

:func:`token_counter_for` returns a :data:`engine.dataset.TokenCounter`: a callable that takes
one example's messages and returns its token count as the model will see it in training (chat
template applied). It also has ``count_text(text)`` (plain text, no template; used for assistant
answers), ``max_length`` (the model's context length, when the tokenizer knows a sane one),
``name`` and ``description`` (how reports name it). transformers is imported inside the
function, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import BackendUnavailable, UsageError
from engine.settings import BUILTIN_TINY

# Tokenizers without a real limit report a huge sentinel (int(1e30)); anything above this is "unknown".
_SANE_MAX_LENGTH = 10_000_000


class ChatTokenCounter:
    """Counts tokens through ``apply_chat_template`` (or a plain fallback without a template)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.description = f"the {name} tokenizer"
        limit = getattr(tokenizer, "model_max_length", None)
        self.max_length: int | None = (
            int(limit) if isinstance(limit, int) and 0 < limit < _SANE_MAX_LENGTH else None
        )
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
            text = "\n".join(f"{m.get('role', '')}: {_text(m.get('content'))}" for m in messages)
        return self._encode(text)

    def count_text(self, text: str) -> int:
        return self._encode(text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def token_counter_for(base_model: str, builtin_dir: Path | None = None) -> ChatTokenCounter:
    """A token counter for ``base_model`` (``builtin:tiny``, a local directory or a Hugging Face id).

    ``builtin:tiny`` is built under ``builtin_dir`` on first use (required for it; any other name,
    e.g. an already resolved directory, needs none). Only the tokenizer is loaded.

    Raises:
        UsageError: the tokenizer cannot be found or loaded (the message names the model).
        BackendUnavailable: transformers is not installed.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise BackendUnavailable(
            "Counting tokens with a base model needs the 'transformers' package.",
            hint="Install ftbot's dependencies, or validate without --base-model for an estimate.",
        ) from exc
    from engine.backends.local_builtin import is_builtin, resolve_base_model

    if is_builtin(base_model) and builtin_dir is None:
        raise UsageError(f"{base_model} needs a directory to be built in (Settings.builtin_dir).")
    resolved = resolve_base_model(base_model, Path(builtin_dir)) if builtin_dir is not None else base_model
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(
            f"Could not load the tokenizer of base model {base_model!r}: {_first_line(exc)}.",
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


#: The name TEAM.md first used for this function.
count_tokens_factory = token_counter_for
