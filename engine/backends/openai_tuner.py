"""Fine-tuning and generation through OpenAI's API: :class:`OpenAIFineTuner`, one object over the
OpenAI backend's capabilities (what service / scheduler / pipeline wire up).

The caller builds the client (:func:`~engine.backends.openai_client.make_client`: the key and base
URL come from :class:`~engine.settings.Settings`, never from the environment) and injects the clock
and the sleep, so tests drive a fake server through the real client and take seconds::

    tuner = OpenAIFineTuner(client, *, settings, clock=time.time, sleep=time.sleep,
                            token_counter=None, max_attempts=5)
    tuner.estimate(examples, model, epochs="auto") -> CostEstimate        (openai_costs)
    tuner.start / find_remote_job / poll / follow / cancel               (openai_jobs)
    tuner.generate / generate_detailed / stream_answer                   (openai_chat)

The modules, by capability (only those that call the ``openai`` library import it):
``openai_models`` (model names, hyperparameters), ``openai_costs`` (prices, token counting, the
estimate), ``openai_dates`` (OpenAI's shutdown dates), ``openai_errors`` (openai exceptions and job
errors in the project's exception tree), ``openai_client`` (the client and the retrying
requester), ``openai_events`` (a poll's events and cursor), ``openai_jobs`` (the job lifecycle),
``openai_chat`` (chat completions for evaluation and /ask).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.backends.openai_chat import Completion, OpenAIChat
from engine.backends.openai_client import OpenAIClient, Requester
from engine.backends.openai_costs import CostEstimate, TokenCounter, default_token_counter, estimate_cost
from engine.backends.openai_events import PollResult
from engine.backends.openai_jobs import OpenAIJobs
from engine.progress import ProgressSink
from engine.settings import Settings


class OpenAIFineTuner:
    """Fine-tune and generate through OpenAI. Thread-safe for ``generate``; everything else is
    called from one thread at a time per job. Holds no job state: a new instance given the stored
    remote id and cursor carries on where the old one stopped."""

    def __init__(
        self,
        client: OpenAIClient,
        *,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        token_counter: TokenCounter | None = None,
        max_attempts: int = 5,
        file_poll_seconds: float = 2.0,
        file_timeout_seconds: float = 1800.0,
    ) -> None:
        self._settings = settings
        self._counter = token_counter or default_token_counter()
        requests = Requester(client, sleep=sleep, max_attempts=max_attempts)
        self._jobs = OpenAIJobs(
            requests,
            settings=settings,
            clock=clock,
            file_poll_seconds=file_poll_seconds,
            file_timeout_seconds=file_timeout_seconds,
        )
        self._chat = OpenAIChat(requests)

    # ---- cost (openai_costs) ----------------------------------------------------------------

    def estimate(self, examples: Iterable[Any], model: str, epochs: int | str = "auto") -> CostEstimate:
        """Training cost before starting: tokens per epoch x epochs x price per 1M tokens
        (:func:`~engine.backends.openai_costs.estimate_cost` with this tuner's token counter)."""
        return estimate_cost(examples, model, epochs, counter=self._counter, settings=self._settings)

    # ---- the job lifecycle (openai_jobs) ----------------------------------------------------

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
        """Upload, create the remote job, emit ``submitted`` and return its id
        (:meth:`~engine.backends.openai_jobs.OpenAIJobs.start`)."""
        return self._jobs.start(
            job_id, train_path, eval_path, model=model, hyperparameters=hyperparameters, seed=seed, sink=sink
        )

    def find_remote_job(self, job_id: str) -> str | None:
        """The id of the newest remote job whose metadata names ``job_id``, or None."""
        return self._jobs.find_remote_job(job_id)

    def poll(self, remote_id: str, cursor: str | None = None, *, job_id: str | None = None) -> PollResult:
        """One look at the remote job, never sleeping nor raising for a failed request
        (:meth:`~engine.backends.openai_jobs.OpenAIJobs.poll`)."""
        return self._jobs.poll(remote_id, cursor, job_id=job_id)

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
        ``sink`` (:meth:`~engine.backends.openai_jobs.OpenAIJobs.follow`)."""
        return self._jobs.follow(
            remote_id, sink, cursor, job_id=job_id, should_stop=should_stop, max_seconds=max_seconds
        )

    def cancel(self, remote_id: str) -> str:
        """Ask OpenAI to cancel; returns the status it reports."""
        return self._jobs.cancel(remote_id)

    # ---- generation (openai_chat) -----------------------------------------------------------

    def generate(
        self,
        model: str,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        concurrency: int = 8,
    ) -> list[str]:
        """One chat completion per conversation, answers in order
        (:meth:`~engine.backends.openai_chat.OpenAIChat.generate`)."""
        return self._chat.generate(
            model,
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            concurrency=concurrency,
        )

    def generate_detailed(
        self,
        model: str,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        concurrency: int = 8,
    ) -> list[Completion]:
        """Like :meth:`generate`, with finish reasons and completion tokens
        (:meth:`~engine.backends.openai_chat.OpenAIChat.generate_detailed`)."""
        return self._chat.generate_detailed(
            model,
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            concurrency=concurrency,
        )

    def stream_answer(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        timeout: float,
    ) -> Completion:
        """/ask: one streamed answer within ``timeout`` seconds
        (:meth:`~engine.backends.openai_chat.OpenAIChat.stream_answer`)."""
        return self._chat.stream_answer(
            model, messages, max_new_tokens=max_new_tokens, temperature=temperature, timeout=timeout
        )
