"""OpenAI's failures in the project's exception tree (:mod:`engine.errors`), in one place: every
``openai`` exception and every failed job's ``error`` object becomes words saying what to do.

    translate_error(exc, *, action, model=None, fine_tuning=False, fine_tuning_ends=...) -> FtbotError
    describe_job_error(code, message, param) -> str      a failed remote job, in plain words.
    file_rejected(name, details) -> RemoteError(code="file_rejected"), naming OpenAI's line.
    named_line(text) -> int | None                       the line/example an OpenAI message names.
    retry_after(exc) -> seconds | None                   what a 429 (or any HTTP answer) asks.

The translation: no key -> BackendUnavailable (:func:`~engine.backends.openai_client.make_client`);
bad key (401) -> RemoteError(code="invalid_api_key"); the organisation can no longer create
fine-tuning jobs (OpenAI is winding self-serve fine-tuning down) ->
RemoteError(code="fine_tuning_unavailable") in the same words as the date check
(:func:`~engine.backends.openai_dates.fine_tuning_closed_message`); a model OpenAI shut down (its
"has been deprecated" 404) -> RemoteError(code="model_retired"); a base model OpenAI does not
fine-tune -> UsageError; 429 -> RemoteError(code=OpenAI's code) once the retries are spent;
a file OpenAI rejects -> RemoteError(code="file_rejected") naming the line OpenAI names.
Never includes the API key (OpenAI's own 401 message shows part of it, so it is not repeated).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

import openai

from engine.backends.openai_costs import TRAINING_PRICES_USD_PER_1M
from engine.backends.openai_dates import FINE_TUNING_ENDS, fine_tuning_closed_message
from engine.backends.openai_models import OPENAI_MIN_EXAMPLES
from engine.errors import FtbotError, RemoteError, UsageError

_CLOSED_PATTERN = re.compile(
    r"no longer|not (?:be )?(?:allowed|permitted|eligible|enabled)|do(?:es)? not have access|"
    r"wind(?:ing)?[- ]down|self-serve|not available to (?:your|this)",
    re.IGNORECASE,
)
_UNSUPPORTED_MODEL = re.compile(
    r"not available for fine-?tuning|does not exist|not supported|unsupported", re.I
)
_RETIRED_PATTERN = re.compile(
    r"has been deprecated|shut ?down|been retired|no longer (?:available|supported)", re.I
)
_LINE_PATTERN = re.compile(r"\b(?:line|example)\s+#?(\d+)", re.IGNORECASE)

#: 429 codes that waiting does not cure: raised at once, never retried.
NO_RETRY_429 = frozenset({"insufficient_quota", "daily_rate_limit_exceeded", "billing_hard_limit_reached"})
#: Failures that may pass: retried when the request is safe to repeat.
TRANSIENT = (openai.APIConnectionError, openai.InternalServerError)
#: Codes of :func:`translate_error` after which the request may have taken effect anyway.
UNCERTAIN_CODES = frozenset({"connection_error", "server_error"})

_PARAM_WORDS = {
    "training_file": "the training file",
    "validation_file": "the evaluation (validation) file",
    "model": "the base model",
    "hyperparameters": "the hyperparameters",
    "suffix": "the model name suffix",
}


def remote_message(exc: openai.APIError) -> str:
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


def file_rejected(name: str, details: str) -> RemoteError:
    """OpenAI refused the uploaded file ``name`` (``details``: its words), naming its line."""
    line = named_line(details)
    where = f" OpenAI names line/example {line}: fix it there and upload again." if line is not None else ""
    return RemoteError(
        f"OpenAI rejected the file {name}: {details.strip().rstrip('.')}.{where}", code="file_rejected"
    )


def retry_after(exc: BaseException) -> float | None:
    """The seconds an HTTP answer asks us to wait (``retry-after-ms``, else ``retry-after``), or
    None (also for an exception that is no HTTP answer)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
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


def is_persistent(exc: BaseException) -> bool:
    """An HTTP refusal that waiting does not cure (a rejected key, a permission...): neither a
    429, nor a 5xx, nor a network failure."""
    return isinstance(exc, openai.APIStatusError) and not isinstance(
        exc, openai.RateLimitError | openai.InternalServerError
    )


def _is_unsupported_model(exc: openai.APIStatusError) -> bool:
    message = remote_message(exc)
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
    message = remote_message(exc)
    if isinstance(exc, openai.PermissionDeniedError):
        return True
    return "fine-tun" in message.lower() and bool(_CLOSED_PATTERN.search(message))


def _is_retired_model(exc: openai.APIStatusError) -> bool:
    """OpenAI's answer for a model it shut down (404 ``model_not_found``, "The model `x` has
    been deprecated, learn more here: .../deprecations")."""
    return exc.status_code in (400, 404) and bool(_RETIRED_PATTERN.search(remote_message(exc)))


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
        return _rate_limited(exc, action)
    if isinstance(exc, openai.APIStatusError):
        return _refused(exc, action, model, fine_tuning=fine_tuning, fine_tuning_ends=fine_tuning_ends)
    if isinstance(exc, openai.APIConnectionError):
        return RemoteError(
            f"Could not reach OpenAI while {action} ({exc.message.rstrip('.')}). Check the network and "
            "OPENAI_BASE_URL.",
            code="connection_error",
        )
    if isinstance(exc, openai.OpenAIError):
        return RemoteError(f"The OpenAI client failed while {action}: {exc}", code="client_error")
    return RemoteError(f"Unexpected failure while {action}: {type(exc).__name__}: {exc}", code="unexpected")


def _rate_limited(exc: openai.RateLimitError, action: str) -> RemoteError:
    """A 429 once the retries are spent (or one that waiting does not cure)."""
    said = remote_message(exc)
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


def _refused(
    exc: openai.APIStatusError,
    action: str,
    model: str | None,
    *,
    fine_tuning: bool,
    fine_tuning_ends: date,
) -> FtbotError:
    """Any other HTTP error answer (not 401, not 429)."""
    said = remote_message(exc)
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
