"""/ask through a vLLM server (FTBOT_VLLM_URL): the same ``ask``/``compare``/``close`` as the
in-process :class:`~engine.backends.local_serving.ModelServer`, answered over HTTP.

vLLM's OpenAI-compatible server, started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, serves one base model and loads LoRA adapters at run
time. :class:`VLLMServer`:

- loads a fine-tune on first use with ``POST /v1/load_lora_adapter {"lora_name": <model id>,
  "lora_path": <where the vLLM host sees the adapter>}`` (FTBOT_VLLM_ADAPTER_DIR stands for
  FTBOT_HOME's models directory there; unset, the paths are the same on both hosts);
- unloads the least recently used adapter beyond ``max_adapters`` (``POST /v1/unload_lora_adapter``);
- answers through one streamed ``POST /v1/chat/completions`` with ``model=<model id>`` (the base
  model by its served name, FTBOT_VLLM_BASE_NAME or the first base ``GET /v1/models`` lists),
  with the request's temperature and max tokens, within the time limit: at the deadline the text so
  far comes back with ``finish_reason`` ``time`` and the same note as a local answer
  (:func:`~engine.backends.local_generation.cut_note`);
- survives a vLLM restart (its adapters forgotten): "The model `x` does not exist." for an adapter
  it had loaded makes it load the adapter again and ask once more;
- says what went wrong in plain words, in the project's exception tree: the adapter not found on
  the vLLM host, a fine-tune of another base, a LoRA rank over ``--max-lora-rank``, runtime
  loading switched off, a prompt over the context, the server down or silent.

Standard library only (``http.client``): no torch, no ``openai``.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.backends.local_generation import Answer, conversation_for, cut_note
from engine.errors import (
    BackendUnavailable,
    FtbotError,
    GenerationError,
    ModelNotFound,
    RemoteError,
    ResourceExhausted,
    UsageError,
)

log = logging.getLogger(__name__)

#: The note of an answer whose stream broke off part-way (the text so far is kept).
INTERRUPTED_NOTE = "The answer broke off: the connection to the vLLM server was lost."
_URL_HINT = (
    "Check that the vLLM server is running and that FTBOT_VLLM_URL points at it (see the README's "
    '"Running at scale"), or unset FTBOT_VLLM_URL to answer with the model server inside the bot.'
)
_RUNTIME_LORA_HINT = (
    "Start vLLM with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
    '(see the README\'s "Running at scale").'
)


@dataclass
class _Reply:
    """One HTTP exchange that got an answer: the status and the body (JSON when it parses)."""

    status: int
    body: Any

    @property
    def message(self) -> str:
        """vLLM's error text, whichever shape it came in: ``{"error": {"message"}}`` (recent
        versions), ``{"object": "error", "message"}`` (older ones), FastAPI's ``{"detail"}``, or
        plain text."""
        body = self.body
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"])
            if isinstance(error, str):
                return error
            for key in ("message", "detail"):
                if body.get(key):
                    value = body[key]
                    return value if isinstance(value, str) else json.dumps(value)
        return str(body or "").strip()


class _NotLoaded(Exception):
    """The chat completion's model is not on the server (vLLM restarted and forgot it)."""


