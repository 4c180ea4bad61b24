"""OpenAI's shutdown dates: the end of self-serve fine-tuning and the retirement of the models it
fine-tunes. Pure (no request, no ``openai`` import); ``today`` is injected by the caller.

The dated table :data:`FINE_TUNING_ENDS` / :data:`RETIREMENTS` is overridden by
FTBOT_OPENAI_FINE_TUNING_ENDS / FTBOT_OPENAI_RETIREMENTS (through :class:`~engine.settings.Settings`)::

    check_fine_tuning_open(today, settings)      BackendUnavailable on or after the end date.
    check_not_retired(model, today, settings)    BackendUnavailable on or after the model's date.
    shutdown_notice(model, today, settings) -> str | None    the pre-flight warning (days left).
    retirement_date(model, overrides) -> date | None;  fine_tuning_end(settings) -> date.
    fine_tuning_closed_message(ends) -> str      the same words whether ftbot knows it from the
                                                 date or OpenAI refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType

from engine.backends.openai_costs import plural
from engine.backends.openai_models import base_snapshot, model_family
from engine.errors import BackendUnavailable
from engine.settings import Settings

# OpenAI's wind-down of self-serve fine-tuning, and the shutdown of the models it fine-tunes (a
# fine-tuned model stops answering the day its base model shuts down). Source: OpenAI's
# deprecations page, https://developers.openai.com/api/docs/deprecations ("Update to OpenAI's
# self-serve fine-tuning", notified 2026-05-07, and the model shutdown table), read 2026-12-04:
# the fine-tuning dates and gpt-4o / gpt-4.1 as issue 12 quotes the page; the mini models and the
# 2026-10-23 batch as dated copies of that table give them (Oct 2026). OpenAI may move these:
# override with FTBOT_OPENAI_FINE_TUNING_ENDS and FTBOT_OPENAI_RETIREMENTS.
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
            f"New OpenAI fine-tuning jobs end on {ends} ({plural((ends - today).days, 'day')} left): from "
            "then on fine-tune locally (backend=local)."
        )
    retired_on = retirement_date(model, settings.openai_retirements)
    if retired_on is not None and today < retired_on:
        parts.append(
            f"OpenAI retires {base_snapshot(model)} and every fine-tune of it on {retired_on} "
            f"({plural((retired_on - today).days, 'day')} left): the model this job makes stops answering then."
        )
    return " ".join(parts) or None
