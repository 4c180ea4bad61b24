"""engine/recipe.py: the recipe chosen for a model size, an amount of data and a device. Pure."""

from __future__ import annotations

import pytest

from engine.config import TrainConfig, apply_base_model_defaults, parse_options
from engine.recipe import ModelSize, lr_for_size, plan_training, validation_size, validation_split
from engine.settings import BUILTIN_TINY

SMOLLM2 = ModelSize(params=134_515_008, num_layers=30, fp32_gb=0.54)
LLAMA_8B = ModelSize(params=8_030_261_248, num_layers=32, fp32_gb=32.1)


def test_a_small_model_on_a_cpu_gets_the_cpu_recipe_and_says_why() -> None:
    plan = plan_training(parse_options({}), SMOLLM2, train_examples=252, device_kind="cpu", can_quantize=True)
    c = plan.config
    assert plan.recipe == "cpu" and plan.quantize is False  # fp32 LoRA: faster than bnb 4-bit on a CPU
    assert c.learning_rate == 2e-3  # sized for 135M parameters, not the guide's 2e-4
    assert (c.batch_size, c.grad_accum) == (8, 1)  # an effective batch of 8 for a few hundred examples
    assert plan.layers is None and plan.answer_only_logits
    assert plan.validation_examples == 25 and plan.early_stopping
    assert c.epochs == 3  # ceil(640 / 227)
    text = " ".join(plan.reasons)
    for phrase in ("full-precision", "lr 0.002", "every layer", "validation", "Up to 3 epochs"):
        assert phrase in text, phrase
    assert plan.to_dict()["lora_layers"] == "all"


def test_a_large_model_on_a_gpu_keeps_the_guides_qlora_recipe() -> None:
    plan = plan_training(
        parse_options({}), LLAMA_8B, train_examples=2000, device_kind="cuda", can_quantize=True
    )
    c = plan.config
    assert plan.recipe == "gpu" and plan.quantize is True
    assert (c.learning_rate, c.batch_size, c.grad_accum, c.lora_r) == (2e-4, 4, 4, 16)
    assert plan.layers is None and not plan.answer_only_logits  # TRL's fused head does it on Triton
    assert c.epochs == 2  # a big data set needs fewer passes
    assert plan.validation_examples == 64  # 10%, at most 64


def test_what_the_user_set_is_kept() -> None:
    config = parse_options({"lr": "5e-4", "epochs": "7", "batch": "2", "accum": "8", "layers": "6"})
    plan = plan_training(config, SMOLLM2, train_examples=252, device_kind="cpu", can_quantize=True)
    c = plan.config
    assert (c.learning_rate, c.epochs, c.batch_size, c.grad_accum) == (5e-4, 7, 2, 8)
    assert plan.layers == tuple(range(24, 30))
    assert any("as asked" in r for r in plan.reasons)


def test_values_set_in_code_that_differ_from_the_defaults_count_as_chosen() -> None:
    plan = plan_training(
        TrainConfig(epochs=1), SMOLLM2, train_examples=252, device_kind="cpu", can_quantize=False
    )
    assert plan.config.epochs == 1


def test_the_builtin_tiny_demo_settings_are_kept() -> None:
    config = apply_base_model_defaults(parse_options({}), BUILTIN_TINY)
    plan = plan_training(
        config,
        ModelSize(params=200_000, num_layers=2),
        train_examples=180,
        device_kind="cpu",
        can_quantize=True,
    )
    assert plan.config.learning_rate == config.learning_rate and plan.config.epochs == config.epochs


def test_recipe_guide_is_the_guide_exactly_even_on_a_cpu() -> None:
    plan = plan_training(
        parse_options({"recipe": "guide"}), SMOLLM2, train_examples=252, device_kind="cpu", can_quantize=True
    )
    c = plan.config
    assert plan.recipe == "guide" and plan.quantize is True
    assert (c.learning_rate, c.epochs, c.batch_size, c.grad_accum) == (2e-4, 3, 4, 4)
    assert not plan.early_stopping and not plan.answer_only_logits and plan.layers is None


def test_quantize_on_forces_4bit_on_a_cpu_and_off_never_quantizes() -> None:
    on = plan_training(
        parse_options({"quantize": "on"}), SMOLLM2, train_examples=100, device_kind="cpu", can_quantize=True
    )
    off = plan_training(
        parse_options({"quantize": "off"}),
        LLAMA_8B,
        train_examples=100,
        device_kind="cuda",
        can_quantize=True,
    )
    assert on.quantize is True and off.quantize is False


def test_a_cpu_without_room_for_fp32_weights_trains_in_4bit() -> None:
    plan = plan_training(
        parse_options({}),
        LLAMA_8B,
        train_examples=100,
        device_kind="cpu",
        can_quantize=True,
        free_ram_gb=24.0,
    )
    assert plan.quantize is True and any("do not fit in the free RAM" in r for r in plan.reasons)


def test_few_examples_train_longer_without_early_stopping() -> None:
    plan = plan_training(parse_options({}), SMOLLM2, train_examples=40, device_kind="cpu", can_quantize=False)
    assert plan.validation_examples == 0 and not plan.early_stopping
    assert plan.config.epochs == 8  # ceil(640 / 40) = 16, at most 8
    assert any("Too few examples" in r for r in plan.reasons)


def test_a_caller_s_own_validation_examples_are_used_instead_of_a_split() -> None:
    plan = plan_training(
        parse_options({}),
        SMOLLM2,
        train_examples=40,
        device_kind="cpu",
        can_quantize=False,
        given_validation=12,
    )
    assert plan.early_stopping and plan.validation_examples == 0


@pytest.mark.parametrize(
    ("params", "lr"), [(135e6, 2e-3), (494e6, 5e-4), (1.5e9, 5e-4), (3.2e9, 3e-4), (8e9, 2e-4), (70e9, 2e-4)]
)
def test_learning_rate_by_model_size(params: float, lr: float) -> None:
    assert lr_for_size(params) == lr


def test_the_validation_split_is_deterministic_disjoint_and_keeps_order() -> None:
    examples = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": str(i)}] for i in range(100)
    ]
    train, validation = validation_split(examples, validation_size(len(examples)), seed=3)
    again = validation_split(examples, validation_size(len(examples)), seed=3)
    assert (train, validation) == again
    assert len(validation) == 10 and len(train) == 90
    assert all(v not in train for v in validation)
    assert train == [e for e in examples if e in train]  # order kept
    assert validation_split(examples, 10, seed=4)[1] != validation  # the seed matters
    assert validation_split(examples, 0)[1] == []
