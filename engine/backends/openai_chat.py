"""Chat completions through OpenAI: batches for evaluation, one streamed answer within a deadline
for /ask.

    chat.generate(model, conversations, *, max_new_tokens, temperature=0.0, concurrency=8)
        -> list[str]    chat completions, in order, at most ``concurrency`` at a time.
    chat.generate_detailed(...same...) -> list[Completion]    the same requests, each with
        OpenAI's ``finish_reason`` ("length": cut at max_new_tokens) and ``usage.completion_tokens``.
    chat.stream_answer(model, messages, *, max_new_tokens, temperature=0.0, timeout) -> Completion
        /ask: ONE streamed chat completion within ``timeout`` seconds of wall-clock time; at the
        deadline the text so far comes back with finish_reason "time". Retries only before any
        text arrived; GenerationError when nothing arrived in time (see the method).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai

from engine.backends.openai_client import Requester
from engine.backends.openai_errors import translate_error
from engine.errors import FtbotError, GenerationError


@dataclass(frozen=True)
class Completion:
    """One chat completion as OpenAI reported it (:meth:`OpenAIChat.generate_detailed`).

    ``finish_reason`` is OpenAI's own: ``stop``, ``length`` (cut at ``max_completion_tokens``),
    ``content_filter``, ``tool_calls``... (``stop`` when OpenAI gave none). ``completion_tokens``
    is ``usage.completion_tokens``, or None when the response had no usage (then estimate).
    :meth:`OpenAIChat.stream_answer` adds two of ours: ``time`` (cut at its deadline) and
    ``interrupted`` (the stream broke off after part of the answer; ``error`` says why, in plain
    words); both have ``completion_tokens`` None.
    """

    text: str
    finish_reason: str
    completion_tokens: int | None
    error: str | None = None


class _OutOfTime(Exception):
    """The deadline of :meth:`OpenAIChat.stream_answer` passed before the first text."""


class _StreamState:
    """What the reader thread of :meth:`OpenAIChat.stream_answer` has received so far;
    ``lock`` guards it, ``done`` is set when the reader ends. Once the caller set ``cancelled``
    (it returned), the reader changes nothing more."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() instant
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.cancelled = False
        self.timed_out = False  # the reader saw the deadline pass
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.finish_reason: str | None = None
        self.tokens: int | None = None
        self.error: FtbotError | None = None  # failed before any text (translated)
        self.broken: FtbotError | None = None  # failed after some text (translated)
        self.last_error: BaseException | None = None  # the latest failed try, maybe retried

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def has_content(self) -> bool:
        return bool(self.parts or self.refusal)

    def text(self) -> str:
        # A refusal arrives instead of content (like generate_detailed's ``content or refusal``).
        return "".join(self.parts) or "".join(self.refusal)

    def take(self, chunk: Any) -> None:
        """Add one ``chat.completion.chunk``: content and refusal deltas of the first choice,
        its finish reason, and the usage (the last chunk, with empty ``choices``)."""
        usage = getattr(chunk, "usage", None)
        tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            self.tokens = tokens
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                self.parts.append(delta.content)
            if delta is not None and getattr(delta, "refusal", None):
                self.refusal.append(delta.refusal)
            if choice.finish_reason:
                self.finish_reason = str(choice.finish_reason)


def _starts_answer(chunk: Any) -> bool:
    """Whether a chunk carries text or ends the answer: after it, a failure is no longer retried."""
    for choice in getattr(chunk, "choices", None) or ():
        delta = choice.delta
        if choice.finish_reason or (delta is not None and (delta.content or getattr(delta, "refusal", None))):
            return True
    return False


def _chained(head: Sequence[Any], rest: Iterable[Any]) -> Iterable[Any]:
    yield from head
    yield from rest


@dataclass(frozen=True)
class _StreamRequest:
    """What :meth:`OpenAIChat.stream_answer` asks (the reader thread's arguments)."""

    model: str
    messages: list[dict[str, Any]]
    max_new_tokens: int
    temperature: float
    action: str


