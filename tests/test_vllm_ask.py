"""/ask through a vLLM server (FTBOT_VLLM_URL), end to end: a real Engine on real SQLite under
tmp_path, real fine-tune records whose adapter directories hold PEFT's adapter_config.json, and the
fake vLLM server of tests/fakes/vllm_api.py (real HTTP on 127.0.0.1) following vLLM's documented
endpoints and error texts. Also `ftbot ask` through click's CliRunner and Slack's /ask."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import main as cli
from engine import Engine, ModelRecord, Settings
from engine.backends.local_serving import ModelServer
from engine.backends.serving import model_server
from engine.backends.vllm_serving import VLLMServer
from engine.errors import BackendUnavailable, GenerationError, ModelNotFound, ResourceExhausted, UsageError
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import CHANNEL, TEAM
from tests.fakes.vllm_api import FakeVLLM
from tests.test_ask_options import SlackHarness

CAP = 12
PROMPT = "price of a laptop?"


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM(base_name="tiny-base") as server:
        yield server


@pytest.fixture
def vsettings(settings: Settings, vllm: FakeVLLM) -> Settings:
    return replace(settings, vllm_url=vllm.url, ask_max_new_tokens=CAP, vllm_max_adapters=2)


@pytest.fixture
def engine(vsettings: Settings) -> Iterator[Engine]:
    with Engine(vsettings) as eng:
        yield eng


def write_adapter(directory: Path, *, r: int = 8, modules: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """An adapter directory as PEFT saves it (the fake vLLM reads only adapter_config.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "target_modules": list(modules),
        "base_model_name_or_path": "builtin:tiny",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return directory


def register(
    engine: Engine, model_id: str, *, team: str = "", base_model: str = "builtin:tiny", **kw: Any
) -> Path:
    path = kw.pop("path", None) or write_adapter(engine.settings.models_dir / model_id, **kw)
    engine.store.add_model(
        ModelRecord(
            id=model_id,
            kind="local_adapter",
            base_model=base_model,
            job_id=None,
            team=team,
            channel=CHANNEL if team else "",
            created_at=datetime.now(UTC),
            verdict="improved",
            path=path,
            system_prompt="You answer prices.",
        )
    )
    return path


def loads(vllm: FakeVLLM) -> list[dict[str, Any]]:
    return [r.json for r in vllm.requests_to("/v1/load_lora_adapter")]


def chats(vllm: FakeVLLM) -> list[dict[str, Any]]:
    return [r.json for r in vllm.requests_to("/v1/chat/completions")]


# ------------------------------------------------------------------ wiring


def test_without_the_setting_the_in_process_server_stays(settings: Settings, vsettings: Settings) -> None:
    assert settings.vllm_url is None
    local = model_server(settings)
    try:
        assert isinstance(local, ModelServer)
    finally:
        local.close()
    assert isinstance(model_server(vsettings), VLLMServer)


def test_settings_are_read_and_bad_values_refused(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "FTBOT_HOME": str(tmp_path),
            "FTBOT_VLLM_URL": " http://vllm:8000/v1/ ",
            "FTBOT_VLLM_ADAPTER_DIR": "/shared/models/",
            "FTBOT_VLLM_MAX_ADAPTERS": "3",
            "FTBOT_VLLM_BASE_NAME": "smol",
        }
    )
    assert (s.vllm_url, s.vllm_adapter_dir, s.vllm_max_adapters, s.vllm_base_name) == (
        "http://vllm:8000",
        "/shared/models",
        3,
        "smol",
    )
    default = Settings.from_env({"FTBOT_HOME": str(tmp_path)})
    assert (default.vllm_url, default.vllm_adapter_dir, default.vllm_max_adapters) == (None, None, 8)
    with pytest.raises(UsageError) as info:
        Settings.from_env(
            {
                "FTBOT_VLLM_URL": "vllm:8000",
                "FTBOT_VLLM_ADAPTER_DIR": "models",
                "FTBOT_VLLM_MAX_ADAPTERS": "0",
            }
        )
    message = str(info.value)
    assert "FTBOT_VLLM_URL='vllm:8000' is not an http(s) URL" in message
    assert "FTBOT_VLLM_ADAPTER_DIR='models' must be an absolute path" in message
    assert "FTBOT_VLLM_MAX_ADAPTERS must be at least 1" in message
    with pytest.raises(UsageError, match="port that is not a number"):
        Settings.from_env({"FTBOT_VLLM_URL": "http://vllm:port"})


# ------------------------------------------------------------------ loading, LRU, answers


