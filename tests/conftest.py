"""Shared fixtures. Fakes stand only at process boundaries (Slack, OpenAI); everything of ours is real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.settings import Settings
from tests.fakes.clock import FakeTime
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack

# Keep torch from spreading each test over every core: CI has two, and xdist runs two workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# The product's default base model is builtin:smollm2 (a real 135M model: minutes per training run on
# a CPU). Tests run on builtin:tiny (random weights, seconds) unless they ask for the real model
# (the ``smollm2_dir`` fixture, tests/test_smollm2.py); CLI tests started with CliRunner or with
# this environment inherit it.
os.environ.setdefault("FTBOT_BASE_MODEL", "builtin:tiny")


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One builtin:tiny build shared by the whole session (it is deterministic)."""
    return tmp_path_factory.mktemp("builtin")


@pytest.fixture(scope="session")
def tiny_model_dir(builtin_dir: Path) -> Path:
    from engine.backends.local_tiny import ensure_builtin_tiny

    return ensure_builtin_tiny(builtin_dir)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:smollm2 converted once per test run, shared by the xdist workers (they race for the
    build's lock: one converts, the others wait and reuse it). Its directory is
    ``<shared>/builtin/smollm2-135m-instruct-v1``; link ``<shared>/builtin`` as a home's builtin dir."""
    from engine.backends.local_smollm2 import ensure_builtin_smollm2

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if base.name.startswith("popen-gw") else base) / "shared-builtin"
    return ensure_builtin_smollm2(shared)


@pytest.fixture
def settings(tmp_path: Path, builtin_dir: Path) -> Settings:
    """Settings with a fresh FTBOT_HOME per test. The builtin model directory is linked from the
    session build so tests do not rebuild it."""
    home = tmp_path / "ftbot-home"
    home.mkdir()
    (home / "builtin").symlink_to(builtin_dir, target_is_directory=True)
    return Settings.from_env({"FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": "builtin:tiny"})


@pytest.fixture
def ftime() -> FakeTime:
    """Fake time for code that takes ``clock``/``sleep``: sleeping only moves this clock."""
    return FakeTime()


@pytest.fixture
def fake(ftime: FakeTime) -> Iterator[FakeOpenAI]:
    """The fake OpenAI server (real HTTP on 127.0.0.1), on the ``ftime`` clock."""
    with FakeOpenAI(clock=ftime.clock) as server:
        yield server


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The fake Slack Web API (real HTTP on 127.0.0.1)."""
    with FakeSlack() as server:
        yield server
