"""A fake vLLM server: a real HTTP server on 127.0.0.1 (a free port) following the documented
endpoints of vLLM's OpenAI-compatible server started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, with vLLM's error texts and bodies
(``{"error": {"message", "type", "param", "code"}}``):

- ``GET /v1/models``: the base model (no ``parent``) and the loaded adapters (``parent`` = base).
- ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}``: 400 "Both 'lora_name' and
  'lora_path' must be provided."; 400 "The lora adapter 'x' has already been loaded."; 404
  "Loading lora x failed: No adapter found for PATH" (no ``adapter_config.json`` there); 400
  "LoRA rank R is greater than max_lora_rank M." (``r`` of adapter_config.json over
  ``max_lora_rank``); 400 "While loading PATH, expected target modules in [...] but received
  [...]..." (target modules the base does not have: an adapter of another base); 200 text
  "Success: LoRA adapter 'x' added successfully.". With ``runtime_updating = False`` the route
  does not exist: 404 ``{"detail": "Not Found"}``.
- ``POST /v1/unload_lora_adapter {"lora_name"}``: 404 "The lora adapter 'x' cannot be found."
- ``POST /v1/chat/completions``: ``model`` must be the base's served name or a loaded adapter,
  else 404 "The model `x` does not exist.". ``answer(model, messages) -> str`` decides the text
  (default: deterministic, naming the model). One token per whitespace-separated word: an answer
  longer than ``max_tokens`` is cut there with ``finish_reason`` "length"; a prompt whose words +
  ``max_tokens`` exceed ``max_model_len`` gets vLLM's 400 for the context. ``"stream": true``
  answers as Server-Sent Events (chunked), one content chunk per word, the usage last with
  ``stream_options.include_usage``, then ``data: [DONE]``; ``stream_delay`` seconds pass before
  each content chunk and ``first_byte_delay`` before anything is sent (real time; they end when
  the server stops).

:meth:`FakeVLLM.restart` forgets the loaded adapters (a vLLM restart); :meth:`FakeVLLM.stop` takes
the server down (connections refused). Every request is recorded in ``requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Recorded:
    method: str
    path: str
    json: Any


class FakeVLLM:
    def __init__(
        self,
        *,
        base_name: str = "fake-base",
        max_lora_rank: int = 16,
        max_model_len: int = 2048,
        modules: tuple[str, ...] = LLAMA_MODULES,
    ) -> None:
        self.base_name = base_name
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.modules = modules
        self.runtime_updating = True
        self.adapters: dict[str, str] = {}  # lora_name -> lora_path, in load order
        self.requests: list[Recorded] = []
        self.answer: Callable[[str, list[dict[str, Any]]], str] = self._default_answer
        self.first_byte_delay = 0.0
        self.stream_delay = 0.0
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._port: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeVLLM:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-vllm", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Take the server down: its port refuses connections from now on (``url`` stays)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._port is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._port}"

    def restart(self) -> None:
        """What a vLLM restart does to the bot: every adapter loaded at run time is forgotten."""
        with self._lock:
            self.adapters.clear()

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    @staticmethod
    def _default_answer(model: str, messages: list[dict[str, Any]]) -> str:
        question = str(messages[-1].get("content") or "") if messages else ""
        return f"{model} answers: {question}"

    # ---- routes ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, path, body))
        if method == "GET" and path == "/v1/models":
            return 200, self._models()
        if method == "POST" and path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            if not self.runtime_updating:
                return 404, {"detail": "Not Found"}
            return self._load(body or {}) if path.endswith("/load_lora_adapter") else self._unload(body or {})
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(body or {})
        return 404, {"detail": "Not Found"}

    def _models(self) -> dict[str, Any]:
        now = int(time.time())
        cards = [
            {
                "id": self.base_name,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": f"/models/{self.base_name}",
                "parent": None,
                "max_model_len": self.max_model_len,
            }
        ]
        with self._lock:
            for name, path in self.adapters.items():
                cards.append(
                    {
                        "id": name,
                        "object": "model",
                        "created": now,
                        "owned_by": "vllm",
                        "root": path,
                        "parent": self.base_name,
                    }
                )
        return {"object": "list", "data": cards}

    def _load(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, _error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        with self._lock:
            if name in self.adapters:
                return 400, _error(
                    f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400
                )
        config_file = Path(path) / "adapter_config.json"
        if not config_file.is_file():
            return 404, _error(
                f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404
            )
        config = json.loads(config_file.read_text())
        rank = int(config.get("r") or 0)
        if rank > self.max_lora_rank:
            return 400, _error(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        targets = config.get("target_modules") or []
        unexpected = sorted(set(targets if isinstance(targets, list) else [targets]) - set(self.modules))
        if unexpected:
            return 400, _error(
                f"While loading {path}, expected target modules in {list(self.modules)} but received "
                f"{unexpected}. Please verify that the loaded LoRA module is correct"
            )
        with self._lock:
            self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        with self._lock:
            if name not in self.adapters:
                return 404, _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _chat(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        if self.first_byte_delay > 0 and self._stopping.wait(self.first_byte_delay):
            return 0, None
        model = body.get("model", "")
        with self._lock:
            known = model == self.base_name or model in self.adapters
        if not known:
            return 404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        messages = list(body.get("messages") or [])
        limit = body.get("max_tokens")
        limit = limit if isinstance(limit, int) else self.max_model_len
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        if prompt_tokens >= self.max_model_len:  # vLLM 0.32's words
            return 400, _error(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                f"contains at least {prompt_tokens} input tokens, which exceeds this limit even without any "
                "output tokens. Please reduce the length of the input prompt."
            )
        if prompt_tokens + limit > self.max_model_len:
            return 400, _error(
                f"'max_tokens' or 'max_completion_tokens' is too large: {limit}. This model's maximum "
                f"context length is {self.max_model_len} tokens and your request has {prompt_tokens} "
                f"input tokens ({limit} > {self.max_model_len} - {prompt_tokens})."
            )
        words = self.answer(model, messages).split()
        finish = "stop"
        if len(words) > limit:
            words, finish = words[:limit], "length"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return 200, {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        events: list[tuple[float, Any]] = [
            (
                0.0,
                {
                    **head,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                },
            )
        ]
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            events.append(
                (
                    self.stream_delay,
                    {**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]},
                )
            )
        events.append((0.0, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((0.0, {**head, "choices": [], "usage": usage}))
        events.append((0.0, "[DONE]"))
        return 200, _Events(events)


@dataclass
class _Events:
    events: list[tuple[float, Any]]


def _error(message: str, error_type: str = "BadRequestError", code: int = 400) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVLLM
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        status, payload = self.fake.handle(self.command, re.sub(r"\?.*", "", self.path), body)
        if payload is None:  # the server stopped while "thinking"
            self.close_connection = True
            return
        if isinstance(payload, _Events):
            self._stream(payload)
            return
        if isinstance(payload, str):
            data, kind = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, answer: _Events) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for delay, payload in answer.events:
                if delay > 0 and self.fake._stopping.wait(delay):
                    self.close_connection = True
                    return
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = f"data: {text}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up (its deadline passed)
            self.close_connection = True

    do_GET = do_POST = _serve
