"""engine.backends.local_model.token_counter_for: exact token counts through the tiny model's tokenizer and template."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.local_model import token_counter_for
from engine.dataset import validate_file
from engine.errors import UsageError

DATA = Path(__file__).parent / "data"


def test_counts_through_the_chat_template(builtin_dir: Path) -> None:
    counter = token_counter_for("builtin:tiny", builtin_dir)
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "price 42"}]
    total = counter(messages)
    # The template adds role markers and end tokens around each message's text.
    assert total > counter.count_text("hello") + counter.count_text("price 42")
    assert counter.count_text("") == 0
    assert counter.max_length == 2048
    assert "builtin:tiny" in counter.name
    assert counter(messages) == total  # deterministic


def test_a_resolved_directory_needs_no_builtin_dir(tiny_model_dir: Path) -> None:
    counter = token_counter_for(str(tiny_model_dir))
    assert counter([{"role": "user", "content": "hi"}]) > 0


def test_builtin_without_a_directory_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        token_counter_for("builtin:tiny")


def test_validate_with_the_tiny_tokenizer(builtin_dir: Path) -> None:
    counter = token_counter_for("builtin:tiny", builtin_dir)
    report = validate_file(DATA / "tools.jsonl", token_counter=counter)
    assert report.ok
    assert report.stats["tokens_estimated"] is False
    assert report.stats["assistant_tokens_per_example"]["min"] > 0
    short = validate_file(DATA / "tools.jsonl", token_counter=counter, max_length=20)
    too_long = [w for w in short.warnings if w.code == "too_long"]
    assert too_long and "tokenizer" in too_long[0].message
