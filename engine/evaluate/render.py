"""The report as text and Markdown (the table, the verdict, flags, flips and the scoring note)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.evaluate.formatting import _upper_first, format_metric, verdict_sentence
from engine.evaluate.names import (
    _MODEL_PHRASES,
    _SHORT_MODEL,
    _SHORT_NAMES,
    METRIC_NAMES,
    MODEL_LABELS,
    TASK_METRICS,
    _short,
)
from engine.evaluate.verdict import promotion_decision


def _table(report: Mapping[str, Any]) -> tuple[list[str], list[str], list[tuple[str, list[str]]]]:
    """The results table both renderings share: ``(metric columns, headers, rows)``; each row is
    ``(label, cells)``. The constant answer comes first, the fine-tune last; the last column says
    whether each model beats the constant answer ("yes"/"NO"; "-" without one)."""
    task, primary = report["task"], report["metric"]
    columns = [primary] + [m for m in TASK_METRICS[task] if m != primary]
    rows: list[tuple[str, Mapping[str, Any]]] = list(report["baseline"].items())
    guess = report.get("guess")
    if guess:
        rows.insert(0, ("guess", guess["metrics"]))
    if report.get("finetuned") is not None:
        rows.append(("finetuned", report["finetuned"]))
    labels = dict(MODEL_LABELS)
    if guess:
        labels["guess"] = f"Always {_short(guess['answer'], 24)!r} (constant answer, no model)"
    if isinstance(report.get("k"), int):
        labels["few_shot"] = f"Base model + {report['k']} examples (few-shot)"
    beats = report.get("beats_constant") or {}
    heads = [_SHORT_NAMES.get(m, m) for m in columns]
    if beats:
        heads.append("beats constant")
    out: list[tuple[str, list[str]]] = []
    for name, metrics in rows:
        cells = [format_metric(m, metrics.get(m)) for m in columns]
        if beats:
            cells.append("" if name == "guess" else {True: "yes", False: "NO"}.get(beats.get(name), "-"))
        out.append((labels.get(name, name), cells))
    return columns, heads, out


def render_text(report: Mapping[str, Any]) -> str:
    """A plain-text rendering: the table (with the constant-answer row and the format rates),
    the verdict sentence, flags, flips and how answers were scored."""
    task, primary = report["task"], report["metric"]
    _, heads, rows = _table(report)
    label_width = max([len("Model")] + [len(label) for label, _ in rows])
    widths = [max([len(h)] + [len(cells[k]) for _, cells in rows]) for k, h in enumerate(heads)]
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    lines = [
        f"Task: {task} · primary metric: {METRIC_NAMES.get(primary, primary)} ({direction}) · "
        f"{report['n']} eval examples",
        "",
        "  ".join(["Model".ljust(label_width)] + [h.rjust(w) for h, w in zip(heads, widths, strict=True)]),
    ]
    for label, cells in rows:
        lines.append(
            "  ".join([label.ljust(label_width)] + [c.rjust(w) for c, w in zip(cells, widths, strict=True)])
        )
    lines += ["", "Verdict: " + report.get("summary", verdict_sentence(report))]
    if report["flags"]:
        lines += ["", "Notes:"] + [f"- {f['message']}" for f in report["flags"]]
    flips = report["flips"]
    best = report.get("best_baseline")
    for key, title in (("fixed", "Fixed by the fine-tune"), ("broken", "Broken by the fine-tune")):
        if not flips[key]:
            continue
        lines += ["", f"{title} ({len(flips[key])} of {flips[f'{key}_count']}; {flips['rule']}):"]
        for item in flips[key]:
            head = f"  #{item['index'] + 1}"
            if item.get("prompt"):
                head += f" {_short(item['prompt'], 80)!r}"
            lines.append(head)
            lines.append(
                f"    expected {_short(item['reference'], 100)!r}; "
                f"{_SHORT_MODEL.get(best or '', best)} said {_short(item['baseline'], 100)!r}; "
                f"fine-tuned said {_short(item['finetuned'], 100)!r}"
            )
    lines += ["", "How answers were scored: " + scoring_text(report)]
    return "\n".join(lines)


def scoring_text(report: Mapping[str, Any]) -> str:
    """The report's scoring note plus how its constant answer was chosen."""
    text = str(report.get("scoring") or "")
    guess = report.get("guess")
    if guess:
        text += (
            f" The constant answer, {_short(guess['answer'], 60)!r}, is {guess.get('rule') or 'a typical answer'}"
            ", taken from the eval references themselves (which flatters it): a model that does not beat "
            "it by the smallest change that matters has not learned the task."
        )
    return text


#: The name ``engine`` exports (``render_text`` is too generic at the package level).
render_report = render_text


def _md_code(text: Any, limit: int = 200) -> str:
    """``text`` as inline code on one line (a backtick inside gets a longer fence)."""
    body = " ".join(_short(str(text if text is not None else ""), limit).split()) or " "
    fence = "``" if "`" in body else "`"
    return f"{fence} {body} {fence}" if fence == "``" else f"`{body}`"