class OpenAIChat:
    """Chat completions through one :class:`Requester`. Thread-safe."""

    def __init__(self, requests: Requester) -> None:
        self._requests = requests

    def generate(
        self,
        model: str,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        concurrency: int = 8,
    ) -> list[str]:
        """One chat completion per conversation, answers in the same order, at most
        ``concurrency`` requests at a time; 429/5xx/network errors are retried with backoff.
        The answers' texts only (evaluation); :meth:`generate_detailed` has the rest.

        Raises:
            RemoteError: a request still failed (the first failure, in order, is raised).
        """
        completions = self.generate_detailed(
            model,
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            concurrency=concurrency,
        )
        return [c.text for c in completions]

    def generate_detailed(
        self,
        model: str,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        concurrency: int = 8,
    ) -> list[Completion]:
        """Like :meth:`generate`, with each answer's finish reason and completion tokens as
        OpenAI reported them (:class:`Completion`); ``max_new_tokens`` is sent as
        ``max_completion_tokens``.

        Raises:
            RemoteError: a request still failed (the first failure, in order, is raised).
        """
        if not conversations:
            return []
        client = self._requests.client

        def one(messages: Sequence[Mapping[str, Any]]) -> Completion:
            response = self._requests.call(
                lambda: client.chat.completions.create(
                    model=model,
                    messages=[dict(m) for m in messages],
                    max_completion_tokens=max_new_tokens,
                    temperature=temperature,
                ),
                action=f"asking {model}",
                retry_transient=True,
                model=model,
            )
            usage = getattr(response, "usage", None)
            tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
            tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None
            if not response.choices:
                return Completion("", "stop", tokens)
            choice = response.choices[0]
            message = choice.message
            text = (message.content if message else None) or getattr(message, "refusal", None) or ""
            return Completion(text, str(choice.finish_reason or "stop"), tokens)

        workers = max(1, min(concurrency, len(conversations)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-generate") as pool:
            futures = [pool.submit(one, conv) for conv in conversations]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def stream_answer(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        timeout: float,
    ) -> Completion:
        """One answer through a STREAMED chat completion (``stream=True``, with
        ``stream_options={"include_usage": True}`` so the last chunk carries the usage), within
        ``timeout`` seconds of wall-clock time from this call: the /ask path (evaluation keeps
        :meth:`generate_detailed`). ``max_new_tokens`` is sent as ``max_completion_tokens``.

        - The stream ends normally: OpenAI's ``finish_reason`` (``stop`` when it gave none) and
          ``usage.completion_tokens`` (None without a usage chunk), as :meth:`generate_detailed`.
        - The deadline passes while the answer arrives: the text so far, ``finish_reason``
          ``"time"``, ``completion_tokens`` None. This call returns at the deadline whatever the
          server does: the stream is read by a helper thread, which stops reading and closes the
          stream (the connection) at its next chunk, or when its HTTP read timeout (the time
          that was left when the request started) ends a silent connection.
        - The stream breaks off after part of the answer (network, a server error event): the
          text so far, ``finish_reason`` ``"interrupted"``, ``error`` saying why. Not retried:
          a second answer would not continue the first.
        - Before any text arrived, 429 / 5xx / network errors are retried with backoff (the
          injected sleep) as :meth:`Requester.call` does, but only while the wait ends before the
          deadline; every request's HTTP timeout is the time left, so a server that sends
          nothing cannot hold it past the deadline either.

        The deadline is real time (``time.monotonic``, not the injected clock): what it bounds,
        waiting on the network, is real.

        Raises:
            GenerationError: no text arrived before the deadline (nothing was sent at all).
            RemoteError (or what :func:`~engine.backends.openai_errors.translate_error` gives):
                the request failed before any text arrived and could not be retried in time (the
                last failure, in plain words; also when the deadline passed while waiting to
                retry it).
        """
        limit = max(0.0, float(timeout))
        state = _StreamState(time.monotonic() + limit)
        request = _StreamRequest(
            model, [dict(m) for m in messages], max_new_tokens, temperature, f"asking {model}"
        )
        reader = threading.Thread(
            target=self._read_stream,
            args=(state, request),
            name="openai-stream",
            daemon=True,  # it may outlive this call by up to one HTTP read timeout
        )
        reader.start()
        finished = state.done.wait(state.time_left())
        with state.lock:
            state.cancelled = True  # the reader drops whatever comes later and closes the stream
            text = state.text()
            timed_out = state.timed_out or not finished
            if not state.has_content():
                if timed_out and state.error is None:
                    if state.last_error is not None:  # e.g. waiting to retry a 5xx
                        raise translate_error(state.last_error, action=request.action, model=model)
                    raise GenerationError(
                        f"OpenAI's model {model} sent no answer within the {limit:g}-second time limit.",
                        hint="Try again in a minute; an administrator can raise FTBOT_ASK_TIMEOUT_SECONDS.",
                    )
                if state.error is not None:
                    raise state.error
            if timed_out:
                return Completion(text, "time", None)
            if state.broken is not None:
                return Completion(text, "interrupted", None, error=state.broken.message)
            return Completion(text, state.finish_reason or "stop", state.tokens)

    def _read_stream(self, state: _StreamState, request: _StreamRequest) -> None:
        """The helper thread of :meth:`stream_answer`: open the stream (retried until the first
        text), then read chunks into ``state`` until the stream ends, the deadline passes or the
        caller gave up. Never raises: every outcome is left in ``state``."""
        client = self._requests.stream_client()
        try:
            try:
                stream, head = self._requests.call(
                    lambda: _open_stream(client, state, request),
                    action=request.action,
                    retry_transient=True,
                    model=request.model,
                    time_left=state.time_left,
                )
            except _OutOfTime:
                state.timed_out = True
                return
            except FtbotError as exc:
                state.error = exc
                return
            with stream:  # closes the response (and its connection) however the loop ends
                for chunk in _chained(head, stream):
                    with state.lock:
                        if state.cancelled:
                            break
                        state.take(chunk)
                    if state.time_left() <= 0 and state.finish_reason is None:
                        state.timed_out = True
                        break
        except Exception as exc:  # a broken stream, or anything unexpected: never hang the caller
            with state.lock:
                if not state.cancelled and not state.timed_out:
                    err = translate_error(exc, action=request.action, model=request.model)
                    if state.finish_reason is not None:
                        pass  # the answer was complete; only the usage chunk is missing
                    elif state.has_content():
                        state.broken = err
                    else:
                        state.error = err
        finally:
            state.done.set()


def _open_stream(client: Any, state: _StreamState, request: _StreamRequest) -> tuple[Any, list[Any]]:
    """Open the stream and read up to the first chunk with text (or the end). Everything up to
    the first text is safe to repeat: OpenAI errors raised here go through the Requester's
    retries; _OutOfTime (not an OpenAI error) goes straight out."""
    left = state.time_left()
    if left <= 0 or state.cancelled:
        raise _OutOfTime
    try:
        stream = client.chat.completions.create(
            model=request.model,
            messages=request.messages,
            max_completion_tokens=request.max_new_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
            timeout=left,  # connect, each read, each write: never past the deadline
        )
    except openai.OpenAIError as exc:
        state.last_error = exc
        raise
    state.last_error = None  # this try got through; only its own failure counts now
    head: list[Any] = []
    try:
        while not any(_starts_answer(chunk) for chunk in head[-1:]):
            if state.time_left() <= 0 or state.cancelled:
                raise _OutOfTime
            try:
                head.append(next(stream))
            except StopIteration:
                break
    except BaseException as exc:
        stream.close()
        if isinstance(exc, openai.OpenAIError):
            state.last_error = exc
        raise
    return stream, head
