"""The local QLoRA recipe, for real: builtin:tiny, 4-bit on the CPU, seconds per run.

One short run (24 examples, 2 epochs, 12 steps) is shared by the tests that only read its results;
the cancel and resume tests share a second one.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.config import TrainConfig, parse_options
from engine.errors import BackendUnavailable, ConfigError
from engine.progress import CallbackSink, ListSink, ProgressEvent

# One worker runs this module, so each shared training run happens once under `pytest -n 2 --dist loadgroup`.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local_qlora")]

N_EXAMPLES = 24
STEPS_PER_EPOCH = 6  # 24 examples / batch 4 / accum 1
EPOCHS = 2


def _examples(n: int, start: int = 0) -> list[list[dict[str, Any]]]:
    """An easy task: every answer is the same word, so the loss must fall within a few steps."""
    return [
        [
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": f"Is item {i} in stock?"},
            {"role": "assistant", "content": "yes"},
        ]
        for i in range(start, start + n)
    ]


def _config(**options: str) -> TrainConfig:
    base = {"epochs": str(EPOCHS), "batch": "4", "accum": "1", "lr": "5e-3", "r": "8", "quantize": "on"}
    return parse_options({**base, **options})


def _train(tiny: Path, out: Path, sink: Any, *, should_stop: Any = lambda: False, **kwargs: Any) -> Any:
    from engine.backends.local_qlora import train

    return train(
        job_id="ft-test",
        base_model=str(tiny),
        train_examples=kwargs.pop("train_examples", _examples(N_EXAMPLES)),
        eval_examples=kwargs.pop("eval_examples", _examples(4, start=100)),
        config=kwargs.pop("config", _config()),
        output_dir=out,
        sink=sink,
        should_stop=should_stop,
        **kwargs,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    weights = tiny_model_dir / "model.safetensors"
    before = _sha256(weights)
    sink = ListSink()
    out = tmp_path_factory.mktemp("qlora")
    result = _train(tiny_model_dir, out, sink, dataset_hash="sha256:abc")
    return SimpleNamespace(result=result, events=sink.events, out=out, base_hash_before=before)


def _steps(events: list[ProgressEvent]) -> list[ProgressEvent]:
    return [e for e in events if e.kind == "step"]


def test_trains_in_4bit_and_the_loss_falls(run: SimpleNamespace) -> None:
    result = run.result
    assert result.quantized is True  # bitsandbytes >= 0.50 quantizes on the CPU
    assert result.resolved["quantized"] and result.resolved["device"] == "cpu"
    assert result.resolved["optimizer"] == "adamw_torch" and result.resolved["precision"] == "fp32"
    assert result.resolved["loss_mode"] == "assistant_only"  # builtin:tiny's template has generation markers
    assert not result.cancelled
    losses = [e.metrics["loss"] for e in _steps(run.events)]
    assert len(losses) == STEPS_PER_EPOCH * EPOCHS
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    evals = [e.metrics["eval_loss"] for e in run.events if e.kind == "eval"]
    assert len(evals) == EPOCHS and evals[-1] < losses[0]
    assert result.metrics["final_loss"] == losses[-1] and result.metrics["eval_loss"] == evals[-1]
    assert result.metrics["tokens"] > 0 and result.metrics["tokens_per_second"] > 0
    assert 0 < result.metrics["trainable_params"] < result.metrics["params"]


def test_events_arrive_in_order_with_warmup_then_cosine_decay(run: SimpleNamespace) -> None:
    steps = _steps(run.events)
    total = STEPS_PER_EPOCH * EPOCHS
    assert [e.step for e in steps] == list(range(1, total + 1))
    assert {e.total for e in steps} == {total}
    epochs = [e.epoch for e in steps]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(EPOCHS)
    lrs = [e.metrics["learning_rate"] for e in steps]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 1 <= peak <= 3  # 10% warm-up of 12 steps
    assert lrs[:peak] == sorted(lrs[:peak]) and lrs[0] < lrs[peak]
    assert lrs[peak] == pytest.approx(5e-3, rel=0.01)
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True) and lrs[-1] < 0.1 * lrs[peak]
    for e in steps:
        assert e.metrics["tokens_per_second"] > 0 and e.metrics["elapsed_seconds"] >= 0
        assert "gpu_memory_gb" not in e.metrics  # CPU run
    assert all(e.metrics["eta_seconds"] >= 0 for e in steps[1:])
    # An eval follows the last step of each epoch; a log event with the decisions precedes training.
    kinds = [e.kind for e in run.events]
    first_step = kinds.index("step")
    assert any(e.kind == "log" and "resolved" in e.data for e in run.events[:first_step])
    eval_positions = [i for i, k in enumerate(kinds) if k == "eval"]
    assert [run.events[i - 1].step for i in eval_positions] == [STEPS_PER_EPOCH, total]
    assert all(e.job_id == "ft-test" and e.at is not None for e in run.events)


def test_adapter_is_saved_in_peft_format_with_a_model_card(run: SimpleNamespace) -> None:
    from safetensors.torch import load_file

    adapter = run.result.adapter_dir
    assert (adapter / "adapter_config.json").exists() and (adapter / "tokenizer_config.json").exists()
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert tensors and all("lora_" in name for name in tensors)  # only LoRA weights are trained and saved
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved it
    card = json.loads((adapter / "ftbot_card.json").read_text())
    assert card["dataset_hash"] == "sha256:abc" and len(card["examples_sha256"]) == 64
    assert TrainConfig.from_dict(card["config"]) == _config()
    assert card["metrics"]["final_loss"] == run.result.metrics["final_loss"]
    assert "LoRA adapter trained by ftbot" in (adapter / "README.md").read_text()
    assert sorted(
        p.name for p in (run.out / "checkpoints").iterdir() if p.name.startswith("checkpoint-")
    ) == [
        f"checkpoint-{STEPS_PER_EPOCH * EPOCHS}",
        f"checkpoint-{STEPS_PER_EPOCH}",
    ]


def test_base_weights_do_not_change_and_the_adapter_reloads_and_generates(
    run: SimpleNamespace, tiny_model_dir: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert _sha256(tiny_model_dir / "model.safetensors") == run.base_hash_before
    tokenizer = AutoTokenizer.from_pretrained(run.result.adapter_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is item 7 in stock?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(**prompt).logits
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), run.result.adapter_dir
    ).eval()
    with torch.no_grad():
        tuned_logits = tuned(**prompt).logits
        with tuned.disable_adapter():
            frozen_logits = tuned(**prompt).logits
        generated = tuned.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(frozen_logits, base_logits)  # the base underneath the adapter is untouched
    assert not torch.allclose(tuned_logits, base_logits)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


@pytest.fixture(scope="module")
def cancelled(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    sink = ListSink()
    stop_after = STEPS_PER_EPOCH + 2  # inside epoch 2, after epoch 1's checkpoint

    def should_stop() -> bool:
        return len(_steps(sink.events)) >= stop_after

    out = tmp_path_factory.mktemp("cancel")
    result = _train(tiny_model_dir, out, sink, should_stop=should_stop)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    return SimpleNamespace(
        result=result, events=list(sink.events), out=out, stop_after=stop_after, checkpoints=checkpoints
    )


def test_should_stop_ends_training_early_without_saving_an_adapter(cancelled: SimpleNamespace) -> None:
    result = cancelled.result
    assert result.cancelled
    # should_stop() first says yes in the step after the stop_after-th step event; that step ends it.
    last = _steps(cancelled.events)[-1].step
    assert result.metrics["steps"] == last == cancelled.stop_after + 1 < result.metrics["total_steps"]
    assert not result.adapter_dir.exists()
    assert [e.kind for e in cancelled.events].count("eval") == 1  # no evaluation for the stopped epoch
    assert cancelled.checkpoints == [
        f"checkpoint-{STEPS_PER_EPOCH}"
    ]  # epoch 1's; nothing saved for the stopped epoch


def test_resume_continues_at_the_saved_step(cancelled: SimpleNamespace, tiny_model_dir: Path) -> None:
    sink = ListSink()
    result = _train(tiny_model_dir, cancelled.out, sink, resume_from=cancelled.out)
    steps = _steps(sink.events)
    assert [e.step for e in steps] == list(range(STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert not result.cancelled and (result.adapter_dir / "adapter_model.safetensors").exists()
    assert result.metrics["steps"] == STEPS_PER_EPOCH * EPOCHS
    # The schedule continues where it was: the resumed run's first lr is the decayed one, not a warm-up.
    assert steps[0].metrics["learning_rate"] < 5e-3 * 0.9


def test_a_template_without_generation_markers_trains_on_prompt_completion_pairs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    plain = tmp_path / "plain-template"
    shutil.copytree(tiny_model_dir, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    )
    tokenizer.save_pretrained(plain)
    sink = ListSink()
    result = _train(
        plain,
        tmp_path / "out",
        sink,
        train_examples=_examples(8),
        eval_examples=[],
        config=_config(epochs="1"),
    )
    assert result.resolved["loss_mode"] == "prompt_completion"
    assert any("prompt/completion" in note for note in result.notes)
    assert any(e.kind == "log" and "prompt/completion" in e.message for e in sink.events)
    assert [e.kind for e in sink.events].count("eval") == 0  # no eval examples, no evaluation
    assert (result.adapter_dir / "adapter_model.safetensors").exists()


def test_quantize_off_trains_lora_on_unquantized_weights_and_says_so(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    sink = ListSink()
    result = _train(
        tiny_model_dir,
        tmp_path,
        sink,
        train_examples=_examples(8),
        eval_examples=[],
        config=_config(quantize="off"),
    )
    assert result.quantized is False and result.resolved["quantized"] is False
    assert any("quantize=off" in note for note in result.notes)
    assert any(e.kind == "log" and "quantize=off" in e.message for e in sink.events)
    assert "LoRA on cpu" in result.notes[-1] and "QLoRA" not in result.notes[-1]
    assert (result.adapter_dir / "adapter_model.safetensors").exists()


def test_bad_requests_are_refused_before_any_work(tiny_model_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    sink = ListSink()
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="wandb is not installed"):
            _train(tiny_model_dir, tmp_path / "a", sink, config=_config(report="wandb"))
    with pytest.raises(BackendUnavailable, match=r"The tokenizer of .* could not be loaded") as info:
        _train(tmp_path / "no-such-model", tmp_path / "b", sink)
    # The words are ours; the library's own text (paths, hub URLs, file lists) stays in the log.
    assert "no such local model directory" in info.value.message
    assert "huggingface.co" not in info.value.message and "Traceback" not in info.value.message
    long_prompt = [[{"role": "user", "content": "stock " * 40}, {"role": "assistant", "content": "yes"}]]
    with pytest.raises(ConfigError, match="max_length"):
        _train(
            tiny_model_dir, tmp_path / "c", sink, train_examples=long_prompt, config=_config(max_length="16")
        )
    assert not any(e.kind == "step" for e in sink.events)


def test_progress_callback_alerts(tiny_model_dir: Path) -> None:
    """The alert rules, driven through the callback's own hooks with the trainer's state shape."""
    from engine.backends.local_progress import Emitter as _Emitter
    from engine.backends.local_progress import make_progress_callback as _make_progress_callback

    sink = ListSink()
    callback = _make_progress_callback(_Emitter("ft-x", sink), lambda: False)
    state = SimpleNamespace(
        is_world_process_zero=True, global_step=0, max_steps=20, epoch=0.0, num_input_tokens_seen=0
    )
    control = SimpleNamespace(should_training_stop=False, should_evaluate=False, should_save=False)
    callback.on_train_begin(None, state, control)

    def log(**logs: float) -> None:
        state.global_step += 1
        state.num_input_tokens_seen += 100
        state.epoch += 0.25
        callback.on_log(None, state, control, logs=logs)

    for loss in (2.0, 1.5, 1.0, 0.9):
        log(loss=loss, learning_rate=1e-3)
    log(loss=3.0, learning_rate=1e-3)  # above twice the lowest (0.9) and above the first (2.0)
    log(loss=3.5, learning_rate=1e-3)  # same again: alerted once only
    for eval_loss in (1.0, 1.1, 1.2):
        callback.on_log(None, state, control, logs={"eval_loss": eval_loss})
    assert not control.should_training_stop
    log(loss=float("nan"), learning_rate=1e-3)
    alerts = [e.data["code"] for e in sink.events if e.kind == "alert"]
    assert alerts == ["loss_exploding", "overfitting", "loss_nan"]
    assert control.should_training_stop and callback.diverged
    assert [e.metrics["eval_loss"] for e in sink.events if e.kind == "eval"] == [1.0, 1.1, 1.2]


def test_should_stop_is_honoured_by_the_callback() -> None:
    from engine.backends.local_progress import Emitter as _Emitter
    from engine.backends.local_progress import make_progress_callback as _make_progress_callback

    stop = {"now": False}
    callback = _make_progress_callback(_Emitter("ft-x", CallbackSink(lambda e: None)), lambda: stop["now"])
    control = SimpleNamespace(should_training_stop=False, should_evaluate=True, should_save=True)
    callback.on_step_end(None, None, control)
    assert not control.should_training_stop
    stop["now"] = True
    callback.on_step_end(None, None, control)
    callback.on_epoch_end(None, None, control)
    assert control.should_training_stop and callback.cancelled
    assert not control.should_evaluate and not control.should_save


def test_the_answer_only_loss_is_the_models_own_loss(tiny_model_dir: Path) -> None:
    """The CPU recipe's loss runs the output head on answer tokens only: the same number as the
    model's own loss over the same labels, and the same gradients (within float rounding)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.backends.local_qlora import _answer_only_trainer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    ids = torch.randint(10, 500, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a padded row
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]
    labels[1, 5:7] = ids[1, 5:7]
    labels[2, 6:9] = ids[2, 6:9]
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    cls = _answer_only_trainer(object)
    ours = cls.compute_loss(cls.__new__(cls), model, dict(inputs))
    ours.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    theirs = model(**inputs).loss
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    for ours_g, p in zip(grads, (p for p in model.parameters() if p.requires_grad), strict=True):
        assert torch.allclose(ours_g, p.grad, atol=1e-5)
    summed = cls.compute_loss(cls.__new__(cls), model, dict(inputs), num_items_in_batch=20)
    assert torch.allclose(summed * 20, theirs * (labels[:, 1:] != -100).sum(), atol=1e-4)
