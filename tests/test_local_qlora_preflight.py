"""Pre-flight estimates: tokens, steps, time, memory, and the refusal when a job cannot fit.

Real-size shapes are read from a Llama config on the meta device (no weights, no memory), then
checked against GPUs described as plain dicts, so the "does it fit" arithmetic is tested on a
machine without a GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.config import parse_options
from tests.fakes.llama_shapes import LLAMA_8B as LLAMA_8B_SHAPE

# Llama-3-8B's published shape.
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **LLAMA_8B_SHAPE}


def _gpu(total_gb: float, name: str = "NVIDIA H100 80GB HBM3") -> dict[str, object]:
    return {
        "kind": "cuda",
        "name": name,
        "total_gb": total_gb,
        "free_gb": total_gb,
        "bf16": True,
        "peak_tflops": 989.0,
    }


@pytest.fixture(scope="module")
def shape_8b(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from engine.backends.local_preflight import model_shape

    folder = tmp_path_factory.mktemp("llama8b")
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    return model_shape(str(folder), parse_options({}))


def test_meta_shape_counts_an_8b_llama(shape_8b) -> None:  # type: ignore[no-untyped-def]
    assert 7.9e9 < shape_8b.total_params < 8.1e9
    assert shape_8b.other_params == pytest.approx(2 * 128256 * 4096, rel=0.01)  # embeddings + lm_head
    # LoRA r=16 on q/k/v/o: 32 layers x 16 x ((4096+4096) x 2 + (4096+1024) x 2)
    assert shape_8b.lora_params == 32 * 16 * (2 * 8192 + 2 * 5120)


def test_an_8b_qlora_job_fits_an_h100_without_checkpointing(shape_8b) -> None:  # type: ignore[no-untyped-def]
    from engine.backends.local_preflight import estimate

    config = parse_options({"max_length": "1024"})
    out = estimate(shape_8b, [500] * 1000, config, _gpu(80), quantized=True)
    assert out["fits"] and not out["checkpointing"]
    assert out["tokens"] == 500 * 1000 * 3 and out["steps"] == math.ceil(1000 / 4 / 4) * 3
    assert 8 < out["gpu_memory_gb"] < 60
    # 4N FLOPs/token at 20% of 989 TFLOP/s: about 6k tokens/s, so 1.5M tokens take minutes, not hours.
    assert 60 < out["seconds"] < 3600
    assert "tokens" in out["message"] and "GB" in out["message"]


def test_checkpointing_is_turned_on_only_when_needed_to_fit(shape_8b) -> None:  # type: ignore[no-untyped-def]
    from engine.backends.local_preflight import estimate

    config = parse_options({"max_length": "1024"})
    roomy = estimate(shape_8b, [1024] * 100, config, _gpu(80), quantized=True)
    tight = estimate(shape_8b, [1024] * 100, config, _gpu(24, "NVIDIA L4"), quantized=True)
    assert not roomy["checkpointing"] and tight["checkpointing"] and tight["fits"]
    assert tight["gpu_memory_gb"] < roomy["gpu_memory_gb"]
    assert tight["seconds"] > roomy["seconds"] * 24 / 989 * 121 / 24  # slower GPU, recompute: not faster


def test_a_job_that_cannot_fit_is_refused_with_what_to_change(shape_8b) -> None:  # type: ignore[no-untyped-def]
    from engine.backends.local_preflight import estimate

    config = parse_options({"max_length": "4096"})
    out = estimate(shape_8b, [4096] * 100, config, _gpu(8, "Tesla T4"), quantized=True)
    assert not out["fits"]
    assert "does not fit" in out["message"] and "Tesla T4" in out["message"]
    assert "batch=2 accum=8" in out["message"] and "max_length" in out["message"]
    full = estimate(shape_8b, [4096] * 100, config, _gpu(8, "Tesla T4"), quantized=False)
    assert full["gpu_memory_gb"] > out["gpu_memory_gb"]
    # 16-bit weights: 16 GB; NF4 blocks (3.6 GB) plus the fp32 embeddings and lm_head (4.2 GB).
    assert full["memory_breakdown_gb"]["weights_gb"] == pytest.approx(16.06, abs=0.1)
    assert out["memory_breakdown_gb"]["weights_gb"] == pytest.approx(7.8, abs=0.2)


def test_steps_follow_batch_and_accumulation(shape_8b) -> None:  # type: ignore[no-untyped-def]
    from engine.backends.local_preflight import estimate

    out = estimate(shape_8b, [10] * 10, parse_options({"epochs": "2"}), _gpu(80), quantized=True)
    assert out["steps_per_epoch"] == 1 and out["steps"] == 2  # 10 examples: 3 micro-batches of 4, accum 4


@pytest.mark.slow
def test_preflight_on_builtin_tiny_uses_the_real_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from engine.backends.local_qlora import preflight

    examples = [
        [{"role": "user", "content": f"price of item {i}?"}, {"role": "assistant", "content": str(i * 3)}]
        for i in range(20)
    ]
    config = parse_options({"epochs": "2", "batch": "4", "accum": "1"})
    out = preflight(base_model=str(tiny_model_dir), train_examples=examples, config=config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [
        len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]) for m in examples
    ]
    assert out["tokens"] == sum(lengths) * 2 and out["steps"] == 10 and out["max_length"] == max(lengths)
    assert out["fits"] and not out["quantized"] and out["device"]["kind"] == "cpu"  # the CPU recipe: fp32 LoRA
    assert out["plan"]["recipe"] == "cpu" and out["notes"]
    assert out["memory_gb"] > 0 and out["seconds"] > 0 and out["message"]
    json.dumps(out)  # stored in the job and sent as an event: must be JSON-able