class VLLMServer:
    """The /ask answers of one vLLM server. Thread-safe: adapter loads and unloads are serialised,
    questions run concurrently (vLLM batches them).

    Args:
        url: the server's base URL (``http://host:8000``; ``/v1`` is added here).
        models_dir: FTBOT_HOME's models directory on this host (``Settings.models_dir``).
        adapter_dir: where the vLLM host sees ``models_dir`` (None: the same path).
        base_model: the base model the server runs (FTBOT_BASE_MODEL): a fine-tune of another
            base cannot be answered by it.
        base_name: the base model's served name (None: discovered with ``GET /v1/models``).
        max_adapters: adapters kept loaded; the least recently used is unloaded beyond it.
        timeout_seconds / max_new_tokens: default per-answer limits (a request may set its own).
        request_timeout: seconds for the short requests (models, load, unload) and to connect.

    ``loads`` and ``unloads`` count the adapter loads and unloads this object asked for.
    """

    def __init__(
        self,
        url: str,
        *,
        models_dir: Path,
        adapter_dir: str | None = None,
        base_model: str,
        base_name: str | None = None,
        max_adapters: int = 8,
        timeout_seconds: float = 60.0,
        max_new_tokens: int = 256,
        request_timeout: float = 30.0,
    ) -> None:
        if max_adapters < 1:
            raise UsageError("max_adapters must be at least 1.")
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"FTBOT_VLLM_URL={url!r} is not an http(s) URL.")
        self.url = url.rstrip("/")
        self._parts = parts
        self.models_dir = Path(models_dir)
        self.adapter_dir = adapter_dir
        self.base_model = base_model
        self.max_adapters = max_adapters
        self.timeout_seconds = timeout_seconds
        self.max_new_tokens = max_new_tokens
        self.request_timeout = request_timeout
        self.loads = 0
        self.unloads = 0
        self._base_name = base_name
        self._configured_base = base_name
        self._synced = False  # whether the adapters an earlier bot process loaded were adopted
        self._in_use: dict[str, int] = {}  # lora_name -> questions answering with it now
        self._adapters: OrderedDict[str, str] = OrderedDict()  # lora_name -> lora_path, LRU first
        self._lock = threading.Lock()  # the adapter table and every load/unload
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> VLLMServer:
        """A server configured from :class:`engine.settings.Settings` (vllm_* and ask_* fields)."""
        kwargs: dict[str, Any] = {
            "models_dir": settings.models_dir,
            "adapter_dir": settings.vllm_adapter_dir,
            "base_model": settings.base_model,
            "base_name": settings.vllm_base_name,
            "max_adapters": settings.vllm_max_adapters,
            "timeout_seconds": settings.ask_timeout_seconds,
            "max_new_tokens": settings.ask_max_new_tokens,
        }
        kwargs.update(overrides)
        return cls(settings.vllm_url, **kwargs)

    # -- public API (any thread) -----------------------------------------------------------

    def ask(
        self,
        prompt: str | Sequence[Any],
        *,
        base_model: str,
        adapter: str | Path | None = None,
        system_prompt: str | None = None,
        label: str | None = None,
        wait_seconds: float | None = None,
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        timeout_seconds: float | None = None,
    ) -> Answer:
        """Answer ``prompt`` with the base model (``adapter`` None) or the fine-tune whose adapter
        directory is ``adapter``; ``label`` (the model id) is its name on the vLLM server and in
        the answer. Blocking; ``wait_seconds`` is accepted for ModelServer's signature (the time
        limit, ``timeout_seconds``, already bounds the answer).

        Raises:
            UsageError: empty prompt, a limit that is not positive, the server object is closed.
            BackendUnavailable: the server cannot be reached or does not load adapters at run
                time; the fine-tune's base or LoRA rank does not fit the server.
            ModelNotFound: the vLLM host does not find the adapter's files.
            ResourceExhausted: the prompt alone fills the model's context.
            GenerationError / RemoteError: no answer in time, or the server refused or failed.
        """
        del wait_seconds
        if self._closed:
            raise UsageError("The model server is shut down.")
        conversation = conversation_for(prompt, system_prompt)
        last = conversation[-1] if conversation else {}
        content = last.get("content")
        if last.get("role") != "user" or not isinstance(content, str) or not content.strip():
            raise UsageError(
                "The question is empty.", hint="Write a question after the command, e.g. `ask What is ...?`"
            )
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        timeout = float(self.timeout_seconds if timeout_seconds is None else timeout_seconds)
        if not (isinstance(limit, int) and limit >= 1) or not timeout > 0 or not temperature >= 0:
            raise UsageError("max_new_tokens, the time limit and temperature must be positive numbers.")
        name: str | None = None
        if adapter is None:
            shown = label or f"base:{base_model}"
        else:
            self._check_base(base_model, label)
            _check_files(adapter)
            shown = name = label or Path(adapter).name
        started = time.monotonic()
        request = {
            "messages": conversation,
            "max_tokens": int(limit),
            "temperature": float(temperature),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text, reason, tokens = self._answer(name, request, adapter, timeout)
        note = INTERRUPTED_NOTE if reason == "interrupted" else None
        return Answer(
            text=text,
            model=shown,
            base_model=base_model,
            adapter=None if adapter is None else str(adapter),
            tokens=tokens,
            finish_reason=reason,  # type: ignore[arg-type]
            seconds=time.monotonic() - started,
            note=note or cut_note(reason, max_new_tokens=int(limit), timeout=timeout, context=None),
        )

    def compare(
        self,
        prompt: str | Sequence[Any],
        *,
        base_model: str,
        adapter: str | Path,
        system_prompt: str | None = None,
        label: str | None = None,
        wait_seconds: float | None = None,
        **kwargs: Any,
    ) -> tuple[Answer, Answer]:
        """Ask the base model and the fine-tune the same question at once (vLLM batches them, so
        the pair takes one time limit at most); returns ``(base, tuned)``. Both use the system
        prompt the fine-tune was trained with, so only the weights differ."""
        common = {"base_model": base_model, "system_prompt": system_prompt, **kwargs}
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vllm-compare") as pool:
            base = pool.submit(self.ask, prompt, adapter=None, **common)
            tuned = pool.submit(self.ask, prompt, adapter=adapter, label=label, **common)
            return base.result(), tuned.result()

    def loaded(self) -> list[str]:
        """The adapters this object believes loaded on the server, least recently used first."""
        with self._lock:
            return list(self._adapters)

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new questions. Adapters stay loaded on the server (another bot process, or this
        one restarted, uses them again)."""
        del wait, timeout
        self._closed = True

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adapters --------------------------------------------------------------------------

    def lora_path(self, adapter: str | Path) -> str:
        """Where the vLLM host sees ``adapter``: under FTBOT_VLLM_ADAPTER_DIR when the adapter is in
        FTBOT_HOME's models directory and the setting is given; otherwise its absolute path here."""
        local = Path(adapter).expanduser().absolute()
        if self.adapter_dir is None:
            return str(local)
        for root in (self.models_dir.expanduser().absolute(), self.models_dir.expanduser().resolve()):
            try:
                relative = local.relative_to(root)
            except ValueError:
                continue
            return (
                "/".join([self.adapter_dir.rstrip("/"), *relative.parts])
                if relative.parts
                else self.adapter_dir
            )
        return str(local)

    def _check_base(self, base_model: str, label: str | None) -> None:
        if base_model != self.base_model:
            raise BackendUnavailable(
                f"Model {label or '?'} was fine-tuned from {base_model}, but the vLLM server at "
                f"{self.url} runs {self.base_model} (FTBOT_BASE_MODEL); an adapter only works on "
                "the base model it was trained on.",
                hint=f"Ask with a model fine-tuned from {self.base_model}, or run a vLLM server for "
                f"{base_model}.",
            )

    def _ensure_loaded(self, name: str, adapter: str | Path) -> None:
        """Load ``name`` unless it is loaded already, and mark it in use (:meth:`_release` ends
        that). Beyond ``max_adapters``, the least recently used adapters not answering a question
        right now are unloaded then (when all are busy, the limit is exceeded until one is free).
        The first call adopts the adapters an earlier bot process loaded (listed by the server
        under this bot's adapter directory), as the least recently used."""
        path = self.lora_path(adapter)
        with self._lock:
            if not self._synced:
                self._adopt()
            if name not in self._adapters:
                reply = self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
                if reply.status != 200 and "already been loaded" not in reply.message:
                    raise _load_error(reply, name=name, path=path, url=self.url)
                self.loads += 1
                self._adapters[name] = path
            self._adapters.move_to_end(name)
            self._in_use[name] = self._in_use.get(name, 0) + 1
            self._make_room(self.max_adapters)  # after the load: a refused one unloads nothing

    def _release(self, name: str) -> None:
        with self._lock:
            left = self._in_use.get(name, 0) - 1
            if left > 0:
                self._in_use[name] = left
            else:
                self._in_use.pop(name, None)
            self._make_room(self.max_adapters)

    def _make_room(self, keep: int) -> None:
        """Unload least recently used idle adapters until at most ``keep`` stay loaded (lock held)."""
        idle = [n for n in self._adapters if not self._in_use.get(n)]
        while len(self._adapters) > keep and idle:
            oldest = idle.pop(0)
            del self._adapters[oldest]
            self._unload(oldest)

    def _adopt(self) -> None:
        """Take over the adapters under this bot's adapter directory that the server has loaded
        (an earlier bot process loaded them), so the limit counts them (lock held)."""
        root = self.lora_path(self.models_dir).rstrip("/") + "/"
        adopted: OrderedDict[str, str] = OrderedDict()
        for card in self._models():  # in the order the server loaded them
            lora_path, lora_name = str(card.get("root") or ""), str(card.get("id") or "")
            if card.get("parent") and lora_name and lora_path.startswith(root):
                adopted[lora_name] = lora_path
        adopted.update(self._adapters)
        self._adapters = adopted
        self._synced = True

    def _unload(self, name: str) -> None:
        reply = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if reply.status == 200:
            self.unloads += 1
        elif reply.status != 404:  # 404: already gone (the server restarted); nothing to do
            log.warning("vLLM did not unload adapter %s: HTTP %s %s", name, reply.status, reply.message)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._adapters.pop(name, None)

    def _models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the base model(s) (no ``parent``) and the loaded adapters."""
        reply = self._call("GET", "/v1/models", None)
        cards = reply.body.get("data") if reply.status == 200 and isinstance(reply.body, dict) else None
        if not isinstance(cards, list):
            raise RemoteError(
                f"The vLLM server at {self.url} did not list its models (HTTP {reply.status}: "
                f"{reply.message or 'no list'}).",
                hint=_URL_HINT,
            )
        return [c for c in cards if isinstance(c, dict)]

    def _served_base_name(self) -> str:
        """The base model's name on the server: FTBOT_VLLM_BASE_NAME, else the first model
        ``GET /v1/models`` lists without a parent (adapters have one)."""
        if self._base_name is not None:
            return self._base_name
        bases = [c["id"] for c in self._models() if not c.get("parent") and c.get("id")]
        if not bases:
            raise BackendUnavailable(f"The vLLM server at {self.url} lists no base model.", hint=_URL_HINT)
        self._base_name = str(bases[0])
        return self._base_name

    # -- answers ---------------------------------------------------------------------------

    def _answer(
        self, name: str | None, request: dict[str, Any], adapter: str | Path | None, timeout: float
    ) -> tuple[str, str, int]:
        """``(text, finish_reason, tokens)`` from the server with adapter ``name`` (loaded first;
        again, once, when the server forgot it) or the base model (``name`` None: by its served
        name, discovered again once when the server no longer knows it)."""
        for attempt in (1, 2):
            if name is None or adapter is None:
                served = self._served_base_name()
                try:
                    return self._chat(served, request, timeout)
                except _NotLoaded:
                    if attempt == 1 and self._configured_base is None:
                        self._base_name = None  # vLLM restarted under another name: ask it again
                        continue
                    raise BackendUnavailable(
                        f"The vLLM server at {self.url} does not serve a base model named {served!r}.",
                        hint="Set FTBOT_VLLM_BASE_NAME to the name it serves (GET /v1/models lists "
                        "it), or leave it unset to use the first one it lists.",
                    ) from None
            self._ensure_loaded(name, adapter)
            try:
                return self._chat(name, request, timeout)
            except _NotLoaded:
                self._forget(name)
                if attempt == 2:
                    raise GenerationError(
                        f"The vLLM server at {self.url} lost model {name} again right after loading it.",
                        hint="Try again in a minute; look at the vLLM server's log if it keeps happening.",
                    ) from None
                log.info("vLLM forgot adapter %s (a restart?); loading it again", name)
            finally:
                self._release(name)
        raise AssertionError("unreachable")

    def _chat(self, name: str, request: dict[str, Any], timeout: float) -> tuple[str, str, int]:
        body = {**request, "model": name}
        deadline = time.monotonic() + timeout
        try:
            return self._stream(body, deadline, timeout)
        except _TooLong as exc:
            room = exc.context - exc.prompt_tokens
            if room < 1 or room >= int(body["max_tokens"]):
                raise ResourceExhausted(
                    f"The prompt is {exc.prompt_tokens} tokens long; this model reads at most "
                    f"{exc.context} tokens (prompt and answer together).",
                    hint="Shorten the prompt.",
                ) from None
            text, reason, tokens = self._stream({**body, "max_tokens": room}, deadline, timeout)
            return text, "context" if reason == "length" else reason, tokens

    def _stream(self, body: dict[str, Any], deadline: float, timeout: float) -> tuple[str, str, int]:
        """One streamed chat completion, read until ``[DONE]``, the deadline or a broken stream.
        Every socket operation's timeout is the time left, so a silent server cannot hold it past
        the deadline."""
        left = deadline - time.monotonic()
        conn = self._connection(max(0.05, left))
        parts: list[str] = []
        reason: str | None = None
        tokens: int | None = None
        try:
            try:
                conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                )
                sock = conn.sock
                response = conn.getresponse()
            except TimeoutError:
                raise GenerationError(
                    f"The vLLM server at {self.url} sent no answer within the {timeout:g}-second time limit.",
                    hint="Try again in a minute; an administrator can raise FTBOT_ASK_TIMEOUT_SECONDS.",
                ) from None
            except OSError as exc:
                raise self._unreachable(exc) from exc
            if response.status != 200:
                raise _chat_error(_Reply(response.status, _parse(response.read())), body["model"], self.url)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if sock is not None:
                    sock.settimeout(left)
                line = response.readline()
                if not line:
                    break  # the stream ended without [DONE]: what came is the answer
                data = line.decode("utf-8", "replace").strip()
                if not data.startswith("data:"):
                    continue
                data = data[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or {}
                if isinstance(usage.get("completion_tokens"), int):
                    tokens = usage["completion_tokens"]
                for choice in chunk.get("choices") or ():
                    if choice.get("index", 0) != 0:
                        continue
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                    if choice.get("finish_reason"):
                        reason = str(choice["finish_reason"])
        except TimeoutError:
            if not parts and reason is None:
                raise GenerationError(
                    f"The vLLM server at {self.url} sent no answer within the {timeout:g}-second time limit.",
                    hint="Try again in a minute; an administrator can raise FTBOT_ASK_TIMEOUT_SECONDS.",
                ) from None
            if reason is None:
                return "".join(parts), "time", len(parts)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if not parts:
                raise self._unreachable(exc) from exc
            if reason is None:
                log.warning("An answer from vLLM broke off: %s", exc)
                return "".join(parts), "interrupted", len(parts)
        finally:
            conn.close()
        text = "".join(parts)
        return text, "length" if reason == "length" else "stop", tokens if tokens is not None else len(parts)

    # -- HTTP ------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return kind(self._parts.hostname or "", self._parts.port, timeout=timeout)

    def _call(self, method: str, path: str, payload: Any) -> _Reply:
        """One short request (models, load, unload); the reply whatever its status.

        Raises:
            BackendUnavailable: no answer at all (refused, unknown host, timeout, dropped)."""
        conn = self._connection(self.request_timeout)
        try:
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=None if payload is None else json.dumps(payload), headers=headers)
            response = conn.getresponse()
            return _Reply(response.status, _parse(response.read()))
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        finally:
            conn.close()

    def _unreachable(self, exc: BaseException) -> FtbotError:
        if isinstance(exc, TimeoutError | socket.timeout):
            why = f"did not answer within {self.request_timeout:g} seconds"
        elif isinstance(exc, ConnectionRefusedError):
            why = "refused the connection (is it running?)"
        elif isinstance(exc, socket.gaierror):
            why = f"cannot be found ({self._parts.hostname} does not resolve)"
        else:
            why = f"cannot be reached ({type(exc).__name__}: {exc})"
        return BackendUnavailable(f"The vLLM server at {self.url} {why}.", hint=_URL_HINT)


class _TooLong(Exception):
    """vLLM refused a chat completion whose prompt + max_tokens exceed the context."""

    def __init__(self, context: int, prompt_tokens: int) -> None:
        super().__init__(f"{prompt_tokens} of {context}")
        self.context = context
        self.prompt_tokens = prompt_tokens


_CONTEXT = re.compile(r"maximum context length is (\d+)")
_PROMPT_TOKENS = re.compile(
    r"(\d+) in the messages|(?:has|contains) (?:at least )?(\d+) input tokens|prompt (?:is|has) (\d+) tokens"
)
_RANK = re.compile(r"LoRA rank (\d+) is greater than max_lora_rank (\d+)")


def _check_files(adapter: str | Path) -> None:
    """The adapter's files are still here (the same check and words as the in-process server)."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFound(
            f"The fine-tuned model's files are missing: no adapter_config.json in {path}.",
            hint="The model may have been deleted from this host; pick another with `models`.",
        )


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _chat_error(reply: _Reply, model: str, url: str) -> Exception:
    """A refused chat completion in plain words (or _NotLoaded / _TooLong for the caller)."""
    message = reply.message
    if reply.status == 404 and "does not exist" in message:
        return _NotLoaded(model)
    context = _CONTEXT.search(message)
    if reply.status == 400 and context:
        prompt = _PROMPT_TOKENS.search(message)
        if prompt:
            return _TooLong(int(context.group(1)), int(next(g for g in prompt.groups() if g)))
        return ResourceExhausted(
            f"The question does not fit the model's context: {message}", hint="Shorten the prompt."
        )
    if reply.status >= 500:
        return RemoteError(
            f"The vLLM server at {url} failed to answer (HTTP {reply.status}: {message or 'no detail'}).",
            code=str(reply.status),
            hint="Try again in a minute; look at the vLLM server's log if it keeps failing.",
        )
    return RemoteError(
        f"The vLLM server at {url} refused the question (HTTP {reply.status}: {message or 'no detail'}).",
        code=str(reply.status),
    )


