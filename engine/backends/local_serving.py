"""The model server of the long-lived ``ftbot serve`` process (and of ``ftbot ask``).

:class:`ModelServer` loads a base once (4-bit NF4 where bitsandbytes can, ``local_model``),
attaches fine-tunes of that base as named adapters of one ``PeftModel``
(``load_adapter``/``set_adapter``, ``disable_adapter`` for the base itself), keeps a bounded
least-recently-used cache of bases and adapters (by count and optionally by bytes), and answers on
ONE dedicated generation thread: callers get a :class:`concurrent.futures.Future`, so a Slack
listener thread never generates. Requests for the same base + adapter that arrive within a short
collection window are answered by one batched ``generate`` (``local_generation``).

Correctness reference: the seed's way (load the base, ``PeftModel.from_pretrained``, greedy
``generate``) must give the same answer as the server for the same prompt (tests check it).

Safety: every request has a max-token limit and a wall-clock limit (a per-row stopping criterion
with a deadline read from an injectable clock). An answer cut by either carries a ``note``.

torch/peft are imported inside functions (see ARCHITECTURE.md's import rules), so importing this
module is cheap.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import queue
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.local_builtin import is_builtin, resolve_base_model
from engine.backends.local_generation import (
    Answer,
    Generation,
    conversation_for,
    cut_note,
    generate_one_batch,
    stop_token_ids,
)
from engine.backends.local_model import Message, context_length, first_line, load_base, render_prompt
from engine.errors import BackendUnavailable, FtbotError, GenerationError, ModelNotFound, UsageError

log = logging.getLogger(__name__)

__all__ = ["ModelServer"]


@dataclass
class _Adapter:
    key: str  # resolved adapter directory
    name: str  # the PEFT adapter name inside the base's PeftModel
    nbytes: int
    chat_template: str | None


@dataclass
class _Base:
    key: str  # the base model name as asked (e.g. builtin:tiny)
    model: Any
    tokenizer: Any
    nbytes: int
    context: int
    stop_ids: list[int]
    adapters: OrderedDict[str, _Adapter] = field(default_factory=OrderedDict)


@dataclass
class _Request:
    base_model: str
    adapter: str | None
    conversation: list[dict[str, Any]]
    max_new_tokens: int
    temperature: float
    timeout_seconds: float
    label: str
    future: Future
    # True when this request came within one collection window of the previous one: a burst is
    # under way, so waiting for more is worth it. A lone request starts at once.
    burst: bool = False

    @property
    def group(self) -> tuple[str, str | None, float]:
        return (self.base_model, self.adapter, self.temperature)


_STOP = object()


def _adapter_dir(adapter: str | Path) -> str:
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFound(
            f"The fine-tuned model's files are missing: no adapter_config.json in {path}.",
            hint="The model may have been deleted from this host; pick another with `models`.",
        )
    return str(path.resolve())


def _adapter_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("adapter_model.*") if f.is_file())


def _adapter_chat_template(path: str) -> str | None:
    """The chat template saved next to an adapter (training may save the tokenizer there), so the
    server formats prompts exactly as the model was trained."""
    jinja = Path(path) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = Path(path) / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except (OSError, ValueError):
            return None
        return template if isinstance(template, str) else None
    return None


def _cut_note(answer: Generation, *, max_new_tokens: int, timeout: float, context: int) -> str | None:
    return cut_note(answer.finish_reason, max_new_tokens=max_new_tokens, timeout=timeout, context=context)


class ModelServer:
    """Serves a bounded set of bases and their adapters from one generation thread.

    Args:
        builtin_dir: where ``builtin:tiny`` is built (``Settings.builtin_dir``).
        max_bases / max_adapters: cache sizes by count (least recently used goes first).
        max_memory_bytes: optional cap on the bytes of loaded bases + adapters (same LRU order;
            a single model larger than the cap is still served, alone).
        timeout_seconds / max_new_tokens: default per-request limits (a request may lower or
            raise them).
        batch_window_seconds: how long the generation thread waits for more requests after the
            first one of a burst before starting a batch (a request arriving alone, not within a
            window of the previous one, starts at once). Real time, not ``clock``.
        max_batch_size: most requests in one ``generate``.
        quantize: passed to :func:`load_base` (None = 4-bit on a GPU where possible, fp32 on a CPU).
        clock: monotonic seconds; used for generation deadlines and timings (tests inject one).
        loader: ``(resolved_base) -> (model, tokenizer)``; default :func:`load_base`.

    Counters for tests and benchmarks: ``base_loads``, ``adapter_loads``, ``batch_sizes`` (the
    size of each batched generate, newest last).
    """

    def __init__(
        self,
        *,
        builtin_dir: Path | None = None,
        max_bases: int = 1,
        max_adapters: int = 8,
        max_memory_bytes: int | None = None,
        timeout_seconds: float = 60.0,
        max_new_tokens: int = 256,
        batch_window_seconds: float = 0.02,
        max_batch_size: int = 16,
        quantize: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str], tuple[Any, Any]] | None = None,
    ) -> None:
        if max_bases < 1 or max_adapters < 0 or max_batch_size < 1:
            raise UsageError("max_bases and max_batch_size must be at least 1, max_adapters at least 0.")
        self.builtin_dir = builtin_dir
        self.max_bases = max_bases
        self.max_adapters = max_adapters
        self.max_memory_bytes = max_memory_bytes
        self.timeout_seconds = timeout_seconds
        self.max_new_tokens = max_new_tokens
        self.batch_window_seconds = batch_window_seconds
        self.max_batch_size = max_batch_size
        self.quantize = quantize
        self.clock = clock
        self._loader = loader or functools.partial(load_base, quantize=quantize)
        self.base_loads = 0
        self.adapter_loads = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._bases: OrderedDict[str, _Base] = OrderedDict()
        self._adapter_counter = 0
        self._lock = threading.Lock()  # guards the cache snapshot read by loaded(), and _last_submit
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._last_submit = float("-inf")
        self._thread = threading.Thread(target=self._run, name="ftbot-generation", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> ModelServer:
        """A server configured from :class:`engine.settings.Settings` (serve_* and ask_* fields;
        ``serve_max_memory_mb`` is in MiB, None for no byte cap)."""
        memory_mb = settings.serve_max_memory_mb
        kwargs: dict[str, Any] = {
            "builtin_dir": settings.builtin_dir,
            "max_bases": settings.serve_max_bases,
            "max_adapters": settings.serve_max_adapters,
            "max_memory_bytes": None if memory_mb is None else int(memory_mb * 1024 * 1024),
            "timeout_seconds": settings.ask_timeout_seconds,
            "max_new_tokens": settings.ask_max_new_tokens,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- public API (any thread) -----------------------------------------------------------

    def submit(
        self,
        prompt: str | Sequence[Message],
        *,
        base_model: str,
        adapter: str | Path | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        timeout_seconds: float | None = None,
        label: str | None = None,
    ) -> Future[Answer]:
        """Queue one question; returns at once with a Future of the :class:`Answer`.

        ``prompt`` is the user's text (or a full message list); ``adapter`` the adapter directory
        of a fine-tune of ``base_model``, or None to ask the base itself; ``system_prompt`` the
        one the model was trained with. The Future fails with ResourceExhausted (prompt longer
        than the context), BackendUnavailable (the base cannot load), GenerationError (anything
        else the model could not do).

        Raises (at once):
            UsageError: empty prompt, or a limit that is not positive; the server is closed.
            ModelNotFound: ``adapter`` is not an adapter directory.
        """
        if self._closed:
            raise UsageError("The model server is shut down.")
        conversation = conversation_for(prompt, system_prompt)
        last = conversation[-1] if conversation else {}
        content = last.get("content")
        if last.get("role") != "user" or not isinstance(content, str) or not content.strip():
            raise UsageError(
                "The question is empty.", hint="Write a question after the command, e.g. `ask What is ...?`"
            )
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        if not (isinstance(max_new, int) and max_new >= 1):
            raise UsageError(f"max_new_tokens must be a whole number of at least 1 (got {max_new!r}).")
        if not timeout > 0:
            raise UsageError(f"The time limit must be more than 0 seconds (got {timeout!r}).")
        if not temperature >= 0:
            raise UsageError(f"temperature must be 0 (greedy) or more (got {temperature!r}).")
        if not isinstance(base_model, str) or not base_model.strip():
            raise UsageError("No base model was named.")
        adapter_key = _adapter_dir(adapter) if adapter is not None else None
        future: Future[Answer] = Future()
        arrived = time.monotonic()
        with self._lock:
            burst = arrived - self._last_submit < self.batch_window_seconds
            self._last_submit = arrived
        request = _Request(
            base_model=base_model,
            adapter=adapter_key,
            conversation=conversation,
            max_new_tokens=max_new,
            temperature=float(temperature),
            timeout_seconds=float(timeout),
            label=label or (f"base:{base_model}" if adapter_key is None else Path(adapter_key).name),
            future=future,
            burst=burst,
        )
        self._queue.put(request)
        return future

    def ask(
        self, prompt: str | Sequence[Message], *, wait_seconds: float | None = None, **kwargs: Any
    ) -> Answer:
        """Blocking :meth:`submit` (never call it on a Slack listener thread).

        Raises what :meth:`submit` raises, what the Future carries, and GenerationError when no
        answer came within ``wait_seconds``.
        """
        return self._wait(self.submit(prompt, **kwargs), wait_seconds)

    def compare(
        self,
        prompt: str | Sequence[Message],
        *,
        base_model: str,
        adapter: str | Path,
        system_prompt: str | None = None,
        label: str | None = None,
        wait_seconds: float | None = None,
        **kwargs: Any,
    ) -> tuple[Answer, Answer]:
        """Ask the base model and the fine-tune the same question; returns ``(base, tuned)``.
        Both use the system prompt the fine-tune was trained with, so only the weights differ."""
        base = self.submit(prompt, base_model=base_model, adapter=None, system_prompt=system_prompt, **kwargs)
        tuned = self.submit(
            prompt, base_model=base_model, adapter=adapter, system_prompt=system_prompt, label=label, **kwargs
        )
        return self._wait(base, wait_seconds), self._wait(tuned, wait_seconds)

    def loaded(self) -> dict[str, list[str]]:
        """Snapshot of the cache: base name -> adapter directories, least recently used first."""
        with self._lock:
            return {key: list(base.adapters) for key, base in self._bases.items()}

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the generation thread after the requests already queued; drop the models.

        ``wait``: join the thread, at most ``timeout`` seconds (None: until it ends). A process
        that is about to exit must wait: the thread frees the models as it ends, and torch
        objects freed while the interpreter shuts down abort the process ("terminate called
        without an active exception", exit status 134)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _wait(future: Future[Answer], wait_seconds: float | None) -> Answer:
        try:
            return future.result(timeout=wait_seconds)
        except FutureTimeout as exc:
            raise GenerationError(
                f"No answer within {wait_seconds:g} seconds; the model server is busy.",
                hint="Try again in a minute.",
            ) from exc

    # -- generation thread -----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._collect(first)
            try:
                groups: OrderedDict[tuple[str, str | None, float], list[_Request]] = OrderedDict()
                for request in batch:
                    if request.future.set_running_or_notify_cancel():  # skip requests cancelled meanwhile
                        groups.setdefault(request.group, []).append(request)
                for requests in groups.values():
                    for start in range(0, len(requests), self.max_batch_size):
                        self._serve(requests[start : start + self.max_batch_size])
            except Exception as exc:  # a bug: fail this batch's requests, keep the thread alive
                log.exception("model server: a batch failed")
                error = GenerationError(f"The model could not answer: {first_line(exc)}")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
        # Requests that raced with close() get an answer too, rather than waiting forever.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(GenerationError("The model server shut down before answering."))
        with self._lock:
            self._bases.clear()
        gc.collect()

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """The batch starting with ``first``: what arrives within the collection window.
        Returns ``(batch, stop_seen)``."""
        batch = [first]
        # A lone request (no burst under way, nothing else queued) skips the window: waiting
        # would only add latency.
        lone = not first.burst and self._queue.empty()
        window_end = time.monotonic() + (0.0 if lone else self.batch_window_seconds)
        while len(batch) < self.max_batch_size:
            remaining = window_end - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _serve(self, requests: list[_Request]) -> None:
        """Answer requests that share base, adapter and temperature with one generate call.
        Never raises: every outcome lands in a Future."""
        first = requests[0]
        try:
            base = self._base(first.base_model)
            model, template = self._activate(base, first.adapter)
            prompts = [render_prompt(base.tokenizer, r.conversation, template) for r in requests]
        except FtbotError as exc:
            for r in requests:
                r.future.set_exception(exc)
            return
        except Exception as exc:  # a bug or a library failure: say so, keep serving
            log.exception("model server: preparing a batch failed")
            error = GenerationError(f"The model could not answer: {first_line(exc)}")
            for r in requests:
                r.future.set_exception(error)
            return
        started = self.clock()
        try:
            if first.adapter is None and self._is_peft(model):
                with model.disable_adapter():
                    results = self._generate(base, model, prompts, requests, started)
            else:
                results = self._generate(base, model, prompts, requests, started)
        except Exception as exc:
            log.exception("model server: generation failed")
            error = GenerationError(f"The model could not answer: {first_line(exc)}")
            for r in requests:
                r.future.set_exception(error)
            return
        seconds = self.clock() - started
        answered = sum(not isinstance(r, FtbotError) for r in results)
        self.batch_sizes.append(answered)
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, FtbotError):
                request.future.set_exception(result)
                continue
            request.future.set_result(
                Answer(
                    text=result.text,
                    model=request.label,
                    base_model=request.base_model,
                    adapter=request.adapter,
                    tokens=result.tokens,
                    finish_reason=result.finish_reason,
                    seconds=seconds,
                    batch_size=answered,
                    note=_cut_note(
                        result,
                        max_new_tokens=request.max_new_tokens,
                        timeout=request.timeout_seconds,
                        context=base.context,
                    ),
                )
            )

    def _generate(
        self, base: _Base, model: Any, prompts: list[str], requests: list[_Request], started: float
    ) -> list[Generation | FtbotError]:
        return generate_one_batch(
            model,
            base.tokenizer,
            prompts,
            max_new=[r.max_new_tokens for r in requests],
            temperature=requests[0].temperature,
            deadlines=[started + r.timeout_seconds for r in requests],
            clock=self.clock,
            context=base.context,
            stop_ids=base.stop_ids,
        )

    @staticmethod
    def _is_peft(model: Any) -> bool:
        return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")

    def _resolve(self, base_model: str) -> str:
        if is_builtin(base_model):
            if self.builtin_dir is None:
                raise BackendUnavailable(f"{base_model} needs a builtin directory (Settings.builtin_dir).")
            return resolve_base_model(base_model, self.builtin_dir)
        return base_model

    def _base(self, base_model: str) -> _Base:
        base = self._bases.get(base_model)
        if base is not None:
            with self._lock:
                self._bases.move_to_end(base_model)
            return base
        while len(self._bases) >= self.max_bases:
            self._evict_base(next(iter(self._bases)))
        model, tokenizer = self._loader(self._resolve(base_model))
        self.base_loads += 1
        nbytes = int(model.get_memory_footprint()) if hasattr(model, "get_memory_footprint") else 0
        base = _Base(
            base_model,
            model,
            tokenizer,
            nbytes,
            context_length(model, tokenizer),
            stop_token_ids(model, tokenizer),
        )
        with self._lock:
            self._bases[base_model] = base
        self._fit_memory(keep_base=base_model, keep_adapter=None)
        return base

    def _activate(self, base: _Base, adapter_key: str | None) -> tuple[Any, str | None]:
        """Make ``adapter_key`` the active adapter of ``base`` (loading it if needed); return the
        model to generate with and the adapter's own chat template if it has one."""
        if adapter_key is None:
            return base.model, None
        adapter = base.adapters.get(adapter_key)
        if adapter is None:
            if self.max_adapters < 1:
                raise BackendUnavailable("This server keeps no adapters (max_adapters=0).")
            while sum(len(b.adapters) for b in self._bases.values()) >= self.max_adapters:
                self._evict_lru_adapter()
            adapter = self._load_adapter(base, adapter_key)
            self._fit_memory(keep_base=base.key, keep_adapter=adapter_key)
        else:
            with self._lock:
                base.adapters.move_to_end(adapter_key)
        base.model.set_adapter(adapter.name, inference_mode=True)
        return base.model, adapter.chat_template

    def _load_adapter(self, base: _Base, adapter_key: str) -> _Adapter:
        from peft import PeftModel

        self._adapter_counter += 1
        name = f"adapter{self._adapter_counter}"
        try:
            if self._is_peft(base.model):
                base.model.load_adapter(adapter_key, adapter_name=name, is_trainable=False)
            else:
                base.model = PeftModel.from_pretrained(
                    base.model, adapter_key, adapter_name=name, is_trainable=False
                )
        except Exception as exc:
            # A failed attach may leave half-injected LoRA layers in the base: drop the base so the
            # next request loads it clean.
            self._evict_base(base.key)
            raise GenerationError(
                f"The fine-tuned model at {adapter_key} could not be attached to base model "
                f"'{base.key}': {first_line(exc)}",
                hint="Was it trained on this base model? Check `models`.",
            ) from exc
        base.model.eval()
        self.adapter_loads += 1
        adapter = _Adapter(
            adapter_key, name, _adapter_bytes(adapter_key), _adapter_chat_template(adapter_key)
        )
        with self._lock:
            base.adapters[adapter_key] = adapter
        return adapter

    def _evict_adapter(self, base: _Base, adapter_key: str) -> None:
        adapter = base.adapters[adapter_key]
        if len(base.adapters) == 1:
            # PEFT cannot delete a PeftModel's last adapter; unwrap to the bare base instead.
            base.model = base.model.unload()
        else:
            with warnings.catch_warnings():  # "adapter X was active which is now deleted": intended
                warnings.simplefilter("ignore", UserWarning)
                base.model.delete_adapter(adapter.name)
        with self._lock:
            del base.adapters[adapter_key]
        log.info("model server: evicted adapter %s from %s", adapter_key, base.key)

    def _evict_lru_adapter(self, *, keep: tuple[str, str] | None = None) -> bool:
        """Evict the least recently used adapter (over all bases). False when none can go."""
        # Bases are in LRU order and adapters within a base too: the first evictable one is oldest.
        for base in self._bases.values():
            for key in base.adapters:
                if keep != (base.key, key):
                    self._evict_adapter(base, key)
                    return True
        return False

    def _evict_base(self, base_key: str) -> None:
        with self._lock:
            base = self._bases.pop(base_key)
        base.adapters.clear()
        base.model = None
        del base
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # cache clearing is best effort
            pass
        log.info("model server: evicted base %s", base_key)

    def _memory(self) -> int:
        return sum(b.nbytes + sum(a.nbytes for a in b.adapters.values()) for b in self._bases.values())

    def _fit_memory(self, *, keep_base: str, keep_adapter: str | None) -> None:
        """Evict least recently used adapters, then bases, until under ``max_memory_bytes``;
        the base and adapter about to answer stay."""
        if self.max_memory_bytes is None:
            return
        while self._memory() > self.max_memory_bytes:
            keep = (keep_base, keep_adapter) if keep_adapter else None
            if self._evict_lru_adapter(keep=keep):
                continue
            others = [k for k in self._bases if k != keep_base]
            if not others:
                return  # the one model in use is over the cap by itself: serve it anyway
            self._evict_base(others[0])
