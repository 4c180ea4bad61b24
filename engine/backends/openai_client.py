"""The OpenAI client, and the one way requests go through it (retries and error translation).

make_client(settings, *, max_retries=0, timeout=120.0) -> openai.OpenAI
    BackendUnavailable when settings.openai_api_key is empty. The key and base URL come from
    :class:`~engine.settings.Settings`, never from the environment here.

Requester(client, *, sleep, max_attempts).call(fn, *, action, ...) -> fn()'s result
    429 retried with backoff through the injected sleep (except quota and daily limits);
    network errors and 5xx too when the request is safe to repeat; every other failure as
    :func:`~engine.backends.openai_errors.translate_error` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from engine.backends.openai_errors import (
    NO_RETRY_429,
    TRANSIENT,
    file_rejected,
    remote_message,
    retry_after,
    translate_error,
)
from engine.errors import BackendUnavailable
from engine.settings import Settings

#: The client type the backend modules take (the caller builds it: :func:`make_client`).
OpenAIClient = openai.OpenAI


def make_client(settings: Settings, *, max_retries: int = 0, timeout: float = 120.0) -> openai.OpenAI:
    """The OpenAI client for these settings. ``max_retries`` defaults to 0: the backend retries
    itself (:class:`Requester`), with the injected sleep, and knows which requests are safe to repeat.

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


class Requester:
    """Runs requests through one client with this backend's retry rules. Thread-safe (it holds
    no request state); ``sleep`` is injected so tests take no real time."""

    def __init__(self, client: openai.OpenAI, *, sleep: Callable[[float], None], max_attempts: int) -> None:
        self.client = client
        self.sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self._no_retry_client: Any = None

    @staticmethod
    def backoff(attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1``: 2, 4, 8... up to a minute."""
        return min(60.0, 2.0 * 2**attempt)

    def call(
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
        (``raw_status`` lets a 400 through to the caller; ``upload_of`` names the file a 400
        rejected). With ``time_left`` (seconds left before a deadline) a retry is made only when
        its wait ends before the deadline; otherwise the error is raised at once."""
        attempt = 0
        while True:
            try:
                return fn()
            except openai.RateLimitError as exc:
                wait = retry_after(exc) or self.backoff(attempt)
                if (
                    exc.code in NO_RETRY_429
                    or attempt + 1 >= self.max_attempts
                    or (time_left is not None and wait >= time_left())
                ):
                    raise translate_error(exc, action=action, model=model) from exc
            except TRANSIENT as exc:
                wait = self.backoff(attempt)
                if (
                    not retry_transient
                    or attempt + 1 >= self.max_attempts
                    or (time_left is not None and wait >= time_left())
                ):
                    raise translate_error(exc, action=action, model=model) from exc
            except openai.BadRequestError as exc:
                if raw_status:
                    raise
                if upload_of is not None:
                    raise file_rejected(upload_of, remote_message(exc)) from exc
                raise translate_error(exc, action=action, model=model) from exc
            except openai.OpenAIError as exc:
                raise translate_error(exc, action=action, model=model) from exc
            self.sleep(wait)
            attempt += 1

    def stream_client(self) -> Any:
        """The client without the SDK's own retries (``make_client`` already has none): a retry
        the SDK made by itself would not know the deadline."""
        if getattr(self.client, "max_retries", 0) == 0:
            return self.client
        if self._no_retry_client is None:
            self._no_retry_client = self.client.with_options(max_retries=0)
        return self._no_retry_client