def _load_error(reply: _Reply, *, name: str, path: str, url: str) -> FtbotError:
    """A refused ``/v1/load_lora_adapter`` in plain words."""
    message = reply.message
    rank = _RANK.search(message)
    if rank:
        r, cap = rank.groups()
        return BackendUnavailable(
            f"Model {name} is a LoRA of rank {r}, above the vLLM server's --max-lora-rank ({cap}).",
            hint=f"Restart vLLM with --max-lora-rank {r} or more, or fine-tune again with a lower rank "
            f"(r={cap} or less).",
        )
    if "No adapter found" in message or (reply.status == 404 and "lora" in message.lower()):
        return ModelNotFound(
            f"The vLLM server cannot find model {name}'s adapter at {path}.",
            hint="The vLLM host must see FTBOT_HOME's models directory: put it on storage both hosts "
            "share, and set FTBOT_VLLM_ADAPTER_DIR to where the vLLM host sees it.",
        )
    if reply.status == 404:  # the route itself is missing: {"detail": "Not Found"}
        return BackendUnavailable(
            f"The vLLM server at {url} does not load adapters at run time.", hint=_RUNTIME_LORA_HINT
        )
    lowered = message.lower()
    if "enable-lora" in lowered or "lora is not enabled" in lowered or "enable_lora" in lowered:
        return BackendUnavailable(f"The vLLM server at {url} has LoRA switched off.", hint=_RUNTIME_LORA_HINT)
    if "target modules" in lowered or "size mismatch" in lowered or "shape" in lowered:
        return BackendUnavailable(
            f"Model {name}'s adapter does not fit the base model the vLLM server runs ({message}).",
            hint="An adapter only works on the base model it was trained on: start vLLM with that "
            "base (FTBOT_BASE_MODEL), or pick a model fine-tuned from the one it runs.",
        )
    return RemoteError(
        f"The vLLM server at {url} could not load model {name} (HTTP {reply.status}: "
        f"{message or 'no detail'}).",
        code=str(reply.status),
        hint="Look at the vLLM server's log.",
    )
