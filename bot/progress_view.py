"""What a person reads about a job's progress events: the one mapping from an event to text,
shared by the Slack job card and its thread (bot/slack/progress.py), the ``ftbot chat`` console
(bot/console.py) and ``ftbot run``'s terminal lines (bot/commands/jobs.py). Pure: no I/O; the
callers post, print or draw what it returns.

* ``step`` and ``eval`` events (:data:`LIVE_KINDS`) only change the numbers (:class:`bot.job_progress.
  JobProgress`): Slack edits the card, the console redraws its live line (:func:`console_live_line`).
* The reports (:func:`report_messages`: the pre-flight estimate, the baseline, alerts, the
  evaluation table, verdict and changed examples) are the same Block Kit messages in Slack's
  thread and in the console (which prints them as plain text).
* Slack's thread also gets the cost confirmation, a remote job's creation and the logs marked
  ``notify`` (:func:`thread_messages`); charts are uploaded with :func:`chart_title`.
* The console prints state changes, chart paths and logs as lines (:func:`console_output`).
* ``ftbot run`` writes its own compact lines on stderr (:func:`terminal_lines`,
  :func:`terminal_step`).
"""

from __future__ import annotations

from bot.job_progress import JobProgress
from bot.slack import blocks
from bot.slack.blockkit import Message, progress_bar
from engine import ProgressEvent

# Events that only change the numbers on the card / the live line (never a message of their own).
LIVE_KINDS = frozenset({"step", "eval"})
CHART_TITLES = {"loss_chart": "Training loss", "eval_chart": "Evaluation"}
# The console's live line: the card's readings under short labels.
_LIVE_LABELS = {"loss": "loss", "eval_loss": "eval", "learning_rate": "lr", "eta": "ETA"}
# `ftbot run`: what goes before an event's message on its line.
_TERMINAL_PREFIX = {"alert": "! ", "preflight": "preflight: "}
_TERMINAL_REPORTS = ("baseline", "alert", "preflight", "evaluation", "submitted")


def chart_title(kind: str) -> str:
    """The title of a chart (an ``artifact`` event's ``kind``): ``loss_chart`` is "Training loss"."""
    return CHART_TITLES.get(kind, kind.replace("_", " "))


def report_messages(event: ProgressEvent, shown: set[str]) -> list[Message]:
    """The reports a milestone shows, alike in Slack's thread and in the console: the pre-flight
    estimate, the baseline, an alert (unless the verdict already showed the same caveat: ``shown``),
    or the evaluation table, verdict and changed examples (whose caveats are added to ``shown``).
    [] for any other kind."""
    kind, data = event.kind, event.data
    if kind == "preflight":
        return [blocks.preflight(data, event.message)]
    if kind == "baseline":
        return [blocks.baseline(data)]
    if kind == "alert":
        text = event.message or str(data.get("message", ""))
        return [] if text in shown else [blocks.alert(text, data.get("code"))]
    if kind == "evaluation":
        shown |= blocks.shown_flags(data)
        out = [blocks.eval_table(data), blocks.verdict(data)]
        flips = blocks.flips(data)
        if flips is not None:
            out.append(flips)
        return out
    return []


def thread_messages(event: ProgressEvent, shown: set[str], job_id: str) -> list[Message]:
    """Every message a milestone posts in the Slack job card's thread, in order: the reports
    (:func:`report_messages`), then the cost confirmation after a pre-flight that asks for one, a
    remote job's creation (``submitted``), or a log marked ``notify``. Charts (``artifact``) are
    uploaded, not posted (:func:`chart_title`); state changes and steps edit the card."""
    out = report_messages(event, shown)
    kind, data = event.kind, event.data
    if kind == "preflight" and data.get("confirmation_required"):
        out.append(blocks.confirm_cost(job_id, data.get("cost_usd", data.get("usd"))))
    elif kind == "submitted":
        out.append(blocks.notice(event.message or f"Remote job {data.get('remote_id', '')} created."))
    elif kind == "log" and data.get("notify"):
        out.append(blocks.notice(event.message))
    return out


def console_output(event: ProgressEvent, shown: set[str], job_id: str) -> list[str | Message]:
    """What the console prints for a milestone (not :data:`LIVE_KINDS`): a state change, a chart's
    path and a remote job's or a log's message as lines of text; the reports as the messages
    Slack posts (:func:`report_messages`, printed as plain text)."""
    kind, data = event.kind, event.data
    if kind == "state":
        return [f"[{job_id}] {data.get('state', '')}" + (f": {event.message}" if event.message else "")]
    if kind == "artifact":
        return [f"Chart ({data.get('kind', 'chart')}): {data['path']}"] if data.get("path") else []
    if kind in ("submitted", "log"):
        return [event.message] if event.message else []
    return list(report_messages(event, shown))


def console_live_line(job_id: str, progress: JobProgress) -> str:
    """The console's live line: the job, its state, a bar with the step, and the readings."""
    parts = [f"{job_id} {progress.state}"]
    if progress.total:
        bar = progress_bar(progress.step, progress.total, width=24)
        parts.append(f"[{bar}] step {progress.step or 0}/{progress.total}")
    parts.extend(f"{_LIVE_LABELS[key]} {value}" for key, value in progress.readings().items())
    return " · ".join(parts)


def terminal_lines(event: ProgressEvent) -> list[str]:
    """``ftbot run``'s lines for any event but a training ``step`` (:func:`terminal_step`): the
    state and its hint, an evaluation loss, the reports' messages (a pre-flight's recipe notes
    under it), a chart's path, and the logs that are decisions or the end of a generation phase."""
    kind, data = event.kind, event.data
    if kind == "state":
        lines = [f"[{data.get('state', '')}] {event.message}"]
        if data.get("hint"):
            lines.append(f"  hint: {data['hint']}")
        return lines
    if kind == "eval":
        loss = event.metrics.get("eval_loss")
        return [] if loss is None else [f"  eval loss {loss:.4f} (epoch {event.epoch or 0:.1f})"]
    if kind in _TERMINAL_REPORTS:
        lines = [f"  {_TERMINAL_PREFIX.get(kind, '')}{event.message}"] if event.message else []
        if kind == "preflight":  # the recipe chosen, and why (engine/recipe.py)
            lines.extend(f"    - {note}" for note in data.get("notes") or [])
        return lines
    if kind == "artifact":
        return [f"  {event.message} {data.get('path', '')}"]
    if kind == "log" and event.message and (not data.get("phase") or event.step == event.total):
        # Generation progress only when a phase completes; other logs are decisions and notes.
        return [f"  {event.message}"]
    return []


def terminal_step(event: ProgressEvent, *, width: int = 24) -> tuple[str, float]:
    """``ftbot run``'s training line for a ``step`` event, and the fraction of the steps done."""
    step, total = event.step or 0, event.total or 0
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    if event.epoch is not None:
        parts.append(f"epoch {event.epoch:.2f}")
    for key, label, fmt in (("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.2e}")):
        value = event.metrics.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {fmt.format(value)}")
    eta = event.metrics.get("eta_seconds")
    if isinstance(eta, int | float):
        parts.append(f"eta {int(eta)}s")
    fraction = step / total if total else 0.0
    filled = int(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    return f"  training [{bar}] " + "  ".join(parts), fraction
