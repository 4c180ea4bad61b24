from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.settings import BUILTIN_SMOLLM2, Settings


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.home == Path(".ftbot")
    assert s.base_model == BUILTIN_SMOLLM2 == "builtin:smollm2"  # the real model, offline (ARCHITECTURE.md)
    assert s.openai_poll_seconds == 30.0
    assert s.db_path == Path(".ftbot/ftbot.db")


def test_values_are_read_from_the_mapping(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "FTBOT_HOME": str(tmp_path),
            "FTBOT_BASE_MODEL": "meta-llama/Llama-3.2-1B-Instruct",
            "FTBOT_OPENAI_POLL_SECONDS": "0.5",
            "FTBOT_OPENAI_PRICES": "gpt-4o-mini-2024-07-18=3.0, gpt-4.1-mini=5",
            "OPENAI_API_KEY": "sk-test",
        }
    )
    assert s.home == tmp_path
    assert s.openai_poll_seconds == 0.5
    assert s.openai_training_prices == {"gpt-4o-mini-2024-07-18": 3.0, "gpt-4.1-mini": 5.0}
    assert s.openai_api_key == "sk-test"


def test_bad_values_are_all_named_at_once() -> None:
    with pytest.raises(UsageError) as info:
        Settings.from_env({"FTBOT_OPENAI_POLL_SECONDS": "soon", "FTBOT_OPENAI_PRICES": "gpt=cheap"})
    message = str(info.value)
    assert "FTBOT_OPENAI_POLL_SECONDS" in message and "FTBOT_OPENAI_PRICES" in message