def test_first_ask_loads_the_adapter_at_the_mapped_path_and_the_second_does_not(
    vsettings: Settings, vllm: FakeVLLM, tmp_path: Path
) -> None:
    # The vLLM host sees FTBOT_HOME/models at /shared/ftbot-models: the fake resolves that path here
    # through a link, as a shared mount would.
    shared = tmp_path / "vllm-host-view"
    shared.symlink_to(vsettings.models_dir, target_is_directory=True)
    with Engine(replace(vsettings, vllm_adapter_dir=str(shared))) as engine:
        register(engine, "m-1")
        first = engine.ask(PROMPT, model="m-1")
        second = engine.ask("and a phone?", model="m-1")
    assert loads(vllm) == [{"lora_name": "m-1", "lora_path": f"{shared}/m-1"}]
    assert first.text == f"m-1 answers: {PROMPT}" and second.text == "m-1 answers: and a phone?"
    assert first.model == "m-1" and first.base_model == "builtin:tiny" and first.finish_reason == "stop"
    assert first.note is None and first.tokens == len(first.text.split())
    assert first.adapter == str(vsettings.models_dir / "m-1")
    sent = chats(vllm)[0]
    assert sent["model"] == "m-1" and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "You answer prices."},
        {"role": "user", "content": PROMPT},
    ]
    assert sent["max_tokens"] == CAP and sent["temperature"] == 0.0  # the defaults: the cap, greedy


