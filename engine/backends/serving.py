"""The /ask model server chosen once from the settings: a vLLM server over HTTP when
FTBOT_VLLM_URL is set (:mod:`engine.backends.vllm_serving`), else the in-process
:class:`~engine.backends.local_serving.ModelServer`. Both answer ``ask``, ``compare`` and
``close`` with the same arguments and the same :class:`~engine.backends.local_generation.Answer`,
so ``Engine.ask`` does not know which one it has."""

from __future__ import annotations

from typing import Any

from engine.backends.local_serving import ModelServer
from engine.backends.vllm_serving import VLLMServer
from engine.settings import Settings


def model_server(settings: Settings) -> Any:
    """The model server for local models (base and LoRA fine-tunes) under ``settings``."""
    if settings.vllm_url:
        return VLLMServer.from_settings(settings)
    return ModelServer.from_settings(settings)
