"""The local backends on a CUDA GPU: what CI's CPU cannot exercise. Skipped without CUDA.

Run on a GPU host with ``pytest tests/test_cuda.py`` (bench/device_check.sh does). The CPU tests
(test_local_qlora.py, test_local_serving.py) pin the CPU's choices: adamw_torch, fp32, a CPU
reference. These check the GPU's: 4-bit NF4 weights on the GPU, bf16 compute, the paged 8-bit
AdamW optimizer, and served 4-bit answers equal to the seed's way (load the base, then
``PeftModel.from_pretrained``, greedy ``generate``) loaded in the same precision.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.progress import ListSink

pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.xdist_group("cuda")]

MAX_NEW = 12
PROMPTS = ["Is item 7 in stock?", "price of a laptop?", "Hello there, how are you today?", "a"]


@pytest.fixture(scope="module", autouse=True)
def cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


def _examples(n: int, start: int = 0) -> list[list[dict[str, Any]]]:
    """An easy task (every answer is "yes"): the loss must fall within a few steps."""
    return [
        [
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": f"Is item {i} in stock?"},
            {"role": "assistant", "content": "yes"},
        ]
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from engine.backends.local_qlora import train
    from engine.config import parse_options

    sink = ListSink()
    result = train(
        job_id="ft-cuda",
        base_model=str(tiny_model_dir),
        train_examples=_examples(24),
        eval_examples=_examples(4, start=100),
        config=parse_options({"epochs": "2", "batch": "4", "accum": "1", "lr": "5e-3", "r": "8"}),
        output_dir=tmp_path_factory.mktemp("qlora-cuda"),
        sink=sink,
        should_stop=lambda: False,
    )
    return SimpleNamespace(result=result, events=sink.events)


def test_qlora_on_cuda_is_4bit_nf4_with_bf16_and_the_paged_8bit_optimizer(trained: SimpleNamespace) -> None:
    import torch

    result = trained.result
    resolved = result.resolved
    assert resolved["device"] == "cuda"
    assert result.quantized is True and resolved["quantized"] is True
    assert resolved["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert resolved["optimizer"] == "paged_adamw_8bit"
    steps = [e for e in trained.events if e.kind == "step"]
    losses = [e.metrics["loss"] for e in steps]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    assert all(e.metrics["gpu_memory_gb"] > 0 for e in steps)
    assert result.metrics["peak_memory_gb"] > 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def _reference(base_dir: Path, adapter: Path | None, prompt: str) -> str:
    """The seed's way, written apart from the server, in the server's precision on the GPU: NF4
    with double quantization, bf16 (else fp16) compute, the whole model on GPU 0."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_dir,
        dtype=dtype,
        device_map={"": 0},
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
    )
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=MAX_NEW, do_sample=False)
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_served_answers_on_cuda_are_4bit_and_equal_the_seed_way(
    trained: SimpleNamespace, tiny_model_dir: Path, builtin_dir: Path
) -> None:
    import bitsandbytes as bnb

    from engine.backends.local_model import four_bit_available, load_base
    from engine.backends.local_serving import ModelServer

    assert four_bit_available()  # what the server's "auto" (quantize=None) decides on
    loaded: list[Any] = []

    def loader(name: str) -> tuple[Any, Any]:
        model, tokenizer = load_base(name)  # quantize=None, as ModelServer.from_settings serves
        loaded.append(model)
        return model, tokenizer

    adapter = trained.result.adapter_dir
    base = str(tiny_model_dir)
    with ModelServer(builtin_dir=builtin_dir, max_new_tokens=MAX_NEW, loader=loader) as srv:
        served = {
            name: srv.ask(PROMPTS[0], base_model=base, adapter=path)
            for name, path in (("base", None), ("tuned", adapter))
        }
        model = loaded[0]
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
        assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert srv.base_loads == 1 and srv.adapter_loads == 1

    # Concurrent requests share one batched generate on the GPU. A long window that closes as
    # soon as the batch is full; the warm-up just before makes the burst a burst.
    with ModelServer(
        builtin_dir=builtin_dir,
        max_new_tokens=MAX_NEW,
        batch_window_seconds=10.0,
        max_batch_size=len(PROMPTS),
    ) as srv:
        srv.ask("warm up", base_model=base, adapter=adapter)
        futures = [srv.submit(p, base_model=base, adapter=adapter) for p in PROMPTS]
        batched = [f.result(timeout=120) for f in futures]
        assert max(srv.batch_sizes) == len(PROMPTS)
    assert served["base"].text == _reference(tiny_model_dir, None, PROMPTS[0])
    assert served["tuned"].text == _reference(tiny_model_dir, adapter, PROMPTS[0])
    assert served["tuned"].text != served["base"].text
    # Left padding in bf16 may flip a near-tie; most rows must still agree with the unpadded answer.
    same = sum(
        a.text == _reference(tiny_model_dir, adapter, p) for p, a in zip(PROMPTS, batched, strict=True)
    )
    assert same >= len(PROMPTS) // 2, f"only {same}/{len(PROMPTS)} batched answers equal one-at-a-time"