def test_serve_max_memory_mb_is_optional_and_reaches_the_model_server(tmp_path: Path) -> None:
    from engine.backends.local_serving import ModelServer

    unset = Settings.from_env({"FTBOT_HOME": str(tmp_path), "FTBOT_SERVE_MAX_MEMORY_MB": " "})
    assert unset.serve_max_memory_mb is None
    capped = Settings.from_env({"FTBOT_HOME": str(tmp_path), "FTBOT_SERVE_MAX_MEMORY_MB": " 1536 "})
    assert capped.serve_max_memory_mb == 1536.0
    with ModelServer.from_settings(capped) as server:
        assert server.max_memory_bytes == 1536 * 1024 * 1024  # MiB, like FTBOT_MAX_UPLOAD_MB
    with ModelServer.from_settings(unset) as server:
        assert server.max_memory_bytes is None  # no byte cap: only the count limits evict


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("lots", "FTBOT_SERVE_MAX_MEMORY_MB='lots' is not a number"),
        ("0", "FTBOT_SERVE_MAX_MEMORY_MB must be more than 0 (leave it unset for no limit)"),
        ("-512", "FTBOT_SERVE_MAX_MEMORY_MB must be more than 0"),
        ("nan", "FTBOT_SERVE_MAX_MEMORY_MB must be more than 0"),
        ("inf", "FTBOT_SERVE_MAX_MEMORY_MB must be more than 0"),
    ],
)
def test_a_bad_serve_max_memory_mb_is_refused_with_its_name(raw: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.from_env({"FTBOT_SERVE_MAX_MEMORY_MB": raw})
    assert says in str(info.value)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_a_number_setting_must_be_finite(raw: str) -> None:
    # float() accepts these; a NaN timeout would compare false with everything and never fire.
    with pytest.raises(UsageError) as info:
        Settings.from_env({"FTBOT_ASK_TIMEOUT_SECONDS": raw})
    assert f"FTBOT_ASK_TIMEOUT_SECONDS={raw!r} is not a finite number" in str(info.value)


def test_issue_12_settings_are_read_and_bad_values_named() -> None:
    from datetime import date

    s = Settings.from_env(
        {
            "FTBOT_BASE_MODELS": " builtin:tiny, Qwen/Qwen2.5-0.5B-Instruct,,builtin:tiny , gpt-4o-mini",
            "FTBOT_MAX_QUEUED_PER_USER": "5",
            "FTBOT_OPENAI_FINE_TUNING_ENDS": "2027-03-01",
            "FTBOT_OPENAI_RETIREMENTS": "gpt-4o=2027-02-01, gpt-4.1-mini-2025-04-14=2027-01-20",
        }
    )
    assert s.base_models == ("builtin:tiny", "Qwen/Qwen2.5-0.5B-Instruct", "gpt-4o-mini")
    assert s.max_queued_per_user == 5
    assert s.openai_fine_tuning_ends == date(2027, 3, 1)
    assert s.openai_retirements == {"gpt-4o": date(2027, 2, 1), "gpt-4.1-mini-2025-04-14": date(2027, 1, 20)}
    defaults = Settings.from_env({})
    assert defaults.base_models == () and defaults.max_queued_per_user == 3
    assert defaults.openai_fine_tuning_ends is None and defaults.openai_retirements == {}
    assert Settings.from_env({"FTBOT_MAX_QUEUED_PER_USER": "0"}).max_queued_per_user == 0  # no limit

    with pytest.raises(UsageError) as info:
        Settings.from_env(
            {
                "FTBOT_MAX_QUEUED_PER_USER": "2.5",
                "FTBOT_OPENAI_FINE_TUNING_ENDS": "early 2027",
                "FTBOT_OPENAI_RETIREMENTS": "gpt-4o, gpt-4.1=soon",
            }
        )
    message = str(info.value)
    assert "FTBOT_MAX_QUEUED_PER_USER='2.5' is not a whole number" in message
    assert "FTBOT_OPENAI_FINE_TUNING_ENDS: 'early 2027' is not a date such as 2027-01-06" in message
    assert "FTBOT_OPENAI_RETIREMENTS entry 'gpt-4o' is not model=YYYY-MM-DD" in message
    assert "FTBOT_OPENAI_RETIREMENTS: 'soon' is not a date" in message
    with pytest.raises(UsageError, match="FTBOT_MAX_QUEUED_PER_USER must be at least 0"):
        Settings.from_env({"FTBOT_MAX_QUEUED_PER_USER": "-1"})


def test_ray_settings_default_to_no_cluster_and_are_read() -> None:
    s = Settings.from_env({})
    assert s.ray_address is None and s.ray_gpus == 1.0 and s.ray_cpus == 1.0
    for address in ("auto", "10.0.0.5:6379", "head.ray.svc:6379", "ray://head:10001"):
        assert Settings.from_env({"FTBOT_RAY_ADDRESS": address}).ray_address == address
    s = Settings.from_env(
        {"FTBOT_RAY_ADDRESS": " 127.0.0.1:6390 ", "FTBOT_RAY_GPUS": "0", "FTBOT_RAY_CPUS": "2"}
    )
    assert (s.ray_address, s.ray_gpus, s.ray_cpus) == ("127.0.0.1:6390", 0.0, 2.0)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"FTBOT_RAY_ADDRESS": "head"}, "FTBOT_RAY_ADDRESS='head' is not auto, HOST:PORT"),
        ({"FTBOT_RAY_ADDRESS": "head:port"}, "FTBOT_RAY_ADDRESS='head:port'"),
        ({"FTBOT_RAY_ADDRESS": "http://head:6379"}, "FTBOT_RAY_ADDRESS='http://head:6379'"),
        ({"FTBOT_RAY_ADDRESS": "head:70000"}, "FTBOT_RAY_ADDRESS='head:70000'"),
        ({"FTBOT_RAY_GPUS": "-1"}, "FTBOT_RAY_GPUS must be at least 0"),
        ({"FTBOT_RAY_CPUS": "many"}, "FTBOT_RAY_CPUS='many' is not a number"),
    ],
)
def test_bad_ray_settings_are_refused_with_their_name(env: dict[str, str], says: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.from_env(env)
    assert says in str(info.value)
