"""Engine settings. The only module in engine/ that reads the environment.

Everything else receives a :class:`Settings` (or the values in it) as an argument, so tests build
one from a plain dict: ``Settings.from_env({"FTBOT_HOME": str(tmp_path)})``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import UsageError

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2"
#: The models the engine provides offline (engine/backends/local_builtin.py); the first is the default.
BUILTIN_MODELS: tuple[str, ...] = (BUILTIN_SMOLLM2, BUILTIN_TINY)


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".ftbot")
    base_model: str = BUILTIN_SMOLLM2
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_poll_seconds: float = 30.0
    # Above this estimated cost (USD) an OpenAI job waits for an explicit confirmation.
    openai_confirm_usd: float = 5.0
    # Overrides of the built-in price table: model name -> USD per 1M training tokens.
    openai_training_prices: Mapping[str, float] = field(default_factory=dict)
    # Overrides of OpenAI's dated shutdown table (engine/backends/openai_dates.py): the day from which
    # no organisation can create fine-tuning jobs (None: the table's), and model (family or
    # snapshot) -> the day it and its fine-tunes stop answering.
    openai_fine_tuning_ends: date | None = None
    openai_retirements: Mapping[str, date] = field(default_factory=dict)
    # The base models people who are not admins may choose (FTBOT_BASE_MODELS); empty: the default
    # list, FTBOT_BASE_MODEL, the builtin models and the OpenAI models of the price table
    # (Engine.allowed_base_models). Admins and the local operator (CLI, console) may use any.
    base_models: tuple[str, ...] = ()
    # Jobs not finished yet (queued or running) one person may have at a time; 0 = no limit.
    # Admins and the local operator are exempt.
    max_queued_per_user: int = 3
    # /ask model cache: how many bases and adapters stay loaded (least recently used goes first).
    serve_max_bases: int = 1
    serve_max_adapters: int = 8
    # ... and by memory: a cap on the loaded bases + adapters in MiB (None: no cap; a single model
    # larger than the cap is still served, alone).
    serve_max_memory_mb: float | None = None
    # Generation limits for /ask.
    ask_timeout_seconds: float = 60.0
    ask_max_new_tokens: int = 256
    # /ask through a vLLM server (FTBOT_VLLM_URL, e.g. http://vllm:8000; None: the in-process
    # model server). Local fine-tunes are loaded into it as LoRA adapters at run time; the vLLM host
    # sees FTBOT_HOME's models directory at ``vllm_adapter_dir`` (None: at the same path).
    vllm_url: str | None = None
    vllm_adapter_dir: str | None = None
    # How many adapters the bot keeps loaded in vLLM; the least recently used is unloaded beyond it.
    vllm_max_adapters: int = 8
    # The base model's name on the vLLM server (None: the first base model GET /v1/models lists).
    vllm_base_name: str | None = None
    # Training on a Ray cluster (engine/cluster.py): the cluster's address (``auto``, ``HOST:PORT``
    # or ``ray://HOST:PORT``; None: local jobs run in a child process on this host), and what each
    # job asks the cluster for (GPUs: 0 runs on CPUs; CPUs: the actor's CPU slots).
    ray_address: str | None = None
    ray_gpus: float = 1.0
    ray_cpus: float = 1.0

    @property
    def db_path(self) -> Path:
        return self.home / "ftbot.db"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        """Per-job working directories: checkpoints, charts, predictions, worker logs."""
        return self.home / "runs"

    @property
    def builtin_dir(self) -> Path:
        return self.home / "builtin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (``os.environ`` when ``env`` is None).

        Raises:
            UsageError: a variable holds a value that cannot be used; the message names it.
        """
        env = os.environ if env is None else env
        problems: list[str] = []

        def read_float(name: str) -> float | None:
            """The variable as a float; None when unset or empty, or not a number (a problem)."""
            raw = env.get(name, "").strip()
            if not raw:
                return None
            try:
                return float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number")
                return None

        def number(name: str, default: float, *, minimum: float = 0.0) -> float:
            value = read_float(name)
            if value is None:
                return default
            if not math.isfinite(value):
                problems.append(f"{name}={env.get(name, '').strip()!r} is not a finite number")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum:g}")
                return default
            return value

        def optional_positive(name: str) -> float | None:
            """An optional limit: unset or empty = none; otherwise a finite number above 0."""
            value = read_float(name)
            if value is None:
                return None
            if not 0 < value < math.inf:  # NaN fails this too
                problems.append(f"{name} must be more than 0 (leave it unset for no limit)")
                return None
            return value

        def whole(name: str, default: int, *, minimum: int = 0) -> int:
            """A whole number of at least ``minimum``; ``default`` when unset or empty."""
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a whole number")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum}")
                return default
            return value

        def read_date(name: str, raw: str) -> date | None:
            """``raw`` (YYYY-MM-DD) as a date; None when it is not one (a problem)."""
            try:
                return date.fromisoformat(raw.strip())
            except ValueError:
                problems.append(f"{name}: {raw.strip()!r} is not a date such as 2027-01-06")
                return None

        def entries(name: str) -> list[str]:
            return [e for e in (p.strip() for p in env.get(name, "").split(",")) if e]

        prices: dict[str, float] = {}
        for item in entries("FTBOT_OPENAI_PRICES"):
            model, _, price = item.partition("=")
            try:
                prices[model.strip()] = float(price)
            except ValueError:
                problems.append(f"FTBOT_OPENAI_PRICES entry {item!r} is not model=USD_per_1M_tokens")

        retirements: dict[str, date] = {}
        for item in entries("FTBOT_OPENAI_RETIREMENTS"):
            model, sep, day = item.partition("=")
            if not sep or not model.strip():
                problems.append(f"FTBOT_OPENAI_RETIREMENTS entry {item!r} is not model=YYYY-MM-DD")
                continue
            parsed = read_date("FTBOT_OPENAI_RETIREMENTS", day)
            if parsed is not None:
                retirements[model.strip()] = parsed
        raw_ends = env.get("FTBOT_OPENAI_FINE_TUNING_ENDS", "").strip()
        ends = read_date("FTBOT_OPENAI_FINE_TUNING_ENDS", raw_ends) if raw_ends else None
        ray_address = ray_address_setting(env.get("FTBOT_RAY_ADDRESS", ""), problems)
        # Order kept, repeats dropped: the list is shown to users who choose a model.
        base_models = tuple(dict.fromkeys(entries("FTBOT_BASE_MODELS")))

        settings = cls(
            home=Path(env.get("FTBOT_HOME", "").strip() or ".ftbot").expanduser(),
            base_model=env.get("FTBOT_BASE_MODEL", "").strip() or BUILTIN_SMOLLM2,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            openai_poll_seconds=number("FTBOT_OPENAI_POLL_SECONDS", 30.0, minimum=0.01),
            openai_confirm_usd=number("FTBOT_OPENAI_CONFIRM_USD", 5.0),
            openai_training_prices=prices,
            openai_fine_tuning_ends=ends,
            openai_retirements=retirements,
            base_models=base_models,
            max_queued_per_user=whole("FTBOT_MAX_QUEUED_PER_USER", 3),
            serve_max_bases=int(number("FTBOT_SERVE_MAX_BASES", 1, minimum=1)),
            serve_max_adapters=int(number("FTBOT_SERVE_MAX_ADAPTERS", 8, minimum=1)),
            serve_max_memory_mb=optional_positive("FTBOT_SERVE_MAX_MEMORY_MB"),
            ask_timeout_seconds=number("FTBOT_ASK_TIMEOUT_SECONDS", 60.0, minimum=1),
            ask_max_new_tokens=int(number("FTBOT_ASK_MAX_NEW_TOKENS", 256, minimum=1)),
            **_vllm_settings(env, problems, vllm_max_adapters=whole("FTBOT_VLLM_MAX_ADAPTERS", 8, minimum=1)),
            ray_address=ray_address,
            ray_gpus=number("FTBOT_RAY_GPUS", 1.0),
            ray_cpus=number("FTBOT_RAY_CPUS", 1.0),
        )
        if problems:
            raise UsageError("Bad environment settings: " + "; ".join(problems) + ".")
        return settings


