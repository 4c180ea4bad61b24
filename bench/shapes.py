"""Real-size Llama models with random weights, built locally, for the benchmarks.

A GPU host may have no network (no Hugging Face hub), and speed does not depend on what the
weights are, so ``bench/train.py``, ``bench/ask.py`` and ``bench/eval.py`` can measure a published
model shape (tests/fakes/llama_shapes.py) with random bf16 weights and builtin:tiny's tokenizer:

* ``135m`` - SmolLM2-135M's shape: loads and generates on a CPU in seconds (the trend with size);
* ``1b``   - Llama-3.2-1B's shape;
* ``8b``   - Llama-3-8B's shape (a GPU host: 16 GB of bf16 weights are written to disk).

Random weights never learned to stop: answers run to ``max_new_tokens`` (EOS only by chance), and
their text is noise (most token ids lie outside the tiny tokenizer's 1,024 and decode to nothing).
The benchmarks say so and count generated token ids, not characters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.llama_shapes import LLAMA_1B, LLAMA_8B, SMOLLM_135M  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {"135m": SMOLLM_135M, "1b": LLAMA_1B, "8b": LLAMA_8B}
PUBLISHED: dict[str, str] = {"135m": "SmolLM2-135M", "1b": "Llama-3.2-1B", "8b": "Llama-3-8B"}
_MARKER = "ftbot_shape.json"  # written last: its presence means the build is complete


def describe(shape: str) -> str:
    """How the printouts name a shape: what it is, and that its weights are random."""
    return f"llama-{shape} ({PUBLISHED[shape]} shape, random weights, builtin:tiny's tokenizer)"


def build_shape(shape: str, out_dir: Path) -> Path:
    """A real-size Llama with random bf16 weights and builtin:tiny's tokenizer, saved under
    ``out_dir`` for ``from_pretrained``; returns its directory. A complete earlier build of the
    same shape there is reused (so several benchmarks on one host build it once). Built on the GPU
    when there is one (random init of 8B parameters on a CPU takes minutes)."""
    import gc

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.backends.local_tiny import ensure_builtin_tiny

    target = Path(out_dir) / f"llama-{shape}"
    marker = target / _MARKER
    wanted = json.dumps(SHAPES[shape], sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        return target

    tiny = ensure_builtin_tiny(Path(out_dir) / "builtin")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    marker.write_text(wanted)
    return target


def add_model_arguments(parser: argparse.ArgumentParser, *, default_base: str) -> None:
    """``--base-model`` or ``--shape`` (one of them), and ``--shape-dir``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--base-model", default=default_base, help="builtin:tiny, a directory or a Hugging Face id"
    )
    which.add_argument(
        "--shape",
        choices=sorted(SHAPES, key=list(SHAPES).index),
        help="a real-size Llama with random weights, built here with no download (see bench/shapes.py)",
    )
    parser.add_argument(
        "--shape-dir",
        type=Path,
        default=None,
        help="where --shape is built, or reused when already built there (default: a temporary directory)",
    )


def resolve_model(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    """``(what from_pretrained loads, how the printouts name it)`` for ``--base-model``/``--shape``.
    ``builtin:tiny`` is built under ``work``; ``builtin:smollm2`` is the one in FTBOT_HOME (converted
    there on first use, as the product does), so every benchmark reuses one conversion."""
    if getattr(args, "shape", None):
        return str(build_shape(args.shape, args.shape_dir or work)), describe(args.shape)
    from engine.backends.local_builtin import resolve_base_model
    from engine.settings import BUILTIN_SMOLLM2, Settings

    if args.base_model == BUILTIN_SMOLLM2:
        return resolve_base_model(args.base_model, Settings.from_env().builtin_dir, progress=print), args.base_model
    return resolve_base_model(args.base_model, work / "builtin"), args.base_model
