"""builtin:tiny is built locally, deterministically, and loads like any real model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.backends.local_builtin import resolve_base_model
from engine.backends.local_tiny import EOS_TOKEN, ensure_builtin_tiny


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_resolve_passes_other_names_through(tmp_path: Path) -> None:
    assert (
        resolve_base_model("meta-llama/Llama-3.2-1B-Instruct", tmp_path) == "meta-llama/Llama-3.2-1B-Instruct"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_build_is_deterministic_and_idempotent(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = ensure_builtin_tiny(tmp_path)
    assert _digest(again) == _digest(tiny_model_dir)
    assert ensure_builtin_tiny(tmp_path) == again  # second call reuses the build


@pytest.mark.slow
def test_loads_through_from_pretrained_with_a_training_ready_chat_template(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token is not None
    messages = [
        {"role": "system", "content": "Estimate the price."},
        {"role": "user", "content": "Wireless headphones"},
        {"role": "assistant", "content": "349.00"},
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    answer_ids = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    # Only the answer and the EOS that ends it are trained on.
    assert tokenizer.decode(answer_ids) == "349.00" + EOS_TOKEN
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
