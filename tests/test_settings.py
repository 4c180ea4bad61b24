from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.settings import BUILTIN_TINY, Settings


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.home == Path(".ftbot")
    assert s.base_model == BUILTIN_TINY
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
