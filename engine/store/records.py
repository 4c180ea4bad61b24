"""The rows the store hands out, as frozen dataclasses: datasets, models, a channel's default, audit entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DatasetRecord:
    """One upload of a dataset. ``path`` is the content-addressed file; ``report`` the validation
    report as a dict (``ValidationReport.to_dict()``); ``usable`` is ``report["ok"]``."""

    id: int
    hash: str
    name: str
    path: Path
    size: int
    uploaded_by: str
    team: str
    channel: str
    report: Mapping[str, Any]
    usable: bool
    created_at: datetime
    # Where the upload came from (a Slack file id), so a retried or repeated delivery of the same
    # upload finds this record instead of storing a second one. None for files given by path.
    source_id: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """A fine-tuned model: a local LoRA adapter (``kind="local_adapter"``, ``path`` set) or an
    OpenAI fine-tune (``kind="openai"``, ``remote_name`` the ``ft:...`` id)."""

    id: str
    kind: str
    base_model: str
    job_id: str | None
    team: str
    channel: str
    created_at: datetime
    path: Path | None = None
    remote_name: str | None = None
    verdict: str | None = None
    system_prompt: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


MODEL_KINDS = frozenset({"local_adapter", "openai"})

#: ``set_by`` of a channel's current model that the promotion rule chose (not a user).
PROMOTION_RULE = "ftbot (promotion rule)"
#: How a channel's current model is chosen (:attr:`DefaultChoice.mode`).
CHOICE_AUTO = "auto"  # the promotion rule: the latest promoted fine-tune of the channel
CHOICE_MODEL = "model"  # a user chose one of the workspace's models
CHOICE_BASE = "base"  # a user chose the base model alone
CHOICE_MODES = (CHOICE_AUTO, CHOICE_MODEL, CHOICE_BASE)


@dataclass(frozen=True)
class DefaultChoice:
    """Which model answers ``/ask`` in a channel (its *current model*), and who decided.

    ``mode``:

    * ``"auto"`` (the default): the promotion rule decides. The latest fine-tune of this channel
      that passed the promotion rule (not worse than its baseline, and it learned something:
      ``engine.evaluate.promotion_decision``) is current (``model``); each later promotion replaces
      it. ``model`` is None until a first promotion: the base model answers.
    * ``"model"``: a user chose ``model`` (any of the workspace's models, whatever its verdict or
      channel). Later promotions are registered but do not replace it.
    * ``"base"``: a user chose the base model alone (``model`` is None). Later promotions do not
      replace it either.

    ``set_by`` / ``set_at``: who made the standing choice and when: a user id, or
    :data:`PROMOTION_RULE` when a promotion under ``auto`` made ``model`` current ("" and None
    when nothing was ever set). ``promoted``: the promotion rule's latest pick in this channel,
    whatever the mode (what going back to ``auto`` makes current again).
    """

    team: str
    channel: str
    mode: str = CHOICE_AUTO
    model: ModelRecord | None = None
    set_by: str = ""
    set_at: datetime | None = None
    promoted: ModelRecord | None = None

    @property
    def by_user(self) -> bool:
        """True while a user's choice stands (``model`` or ``base``): promotions do not replace it."""
        return self.mode != CHOICE_AUTO

    @property
    def model_id(self) -> str | None:
        """The current model's id; None when the base model answers."""
        return self.model.id if self.model is not None else None

    @property
    def chooser(self) -> str | None:
        """The user who made the standing choice (also a switch back to ``auto``); None when
        the promotion rule made it or nothing was ever set."""
        return None if self.set_by in ("", PROMOTION_RULE) else self.set_by


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
