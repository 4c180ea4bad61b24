"""Fine-tuning and generation through OpenAI's API. The only module that imports ``openai``.

The caller builds the client (``make_client(settings)``: the key and base URL come from
:class:`~engine.settings.Settings`, never from the environment here) and injects the clock and the
sleep, so tests drive a fake server through the real client and take seconds.

Public surface (what service / scheduler / worker wire up)::

    make_client(settings, *, max_retries=0, timeout=120.0) -> openai.OpenAI
        BackendUnavailable when settings.openai_api_key is empty.

    tuner = OpenAIFineTuner(client, *, settings, clock=time.time, sleep=time.sleep,
                            token_counter=None, max_attempts=5)

    tuner.estimate(examples, model, epochs="auto") -> CostEstimate
        examples: messages lists, {"messages": [...]} dicts, or objects with ``.messages``.
        Offline: tiktoken's o200k_base only when tiktoken is installed AND its encoding file is
        already cached; otherwise about 4 characters per token, and the estimate says so.
        ``confirmation_required`` when the cost is above settings.openai_confirm_usd or unknown.

    tuner.start(job_id, train_path, eval_path=None, *, model, hyperparameters=None, seed=None,
                sink=None) -> remote_id ("ftjob-...")
        Uploads the files (purpose "fine-tune", bytes unchanged), waits until OpenAI has
        processed them, creates the job (method=supervised with n_epochs / batch_size /
        learning_rate_multiplier (the top-level ``hyperparameters`` is deprecated in openai 3.x),
        suffix "ftbot-<job_id>" (<= 18 chars), seed, metadata {"ftbot_job_id": job_id})
        and emits a ``submitted`` event (data["remote_id"]) at once. If a remote job carrying this
        job id already exists (a restart between create and store), it is reused: never two jobs.

    tuner.poll(remote_id, cursor=None, *, job_id=None) -> PollResult
        ONE step, no sleeping (the scheduler calls it every settings.openai_poll_seconds, with
        :func:`poll_delay` as backoff). Returns the new ProgressEvents since ``cursor`` (status
        changes and messages as ``log``, metrics as ``step`` (+ ``eval`` for full validation
        loss), checkpoints as ``log``, problems as ``alert``), ``status`` (OpenAI's), ``done``,
        ``model_name`` ("ft:..." on success), ``error``/``error_code`` (plain words), the new
        opaque ``cursor`` string to store, ``transient`` (network failure, 429, 5xx, a rejected
        key: the job is NOT failed, keep polling), ``eta_seconds`` and ``trained_tokens``.

        OpenAI's validating_files / queued / running are all our ``training`` state; succeeded
        -> evaluate ``model_name``; failed -> fail the job with ``error``; cancelled -> cancelled.
        Event data: ``remote_status`` on status logs, ``remote_event_id`` on converted events,
        ``checkpoint`` on checkpoint logs, ``code`` on alerts; the final success log carries
        ``model``, ``trained_tokens`` and ``usd`` (the actual cost when the price is known).

    poll_delay(interval, failures, *, retry_after=None) -> seconds until the next poll.

    tuner.follow(remote_id, sink, cursor=None, *, job_id=None, should_stop=None,
                 max_seconds=None) -> PollResult
        Blocking loop over poll() for the CLI, sleeping with the injected sleep.

    tuner.cancel(remote_id) -> str     OpenAI's status after the request.
    tuner.find_remote_job(job_id) -> str | None    the remote job whose metadata names job_id.
    tuner.generate(model, conversations, *, max_new_tokens, temperature=0.0, concurrency=8)
        -> list[str]    chat completions, in order, at most ``concurrency`` at a time.
    tuner.generate_detailed(...same...) -> list[Completion]    the same requests, each with
        OpenAI's ``finish_reason`` ("length": cut at max_new_tokens) and ``usage.completion_tokens``.
    tuner.stream_answer(model, messages, *, max_new_tokens, temperature=0.0, timeout) -> Completion
        /ask: ONE streamed chat completion within ``timeout`` seconds of wall-clock time; at the
        deadline the text so far comes back with finish_reason "time". Retries only before any
        text arrived; GenerationError when nothing arrived in time (see the method).

    looks_like_openai_model(name) -> bool    "ft:...", "gpt-...", "o4-mini": route /ask here.

OpenAI's shutdown dates (the dated table :data:`FINE_TUNING_ENDS` / :data:`RETIREMENTS`, overridden
by FTBOT_OPENAI_FINE_TUNING_ENDS / FTBOT_OPENAI_RETIREMENTS; ``today`` is injected by the caller)::

    check_fine_tuning_open(today, settings)      BackendUnavailable on or after the end date.
    check_not_retired(model, today, settings)    BackendUnavailable on or after the model's date.
    shutdown_notice(model, today, settings) -> str | None    the pre-flight warning (days left).
    retirement_date(model, overrides) -> date | None;  fine_tuning_end(settings) -> date.

Errors (engine.errors), each with a message saying what to do: no key -> BackendUnavailable;
bad key (401) -> RemoteError(code="invalid_api_key"); the organisation can no longer create
fine-tuning jobs (OpenAI is winding self-serve fine-tuning down) ->
RemoteError(code="fine_tuning_unavailable") in the same words as the date check
(:func:`fine_tuning_closed_message`); a model OpenAI shut down (its "has been deprecated" 404) ->
RemoteError(code="model_retired"); a base model OpenAI does not fine-tune -> UsageError;
429 -> retried with backoff through the injected sleep, then RemoteError(code=OpenAI's code);
a file OpenAI rejects -> RemoteError(code="file_rejected") naming the line OpenAI names.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import openai

from engine.errors import BackendUnavailable, FtbotError, GenerationError, RemoteError, UsageError
from engine.progress import NullSink, ProgressEvent, ProgressSink
from engine.settings import Settings

# --------------------------------------------------------------------------------------------
# Prices and token counting
# --------------------------------------------------------------------------------------------

# USD per 1M training tokens, by model family (the dated snapshot suffix is ignored).
# Source: OpenAI's pricing page as of the GPT-4.1 launch; 4o and 4o-mini corroborated by dated
# third-party pages (May/June 2026). OpenAI changes these: override with FTBOT_OPENAI_PRICES.
PRICES_AS_OF = "2025-04-14"
TRAINING_PRICES_USD_PER_1M: Mapping[str, float] = MappingProxyType(
    {
        "gpt-4o-mini": 3.00,
        "gpt-4o": 25.00,
        "gpt-4.1": 25.00,
        "gpt-4.1-mini": 5.00,
        "gpt-4.1-nano": 1.50,
    }
)

# OpenAI's wind-down of self-serve fine-tuning, and the shutdown of the models it fine-tunes (a
# fine-tuned model stops answering the day its base model shuts down). Source: OpenAI's
# deprecations page, https://developers.openai.com/api/docs/deprecations ("Update to OpenAI's
# self-serve fine-tuning", notified 2026-05-07, and the model shutdown table), read 2026-12-04:
# the fine-tuning dates and gpt-4o / gpt-4.1 as issue 12 quotes the page; the mini models and the
# 2026-10-23 batch as dated copies of that table give them (Oct 2026). OpenAI may move these:
# override with FTBOT_OPENAI_FINE_TUNING_ENDS and FTBOT_OPENAI_RETIREMENTS.
SHUTDOWN_DATES_AS_OF = "2026-12-04"
SHUTDOWN_DATES_SOURCE = "https://developers.openai.com/api/docs/deprecations"
#: Organisations that had never fine-tuned were refused from this day...
NEW_ORGANISATIONS_REFUSED_FROM = date(2026, 5, 7)
#: ...and those with no use of a fine-tuned model in the last 60 days from this one.
INACTIVE_ORGANISATIONS_REFUSED_FROM = date(2026, 7, 2)
#: From this day no organisation can create new fine-tuning jobs.
FINE_TUNING_ENDS = date(2027, 1, 6)
#: Model family (or exact snapshot) -> the day it and every fine-tune of it stop answering.
RETIREMENTS: Mapping[str, date] = MappingProxyType(
    {
        "gpt-4o": date(2027, 1, 14),
        "gpt-4o-mini": date(2027, 1, 14),
        "gpt-4.1": date(2027, 1, 14),
        "gpt-4.1-mini": date(2027, 1, 14),
        "gpt-4.1-nano": date(2026, 10, 23),
        "gpt-4o-2024-05-13": date(2026, 10, 23),
    }
)

OPENAI_MIN_EXAMPLES = 10
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
METADATA_KEY = "ftbot_job_id"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TRANSIENT_STATUS = "unknown"

# tiktoken caches encodings under this name (sha1 of the download URL); it downloads on a miss,
# which fails offline, so we only use it when the file is already there.
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class TokenCounter:
    """Counts the tokens of one string. ``exact`` is False for an estimate; ``method`` says how."""

    count_text: Callable[[str], int]
    exact: bool
    method: str


def estimate_tokens(text: str) -> int:
    """About 4 characters per token (OpenAI's rule of thumb for English)."""
    return math.ceil(len(text) / 4) if text else 0


ESTIMATED_COUNTER = TokenCounter(
    estimate_tokens, exact=False, method="estimate (about 4 characters per token)"
)


def default_token_counter(cache_dir: Path | None = None) -> TokenCounter:
    """tiktoken's ``o200k_base`` (the encoding of gpt-4o*, gpt-4.1*) when tiktoken is installed
    and the encoding is already cached in ``cache_dir`` (tiktoken's default cache, under the
    temp directory, when None); otherwise :data:`ESTIMATED_COUNTER`. Never touches the network
    on purpose: tiktoken is not a dependency and downloads its encodings on first use."""
    try:
        tiktoken = importlib.import_module("tiktoken")
    except ImportError:
        return ESTIMATED_COUNTER
    directory = cache_dir or Path(tempfile.gettempdir()) / "data-gym-cache"
    if not (directory / hashlib.sha1(_O200K_URL.encode()).hexdigest()).is_file():
        return ESTIMATED_COUNTER
    try:
        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # a corrupt cache or a download attempt that failed: fall back
        return ESTIMATED_COUNTER
    return TokenCounter(
        lambda text: len(encoding.encode(text, disallowed_special=())),
        exact=True,
        method="tiktoken o200k_base",
    )


def _messages_of(example: Any) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """(messages, tools) of an example given as a messages list, a dict or an Example object."""
    if isinstance(example, Mapping):
        return example.get("messages") or [], example.get("tools")
    messages = getattr(example, "messages", None)
    if messages is not None:
        return messages, getattr(example, "tools", None)
    return example, None


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the text ones
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return json.dumps(content, ensure_ascii=False)


def count_example_tokens(example: Any, counter: TokenCounter = ESTIMATED_COUNTER) -> int:
    """Billable tokens of one example, by the OpenAI cookbook's formula: every message costs 3
    tokens plus its content (plus 1 with a ``name``), every example 3 more. All roles count."""
    messages, tools = _messages_of(example)
    total = 3
    for message in messages:
        total += 3 + counter.count_text(_content_text(message.get("content")))
        if message.get("name"):
            total += 1
        if message.get("tool_calls"):
            total += counter.count_text(json.dumps(message["tool_calls"], ensure_ascii=False))
    if tools:
        total += counter.count_text(json.dumps(tools, ensure_ascii=False))
    return total


def default_epochs(n_examples: int) -> int:
    """The epochs OpenAI picks for ``n_epochs="auto"`` (cookbook heuristic): 3, more for tiny
    datasets (at least 100 example-passes, at most 25 epochs), fewer for huge ones."""
    n = max(1, n_examples)
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25_000:
        return max(1, 25_000 // n)
    return 3


def model_family(model: str) -> str:
    """``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``; ``ft:gpt-4.1-mini-2025-04-14:org::x`` ->
    ``gpt-4.1-mini``."""
    name = model.strip()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return _DATED_SUFFIX.sub("", name)


def training_price(model: str, overrides: Mapping[str, float] | None = None) -> tuple[float | None, str]:
    """(USD per 1M training tokens, where that figure comes from); (None, reason) when unknown."""
    overrides = overrides or {}
    family = model_family(model)
    for key in (model, family):
        if key in overrides:
            return float(overrides[key]), "FTBOT_OPENAI_PRICES"
    if family in TRAINING_PRICES_USD_PER_1M:
        return TRAINING_PRICES_USD_PER_1M[family], f"ftbot's price table of {PRICES_AS_OF}"
    return None, "no price known"


def base_snapshot(model: str) -> str:
    """The OpenAI base model a name stands on: ``ft:gpt-4o-2024-08-06:org::x`` ->
    ``gpt-4o-2024-08-06``; any other name unchanged."""
    name = model.strip()
    return name[3:].split(":", 1)[0] if name.startswith("ft:") else name


def fine_tuning_end(settings: Settings) -> date:
    """The day from which OpenAI lets no organisation create fine-tuning jobs
    (FTBOT_OPENAI_FINE_TUNING_ENDS, else :data:`FINE_TUNING_ENDS`)."""
    return settings.openai_fine_tuning_ends or FINE_TUNING_ENDS


def retirement_date(model: str, overrides: Mapping[str, date] | None = None) -> date | None:
    """The day ``model`` (a base model, or a fine-tune: its base counts) stops answering, or None
    when none is known. FTBOT_OPENAI_RETIREMENTS (``overrides``) wins over :data:`RETIREMENTS`;
    within each, the exact snapshot wins over its family."""
    snapshot = base_snapshot(model)
    family = model_family(snapshot)
    for table in (overrides or {}, RETIREMENTS):
        for key in (snapshot, family):
            if key in table:
                return table[key]
    return None


def _days(count: int) -> str:
    return _plural(count, "day")


def fine_tuning_closed_message(ends: date) -> str:
    """Why OpenAI creates no fine-tuning job for this organisation, and what to do instead: the
    same words whether ftbot knows it from the date or OpenAI refused."""
    return (
        "OpenAI no longer lets this organisation create fine-tuning jobs: it is winding down "
        "self-serve fine-tuning (closed to organisations that had never fine-tuned from "
        f"{NEW_ORGANISATIONS_REFUSED_FROM}, to those with no use of a fine-tuned model in 60 days from "
        f"{INACTIVE_ORGANISATIONS_REFUSED_FROM}, and to every organisation from {ends}). Models "
        "fine-tuned earlier still answer until their base model retires. Fine-tune locally instead "
        "(backend=local, or `ftbot run --backend local`)."
    )


FINE_TUNING_CLOSED = fine_tuning_closed_message(FINE_TUNING_ENDS)


def check_fine_tuning_open(today: date, settings: Settings) -> None:
    """Refuse a new OpenAI fine-tuning job on or after the day OpenAI stops creating them.

    Raises:
        BackendUnavailable: :func:`fine_tuning_closed_message`, pointing to the local backend.
    """
    ends = fine_tuning_end(settings)
    if today >= ends:
        raise BackendUnavailable(
            fine_tuning_closed_message(ends),
            hint="Start the job with backend=local to fine-tune on this machine.",
        )


def retired_message(model: str, retired_on: date) -> str:
    """``model`` (a base model or a fine-tune of one) no longer answers: say since when and why."""
    base = base_snapshot(model)
    if model.strip().startswith("ft:"):
        return (
            f"The fine-tuned model {model} stands on {base}, which OpenAI retired on {retired_on}: "
            "OpenAI no longer answers with either."
        )
    return f"OpenAI retired {base} on {retired_on}: neither it nor any fine-tune of it answers any more."


def check_not_retired(model: str, today: date, settings: Settings) -> None:
    """Refuse to use ``model`` on or after its retirement day (:func:`retirement_date`).

    Raises:
        BackendUnavailable: :func:`retired_message`, with what to do instead.
    """
    retired_on = retirement_date(model, settings.openai_retirements)
    if retired_on is not None and today >= retired_on:
        raise BackendUnavailable(
            retired_message(model, retired_on),
            hint="Fine-tune again locally (backend=local) and use that model, or choose another one "
            "(`/finetune models`, `ftbot models`).",
        )


def shutdown_notice(model: str, today: date, settings: Settings) -> str | None:
    """What a new OpenAI job must know before it starts, or None: the day new fine-tuning jobs end
    (and the days left), and the day ``model`` and the fine-tune made from it stop answering."""
    parts: list[str] = []
    ends = fine_tuning_end(settings)
    if today < ends:
        parts.append(
            f"New OpenAI fine-tuning jobs end on {ends} ({_days((ends - today).days)} left): from then "
            "on fine-tune locally (backend=local)."
        )
    retired_on = retirement_date(model, settings.openai_retirements)
    if retired_on is not None and today < retired_on:
        parts.append(
            f"OpenAI retires {base_snapshot(model)} and every fine-tune of it on {retired_on} "
            f"({_days((retired_on - today).days)} left): the model this job makes stops answering then."
        )
    return " ".join(parts) or None


@dataclass(frozen=True)
class CostEstimate:
    """What an OpenAI fine-tuning job will cost, before it starts."""

    model: str
    examples: int
    tokens_per_epoch: int
    epochs: int
    epochs_auto: bool  # OpenAI chooses; ``epochs`` is its usual choice
    total_tokens: int
    max_example_tokens: int
    usd_per_million: float | None
    usd: float | None  # None when no price is known for the model
    price_source: str
    tokens_exact: bool
    counting: str
    threshold_usd: float
    confirmation_required: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# Poll results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollResult:
    """One poll of a remote job. Store ``cursor`` and pass it to the next poll."""

    events: tuple[ProgressEvent, ...]
    status: str  # OpenAI's status, or the last known one when ``transient``
    done: bool  # succeeded, failed or cancelled on OpenAI's side
    model_name: str | None  # "ft:..." when succeeded
    error: str | None  # plain words: why the job failed, or why this poll did not get through
    error_code: str | None
    cursor: str
    transient: bool = False  # this poll failed (network, 429, 5xx, key); the job goes on
    eta_seconds: float | None = None
    trained_tokens: int | None = None
    retry_after: float | None = None  # seconds OpenAI asked us to wait (429)

    @property
    def succeeded(self) -> bool:
        return self.done and self.status == "succeeded"


@dataclass(frozen=True)
class Completion:
    """One chat completion as OpenAI reported it (:meth:`OpenAIFineTuner.generate_detailed`).

    ``finish_reason`` is OpenAI's own: ``stop``, ``length`` (cut at ``max_completion_tokens``),
    ``content_filter``, ``tool_calls``... (``stop`` when OpenAI gave none). ``completion_tokens``
    is ``usage.completion_tokens``, or None when the response had no usage (then estimate).
    :meth:`OpenAIFineTuner.stream_answer` adds two of ours: ``time`` (cut at its deadline) and
    ``interrupted`` (the stream broke off after part of the answer; ``error`` says why, in plain
    words); both have ``completion_tokens`` None.
    """

    text: str
    finish_reason: str
    completion_tokens: int | None
    error: str | None = None


class _OutOfTime(Exception):
    """The deadline of :meth:`OpenAIFineTuner.stream_answer` passed before the first text."""


class _StreamState:
    """What the reader thread of :meth:`OpenAIFineTuner.stream_answer` has received so far;
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
        if choice.finish_reason or (
            delta is not None and (delta.content or getattr(delta, "refusal", None))
        ):
            return True
    return False


def _chained(head: Sequence[Any], rest: Iterable[Any]) -> Iterable[Any]:
    yield from head
    yield from rest


@dataclass
class _Cursor:
    """What poll() has already reported; serialised into PollResult.cursor (restart-safe)."""

    event: str | None = None  # id of the newest OpenAI event already turned into a ProgressEvent
    status: str | None = None
    checkpoint: str | None = None
    failures: int = 0  # consecutive polls that did not get through
    warned: str | None = None  # code of the alert already sent for the current trouble
    eta: bool = False  # the first ETA was announced

    @classmethod
    def parse(cls, raw: str | None) -> _Cursor:
        if not raw:
            return cls()
        if not raw.startswith("{"):  # a bare OpenAI event id
            return cls(event=raw)
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        return cls(
            event=data.get("e"),
            status=data.get("s"),
            checkpoint=data.get("c"),
            failures=int(data.get("f") or 0),
            warned=data.get("w"),
            eta=bool(data.get("eta")),
        )

    def dump(self) -> str:
        data = {"e": self.event, "s": self.status, "c": self.checkpoint, "f": self.failures, "w": self.warned}
        if self.eta:
            data["eta"] = True
        return json.dumps({k: v for k, v in data.items() if v not in (None, 0)}, separators=(",", ":"))


def poll_delay(
    interval: float, failures: int, *, retry_after: float | None = None, cap: float = 600.0
) -> float:
    """Seconds until the next poll: ``interval`` normally, doubling with each consecutive failed
    poll up to ``cap`` (never below ``interval``), and at least what OpenAI asked for."""
    delay = interval * (2 ** min(max(failures, 0), 10))
    delay = min(delay, max(cap, interval))
    return max(delay, retry_after or 0.0)


# --------------------------------------------------------------------------------------------
# Error translation
# --------------------------------------------------------------------------------------------

_CLOSED_PATTERN = re.compile(
    r"no longer|not (?:be )?(?:allowed|permitted|eligible|enabled)|do(?:es)? not have access|"
    r"wind(?:ing)?[- ]down|self-serve|not available to (?:your|this)",
    re.IGNORECASE,
)
_UNSUPPORTED_MODEL = re.compile(
    r"not available for fine-?tuning|does not exist|not supported|unsupported", re.I
)
_LINE_PATTERN = re.compile(r"\b(?:line|example)\s+#?(\d+)", re.IGNORECASE)
_NO_RETRY_429 = frozenset({"insufficient_quota", "daily_rate_limit_exceeded", "billing_hard_limit_reached"})


def _remote_message(exc: openai.APIError) -> str:
    """OpenAI's own words for an error (the ``message`` of its error body), without a final dot
    so it can sit inside a sentence."""
    body = exc.body
    text = (
        body["message"] if isinstance(body, Mapping) and isinstance(body.get("message"), str) else exc.message
    )
    return text.strip().rstrip(".")


def named_line(text: str) -> int | None:
    """The line or example number an OpenAI error message names, if any."""
    match = _LINE_PATTERN.search(text or "")
    return int(match.group(1)) if match else None


_PARAM_WORDS = {
    "training_file": "the training file",
    "validation_file": "the evaluation (validation) file",
    "model": "the base model",
    "hyperparameters": "the hyperparameters",
    "suffix": "the model name suffix",
}


def describe_job_error(code: str | None, message: str | None, param: str | None) -> str:
    """A failed job's ``error`` object in plain words."""
    message = (message or "").strip() or "no reason given"
    where = _PARAM_WORDS.get(param or "", param)
    if code == "invalid_n_examples":
        text = f"OpenAI needs at least {OPENAI_MIN_EXAMPLES} training examples: {message}"
    elif code == "invalid_file_format" or (
        param in ("training_file", "validation_file") and code != "invalid_n_examples"
    ):
        text = f"OpenAI rejected {where or 'a data file'}: {message}"
    else:
        text = f"OpenAI could not fine-tune ({code or 'unknown error'}): {message}"
        if where:
            text += f" (about {where})"
    text = text if text.endswith(".") else text + "."
    line = named_line(message)
    if line is not None:
        text += f" Look at line/example {line} of the file; fix it, then start a new job."
    return text


def _is_unsupported_model(exc: openai.APIStatusError) -> bool:
    message = _remote_message(exc)
    return (
        exc.code in {"model_not_available", "invalid_model", "model_not_found"}
        or exc.param == "model"
        or (
            isinstance(exc, openai.BadRequestError | openai.NotFoundError)
            and "model" in message.lower()
            and bool(_UNSUPPORTED_MODEL.search(message))
        )
    )


def _is_fine_tuning_closed(exc: openai.APIStatusError) -> bool:
    message = _remote_message(exc)
    if isinstance(exc, openai.PermissionDeniedError):
        return True
    return "fine-tun" in message.lower() and bool(_CLOSED_PATTERN.search(message))


_RETIRED_PATTERN = re.compile(
    r"has been deprecated|shut ?down|been retired|no longer (?:available|supported)", re.I
)


def _is_retired_model(exc: openai.APIStatusError) -> bool:
    """OpenAI's answer for a model it shut down (404 ``model_not_found``, "The model `x` has
    been deprecated, learn more here: .../deprecations")."""
    return exc.status_code in (400, 404) and bool(_RETIRED_PATTERN.search(_remote_message(exc)))


def translate_error(
    exc: BaseException,
    *,
    action: str,
    model: str | None = None,
    fine_tuning: bool = False,
    fine_tuning_ends: date = FINE_TUNING_ENDS,
) -> FtbotError:
    """An ``openai`` exception as an engine error whose message says what to do. Never includes
    the API key (OpenAI's own 401 message shows part of it, so it is not repeated).
    ``fine_tuning_ends`` is the date the fine-tuning refusal names (settings may move it)."""
    if isinstance(exc, FtbotError):
        return exc
    if isinstance(exc, openai.AuthenticationError):
        return RemoteError(
            f"OpenAI rejected the API key (HTTP 401) while {action}. Check OPENAI_API_KEY: it may be "
            "mistyped, revoked, or belong to another organisation or project.",
            code="invalid_api_key",
        )
    if isinstance(exc, openai.RateLimitError):
        said = _remote_message(exc)
        code = exc.code or "rate_limit_exceeded"
        if code == "insufficient_quota":
            text = (
                f"OpenAI says the account has no credit left while {action} ({said}). Add credit or "
                "raise the budget in OpenAI's billing settings, then try again."
            )
        elif code == "daily_rate_limit_exceeded":
            text = (
                f"OpenAI's daily limit on fine-tuning jobs for this model is reached ({said}). "
                "Try again tomorrow or choose another base model."
            )
        else:
            text = (
                f"OpenAI kept answering 'too many requests' (HTTP 429) while {action}, even after "
                f"waiting and retrying ({said}). Wait a few minutes and try again."
            )
        return RemoteError(text, code=code)
    if isinstance(exc, openai.APIStatusError):
        said = _remote_message(exc)
        if fine_tuning and _is_unsupported_model(exc):
            known = ", ".join(sorted(TRAINING_PRICES_USD_PER_1M))
            return UsageError(
                f"OpenAI cannot fine-tune the base model '{model}': {said}.",
                hint=f"Use a model OpenAI fine-tunes, with its dated snapshot (for example "
                f"gpt-4.1-mini-2025-04-14 or gpt-4o-mini-2024-07-18; families: {known}).",
            )
        if fine_tuning and _is_fine_tuning_closed(exc):
            return RemoteError(
                f"{fine_tuning_closed_message(fine_tuning_ends)} OpenAI said: {said}.",
                code="fine_tuning_unavailable",
            )
        if model and not fine_tuning and _is_retired_model(exc):
            return RemoteError(
                f"OpenAI has retired {model}: it answers no more (OpenAI said: {said}).",
                code="model_retired",
                hint="Fine-tune again locally (backend=local) and use that model, or choose another one.",
            )
        if isinstance(exc, openai.PermissionDeniedError):
            return RemoteError(
                f"OpenAI refused (HTTP 403) while {action}: {said}.", code=exc.code or "permission_denied"
            )
        if isinstance(exc, openai.NotFoundError):
            if model:
                text = (
                    f"OpenAI has no model '{model}' that this API key can use (HTTP 404): {said}. Check "
                    "the name and that this key's organisation and project own the model."
                )
            else:
                text = f"OpenAI could not find what it needed while {action} (HTTP 404): {said}."
            return RemoteError(text, code=exc.code or "not_found")
        if exc.status_code >= 500:
            return RemoteError(
                f"OpenAI had a server error (HTTP {exc.status_code}) while {action}. Try again later.",
                code="server_error",
            )
        return RemoteError(
            f"OpenAI refused the request (HTTP {exc.status_code}) while {action}: {said}.",
            code=exc.code or f"http_{exc.status_code}",
        )
    if isinstance(exc, openai.APIConnectionError):
        return RemoteError(
            f"Could not reach OpenAI while {action} ({exc.message.rstrip('.')}). Check the network and "
            "OPENAI_BASE_URL.",
            code="connection_error",
        )
    if isinstance(exc, openai.OpenAIError):
        return RemoteError(f"The OpenAI client failed while {action}: {exc}", code="client_error")
    return RemoteError(f"Unexpected failure while {action}: {type(exc).__name__}: {exc}", code="unexpected")


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after-ms")
    if raw:
        try:
            return float(raw) / 1000
        except ValueError:
            pass
    raw = exc.response.headers.get("retry-after")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


_TRANSIENT = (openai.APIConnectionError, openai.InternalServerError)
_UNCERTAIN_CODES = frozenset({"connection_error", "server_error"})  # the request may have taken effect


# --------------------------------------------------------------------------------------------
# The client factory and the backend
# --------------------------------------------------------------------------------------------


def make_client(settings: Settings, *, max_retries: int = 0, timeout: float = 120.0) -> openai.OpenAI:
    """The OpenAI client for these settings. ``max_retries`` defaults to 0: this module retries
    itself, with the injected sleep, and knows which requests are safe to repeat.

    Raises:
        BackendUnavailable: no API key is configured.
    """
    if not (settings.openai_api_key or "").strip():
        raise BackendUnavailable(
            "No OpenAI API key: the OpenAI backend needs one.",
            hint="Set OPENAI_API_KEY (and OPENAI_BASE_URL for a proxy), or use backend=local.",
        )
    return openai.OpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or "https://api.openai.com/v1",
        max_retries=max_retries,
        timeout=timeout,
    )


def looks_like_openai_model(name: str) -> bool:
    """True for names chat completions would route to OpenAI (``ft:...``, ``gpt-...``, ``o1``...)."""
    return bool(re.match(r"^(ft:|gpt-|chatgpt-|o\d)", name.strip()))


class OpenAIFineTuner:
    """Fine-tune and generate through OpenAI. Thread-safe for ``generate``; everything else is
    called from one thread at a time per job. Holds no job state: a new instance given the stored
    remote id and cursor carries on where the old one stopped."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        token_counter: TokenCounter | None = None,
        max_attempts: int = 5,
        file_poll_seconds: float = 2.0,
        file_timeout_seconds: float = 1800.0,
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._counter = token_counter or default_token_counter()
        self._max_attempts = max(1, max_attempts)
        self._file_poll_seconds = file_poll_seconds
        self._file_timeout_seconds = file_timeout_seconds
        self._no_retry_client: Any = None

    # ---- cost -------------------------------------------------------------------------------

    def estimate(self, examples: Iterable[Any], model: str, epochs: int | str = "auto") -> CostEstimate:
        """Training cost before starting: tokens per epoch x epochs x price per 1M tokens."""
        per_example = [count_example_tokens(ex, self._counter) for ex in examples]
        n = len(per_example)
        epochs_auto = epochs in ("auto", None, "")
        n_epochs = (
            default_epochs(n) if epochs_auto else normalise_hyperparameters({"n_epochs": epochs})["n_epochs"]
        )
        tokens = sum(per_example)
        total = tokens * n_epochs
        price, source = training_price(model, self._settings.openai_training_prices)
        usd = None if price is None else round(total * price / 1_000_000, 4)
        threshold = self._settings.openai_confirm_usd
        confirm = usd is None or usd > threshold
        approx = "" if self._counter.exact else "about "
        epochs_words = _plural(n_epochs, "epoch") + (
            " (what OpenAI usually picks for 'auto')" if epochs_auto else ""
        )
        counted = (
            "Tokens counted with " + self._counter.method
            if self._counter.exact
            else "Tokens estimated at about 4 characters each (no tokenizer available offline)"
        )
        parts = [
            f"Fine-tuning {model} on OpenAI: {approx}{total:,} training tokens, {tokens:,} per epoch over "
            f"{_plural(n, 'example')} x {epochs_words}. {counted}."
        ]
        if usd is None:
            parts.append(
                f"No training price is known for '{model}', so the cost is unknown: check OpenAI's pricing "
                "page (or set FTBOT_OPENAI_PRICES=model=USD_per_1M_tokens) and confirm to start."
            )
        else:
            parts.append(f"At ${price:.2f} per 1M tokens ({source}) that comes to {_usd(usd)}.")
            if confirm:
                parts.append(f"This is above the ${threshold:.2f} confirmation threshold: confirm to start.")
        return CostEstimate(
            model=model,
            examples=n,
            tokens_per_epoch=tokens,
            epochs=n_epochs,
            epochs_auto=epochs_auto,
            total_tokens=total,
            max_example_tokens=max(per_example, default=0),
            usd_per_million=price,
            usd=usd,
            price_source=source,
            tokens_exact=self._counter.exact,
            counting=self._counter.method,
            threshold_usd=threshold,
            confirmation_required=confirm,
            message=" ".join(parts),
        )

    # ---- start ------------------------------------------------------------------------------

    def start(
        self,
        job_id: str,
        train_path: Path | str,
        eval_path: Path | str | None = None,
        *,
        model: str,
        hyperparameters: Mapping[str, Any] | None = None,
        seed: int | None = None,
        sink: ProgressSink | None = None,
    ) -> str:
        """Upload, create the remote job, emit ``submitted`` and return its id (``ftjob-...``).

        Raises:
            UsageError: bad model name or hyperparameters, file too large.
            RemoteError: OpenAI refused (codes in the module docstring). Nothing is left running:
                uploaded files are deleted when the job could not be created.
        """
        sink = sink or NullSink()
        check_base_model(model)
        hyper = normalise_hyperparameters(hyperparameters or {})
        existing = self.find_remote_job(job_id)
        if existing is not None:
            sink.emit(
                ProgressEvent(
                    job_id,
                    "submitted",
                    f"Following the OpenAI job {existing} created earlier.",
                    data={"remote_id": existing, "model": model, "resumed": True},
                )
            )
            return existing
        uploaded: list[str] = []
        try:
            train_file = self._upload(job_id, Path(train_path), "train", sink)
            uploaded.append(train_file)
            eval_file = None
            if eval_path is not None:
                eval_file = self._upload(job_id, Path(eval_path), "eval", sink)
                uploaded.append(eval_file)
            for file_id, path in zip(uploaded, [train_path, eval_path], strict=False):
                self._wait_processed(file_id, Path(path))
            params: dict[str, Any] = {
                "model": model,
                "training_file": train_file,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
                "suffix": job_suffix(job_id),
                "metadata": {METADATA_KEY: job_id},
            }
            if eval_file:
                params["validation_file"] = eval_file
            if seed is not None:
                params["seed"] = int(seed)
            remote = self._create_job(job_id, params, model)
        except FtbotError as exc:
            # After a network error or 5xx on create, the job may exist on OpenAI: keep its files
            # (a later start() finds the job by its metadata). Otherwise leave nothing behind.
            if getattr(exc, "code", None) not in _UNCERTAIN_CODES:
                for file_id in uploaded:
                    self._delete_file_quietly(file_id)
            raise
        sink.emit(
            ProgressEvent(
                job_id,
                "submitted",
                f"Submitted to OpenAI as {remote.id} (status {remote.status}).",
                data={
                    "remote_id": remote.id,
                    "model": model,
                    "training_file": train_file,
                    "validation_file": eval_file,
                    "hyperparameters": hyper,
                    "status": remote.status,
                },
            )
        )
        return remote.id

    def find_remote_job(self, job_id: str) -> str | None:
        """The id of the newest remote job whose metadata names ``job_id``, or None."""
        page = self._call(
            lambda: self._client.fine_tuning.jobs.list(metadata={METADATA_KEY: job_id}, limit=10),
            action="checking OpenAI for this job",
            retry_transient=True,
        )
        for job in page.data:
            if (job.metadata or {}).get(METADATA_KEY) == job_id:
                return job.id
        return None

    def _upload(self, job_id: str, path: Path, role: str, sink: ProgressSink) -> str:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read the {role} file {path}: {exc.strerror or exc}.") from exc
        if len(content) > MAX_UPLOAD_BYTES:
            raise UsageError(
                f"The {role} file {path.name} is {len(content) / 2**20:.0f} MB; OpenAI accepts at most 512 MB."
            )
        name = f"{job_id}-{role}.jsonl"
        uploaded = self._call(
            lambda: self._client.files.create(file=(name, content, "application/jsonl"), purpose="fine-tune"),
            action=f"uploading the {role} file",
            retry_transient=True,
            upload_of=path.name,
        )
        sink.emit(
            ProgressEvent(
                job_id,
                "log",
                f"Uploaded the {role} file to OpenAI ({len(content):,} bytes) as {uploaded.id}.",
                data={"file_id": uploaded.id, "role": role, "bytes": len(content)},
            )
        )
        return uploaded.id

    def _wait_processed(self, file_id: str, path: Path) -> None:
        deadline = self._clock() + self._file_timeout_seconds
        while True:
            info = self._call(
                lambda: self._client.files.retrieve(file_id),
                action="checking an uploaded file",
                retry_transient=True,
            )
            if info.status == "processed":
                return
            if info.status == "error":
                details = getattr(info, "status_details", None) or "no details given"
                raise _file_rejected(path.name, details)
            if self._clock() >= deadline:
                raise RemoteError(
                    f"OpenAI has not finished processing {path.name} ({file_id}) after "
                    f"{self._file_timeout_seconds:.0f} s. Try again later.",
                    code="file_processing_timeout",
                )
            self._sleep(self._file_poll_seconds)

    def _create_job(self, job_id: str, params: dict[str, Any], model: str) -> Any:
        """jobs.create, retried on 429; after a network error or 5xx the job may exist anyway, so
        look for it (by metadata) before trying again."""
        action = "creating the fine-tuning job"
        attempt = 0
        while True:
            try:
                return self._client.fine_tuning.jobs.create(**params)
            except openai.RateLimitError as exc:
                if exc.code in _NO_RETRY_429 or attempt + 1 >= self._max_attempts:
                    raise self._job_error(exc, action, model) from exc
                wait = _retry_after(exc) or self._backoff(attempt)
            except _TRANSIENT as exc:
                # The request may have reached OpenAI although the answer did not reach us.
                found = self.find_remote_job(job_id)
                if found is not None:
                    return self._call(
                        lambda found=found: self._client.fine_tuning.jobs.retrieve(found),
                        action=action,
                        retry_transient=True,
                    )
                if attempt + 1 >= self._max_attempts:
                    raise self._job_error(exc, action, model) from exc
                wait = self._backoff(attempt)
            except openai.OpenAIError as exc:
                raise self._job_error(exc, action, model) from exc
            self._sleep(wait)
            attempt += 1

    def _job_error(self, exc: BaseException, action: str, model: str) -> FtbotError:
        """A failed jobs.create in plain words; OpenAI's refusal to fine-tune names this
        installation's end date (:func:`fine_tuning_end`)."""
        return translate_error(
            exc,
            action=action,
            model=model,
            fine_tuning=True,
            fine_tuning_ends=fine_tuning_end(self._settings),
        )

    def _delete_file_quietly(self, file_id: str) -> None:
        # Cleanup only: a file left behind can be deleted by hand; never hide the real error.
        with contextlib.suppress(openai.OpenAIError):
            self._client.files.delete(file_id)

    # ---- follow -----------------------------------------------------------------------------

    def poll(self, remote_id: str, cursor: str | None = None, *, job_id: str | None = None) -> PollResult:
        """One look at the remote job; never sleeps and never raises for a failed request (the
        result is ``transient``: keep polling). Raises only for a programming error."""
        cur = _Cursor.parse(cursor)
        try:
            job = self._client.fine_tuning.jobs.retrieve(remote_id)
            raw_events = self._new_events(remote_id, cur.event)
            checkpoints = (
                self._new_checkpoints(remote_id, cur.checkpoint)
                if job.status in ("running", "succeeded")
                else []
            )
        except (openai.OpenAIError, OSError) as exc:
            return self._transient(remote_id, cur, job_id, exc)
        job_id = job_id or (job.metadata or {}).get(METADATA_KEY) or remote_id
        events: list[ProgressEvent] = []
        if cur.warned:  # an alert said we lost touch: say we are back
            events.append(
                ProgressEvent(
                    job_id, "log", "Reached OpenAI again; following the job.", data={"remote_id": remote_id}
                )
            )
        now = self._clock()
        eta = (
            max(0.0, job.estimated_finish - now) if job.estimated_finish and job.status == "running" else None
        )
        if job.status != cur.status and job.status not in TERMINAL_STATUSES:
            events.append(
                ProgressEvent(
                    job_id,
                    "log",
                    _STATUS_WORDS.get(job.status, f"OpenAI status: {job.status}."),
                    data={"remote_status": job.status, "remote_id": remote_id},
                )
            )
        if eta is not None and not cur.eta:
            events.append(
                ProgressEvent(
                    job_id,
                    "log",
                    f"OpenAI expects the job to finish in about {_duration(eta)}.",
                    data={"eta_seconds": eta, "estimated_finish": job.estimated_finish},
                )
            )
            cur.eta = True
        epochs = _n_epochs(job)
        for raw in raw_events:
            events.extend(_convert_event(job_id, raw, epochs=epochs, eta=eta))
            cur.event = raw.id
        for ckpt in checkpoints:
            raw_metrics = ckpt.metrics.model_dump(exclude_none=True) if ckpt.metrics is not None else {}
            metrics = {k: float(v) for k, v in raw_metrics.items() if _number(v)}
            events.append(
                ProgressEvent(
                    job_id,
                    "log",
                    f"Checkpoint at step {ckpt.step_number}: {ckpt.fine_tuned_model_checkpoint}",
                    step=ckpt.step_number,
                    metrics=metrics,
                    at=_at(ckpt.created_at),
                    data={"checkpoint": ckpt.fine_tuned_model_checkpoint, "remote_id": remote_id},
                )
            )
            cur.checkpoint = ckpt.id
        model_name = job.fine_tuned_model
        error = error_code = None
        done = job.status in TERMINAL_STATUSES
        if done and job.status != cur.status:
            events.append(self._terminal_event(job_id, remote_id, job))
        if job.status == "failed":
            err = job.error
            error_code = (err.code if err else None) or "failed"
            error = describe_job_error(
                err.code if err else None, err.message if err else None, err.param if err else None
            )
        elif job.status == "cancelled":
            error_code, error = "cancelled", _cancelled_words(remote_id)
        elif job.status == "succeeded" and not model_name:
            error_code, error = "no_model", "OpenAI reported success but named no fine-tuned model."
        cur.status, cur.failures, cur.warned = job.status, 0, None
        return PollResult(
            events=tuple(events),
            status=job.status,
            done=done,
            model_name=model_name,
            error=error,
            error_code=error_code,
            cursor=cur.dump(),
            eta_seconds=eta,
            trained_tokens=job.trained_tokens,
        )

    def follow(
        self,
        remote_id: str,
        sink: ProgressSink | None = None,
        cursor: str | None = None,
        *,
        job_id: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_seconds: float | None = None,
    ) -> PollResult:
        """Poll until the job ends (or ``should_stop()``, or ``max_seconds``), emitting events to
        ``sink`` and sleeping settings.openai_poll_seconds (with backoff) between polls."""
        sink = sink or NullSink()
        started = self._clock()
        while True:
            result = self.poll(remote_id, cursor, job_id=job_id)
            for event in result.events:
                sink.emit(event)
            cursor = result.cursor
            if result.done or (should_stop is not None and should_stop()):
                return result
            if max_seconds is not None and self._clock() - started >= max_seconds:
                return result
            failures = _Cursor.parse(cursor).failures
            self._sleep(
                poll_delay(self._settings.openai_poll_seconds, failures, retry_after=result.retry_after)
            )

    def cancel(self, remote_id: str) -> str:
        """Ask OpenAI to cancel; returns the status it reports (a job that already ended keeps its
        final status rather than raising)."""
        try:
            job = self._call(
                lambda: self._client.fine_tuning.jobs.cancel(remote_id),
                action="cancelling the fine-tuning job",
                retry_transient=True,
                raw_status=True,
            )
        except openai.BadRequestError as exc:
            job = self._call(
                lambda: self._client.fine_tuning.jobs.retrieve(remote_id),
                action="checking the fine-tuning job",
                retry_transient=True,
            )
            if job.status not in TERMINAL_STATUSES:
                raise translate_error(exc, action="cancelling the fine-tuning job") from exc
        return job.status

    def _new_events(self, remote_id: str, after_id: str | None) -> list[Any]:
        """Events newer than ``after_id``, oldest first. OpenAI lists newest first and pages
        towards older ones, so read pages until the known event appears."""
        return self._newer_than(
            lambda after: self._client.fine_tuning.jobs.list_events(remote_id, limit=100, **after), after_id
        )

    def _new_checkpoints(self, remote_id: str, after_id: str | None) -> list[Any]:
        return self._newer_than(
            lambda after: self._client.fine_tuning.jobs.checkpoints.list(remote_id, limit=100, **after),
            after_id,
        )

    @staticmethod
    def _newer_than(
        fetch: Callable[[dict[str, str]], Any], known_id: str | None, max_pages: int = 50
    ) -> list[Any]:
        collected: list[Any] = []
        after: dict[str, str] = {}
        for _ in range(max_pages):
            page = fetch(after)
            for item in page.data:
                if item.id == known_id:
                    return collected[::-1]
                collected.append(item)
            if not page.data or page.has_more is False:
                break
            after = {"after": page.data[-1].id}
        return collected[::-1]

    def _transient(self, remote_id: str, cur: _Cursor, job_id: str | None, exc: BaseException) -> PollResult:
        """A poll that did not get through: the job goes on. Alert once per kind of trouble: at
        once for a rejected key or permission, after 3 failures in a row for network trouble."""
        job_id = job_id or remote_id
        err = translate_error(exc, action="checking the fine-tuning job")
        code = getattr(err, "code", None) or "error"
        cur.failures += 1
        events: list[ProgressEvent] = []
        persistent = isinstance(exc, openai.APIStatusError) and not isinstance(
            exc, openai.RateLimitError | openai.InternalServerError
        )
        if cur.warned != code and (persistent or cur.failures >= 3):
            cur.warned = code
            events.append(
                ProgressEvent(
                    job_id,
                    "alert",
                    f"{err.message} The job keeps running on OpenAI ({remote_id}); ftbot keeps checking and "
                    "picks up where it left off.",
                    data={"code": code, "remote_id": remote_id, "failures": cur.failures},
                )
            )
        retry_after = _retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        return PollResult(
            events=tuple(events),
            status=cur.status or TRANSIENT_STATUS,
            done=False,
            model_name=None,
            error=err.message,
            error_code=code,
            cursor=cur.dump(),
            transient=True,
            retry_after=retry_after,
        )

    def _terminal_event(self, job_id: str, remote_id: str, job: Any) -> ProgressEvent:
        data: dict[str, Any] = {"remote_status": job.status, "remote_id": remote_id}
        if job.status == "succeeded":
            data.update(model=job.fine_tuned_model, trained_tokens=job.trained_tokens)
            price, _ = training_price(job.model, self._settings.openai_training_prices)
            if price is not None and job.trained_tokens:
                data["usd"] = round(job.trained_tokens * price / 1_000_000, 4)
            tokens = f" after {job.trained_tokens:,} trained tokens" if job.trained_tokens else ""
            return ProgressEvent(
                job_id, "log", f"OpenAI finished fine-tuning{tokens}: {job.fine_tuned_model}.", data=data
            )
        if job.status == "failed":
            err = job.error
            data.update(
                code=(err.code if err else None) or "failed",
                param=err.param if err else None,
                line=named_line(err.message) if err else None,
            )
            text = describe_job_error(
                err.code if err else None, err.message if err else None, err.param if err else None
            )
            return ProgressEvent(job_id, "alert", text, data=data)
        data["code"] = "cancelled"
        return ProgressEvent(job_id, "alert", _cancelled_words(remote_id), data=data)

    # ---- generate ---------------------------------------------------------------------------

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

        def one(messages: Sequence[Mapping[str, Any]]) -> Completion:
            response = self._call(
                lambda: self._client.chat.completions.create(
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
          injected sleep) as :meth:`_call` does, but only while the wait ends before the
          deadline; every request's HTTP timeout is the time left, so a server that sends
          nothing cannot hold it past the deadline either.

        The deadline is real time (``time.monotonic``, not the injected clock): what it bounds,
        waiting on the network, is real.

        Raises:
            GenerationError: no text arrived before the deadline (nothing was sent at all).
            RemoteError (or what :func:`translate_error` gives): the request failed before any
                text arrived and could not be retried in time (the last failure, in plain words;
                also when the deadline passed while waiting to retry it).
        """
        limit = max(0.0, float(timeout))
        state = _StreamState(time.monotonic() + limit)
        action = f"asking {model}"
        reader = threading.Thread(
            target=self._read_stream,
            args=(state, model, [dict(m) for m in messages], max_new_tokens, temperature, action),
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
                        raise translate_error(state.last_error, action=action, model=model)
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

    def _read_stream(
        self,
        state: _StreamState,
        model: str,
        messages: list[dict[str, Any]],
        max_new_tokens: int,
        temperature: float,
        action: str,
    ) -> None:
        """The helper thread of :meth:`stream_answer`: open the stream (retried until the first
        text), then read chunks into ``state`` until the stream ends, the deadline passes or the
        caller gave up. Never raises: every outcome is left in ``state``."""
        client = self._stream_client()

        def open_stream() -> tuple[Any, list[Any]]:
            # Everything up to the first text is safe to repeat: OpenAI errors raised here go
            # through _call's retries; _OutOfTime (not an OpenAI error) goes straight out.
            left = state.time_left()
            if left <= 0 or state.cancelled:
                raise _OutOfTime
            try:
                stream = client.chat.completions.create(
                    model=model,
                    messages=messages,
                    max_completion_tokens=max_new_tokens,
                    temperature=temperature,
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

        try:
            try:
                stream, head = self._call(
                    open_stream, action=action, retry_transient=True, model=model, time_left=state.time_left
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
                    err = translate_error(exc, action=action, model=model)
                    if state.finish_reason is not None:
                        pass  # the answer was complete; only the usage chunk is missing
                    elif state.has_content():
                        state.broken = err
                    else:
                        state.error = err
        finally:
            state.done.set()

    def _stream_client(self) -> Any:
        """The client without the SDK's own retries (``make_client`` already has none): a retry
        the SDK made by itself would not know the deadline."""
        if getattr(self._client, "max_retries", 0) == 0:
            return self._client
        if self._no_retry_client is None:
            self._no_retry_client = self._client.with_options(max_retries=0)
        return self._no_retry_client

    # ---- plumbing ---------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return min(60.0, 2.0 * 2**attempt)

    def _call(
        self,
        fn: Callable[[], Any],
        *,
        action: str,
        retry_transient: bool = False,
        model: str | None = None,
        upload_of: str | None = None,
        raw_status: bool = False,
        time_left: Callable[[], float] | None = None,
    ) -> Any:
        """Run one request; retry 429 (except quota/daily limits) and, when the request is safe to
        repeat, network errors and 5xx, sleeping with backoff. Other failures become engine errors
        (``raw_status`` lets a 400 through to the caller). With ``time_left`` (seconds left before
        a deadline) a retry is made only when its wait ends before the deadline; otherwise the
        error is raised at once."""
        attempt = 0
        while True:
            try:
                return fn()
            except openai.RateLimitError as exc:
                wait = _retry_after(exc) or self._backoff(attempt)
                if (
                    exc.code in _NO_RETRY_429
                    or attempt + 1 >= self._max_attempts
                    or (time_left is not None and wait >= time_left())
                ):
                    raise translate_error(exc, action=action, model=model) from exc
            except _TRANSIENT as exc:
                wait = self._backoff(attempt)
                if (
                    not retry_transient
                    or attempt + 1 >= self._max_attempts
                    or (time_left is not None and wait >= time_left())
                ):
                    raise translate_error(exc, action=action, model=model) from exc
            except openai.BadRequestError as exc:
                if raw_status:
                    raise
                if upload_of is not None:
                    raise _file_rejected(upload_of, _remote_message(exc)) from exc
                raise translate_error(exc, action=action, model=model) from exc
            except openai.OpenAIError as exc:
                raise translate_error(exc, action=action, model=model) from exc
            self._sleep(wait)
            attempt += 1


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_STATUS_WORDS = {
    "validating_files": "OpenAI is validating the training files.",
    "queued": "The job is queued at OpenAI (this can take minutes or hours).",
    "running": "OpenAI started training.",
}


def _cancelled_words(remote_id: str) -> str:
    return (
        f"The OpenAI job {remote_id} was cancelled. If nobody cancelled it here, it was cancelled on "
        "OpenAI's side (the dashboard, another tool, or OpenAI itself)."
    )


def _file_rejected(name: str, details: str) -> RemoteError:
    line = named_line(details)
    where = f" OpenAI names line/example {line}: fix it there and upload again." if line is not None else ""
    return RemoteError(
        f"OpenAI rejected the file {name}: {details.strip().rstrip('.')}.{where}", code="file_rejected"
    )


def check_base_model(model: str) -> None:
    """Refuse names that are clearly not OpenAI models (builtin:tiny, local paths, Hugging Face
    ids) before uploading anything. OpenAI itself judges the rest."""
    name = (model or "").strip()
    if not name:
        raise UsageError(
            "No base model given for the OpenAI backend.",
            hint="Use for example base_model=gpt-4.1-mini-2025-04-14.",
        )
    if name.startswith("builtin:") or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(
            f"'{name}' is not an OpenAI model: the OpenAI backend fine-tunes OpenAI's models "
            "(for example gpt-4.1-mini-2025-04-14 or gpt-4o-mini-2024-07-18).",
            hint="Use backend=local for local and Hugging Face models.",
        )


def job_suffix(job_id: str) -> str:
    """The model-name suffix naming our job: letters, digits and dashes, short enough for every
    model's limit (18 characters on older ones)."""
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", job_id).strip("-")
    return f"ftbot-{clean}"[:18].rstrip("-")


def normalise_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """n_epochs (alias epochs) 1-50, batch_size >= 1, learning_rate_multiplier > 0, each a
    number or "auto"; keys not given are left to OpenAI. Raises UsageError listing every problem."""
    aliases = {"epochs": "n_epochs", "lr_multiplier": "learning_rate_multiplier", "batch": "batch_size"}
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        name = aliases.get(key, key)
        if value is None:
            continue
        if name not in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            problems.append(
                f"unknown hyperparameter '{key}' (accepted: n_epochs, batch_size, learning_rate_multiplier)"
            )
            continue
        if isinstance(value, str) and value.strip().lower() == "auto":
            out[name] = "auto"
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{name}={value!r} is not a number or 'auto'")
            continue
        if name == "learning_rate_multiplier":
            if not (number > 0 and math.isfinite(number)):
                problems.append(f"learning_rate_multiplier must be above 0 (got {value!r})")
            else:
                out[name] = number
            continue
        if not math.isfinite(number) or number != int(number):
            problems.append(f"{name} must be a whole number (got {value!r})")
            continue
        low, high = (1, 50) if name == "n_epochs" else (1, 256)
        if not low <= number <= high:
            problems.append(f"{name} must be between {low} and {high} (got {value!r})")
            continue
        out[name] = int(number)
    if problems:
        raise UsageError("Bad OpenAI hyperparameters: " + "; ".join(problems) + ".")
    return out


def _n_epochs(job: Any) -> int | None:
    candidates = []
    method = getattr(job, "method", None)
    supervised = getattr(method, "supervised", None) if method else None
    if supervised is not None and supervised.hyperparameters is not None:
        candidates.append(supervised.hyperparameters.n_epochs)
    if getattr(job, "hyperparameters", None) is not None:
        candidates.append(job.hyperparameters.n_epochs)
    for value in candidates:
        if isinstance(value, int):
            return value
    return None


_METRIC_NAMES = {
    "train_loss": "loss",
    "valid_loss": "eval_loss",
    "train_mean_token_accuracy": "mean_token_accuracy",
    "valid_mean_token_accuracy": "eval_mean_token_accuracy",
}


def _convert_event(job_id: str, raw: Any, *, epochs: int | None, eta: float | None) -> list[ProgressEvent]:
    """One OpenAI event as ProgressEvents: metrics -> ``step`` (plus ``eval`` for a full
    validation pass), warnings/errors -> ``alert``, other messages -> ``log``."""
    at = _at(raw.created_at)
    data = raw.data if isinstance(raw.data, Mapping) else {}
    if raw.type == "metrics" or ("step" in data and "train_loss" in data):
        step = _int(data.get("step"))
        total = _int(data.get("total_steps"))
        metrics = {
            ours: float(data[theirs]) for theirs, ours in _METRIC_NAMES.items() if _number(data.get(theirs))
        }
        if eta is not None:
            metrics["eta_seconds"] = eta
        epoch = step / total * epochs if step is not None and total and epochs else None
        out = [
            ProgressEvent(
                job_id,
                "step",
                raw.message,
                step=step,
                total=total,
                epoch=epoch,
                metrics=metrics,
                at=at,
                data={"remote_event_id": raw.id},
            )
        ]
        if _number(data.get("full_valid_loss")):
            full = {"eval_loss": float(data["full_valid_loss"])}
            if _number(data.get("full_valid_mean_token_accuracy")):
                full["eval_mean_token_accuracy"] = float(data["full_valid_mean_token_accuracy"])
            out.append(
                ProgressEvent(
                    job_id,
                    "eval",
                    f"Full validation loss {full['eval_loss']:.4f} at step {step}.",
                    step=step,
                    total=total,
                    epoch=epoch,
                    metrics=full,
                    at=at,
                    data={"remote_event_id": raw.id},
                )
            )
        return out
    if raw.level in ("warn", "error"):
        return [
            ProgressEvent(
                job_id,
                "alert",
                f"OpenAI: {raw.message}",
                at=at,
                data={"code": f"openai_{raw.level}", "remote_event_id": raw.id},
            )
        ]
    return [ProgressEvent(job_id, "log", f"OpenAI: {raw.message}", at=at, data={"remote_event_id": raw.id})]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> int | None:
    return int(value) if _number(value) else None


def _at(timestamp: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _usd(amount: float) -> str:
    return "less than $0.01" if 0 < amount < 0.005 else f"about ${amount:,.2f}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"