def _md_text(text: Any) -> str:
    """Plain text for a Markdown paragraph or table cell: no line breaks, ``|`` and markup
    characters escaped so that answers cannot break the table or become links."""
    body = " ".join(str(text if text is not None else "").split())
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", body)


def render_markdown(
    report: Mapping[str, Any],
    *,
    job_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    promotion: Mapping[str, Any] | None = None,
    charts: Mapping[str, str] | None = None,
) -> str:
    """The report as a Markdown page (``report.md`` in the job's run directory), for people.

    Sections: a title with ``job_id``; what was compared (``base_model``, ``dataset``, task,
    primary metric and direction, eval examples); the verdict sentence; the results table (the
    constant-answer row first, every task metric including the format rate, and whether each
    model beats the constant answer); notes (the report's flags); the promotion decision and its
    reasons (``promotion``: ``{"promoted": bool, "message": str, "reasons": [str]}``, as
    ``finish_evaluation`` records it; when absent, :func:`promotion_decision` of the report);
    examples the fine-tune fixed and broke; the charts (``charts``: file name relative to the
    page -> caption, only files that exist); how answers were scored. Pure: no file access.
    """
    task, primary = report["task"], report["metric"]
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    title = "Fine-tuning report" + (f": job {job_id}" if job_id else "")
    lines = [f"# {_md_text(title)}", ""]
    facts = []
    if base_model:
        facts.append(f"- Base model: {_md_code(base_model)}")
    if dataset:
        facts.append(f"- Dataset: {_md_code(dataset)}")
    facts.append(
        f"- Task: {task}; primary metric: {METRIC_NAMES.get(primary, primary)} (`{primary}`, {direction})"
    )
    held = f"- Eval examples: {report['n']}"
    if report.get("skipped"):
        held += f" ({report['skipped']} more left out: their reference answer could not be scored)"
    facts.append(held)
    verdict = report.get("verdict")
    if verdict:
        best = report.get("best_baseline")
        facts.append(
            f"- Verdict: **{verdict}** (the fine-tuned model against {_MODEL_PHRASES.get(best, best)}, "
            "the better baseline)"
        )
    lines += [*facts, "", "## Verdict", "", _md_text(report.get("summary") or verdict_sentence(report)), ""]

    _, heads, rows = _table(report)
    lines += ["## Results", ""]
    lines.append("| Model | " + " | ".join(_md_text(h) for h in heads) + " |")
    lines.append("|---|" + "---:|" * len(heads))
    for label, cells in rows:
        lines.append("| " + _md_text(label) + " | " + " | ".join(_md_text(c) for c in cells) + " |")
    lines.append("")

    if report.get("flags"):
        lines += ["## Notes", ""] + [f"- {_md_text(f.get('message'))}" for f in report["flags"]] + [""]

    if report.get("finetuned") is not None:
        lines += ["## Promotion", ""]
        if promotion is None:
            ok, reasons = promotion_decision(report)
            promotion = {"promoted": ok, "reasons": reasons}
        promoted = bool(promotion.get("promoted"))
        lines.append(
            "**The fine-tuned model became this channel's default model.**"
            if promoted
            else "**The fine-tuned model was NOT made this channel's default model.**"
        )
        reasons = list(promotion.get("reasons") or [])
        if reasons:  # the rule refused it: the reasons, one per line (the message says the same)
            lines += ["", "Why not:"] + [f"- {_md_text(_upper_first(r))}" for r in reasons]
            if promotion.get("model_id"):
                lines += ["", f"You can still try it with {_md_code('model=' + str(promotion['model_id']))}."]
        elif promotion.get("message"):  # promoted, or held back by a user's choice
            lines += ["", _md_text(promotion["message"])]
        lines.append("")

    flips = report.get("flips") or {}
    best = report.get("best_baseline")
    for key, heading in (("fixed", "Fixed by the fine-tune"), ("broken", "Broken by the fine-tune")):
        if not flips.get(key):
            continue
        lines += [
            f"## {heading}",
            "",
            f"{len(flips[key])} of {flips[f'{key}_count']} shown; {_md_text(flips.get('rule'))}.",
            "",
        ]
        for item in flips[key]:
            prompt = f" {_md_code(item['prompt'], 120)}" if item.get("prompt") else ""
            lines.append(
                f"- #{item['index'] + 1}{prompt}: expected {_md_code(item['reference'], 100)}; "
                f"{_SHORT_MODEL.get(best or '', best)} said {_md_code(item['baseline'], 100)}; "
                f"fine-tuned said {_md_code(item['finetuned'], 100)}"
            )
        lines.append("")

    if charts:
        lines += ["## Charts", ""]
        for name, caption in charts.items():
            lines += [f"![{_md_text(caption)}]({name})", ""]

    lines += ["## How answers were scored", "", _md_text(scoring_text(report)), ""]
    return "\n".join(lines)
