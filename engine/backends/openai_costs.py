"""What an OpenAI fine-tuning job costs: the price table, token counting, the estimate before a
job starts. Offline and without the ``openai`` library.

    default_token_counter(cache_dir=None) -> TokenCounter
        tiktoken's o200k_base only when tiktoken is installed AND its encoding file is already
        cached; otherwise :data:`ESTIMATED_COUNTER` (about 4 characters per token).
    count_example_tokens(example, counter) -> int    the OpenAI cookbook's formula.
    training_price(model, overrides) -> (USD per 1M tokens | None, where the figure comes from)
    estimate_cost(examples, model, epochs, *, counter, settings) -> CostEstimate
        examples: messages lists, {"messages": [...]} dicts, or objects with ``.messages``.
        ``confirmation_required`` when the cost is above settings.openai_confirm_usd or unknown.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.backends.openai_models import model_family, normalise_hyperparameters
from engine.messages import message_text
from engine.settings import Settings

# USD per 1M training tokens, by model family (the dated snapshot suffix is ignored).
# Source: OpenAI's pricing page as of the GPT-4.1 launch; 4o and 4o-mini corroborated by dated
# third-party pages (May/June 2026). OpenAI changes these: override with FTBOT_OPENAI_PRICES.
PRICES_AS_OF = "2025-04-14"
TRAINING_PRICES_USD_PER_1M: Mapping[str, float] = MappingProxyType(
    {
        "gpt-4o-mini": 3.00,
        "gpt-4o": 25.00,
        "gpt-4.1": 25.00,
        "gpt-4.1-mini": 5.00,
        "gpt-4.1-nano": 1.50,
    }
)

# tiktoken caches encodings under this name (sha1 of the download URL); it downloads on a miss,
# which fails offline, so we only use it when the file is already there.
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


@dataclass(frozen=True)
class TokenCounter:
    """Counts the tokens of one string. ``exact`` is False for an estimate; ``method`` says how."""

    count_text: Callable[[str], int]
    exact: bool
    method: str


def estimate_tokens(text: str) -> int:
    """About 4 characters per token (OpenAI's rule of thumb for English)."""
    return math.ceil(len(text) / 4) if text else 0


ESTIMATED_COUNTER = TokenCounter(
    estimate_tokens, exact=False, method="estimate (about 4 characters per token)"
)


def default_token_counter(cache_dir: Path | None = None) -> TokenCounter:
    """tiktoken's ``o200k_base`` (the encoding of gpt-4o*, gpt-4.1*) when tiktoken is installed
    and the encoding is already cached in ``cache_dir`` (tiktoken's default cache, under the
    temp directory, when None); otherwise :data:`ESTIMATED_COUNTER`. Never touches the network
    on purpose: tiktoken is not a dependency and downloads its encodings on first use."""
    try:
        tiktoken = importlib.import_module("tiktoken")
    except ImportError:
        return ESTIMATED_COUNTER
    directory = cache_dir or Path(tempfile.gettempdir()) / "data-gym-cache"
    if not (directory / hashlib.sha1(_O200K_URL.encode()).hexdigest()).is_file():
        return ESTIMATED_COUNTER
    try:
        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # a corrupt cache or a download attempt that failed: fall back
        return ESTIMATED_COUNTER
    return TokenCounter(
        lambda text: len(encoding.encode(text, disallowed_special=())),
        exact=True,
        method="tiktoken o200k_base",
    )


def _messages_of(example: Any) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """(messages, tools) of an example given as a messages list, a dict or an Example object."""
    if isinstance(example, Mapping):
        return example.get("messages") or [], example.get("tools")
    messages = getattr(example, "messages", None)
    if messages is not None:
        return messages, getattr(example, "tools", None)
    return example, None


def count_example_tokens(example: Any, counter: TokenCounter = ESTIMATED_COUNTER) -> int:
    """Billable tokens of one example, by the OpenAI cookbook's formula: every message costs 3
    tokens plus its content (plus 1 with a ``name``), every example 3 more. All roles count."""
    messages, tools = _messages_of(example)
    total = 3
    for message in messages:
        total += 3 + counter.count_text(message_text(message.get("content")))
        if message.get("name"):
            total += 1
        if message.get("tool_calls"):
            total += counter.count_text(json.dumps(message["tool_calls"], ensure_ascii=False))
    if tools:
        total += counter.count_text(json.dumps(tools, ensure_ascii=False))
    return total


def default_epochs(n_examples: int) -> int:
    """The epochs OpenAI picks for ``n_epochs="auto"`` (cookbook heuristic): 3, more for tiny
    datasets (at least 100 example-passes, at most 25 epochs), fewer for huge ones."""
    n = max(1, n_examples)
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25_000:
        return max(1, 25_000 // n)
    return 3


def training_price(model: str, overrides: Mapping[str, float] | None = None) -> tuple[float | None, str]:
    """(USD per 1M training tokens, where that figure comes from); (None, reason) when unknown."""
    overrides = overrides or {}
    family = model_family(model)
    for key in (model, family):
        if key in overrides:
            return float(overrides[key]), "FTBOT_OPENAI_PRICES"
    if family in TRAINING_PRICES_USD_PER_1M:
        return TRAINING_PRICES_USD_PER_1M[family], f"ftbot's price table of {PRICES_AS_OF}"
    return None, "no price known"


def plural(count: int, noun: str) -> str:
    """``1 day``, ``2 days``, ``1,200 examples``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _usd(amount: float) -> str:
    return "less than $0.01" if 0 < amount < 0.005 else f"about ${amount:,.2f}"


@dataclass(frozen=True)
class CostEstimate:
    """What an OpenAI fine-tuning job will cost, before it starts."""

    model: str
    examples: int
    tokens_per_epoch: int
    epochs: int
    epochs_auto: bool  # OpenAI chooses; ``epochs`` is its usual choice
    total_tokens: int
    max_example_tokens: int
    usd_per_million: float | None
    usd: float | None  # None when no price is known for the model
    price_source: str
    tokens_exact: bool
    counting: str
    threshold_usd: float
    confirmation_required: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def estimate_cost(
    examples: Iterable[Any],
    model: str,
    epochs: int | str = "auto",
    *,
    counter: TokenCounter,
    settings: Settings,
) -> CostEstimate:
    """Training cost before starting: tokens per epoch x epochs x price per 1M tokens (the price
    from settings.openai_training_prices, else :data:`TRAINING_PRICES_USD_PER_1M`).

    Raises:
        UsageError: ``epochs`` is neither "auto" nor a whole number from 1 to 50.
    """
    per_example = [count_example_tokens(ex, counter) for ex in examples]
    n = len(per_example)
    epochs_auto = epochs in ("auto", None, "")
    n_epochs = (
        default_epochs(n) if epochs_auto else normalise_hyperparameters({"n_epochs": epochs})["n_epochs"]
    )
    tokens = sum(per_example)
    total = tokens * n_epochs
    price, source = training_price(model, settings.openai_training_prices)
    usd = None if price is None else round(total * price / 1_000_000, 4)
    threshold = settings.openai_confirm_usd
    confirm = usd is None or usd > threshold
    approx = "" if counter.exact else "about "
    epochs_words = plural(n_epochs, "epoch") + (
        " (what OpenAI usually picks for 'auto')" if epochs_auto else ""
    )
    counted = (
        "Tokens counted with " + counter.method
        if counter.exact
        else "Tokens estimated at about 4 characters each (no tokenizer available offline)"
    )
    parts = [
        f"Fine-tuning {model} on OpenAI: {approx}{total:,} training tokens, {tokens:,} per epoch over "
        f"{plural(n, 'example')} x {epochs_words}. {counted}."
    ]
    if usd is None:
        parts.append(
            f"No training price is known for '{model}', so the cost is unknown: check OpenAI's pricing "
            "page (or set FTBOT_OPENAI_PRICES=model=USD_per_1M_tokens) and confirm to start."
        )
    else:
        parts.append(f"At ${price:.2f} per 1M tokens ({source}) that comes to {_usd(usd)}.")
        if confirm:
            parts.append(f"This is above the ${threshold:.2f} confirmation threshold: confirm to start.")
    return CostEstimate(
        model=model,
        examples=n,
        tokens_per_epoch=tokens,
        epochs=n_epochs,
        epochs_auto=epochs_auto,
        total_tokens=total,
        max_example_tokens=max(per_example, default=0),
        usd_per_million=price,
        usd=usd,
        price_source=source,
        tokens_exact=counter.exact,
        counting=counter.method,
        threshold_usd=threshold,
        confirmation_required=confirm,
        message=" ".join(parts),
    )
