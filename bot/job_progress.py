"""What a job card shows while a job runs, folded from its progress events (:class:`JobProgress`).

Its own module because both the messages (bot/slack/blocks.py ``job_card``) and the mapping from
events to text (bot/progress_view.py, which builds on those messages) need it. Pure: stdlib,
engine types and the Block Kit number formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.slack.blockkit import fmt_duration, fmt_number
from engine import ProgressEvent


@dataclass
class JobProgress:
    """What the job card shows, folded from the job's events (see :meth:`apply`)."""

    state: str = "queued"
    step: int | None = None
    total: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    eta_seconds: float | None = None
    message: str = ""

    def apply(self, event: ProgressEvent) -> None:
        """Take in ``event``: a state change, a training step (step, total, epoch, loss, learning
        rate, ETA) or an evaluation loss; other kinds change nothing."""
        if event.kind == "state" and event.data.get("state"):
            self.state = str(event.data["state"])
            self.message = event.message
        elif event.kind == "step":
            self.step, self.total = event.step, event.total or self.total
            self.epoch = event.epoch if event.epoch is not None else self.epoch
            m = event.metrics
            self.loss = m.get("loss", self.loss)
            self.learning_rate = m.get("learning_rate", self.learning_rate)
            self.eta_seconds = m.get("eta_seconds", self.eta_seconds)
        elif event.kind == "eval":
            self.eval_loss = event.metrics.get("eval_loss", self.eval_loss)

    def readings(self) -> dict[str, str]:
        """The numbers known so far, formatted for display, in this order: ``loss``,
        ``eval_loss``, ``learning_rate``, ``eta`` (the job card and the console show the same)."""
        out: dict[str, str] = {}
        if self.loss is not None:
            out["loss"] = fmt_number(self.loss)
        if self.eval_loss is not None:
            out["eval_loss"] = fmt_number(self.eval_loss)
        if self.learning_rate is not None:
            out["learning_rate"] = fmt_number(self.learning_rate, 3)
        if self.eta_seconds is not None:
            out["eta"] = fmt_duration(self.eta_seconds)
        return out