def test_without_adapter_dir_the_path_is_the_same_on_both_hosts(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1")
    engine.ask(PROMPT, model="m-1")
    assert loads(vllm) == [{"lora_name": "m-1", "lora_path": str(engine.settings.models_dir / "m-1")}]


def test_least_recently_used_adapter_is_unloaded_beyond_the_limit(engine: Engine, vllm: FakeVLLM) -> None:
    for model_id in ("m-1", "m-2", "m-3"):
        register(engine, model_id)
    engine.ask(PROMPT, model="m-1")
    engine.ask(PROMPT, model="m-2")
    engine.ask(PROMPT, model="m-1")  # m-2 is now the least recently used
    engine.ask(PROMPT, model="m-3")
    assert [r.json for r in vllm.requests_to("/v1/unload_lora_adapter")] == [{"lora_name": "m-2"}]
    assert list(vllm.adapters) == ["m-1", "m-3"]
    assert [body["lora_name"] for body in loads(vllm)] == ["m-1", "m-2", "m-3"]
    engine.ask(PROMPT, model="m-2")  # back: loaded again, m-1 goes
    assert list(vllm.adapters) == ["m-3", "m-2"]


def test_temperature_and_max_tokens_pass_through_and_the_cut_is_noted(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1")
    vllm.answer = lambda model, messages: "alpha beta gamma delta epsilon"
    answer = engine.ask(PROMPT, model="m-1", max_tokens=2, temperature=0.7)
    sent = chats(vllm)[-1]
    assert sent["max_tokens"] == 2 and sent["temperature"] == 0.7
    assert answer.text == "alpha beta" and answer.tokens == 2 and answer.finish_reason == "length"
    assert answer.truncated and answer.note == "Answer cut at the 2-token limit."


def test_the_base_model_answers_by_its_served_name_and_compare_asks_both(
    engine: Engine, vllm: FakeVLLM
) -> None:
    base = engine.ask(PROMPT)
    assert base.text == f"tiny-base answers: {PROMPT}" and base.model == "base:builtin:tiny"
    assert base.base_reason == "no_finetune" and base.adapter is None
    register(engine, "m-1", team=TEAM)
    plain, tuned = engine.ask(PROMPT, model="m-1", team=TEAM, compare=True, max_tokens=3)
    assert plain.text == "tiny-base answers: price" and tuned.text == "m-1 answers: price"
    assert plain.note == tuned.note == "Answer cut at the 3-token limit."
    assert {body["model"] for body in chats(vllm)[-2:]} == {"tiny-base", "m-1"}
    # Both sides with the fine-tune's system prompt: only the weights differ.
    assert all(body["messages"][0]["content"] == "You answer prices." for body in chats(vllm)[-2:])


def test_the_time_limit_cuts_a_slow_answer_and_a_silent_server_is_an_error(
    vsettings: Settings, vllm: FakeVLLM
) -> None:
    with Engine(replace(vsettings, ask_timeout_seconds=1.0)) as engine:
        register(engine, "m-1")
        vllm.answer = lambda model, messages: " ".join(["word"] * 10)
        vllm.stream_delay = 0.3
        started = time.monotonic()
        answer = engine.ask(PROMPT, model="m-1")
        assert time.monotonic() - started < 5
        assert answer.finish_reason == "time" and 1 <= answer.tokens < 10
        assert answer.note == "Answer cut at the 1-second time limit."
        vllm.stream_delay, vllm.first_byte_delay = 0.0, 10.0
        started = time.monotonic()
        with pytest.raises(GenerationError, match="sent no answer within the 1-second time limit"):
            engine.ask(PROMPT, model="m-1")
        assert time.monotonic() - started < 5


def test_a_prompt_near_the_context_is_answered_in_the_room_left_and_one_over_it_refused(
    engine: Engine, vllm: FakeVLLM
) -> None:
    register(engine, "m-1")
    vllm.max_model_len = 10  # the system prompt + question are 7 words: 3 left for the answer
    vllm.answer = lambda model, messages: "one two three four five six"
    answer = engine.ask(PROMPT, model="m-1")
    assert answer.text == "one two three" and answer.finish_reason == "context"
    assert answer.note == "Answer cut at the model's context length."
    assert [body["max_tokens"] for body in chats(vllm)] == [CAP, 3]
    with pytest.raises(ResourceExhausted, match="this model reads at most 10 tokens"):
        engine.ask("a b c d e f g h i j k", model="m-1")


# ------------------------------------------------------------------ vLLM's errors in plain words


def test_adapter_missing_on_the_vllm_host(vsettings: Settings, vllm: FakeVLLM) -> None:
    with Engine(replace(vsettings, vllm_adapter_dir="/nowhere/models")) as engine:
        register(engine, "m-1")
        with pytest.raises(ModelNotFound) as info:
            engine.ask(PROMPT, model="m-1")
    assert "cannot find model m-1's adapter at /nowhere/models/m-1" in info.value.message
    assert "FTBOT_VLLM_ADAPTER_DIR" in (info.value.hint or "")


def test_rank_over_the_servers_max_lora_rank(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1", r=64)
    with pytest.raises(BackendUnavailable) as info:
        engine.ask(PROMPT, model="m-1")
    assert "rank 64, above the vLLM server's --max-lora-rank (16)" in info.value.message
    assert "--max-lora-rank 64" in (info.value.hint or "")


def test_a_fine_tune_of_another_base(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-other", base_model="Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(BackendUnavailable, match=r"fine-tuned from Qwen/Qwen2\.5-0\.5B-Instruct"):
        engine.ask(PROMPT, model="m-other")
    assert not loads(vllm)  # refused before asking the server
    # An adapter whose layers the served base does not have: vLLM's own refusal, in plain words.
    register(engine, "m-odd", modules=("query_key_value",))
    with pytest.raises(BackendUnavailable, match="does not fit the base model the vLLM server runs"):
        engine.ask(PROMPT, model="m-odd")


def test_runtime_loading_switched_off(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1")
    vllm.runtime_updating = False
    with pytest.raises(BackendUnavailable) as info:
        engine.ask(PROMPT, model="m-1")
    assert "does not load adapters at run time" in info.value.message
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in (info.value.hint or "")


def test_a_wrong_base_name(vsettings: Settings, vllm: FakeVLLM) -> None:
    with (
        Engine(replace(vsettings, vllm_base_name="not-served")) as engine,
        pytest.raises(BackendUnavailable, match="does not serve a base model named 'not-served'"),
    ):
        engine.ask(PROMPT)


def test_a_vllm_restart_is_survived(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1")
    engine.ask(PROMPT, model="m-1")
    vllm.restart()  # the adapters loaded at run time are gone
    answer = engine.ask(PROMPT, model="m-1")
    assert answer.text == f"m-1 answers: {PROMPT}"
    assert [body["lora_name"] for body in loads(vllm)] == ["m-1", "m-1"]


def test_a_server_that_is_down_says_so_and_names_the_setting(engine: Engine, vllm: FakeVLLM) -> None:
    register(engine, "m-1")
    vllm.stop()
    for model in ("m-1", None):
        with pytest.raises(BackendUnavailable) as info:
            engine.ask(PROMPT, model=model)
        assert f"The vLLM server at {vllm.url} refused the connection" in info.value.message
        assert "FTBOT_VLLM_URL" in (info.value.hint or "")


# ------------------------------------------------------------------ the surfaces


def test_ftbot_ask_goes_through_vllm(vsettings: Settings, vllm: FakeVLLM) -> None:
    with Engine(vsettings) as engine:
        register(engine, "m-cli")
    env = {
        "FTBOT_HOME": str(vsettings.home),
        "FTBOT_ASK_MAX_NEW_TOKENS": str(CAP),
        "FTBOT_VLLM_URL": vllm.url + "/v1",
    }
    runner = CliRunner()
    result = runner.invoke(cli, ["ask", "--model", "m-cli", "--max-tokens", "2", "--json", PROMPT], env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["text"] == "m-cli answers:" and answer["finish_reason"] == "length"
    assert answer["note"] == "Answer cut at the 2-token limit." and answer["model"] == "m-cli"
    vllm.stop()
    down = runner.invoke(cli, ["ask", "--model", "m-cli", PROMPT], env=env)
    assert down.exit_code == 1 and "refused the connection" in down.output and "FTBOT_VLLM_URL" in down.output


def test_slack_ask_goes_through_vllm(vsettings: Settings, vllm: FakeVLLM) -> None:
    with FakeSlack() as slack:
        harness = SlackHarness(vsettings, slack)
        try:
            register(harness.engine, "m-1", team=TEAM)
            assert harness.ask("model=m-1 max_tokens=3 what costs?").status == 200
            posted = harness.answer_text()
        finally:
            harness.engine.close()
    assert "m-1 answers: what" in posted and "Answer cut at the 3-token limit." in posted
    assert loads(vllm)[0]["lora_name"] == "m-1"


# ------------------------------------------------------------------ restarts and concurrency


def test_a_restarted_bot_adopts_the_adapters_it_had_loaded(vsettings: Settings, vllm: FakeVLLM) -> None:
    with Engine(vsettings) as engine:
        for model_id in ("m-1", "m-2", "m-3"):
            register(engine, model_id)
        engine.ask(PROMPT, model="m-1")
        engine.ask(PROMPT, model="m-2")
    vllm.adapters["someone-else"] = "/elsewhere/adapter"  # not under this bot's directory: left alone
    with Engine(vsettings) as engine:  # the bot restarted; vLLM kept m-1 and m-2
        engine.ask(PROMPT, model="m-3")
        engine.ask(PROMPT, model="m-2")
    assert [r.json["lora_name"] for r in vllm.requests_to("/v1/unload_lora_adapter")] == ["m-1"]
    assert set(vllm.adapters) == {"m-2", "m-3", "someone-else"}
    assert [body["lora_name"] for body in loads(vllm)] == ["m-1", "m-2", "m-3"]


def test_adapters_answering_now_are_not_unloaded_under_them(engine: Engine, vllm: FakeVLLM) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = ("m-1", "m-2", "m-3", "m-4")
    for model_id in ids:
        register(engine, model_id)
    vllm.answer = lambda model, messages: f"{model} a b c"
    vllm.stream_delay = 0.1  # each answer takes about 0.4 s: all four overlap
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda m: engine.ask(PROMPT, model=m), ids))
    assert [a.text for a in answers] == [f"{m} a b c" for m in ids]
    assert [body["lora_name"] for body in loads(vllm)].count("m-1") == 1  # none reloaded
    assert len(vllm.adapters) == 2  # back within the limit once they were free


def test_the_base_is_found_again_when_vllm_restarts_under_another_name(
    engine: Engine, vllm: FakeVLLM
) -> None:
    assert engine.ask(PROMPT).text.startswith("tiny-base answers")
    vllm.base_name = "renamed-base"
    assert engine.ask(PROMPT).text.startswith("renamed-base answers")


def test_adapter_files_deleted_here(engine: Engine, vllm: FakeVLLM) -> None:
    path = register(engine, "m-1")
    (path / "adapter_config.json").unlink()
    with pytest.raises(ModelNotFound, match="files are missing"):
        engine.ask(PROMPT, model="m-1")
    assert not loads(vllm)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "LoRA rank 32 is greater than max_lora_rank 16.", "type": "BadRequestError"}},
        {"object": "error", "message": "LoRA rank 32 is greater than max_lora_rank 16.", "code": 400},
        "LoRA rank 32 is greater than max_lora_rank 16.",
    ],
)
def test_every_shape_of_vllms_error_bodies_is_read(body: Any) -> None:
    # Recent vLLM wraps errors in {"error": {...}}; older versions answered {"object": "error", ...}.
    from engine.backends.vllm_serving import _load_error, _Reply

    error = _load_error(_Reply(400, body), name="m-1", path="/p", url="http://v")
    assert isinstance(error, BackendUnavailable) and "rank 32" in error.message
    lora_off = _load_error(
        _Reply(400, {"error": {"message": "LoRA is not enabled. Use --enable-lora to enable LoRA."}}),
        name="m-1",
        path="/p",
        url="http://v",
    )
    assert "has LoRA switched off" in lora_off.message and "--enable-lora" in (lora_off.hint or "")