def _vllm_settings(env: Mapping[str, str], problems: list[str], *, vllm_max_adapters: int) -> dict[str, Any]:
    """The ``vllm_*`` fields from FTBOT_VLLM_URL, FTBOT_VLLM_ADAPTER_DIR and FTBOT_VLLM_BASE_NAME;
    bad values are added to ``problems``."""
    adapter_dir = env.get("FTBOT_VLLM_ADAPTER_DIR", "").strip() or None
    if adapter_dir is not None and not adapter_dir.startswith("/"):
        problems.append(
            f"FTBOT_VLLM_ADAPTER_DIR={adapter_dir!r} must be an absolute path (where the vLLM host "
            "sees FTBOT_HOME/models)"
        )
        adapter_dir = None
    return {
        "vllm_url": _vllm_url(env.get("FTBOT_VLLM_URL", ""), problems),
        "vllm_adapter_dir": None if adapter_dir is None else adapter_dir.rstrip("/") or "/",
        "vllm_max_adapters": vllm_max_adapters,
        "vllm_base_name": env.get("FTBOT_VLLM_BASE_NAME", "").strip() or None,
    }


def _vllm_url(raw: str, problems: list[str]) -> str | None:
    """FTBOT_VLLM_URL without a trailing ``/`` or ``/v1`` (both accepted); None when unset."""
    url = raw.strip().rstrip("/")
    if not url:
        return None
    url = url.removesuffix("/v1").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        problems.append(f"FTBOT_VLLM_URL={raw.strip()!r} is not an http(s) URL such as http://vllm-host:8000")
        return None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        problems.append(f"FTBOT_VLLM_URL={raw.strip()!r} has a port that is not a number")
        return None
    return url


def ray_address_setting(raw: str, problems: list[str]) -> str | None:
    """FTBOT_RAY_ADDRESS checked: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (None when unset);
    a value of another shape is added to ``problems``."""
    value = raw.strip()
    if not value:
        return None
    if value == "auto":
        return value
    rest = value.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(
            f"FTBOT_RAY_ADDRESS={value!r} is not auto, HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT"
        )
        return None
    return value
