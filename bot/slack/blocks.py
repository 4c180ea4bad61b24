"""Engine results -> Slack messages (Block Kit + fallback text), and the same messages as plain
terminal text for the console. Pure: no I/O (stdlib, engine types, the generic builders and the
parser's usage texts).

Every builder returns a :class:`Message`. ``text`` is the notification/screen-reader fallback
Slack requires next to ``blocks``; :func:`to_plain` renders ``blocks`` for a terminal so the
console shows exactly what Slack shows.

The engine's reports arrive as objects with ``to_dict()`` or as mappings; builders read them
tolerantly (a missing figure is left out, never a crash), because a half-written report must
still be shown.

The generic builders and formats are in bot/slack/blockkit.py, the evaluation table in
bot/slack/report_blocks.py. Limits kept (Slack rejects bigger payloads): <= 50 blocks, and
blockkit's per-block limits.

Escaping: every mrkdwn string and every fallback ``text`` escapes ``&``, ``<`` and ``>`` in what
it did not write itself (user input, option values, dataset and model names, engine messages,
model output), so nothing can ping (``<!channel>``, ``<!here>``, ``<@U…>``) or forge a link
(``<https://evil|click>``): Slack parses the fallback ``text`` of a message (its notification) as
well as its blocks. The only markup left intact is the one built here from validated Slack ids
(:func:`_who`, :func:`_owner`: the job's owner, who changed a channel's model) and the user
mentions of the engine's promotion alerts (built from validated ids, see :func:`alert`).
``plain_text`` objects (headers, buttons) are not parsed by Slack, so they are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.job_progress import JobProgress
from bot.slack.blockkit import (
    Message,
    as_dict,
    button,
    context,
    escape,
    fields_section,
    fmt_duration,
    fmt_number,
    header,
    plain,
    progress_bar,
    section,
)
from bot.slack.parse import ASK_KEYS, ASK_USAGE, FINETUNE_USAGE, accepted_finetune_keys
from bot.slack.report_blocks import LOWER_IS_BETTER_SHOWN, metrics_table
from engine import BUILTIN_TINY, Job, JobState

ACTION_START = "start_finetune"
ACTION_CANCEL = "cancel_job"
ACTION_CONFIRM = "confirm_job"
ACTION_USE = "use_model"  # value: a model id, "base" or "auto" (/finetune use)
ACTIONS = (ACTION_START, ACTION_CANCEL, ACTION_CONFIRM, ACTION_USE)

TINY_NOTE = (
    "builtin:tiny is a tiny demo model with random weights, built on this machine: it shows the "
    "workflow, its answers mean nothing (builtin:smollm2, the default, is a real model)."
)
_STATE_EMOJI = {
    "queued": ":hourglass:",
    "validating": ":mag:",
    "baseline": ":straight_ruler:",
    "training": ":hammer_and_wrench:",
    "evaluating": ":bar_chart:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":no_entry_sign:",
}
VERDICTS = {
    "improved": (":white_check_mark:", "Fine-tuning helped"),
    "worse": (":x:", "Fine-tuning made it worse"),
    "no_significant_difference": (":heavy_minus_sign:", "No significant difference"),
}


def model_note(model: str | None) -> str | None:
    """:data:`TINY_NOTE` when ``model`` is the tiny demo model, else None."""
    return TINY_NOTE if model and BUILTIN_TINY in str(model) else None


# ---------------------------------------------------------------------------------------------
# datasets


def _error_line(error: Mapping[str, Any]) -> str:
    """One validation error as a bullet's text, its line named once: the validator's messages may
    already begin with ``Line N: `` (that prefix becomes ``line N: ``) or name many lines (the same
    error grouped, "Lines 11, 12, ... (1000 lines): ...", shown as it is)."""
    message, line = str(error.get("message", "")), error.get("line")
    if line is None or message.startswith("Lines "):
        return message
    return f"line {line}: {message.removeprefix(f'Line {line}: ')}"


def validation_report(
    report: Any, *, name: str, dataset_hash: str | None = None, max_items: int = 10
) -> Message:
    """The reply to an upload: counts, errors with line numbers, warnings, and a Start button
    when the data is usable."""
    rep = as_dict(report)
    ok = bool(rep.get("ok"))
    stats = as_dict(rep.get("stats"))
    errors = [as_dict(e) for e in rep.get("errors") or []]
    warnings = [as_dict(w) for w in rep.get("warnings") or []]
    examples = stats.get("examples")
    title = f"{'Ready' if ok else 'Not usable'}: {name}"
    verdict = (
        f":white_check_mark: *{escape(name)}* can be used for fine-tuning."
        if ok
        else f":x: *{escape(name)}* cannot be used yet: fix the errors below and upload it again."
    )
    blocks: list[dict[str, Any]] = [header(title), section(verdict)]
    stat_fields = [f"*Examples*\n{fmt_number(examples)}"]
    if stats.get("task"):
        stat_fields.append(f"*Task*\n{escape(stats['task'])}")
    for key, label in (
        ("tokens_total", "Tokens"),
        ("tokens_mean", "Tokens per example (mean)"),
        ("tokens_max", "Longest example (tokens)"),
        ("duplicates", "Duplicates"),
    ):
        if stats.get(key) is not None:
            stat_fields.append(f"*{label}*\n{fmt_number(stats[key])}")
    blocks.append(fields_section(stat_fields))
    lines: list[str] = []
    if errors:
        shown = [f"• {escape(_error_line(e))}" for e in errors[:max_items]]
        more = f"\n…and {len(errors) - max_items} more" if len(errors) > max_items else ""
        blocks.append(section(f"*Errors ({len(errors)})*\n" + "\n".join(shown) + more))
        lines.append(f"{len(errors)} error(s), first: {errors[0].get('message', '')}")
    if warnings:
        shown = []
        for w in warnings[:max_items]:
            where = w.get("lines") or []
            at = (
                " (lines " + ", ".join(map(str, where[:5])) + (", …" if len(where) > 5 else "") + ")"
                if where
                else ""
            )
            shown.append(f"• {escape(w.get('message', ''))}{at}")
        more = f"\n…and {len(warnings) - max_items} more" if len(warnings) > max_items else ""
        blocks.append(section(f"*Warnings ({len(warnings)})*\n" + "\n".join(shown) + more))
    if ok and dataset_hash:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"dataset_{dataset_hash[:40]}",
                "elements": [button("Start fine-tuning", ACTION_START, dataset_hash, style="primary")],
            }
        )
        blocks.append(
            context(f"Or type `/finetune {dataset_hash[:12]}` with options; `/finetune help` lists them.")
        )
    text = f"{name}: {'usable' if ok else 'not usable'}, {fmt_number(examples)} examples"
    if lines:
        text += "; " + lines[0]
    return Message(text=escape(text), blocks=blocks)


# ---------------------------------------------------------------------------------------------
# jobs


def job_card(
    job: Job,
    progress: JobProgress | None = None,
    *,
    queue_position: int | None = None,
    dataset_name: str | None = None,
) -> Message:
    """The job card: edited in place as the job moves. Cancel is shown while the job can stop."""
    progress = progress or JobProgress(state=str(job.state))
    state = str(job.state) if job.is_final else progress.state
    emoji = _STATE_EMOJI.get(state, ":gear:")
    backend = f"{job.backend} · {job.base_model}"
    status = f"{emoji} *{escape(state)}*"
    if state == "queued" and queue_position:
        status += f" (position {queue_position} in the queue)" if queue_position > 1 else " (next in line)"
    if job.error and state in ("failed", "cancelled"):
        status += f"\n{escape(job.error)[:500]}"
    elif progress.message and state not in ("succeeded",):
        status += f"\n_{escape(progress.message)[:300]}_"
    blocks: list[dict[str, Any]] = [
        header(f"Fine-tune {job.id}"),
        section(status, block_id=f"status_{job.id}"),
    ]
    fields = [
        f"*Model*\n{escape(backend)}",
        f"*Dataset*\n{escape(dataset_name or (job.result or {}).get('dataset_name') or job.dataset_hash[:12])}",
    ]
    if progress.total or state == "training":
        step = f"{progress.step or 0}/{progress.total or '?'}"
        if progress.epoch is not None:
            step += f" (epoch {progress.epoch:.2f})"
        fields.append(
            f"*Progress*\n`{progress_bar(progress.step, progress.total)}`\nstep {step}"
            if progress.total
            else "*Progress*\nstarting…"
        )
    labels = {"loss": "Loss", "eval_loss": "Eval loss", "learning_rate": "Learning rate", "eta": "ETA"}
    for key, value in progress.readings().items():
        if key != "eta" or not job.is_final:  # a finished job has nothing left to wait for
            fields.append(f"*{labels[key]}*\n{value}")
    if job.model_id and job.is_final:
        fields.append(f"*Model id*\n`{escape(job.model_id)}`")
    blocks.append(fields_section(fields))
    note = model_note(job.base_model)
    ctx = f"Started by {_owner(job.owner)}" if job.owner else "Started from the console"
    ctx += " · details in the thread"
    if note:
        ctx += f" · {note}"
    blocks.append(context(ctx))
    if not job.is_final:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"job_{job.id}",
                "elements": [
                    button(
                        "Cancel",
                        ACTION_CANCEL,
                        job.id,
                        style="danger",
                        confirm=(
                            "Cancel this job?",
                            "Training stops and the job ends as cancelled.",
                            "Cancel job",
                            "Keep running",
                        ),
                    )
                ],
            }
        )
    text = f"Fine-tune {job.id}: {state}"
    if progress.total:
        text += f", step {progress.step or 0}/{progress.total}"
    if progress.loss is not None:
        text += f", loss {fmt_number(progress.loss)}"
    return Message(text=escape(text), blocks=blocks)


def jobs_list(jobs: Sequence[Job], *, title: str = "Fine-tune jobs in this channel") -> Message:
    if not jobs:
        return Message(
            text="No jobs yet.",
            blocks=[section("No fine-tune jobs here yet. Upload a JSONL dataset, then type `/finetune`.")],
        )
    lines = []
    for job in jobs[:25]:
        emoji = _STATE_EMOJI.get(str(job.state), ":gear:")
        owner = f" by {_owner(job.owner)}" if job.owner else ""
        model = f" → `{escape(job.model_id)}`" if job.model_id else ""
        lines.append(
            f"{emoji} `{escape(job.id)}` *{escape(job.state)}* · {escape(job.base_model)}{owner}{model}"
        )
    more = f"\n…and {len(jobs) - 25} more" if len(jobs) > 25 else ""
    return Message(text=f"{len(jobs)} job(s)", blocks=[header(title), section("\n".join(lines) + more)])


def preflight(data: Mapping[str, Any], message: str = "") -> Message:
    """The pre-flight estimate posted before training."""
    d = dict(data)
    fields = []
    for key, label, fmt in (
        ("examples", "Examples", fmt_number),
        ("tokens", "Training tokens", fmt_number),
        ("steps", "Steps", fmt_number),
        ("seconds", "Estimated time", fmt_duration),
        ("gpu_memory_gb", "GPU memory (GB)", fmt_number),
        ("memory_gb", "Memory (GB)", fmt_number),
        ("cost_usd", "Estimated cost (USD)", lambda v: f"${v:,.2f}"),
    ):
        if d.get(key) is not None:
            try:
                fields.append(f"*{label}*\n{fmt(d[key])}")
            except (TypeError, ValueError):
                fields.append(f"*{label}*\n{escape(d[key])}")
    fits = d.get("fits")
    text = message or d.get("message") or "Pre-flight estimate"
    head = (":warning: " if fits is False else ":clipboard: ") + escape(text)
    blocks = [section(f"*Pre-flight*\n{head}")]
    if fields:
        blocks.append(fields_section(fields))
    notes = [str(n) for n in d.get("notes") or [] if n]
    if notes:  # the recipe chosen for this model, data and machine, and why (engine/recipe.py)
        recipe = (d.get("plan") or {}).get("recipe")
        title = f"*How it trains* ({escape(recipe)} recipe)" if recipe else "*How it trains*"
        blocks.append(section(title + "\n" + "\n".join(f"• {escape(n)}" for n in notes)))
    return Message(text=escape(f"Pre-flight: {text}"), blocks=blocks)


def confirm_cost(job_id: str, cost: Any, message: str = "") -> Message:
    """An OpenAI job above the cost threshold waits for this button."""
    cost_text = f"${cost:,.2f}" if isinstance(cost, int | float) else "an unknown amount"
    text = message or f"This job would cost about {cost_text} on OpenAI. Start it?"
    return Message(
        text=escape(text),
        blocks=[
            section(f":moneybag: {escape(text)}"),
            {
                "type": "actions",
                "block_id": f"confirm_{job_id}",
                "elements": [
                    button("Start (I accept the cost)", ACTION_CONFIRM, job_id, style="primary"),
                    button("Cancel", ACTION_CANCEL, job_id),
                ],
            },
        ],
    )


_INFO_ALERTS = {"promotion": ":label:"}  # alert codes that are news, not warnings


_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def _escape_keep_mentions(text: str) -> str:
    """Escape engine text but keep its user mentions (``<@U…>``, e.g. who chose a channel's
    model) working: only that exact shape survives, so nothing else can inject markup."""
    return _ESCAPED_MENTION.sub(r"<@\1>", escape(text))


def alert(message: str, code: str | None = None) -> Message:
    """Something the user should know now; a warning unless its code is plain news.

    Only the news alerts (the engine's promotion messages, which mention the user who chose a
    channel's model by a validated id) keep their ``<@U…>`` mentions; a warning can carry text
    from elsewhere (OpenAI's event messages, training logs) and is escaped whole."""
    if code in _INFO_ALERTS:
        body = _escape_keep_mentions(message)
        return Message(text=body, blocks=[section(f"{_INFO_ALERTS[code]} {body}")])
    return Message(text=f"Alert: {escape(message)}", blocks=[section(f":warning: {escape(message)}")])


def notice(text: str) -> Message:
    """A plain note (state changes, promotions, logs); ``text`` is escaped whole, mentions too."""
    return Message(text=escape(text), blocks=[section(escape(text))])


# ---------------------------------------------------------------------------------------------
# evaluation


def baseline(data: Mapping[str, Any]) -> Message:
    """Baseline results (before training): the same table without the fine-tuned column."""
    table = metrics_table(dict(data))
    return Message(text="Baseline measured", blocks=[section("*Baseline (before fine-tuning)*\n" + table)])


def eval_table(report: Any) -> Message:
    """Zero-shot, few-shot and fine-tuned side by side on the task's metrics (↓: lower is better)."""
    rep = as_dict(report)
    task = rep.get("task")
    metric = rep.get("metric")
    intro = "*Evaluation*"
    if task:
        intro += f" · task: {escape(task)}"
    if metric:
        intro += f" · judged by `{escape(metric)}`" + (
            " (lower is better)" if metric in LOWER_IS_BETTER_SHOWN else ""
        )
    n = rep.get("n") or rep.get("examples") or rep.get("eval_examples")
    if n:
        intro += f" · {fmt_number(n)} held-out examples"
    return Message(text="Evaluation results", blocks=[section(intro + "\n" + metrics_table(rep))])


def shown_flags(report: Any) -> set[str]:
    """The caveat messages :func:`verdict` shows, so a sink can skip the same text arriving again
    as separate ``alert`` events."""
    flags = as_dict(report).get("flags") or []
    return {str(f.get("message") if isinstance(f, Mapping) else f) for f in flags}


def _verdict_title(rep: Mapping[str, Any], key: str, default: tuple[str, str]) -> tuple[str, str]:
    """(emoji, title) of a verdict. "improved" against the baselines is not "Fine-tuning helped"
    when the report says the fine-tune does not beat the constant answer (``beats_constant``):
    always giving one typical answer does as well."""
    beats = rep.get("beats_constant")
    if key == "improved" and isinstance(beats, Mapping) and beats.get("finetuned") is False:
        return ":warning:", "Better than the baselines, but not than a constant answer"
    return VERDICTS.get(key, default)


def verdict(report: Any) -> Message:
    """The honest verdict, with the confidence interval and any outlier caveats the engine gave."""
    rep = as_dict(report)
    key = str(rep.get("verdict") or "no_significant_difference")
    emoji, title = _verdict_title(rep, key, (":grey_question:", key.replace("_", " ")))
    lines = [f"{emoji} *{escape(title)}*"]
    detail = rep.get("verdict_text") or rep.get("summary")
    if detail:
        lines.append(escape(detail))
    interval = rep.get("interval")
    if isinstance(interval, Mapping) and interval.get("low") is not None and not detail:
        conf = interval.get("confidence") or 0.95
        lines.append(
            f"Change vs the best baseline: {round(conf * 100)}% range "
            f"{fmt_number(interval.get('low'))} to {fmt_number(interval.get('high'))}"
        )
    for flag in rep.get("flags") or rep.get("notes") or []:
        text = flag.get("message") if isinstance(flag, Mapping) else flag
        if text:
            lines.append(f"• {escape(text)}")
    note = model_note(rep.get("base_model"))
    if note:
        lines.append(f"_{note}_")
    return Message(text=escape(f"Verdict: {title}"), blocks=[section("\n".join(lines))])


def flips(report: Any, *, limit: int = 3) -> Message | None:
    """A few examples the fine-tune fixed and broke; None when the report has none."""
    rep = as_dict(report)
    raw = rep.get("flips") or {}
    if not isinstance(raw, Mapping):
        return None
    parts = []
    for key, title in (("fixed", "Fixed by fine-tuning"), ("broken", "Broken by fine-tuning")):
        items = list(raw.get(key) or [])[:limit]
        if not items:
            continue
        count = raw.get(f"{key}_count")
        lines = [f"*{title}*" + (f" ({count} in all)" if isinstance(count, int) else "")]
        for item in items:
            it = as_dict(item)
            before = it.get("baseline", it.get("before", ""))
            after = it.get("finetuned", it.get("after", ""))
            prompt = it.get("prompt")
            lines.append(
                (f"> {escape(str(prompt)[:200])}\n" if prompt else "")
                + f"expected `{escape(str(it.get('reference', ''))[:100])}`"
                f" · before `{escape(str(before)[:100])}` · after `{escape(str(after)[:100])}`"
            )
        parts.append("\n".join(lines))
    if parts and raw.get("rule"):
        parts.append(f"_{escape(raw['rule'])}_")
    if not parts:
        return None
    return Message(text="Examples that changed", blocks=[section(p) for p in parts])


def final_summary(job: Job, report: Any = None, *, promoted: bool | None = None) -> Message:
    """Broadcast to the channel when a job ends."""
    rep = as_dict(report)
    state = str(job.state)
    if state == JobState.SUCCEEDED:
        key = str(rep.get("verdict") or "")
        emoji, title = _verdict_title(rep, key, (":white_check_mark:", "finished"))
        text = f"Fine-tune {job.id} finished: {title.lower()}."
        if job.model_id:
            text += f" Model `{job.model_id}`."
        if promoted is True:
            text += " It is now this channel's default for /ask."
        elif promoted is False:
            text += " The channel's /ask model is unchanged."
        return Message(text=escape(text), blocks=[section(f"{emoji} {escape(text)}")])
    if state == JobState.CANCELLED:
        text = f"Fine-tune {job.id} was cancelled."
        return Message(text=escape(text), blocks=[section(f":no_entry_sign: {escape(text)}")])
    # The error can quote what the user typed (a base model name, an option value).
    text = f"Fine-tune {job.id} failed: {job.error or 'see the thread'}"
    return Message(text=escape(text), blocks=[section(f":x: {escape(text)}")])


# ---------------------------------------------------------------------------------------------
# models: the registry and the channel's current model (/finetune models, /finetune use)

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")


_SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,}")


def _who(user: str | None) -> str:
    """A user for mrkdwn: a Slack user id as a mention, any other name escaped."""
    if not user:
        return "someone"
    return f"<@{user}>" if _SLACK_USER.fullmatch(user) else escape(user)


def _owner(user: str) -> str:
    """A job's owner or an asker for mrkdwn: a Slack user id as a mention; any other name (the
    console's, the command line's) as ``@name``, escaped, which the console shows as it shows a
    mention (``@U…``)."""
    return f"<@{user}>" if _SLACK_USER.fullmatch(user) else f"@{escape(user)}"


def _when(at: Any) -> str:
    return f" on {at:%Y-%m-%d %H:%M} UTC" if hasattr(at, "strftime") else ""


def describe_choice(choice: Any, *, base_model: str) -> str:
    """The channel's current model and who chose it, as one mrkdwn phrase. ``choice`` is the
    engine's ``DefaultChoice`` (``Engine.model_choice``)."""
    base = f"the base model `{escape(base_model)}`"
    if choice.mode == "base":
        return f"{base} alone, chosen by {_who(choice.chooser)}{_when(choice.set_at)}"
    if choice.mode == "model" and choice.model is not None:
        return f"`{escape(choice.model.id)}`, chosen by {_who(choice.chooser)}{_when(choice.set_at)}"
    if choice.model is None:
        text = f"{base}: no fine-tune has been promoted in this channel yet (automatic)"
    else:
        text = (
            f"`{escape(choice.model.id)}`, chosen by the promotion rule (automatic: the latest fine-tune "
            "here that was not worse than its baseline and learned something; later ones replace it)"
        )
    if choice.chooser:
        text += f"; {_who(choice.chooser)} switched to automatic{_when(choice.set_at)}"
    return text


def _short_choice(choice: Any, *, base_model: str) -> str:
    if choice.mode == "base":
        return f"the base model `{escape(base_model)}`, chosen by {_who(choice.chooser)}"
    if choice.model is None:
        return f"the base model `{escape(base_model)}`, nothing being promoted yet"
    by = "the promotion rule" if choice.mode == "auto" else _who(choice.chooser)
    return f"`{escape(choice.model.id)}`, chosen by {by}"


def model_list(
    models: Sequence[Any],
    choice: Any,
    *,
    base_model: str,
    channel: str | None = None,
    limit: int = 20,
) -> Message:
    """``/finetune models``: the workspace's models (id, kind, verdict, created, base; newest
    first), the channel's current one marked with who chose it, and a *Use* button on every
    other choice (a model, the base model, automatic)."""
    current_id = choice.model_id
    blocks: list[dict[str, Any]] = [
        header("Models in this workspace"),
        section(f"*Current model in this channel:* {describe_choice(choice, base_model=base_model)}"),
    ]
    if not models:
        blocks.append(
            section("No fine-tuned models yet: upload a `.jsonl` dataset here, then type `/finetune`.")
        )
    for model in models[:limit]:
        emoji, verdict = VERDICTS.get(str(model.verdict), (":grey_question:", "not evaluated"))
        created = f"{model.created_at:%Y-%m-%d %H:%M}" if model.created_at else "?"
        mine = model.id == current_id
        line = f"`{escape(model.id)}`" + (" *(current)*" if mine else "")
        line += f" · {escape(model.kind)} · {verdict} {emoji} · created {created} UTC"
        line += f" · base {escape(model.base_model)}"
        if model.channel and channel is not None and model.channel != channel:
            where = model.channel
            line += f" · from <#{where}>" if _SLACK_CHANNEL.fullmatch(where) else f" · from {escape(where)}"
        block = section(line)
        if not mine:
            block["accessory"] = button("Use this model", ACTION_USE, model.id)
        blocks.append(block)
    if len(models) > limit:
        blocks.append(
            context(f"…and {len(models) - limit} older ones: `/finetune use MODEL_ID` takes any of them.")
        )
    base = section(
        f"*Base model* `{escape(base_model)}` alone" + (" *(current)*" if choice.mode == "base" else "")
    )
    if choice.mode != "base":
        base["accessory"] = button("Use the base model", ACTION_USE, "base")
    auto = section(
        "*Automatic*: the latest fine-tune of this channel that was not worse than its baseline and learned something; "
        "each later one replaces it" + (" *(current)*" if choice.mode == "auto" else "")
    )
    if choice.mode != "auto":
        auto["accessory"] = button("Use automatic", ACTION_USE, "auto")
    blocks += [
        base,
        auto,
        context(
            "Change it with `/finetune use MODEL_ID|base|auto` (anyone allowed to use this bot); "
            "the change is announced in the channel. `/ask model=ID` asks any model once."
        ),
    ]
    text = f"{len(models)} model(s); current here: {_short_choice(choice, base_model=base_model)}"
    return Message(text=text, blocks=blocks)


def model_switched(choice: Any, *, user: str, previous: Any, base_model: str) -> Message:
    """Posted in the channel, visible to everyone, when a user changes its current model."""
    was = _short_choice(previous, base_model=base_model)
    if choice.mode == "auto":
        now = (
            f"`{escape(choice.model.id)}` (the latest promoted fine-tune) answers /ask now"
            if choice.model is not None
            else f"the base model `{escape(base_model)}` answers /ask until a fine-tune is promoted"
        )
        text = (
            f"{_who(user)} handed this channel's model back to the promotion rule: {now}, and each "
            f"later fine-tune that is not worse than its baseline and learned something replaces it. Before: {was}."
        )
    else:
        what = (
            f"the base model `{escape(base_model)}` alone"
            if choice.mode == "base"
            else f"`{escape(choice.model_id)}`"
        )
        text = (
            f"{_who(user)} made {what} this channel's model for /ask. New fine-tunes will not replace "
            f"it until someone types `/finetune use auto`. Before: {was}."
        )
    return Message(text=text, blocks=[section(f":label: {text}")])


# ---------------------------------------------------------------------------------------------
# ask, help, errors


#: How to make a first fine-tune, said under an answer of the base model when the channel has
#: none (the console passes its own wording: it uploads with /upload PATH).
FINETUNE_HINT = "Upload a JSONL dataset here and run /finetune to make one."


def base_answer_note(answer: Any, *, finetune_hint: str = FINETUNE_HINT) -> str | None:
    """Why the base model alone answered, for a newcomer who may expect a fine-tune: from the
    answer's ``base_reason`` (``Engine.ask``). None for any other answer, and for ``model=base``
    (the person asked for the base model)."""
    d = as_dict(answer)
    reason = d.get("base_reason")
    base = escape(d.get("base_model") or "")
    if reason == "no_finetune":
        return (
            f"No fine-tuned model in this channel yet: this answer comes from the base model "
            f"`{base}`. {finetune_hint}"
        )
    if reason == "none_promoted":
        return (
            f"None of this channel's fine-tunes is its current model (one becomes current only when "
            f"it is not worse than its baseline and learned something): this answer comes from the base model `{base}`. "
            "`/finetune models` lists them; `/finetune use MODEL_ID` makes one the channel's model."
        )
    if reason == "chosen":
        return (
            f"This channel uses the base model `{base}` by choice (`/finetune use base`); "
            "`/finetune use auto` goes back to its latest good fine-tune."
        )
    return None


def ask_answer(
    answer: Any, *, prompt: str, user: str | None = None, finetune_hint: str = FINETUNE_HINT
) -> Message:
    """An answer to /ask: the engine's ``Answer`` (text, model, base_model, note), or for
    ``compare`` a ``(base_answer, tuned_answer)`` pair shown side by side. An answer of the base
    model alone says why under it (:func:`base_answer_note`; ``finetune_hint`` says how to make a
    first fine-tune, where the channel has none)."""
    base: dict[str, Any] | None = None
    if isinstance(answer, tuple | list) and len(answer) == 2:
        base, answer = as_dict(answer[0]), answer[1]
    d = {"text": answer} if isinstance(answer, str) else as_dict(answer)
    text = str(d.get("text") or d.get("answer") or "")
    model = str(d.get("model") or d.get("model_id") or "the base model")
    base_model = d.get("base_model")
    asked = f"{_owner(user)} asked" if user else "Question"
    blocks = [section(f"{asked}: _{escape(prompt)[:500]}_")]
    if base is not None:
        blocks.append(
            section(
                f"*Base model ({escape(base.get('base_model') or base.get('model') or '')})*\n"
                f"{escape(base.get('text') or '') or '_(empty answer)_'}"
            )
        )
        blocks.append(section(f"*{escape(model)}*\n{escape(text) or '_(empty answer)_'}"))
    else:
        blocks.append(section(escape(text) or "_(empty answer)_"))
    ctx = f"Answered by `{escape(model)}`"
    if base_model and base_model not in model:
        ctx += f" (base {escape(base_model)})"
    if d.get("note"):
        ctx += f" · {escape(d['note'])}"
    if base is not None and base.get("note"):
        ctx += f" · base model: {escape(base['note'])}"
    note = model_note(str(base_model or "")) or model_note(model)
    if note:
        ctx += f" · {note}"
    blocks.append(context(ctx))
    why = base_answer_note(d, finetune_hint=finetune_hint) if base is None else None
    if why:
        blocks.append(context(why))
    return Message(text=escape(f"{model}: {text[:200]}"), blocks=blocks)


def help_message(topic: str = "finetune") -> Message:
    if topic == "ask":
        body = (
            f"*Ask a model*\n{ASK_USAGE}\n"
            + "".join(f"• `{key}=` {what}\n" for key, what in ASK_KEYS.items())
            + "• `compare` shows the base model's answer next to the fine-tuned one\n"
            "An answer cut at the token or time limit says so.\n"
            "In a job's thread, mention me (`@ftbot question`) to ask that job's model."
        )
        return Message(text="How to use /ask", blocks=[section(body)])
    body = (
        "*Fine-tune a model on your examples*\n"
        "1. Upload a `.jsonl` file of chat examples here; I check it and reply in its thread.\n"
        "2. Press *Start fine-tuning*, or type " + FINETUNE_USAGE + ".\n"
        "3. Follow the job in its thread: estimate, baseline, progress, chart, evaluation, verdict.\n"
        "4. `/ask your question` uses the channel's current model: the latest fine-tune that was not "
        "worse than its baseline, unless someone chose another.\n"
        "5. `/finetune models` lists the models and says who chose the current one; "
        "`/finetune use MODEL_ID` makes any of them the channel's model, `/finetune use base` the base "
        "model alone, `/finetune use auto` goes back to the latest promoted fine-tune. While someone's "
        "choice stands, new fine-tunes do not replace it. Changes are announced in the channel."
    )
    return Message(
        text="How to use /finetune", blocks=[section(body), section("*Options*\n" + accepted_finetune_keys())]
    )


def error(text: str) -> Message:
    """A private error: what went wrong and what to do. ``text`` must hold no secret; it is
    escaped here (it can quote what the user typed)."""
    return Message(text=escape(text), blocks=[section(f":warning: {escape(text)}")])


# ---------------------------------------------------------------------------------------------
# terminal rendering


def to_plain(message: Message) -> str:
    """Render ``message.blocks`` as terminal text (what the console prints)."""
    out: list[str] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "header":
            title = block["text"]["text"]
            out += [title, "=" * min(len(title), 60)]
        elif kind == "section":
            if block.get("text"):
                out.append(plain(block["text"]["text"]))
            accessory = block.get("accessory") or {}
            if accessory.get("action_id") == ACTION_USE:
                out.append(f"  → use it with: /finetune use {accessory['value']}")
            for f in block.get("fields") or []:
                label, _, value = plain(f["text"]).partition("\n")
                out.append(f"  {label}: {value.replace(chr(10), ' · ')}" if value else f"  {label}")
        elif kind == "context":
            out.append("  (" + " ".join(plain(e.get("text", "")) for e in block["elements"]) + ")")
        elif kind == "actions":
            for el in block.get("elements") or []:
                if el.get("action_id") == ACTION_START:
                    out.append(f"  → start it with: /finetune {el['value'][:12]}")
                elif el.get("action_id") == ACTION_CANCEL:
                    out.append(f"  → cancel with: /cancel {el['value']}")
                elif el.get("action_id") == ACTION_CONFIRM:
                    out.append(f"  → confirm with: /confirm {el['value']}")
    return "\n".join(line for line in out if line is not None)
