"""OpenAI model names and fine-tuning parameters: pure rules, no request and no ``openai`` import.

The price table (:mod:`engine.backends.openai_costs`) and the shutdown table
(:mod:`engine.backends.openai_dates`) are both keyed by what this module reads from a name::

    model_family("ft:gpt-4.1-mini-2025-04-14:org::x") -> "gpt-4.1-mini"    (dated suffix dropped)
    base_snapshot("ft:gpt-4o-2024-08-06:org::x") -> "gpt-4o-2024-08-06"      (any other name unchanged)
    looks_like_openai_model(name) -> bool    "ft:...", "gpt-...", "o4-mini": route /ask to OpenAI.
    check_base_model(model)                  UsageError for builtin:, local paths, Hugging Face ids.
    normalise_hyperparameters(raw) -> dict   UsageError listing every problem.
    job_suffix(job_id) -> "ftbot-<job_id>"   (at most 18 characters).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import UsageError

#: OpenAI refuses a fine-tuning job with fewer training examples than this.
OPENAI_MIN_EXAMPLES = 10

_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_HYPERPARAMETER_ALIASES = {
    "epochs": "n_epochs",
    "lr_multiplier": "learning_rate_multiplier",
    "batch": "batch_size",
}


def model_family(model: str) -> str:
    """``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``; ``ft:gpt-4.1-mini-2025-04-14:org::x`` ->
    ``gpt-4.1-mini``."""
    name = model.strip()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return _DATED_SUFFIX.sub("", name)


def base_snapshot(model: str) -> str:
    """The OpenAI base model a name stands on: ``ft:gpt-4o-2024-08-06:org::x`` ->
    ``gpt-4o-2024-08-06``; any other name unchanged."""
    name = model.strip()
    return name[3:].split(":", 1)[0] if name.startswith("ft:") else name


def looks_like_openai_model(name: str) -> bool:
    """True for names chat completions would route to OpenAI (``ft:...``, ``gpt-...``, ``o1``...)."""
    return bool(re.match(r"^(ft:|gpt-|chatgpt-|o\d)", name.strip()))


def check_base_model(model: str) -> None:
    """Refuse names that are clearly not OpenAI models (builtin:tiny, local paths, Hugging Face
    ids) before uploading anything. OpenAI itself judges the rest.

    Raises:
        UsageError: no name, or a name that is not an OpenAI model.
    """
    name = (model or "").strip()
    if not name:
        raise UsageError(
            "No base model given for the OpenAI backend.",
            hint="Use for example base_model=gpt-4.1-mini-2025-04-14.",
        )
    if name.startswith("builtin:") or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(
            f"'{name}' is not an OpenAI model: the OpenAI backend fine-tunes OpenAI's models "
            "(for example gpt-4.1-mini-2025-04-14 or gpt-4o-mini-2024-07-18).",
            hint="Use backend=local for local and Hugging Face models.",
        )


def job_suffix(job_id: str) -> str:
    """The model-name suffix naming our job: letters, digits and dashes, short enough for every
    model's limit (18 characters on older ones)."""
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", job_id).strip("-")
    return f"ftbot-{clean}"[:18].rstrip("-")


def normalise_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """n_epochs (alias epochs) 1-50, batch_size >= 1, learning_rate_multiplier > 0, each a
    number or "auto"; keys not given are left to OpenAI.

    Raises:
        UsageError: listing every problem.
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        name = _HYPERPARAMETER_ALIASES.get(key, key)
        if value is None:
            continue
        if name not in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            problems.append(
                f"unknown hyperparameter '{key}' (accepted: n_epochs, batch_size, learning_rate_multiplier)"
            )
            continue
        if isinstance(value, str) and value.strip().lower() == "auto":
            out[name] = "auto"
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{name}={value!r} is not a number or 'auto'")
            continue
        if name == "learning_rate_multiplier":
            if not (number > 0 and math.isfinite(number)):
                problems.append(f"learning_rate_multiplier must be above 0 (got {value!r})")
            else:
                out[name] = number
            continue
        if not math.isfinite(number) or number != int(number):
            problems.append(f"{name} must be a whole number (got {value!r})")
            continue
        low, high = (1, 50) if name == "n_epochs" else (1, 256)
        if not low <= number <= high:
            problems.append(f"{name} must be between {low} and {high} (got {value!r})")
            continue
        out[name] = int(number)
    if problems:
        raise UsageError("Bad OpenAI hyperparameters: " + "; ".join(problems) + ".")
    return out
