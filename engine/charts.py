"""PNG charts for the job thread and report.md: training curves and the evaluation comparison.

Made for a team lead, not an ML engineer: every axis says what it measures and which way is
better, values are written on the bars, the constant-answer reference (always giving the typical
answer, no model) is drawn as a dashed line, one huge value never squashes the others (its bar is
cut and labelled "off scale"), and long titles and notes are wrapped, never clipped (matplotlib's
constrained layout places them).

matplotlib is imported inside the functions, with the non-interactive Agg backend, so that
``import engine`` stays fast and no display is ever needed (the bot runs headless).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.evaluate import LOWER_IS_BETTER, METRIC_NAMES, format_interval, format_metric, format_note
from engine.progress import ProgressEvent

_COLORS = {"zero_shot": "#9aa5b1", "few_shot": "#5b7b9a", "finetuned": "#e07b39"}
_LABELS = {
    "zero_shot": "Base model\n(zero-shot)",
    "few_shot": "Base model\n+ examples\n(few-shot)",
    "finetuned": "Fine-tuned",
}
_VERDICT_COLORS = {"improved": "#2e7d32", "worse": "#c62828", "no_significant_difference": "#555555"}
_CONSTANT_COLOR = "#333333"

#: A bar more than this many times the next largest value (bars and constant answer) is cut: below
#: that, a linear axis from 0 keeps the smaller bars readable (at least a tenth of the height).
OFF_SCALE_RATIO = 10.0
#: Where the axis of a cut chart ends, as a multiple of the largest value that is not cut.
OFF_SCALE_TOP = 1.6

LOSS_AXIS = "training loss and eval loss\n(lower = the model predicts the examples better)"
STEP_AXIS = "optimizer step (one update of the model's weights)"
LOSS_NOTE = (
    "The blue line is measured on the examples the model trains on, the red points on held-out "
    "examples it never trains on. Both should go down; if the red rises while the blue keeps "
    "falling, the model is memorising its examples (overfitting)."
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _wrap(text: str, width: int) -> str:
    """``text`` wrapped to lines of at most ``width`` characters (existing line breaks kept)."""
    return "\n".join(textwrap.fill(line, width) if line else "" for line in text.split("\n"))


def loss_chart(events: Sequence[ProgressEvent], path: Path | str, *, title: str = "Training") -> Path:
    """Draw :func:`loss_figure` to the PNG file ``path`` (its folder is created). Returns ``path``."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = loss_figure(events, title=title)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def loss_figure(events: Sequence[ProgressEvent], *, title: str = "Training") -> Any:
    """Training loss and eval (validation) loss (left axis) and learning rate (right axis, light)
    against the optimizer step, with a note on how to read them. Returns ``path``.

    Reads ``step`` events (metrics ``loss``, ``learning_rate``) and ``eval`` events (metric
    ``eval_loss``); other events, events without a step and non-numbers (NaN) are ignored. The
    lowest eval loss is marked when the eval loss rose after it. With no data the chart says so.
    The figure is 8 x 4.5 inches at 110 dpi (880 x 495 pixels) whatever the data; the caller
    closes it (``matplotlib.pyplot.close``).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    loss: list[tuple[int, float]] = []
    eval_loss: list[tuple[int, float]] = []
    lr: list[tuple[int, float]] = []
    for event in events:
        if event.step is None:
            continue
        metrics = event.metrics or {}
        if event.kind == "step":
            if _number(metrics.get("loss")):
                loss.append((event.step, float(metrics["loss"])))
            if _number(metrics.get("learning_rate")):
                lr.append((event.step, float(metrics["learning_rate"])))
        elif event.kind == "eval" and _number(metrics.get("eval_loss")):
            eval_loss.append((event.step, float(metrics["eval_loss"])))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110, layout="constrained")
    try:
        if not (loss or eval_loss or lr):
            ax.text(0.5, 0.5, "No training steps were recorded.", ha="center", va="center", fontsize=13)
            ax.set_axis_off()
        else:
            handles = []
            if loss:
                handles += ax.plot(
                    *zip(*sorted(loss), strict=True),
                    color="#1f77b4",
                    lw=1.8,
                    label="training loss",
                    zorder=3,
                )
            if eval_loss:
                points = sorted(eval_loss)
                handles += ax.plot(
                    *zip(*points, strict=True),
                    color="#d62728",
                    lw=2,
                    marker="o",
                    label="eval (validation) loss, held-out examples",
                    zorder=4,
                )
                low = min(points, key=lambda p: (p[1], p[0]))
                if low != points[-1]:  # it rose after its lowest point: worth pointing at
                    ax.annotate(
                        f"lowest eval loss {low[1]:.3g} (step {low[0]});\nit rose after that",
                        low,
                        xytext=(0, 14),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        color="#d62728",
                        zorder=5,
                    )
            ax.set_xlabel(STEP_AXIS)
            ax.set_ylabel(LOSS_AXIS)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if lr:
                ax2 = ax.twinx()
                handles += ax2.plot(
                    *zip(*sorted(lr), strict=True),
                    color="#9a9a9a",
                    lw=1.1,
                    ls="--",
                    label="learning rate (right axis)",
                    zorder=1,
                )
                ax2.set_ylabel("learning rate", color="#777777")
                ax2.tick_params(axis="y", colors="#777777")
                ax2.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
                ax2.set_ylim(bottom=0)
            ax.legend(handles=handles, loc="upper right", framealpha=0.9, fontsize=8)
            fig.supxlabel(_wrap(LOSS_NOTE, 130), fontsize=8, color="#444444")
        ax.set_title(_wrap(title, 80))
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def cut_axis(values: Sequence[float]) -> float | None:
    """Where a bar chart of non-negative ``values`` should end so that one huge value does not
    squash the others: ``OFF_SCALE_TOP`` times the largest value that is not off scale, or None
    when nothing is off scale (no value above ``OFF_SCALE_RATIO`` times the next largest)."""
    ordered = sorted((v for v in values if _number(v) and v > 0), reverse=True)
    kept = ordered
    while len(kept) > 1 and kept[0] > OFF_SCALE_RATIO * kept[1]:
        kept = kept[1:]
    if len(kept) == len(ordered) or not kept:
        return None
    return kept[0] * OFF_SCALE_TOP


def eval_chart(report: Mapping[str, Any], path: Path | str) -> Path:
    """Draw :func:`eval_figure` to the PNG file ``path`` (its folder is created). Returns ``path``."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = eval_figure(report)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def eval_figure(report: Mapping[str, Any]) -> Any:
    """The models side by side on the report's primary metric, and for numeric tasks each model's
    error on every example, as a matplotlib figure that the caller closes.

    Left: one bar per model (fine-tuned highlighted), its value written on it, with the share of
    answers in the right format under it when below 100% ("numbers in 85%"); the constant answer
    (``report["guess"]``) as a dashed line; the axis starts at 0 (shares: 0-100%), and a value
    more than ``OFF_SCALE_RATIO`` times the next one is cut at the top and labelled "off scale"
    instead of squashing the rest. Right (numeric tasks): each example's absolute error (box and
    points) on a linear axis that ends near the largest typical error; points beyond it sit on the
    top edge as triangles, counted. The title gives the verdict (and says when no model beats the
    constant answer); the note under the chart gives the confidence range. Long text is wrapped.
    The image is 11 x 5.2 inches at 110 dpi with the error panel (1210 x 572 pixels), 6.5 x 5.2
    without (715 x 572).

    ``report`` is :func:`engine.evaluate.build_report`'s dict (or one loaded back from JSON; keys
    it lacks are skipped).
    """
    plt = _pyplot()
    models: list[tuple[str, Mapping[str, Any]]] = list((report.get("baseline") or {}).items())
    if report.get("finetuned") is not None:
        models.append(("finetuned", report["finetuned"]))
    per_example = report.get("per_example") or {}
    numeric = report.get("task") == "numeric" and any(per_example.get(name) for name, _ in models)
    width = 11 if numeric else 6.5
    fig, axes = plt.subplots(
        1, 2 if numeric else 1, figsize=(width, 5.2), dpi=110, squeeze=False, layout="constrained"
    )
    wrap = 120 if numeric else 80
    try:
        _metric_panel(axes[0][0], report, models, numeric=numeric)
        guess = report.get("guess") or {}
        if numeric:
            names = [name for name, _ in models]
            scale = (guess.get("metrics") or {}).get("max_ae")
            _error_panel(axes[0][1], names, per_example, scale=float(scale) if _number(scale) else None)
        headline, color = _headline(report)
        fig.suptitle(_wrap(headline, wrap - 25), fontsize=13, fontweight="bold", color=color)
        note = _interval_note(report)
        if note:
            fig.supxlabel(_wrap(note, wrap + 20), fontsize=9, color="#444444")
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _metric_panel(
    ax: Any, report: Mapping[str, Any], models: Sequence[tuple[str, Mapping[str, Any]]], *, numeric: bool
) -> None:
    """One bar per model on the primary metric, the constant answer as a dashed line, off-scale
    values cut (see :func:`eval_figure`)."""
    metric = report["metric"]
    names = [name for name, _ in models]
    values = [m.get(metric) for _, m in models]
    heights = [float(v) if _number(v) else 0.0 for v in values]
    colors = [_COLORS.get(name, "#8c8c8c") for name in names]
    guess = report.get("guess") or {}
    guess_value = (guess.get("metrics") or {}).get(metric)
    lower = metric in LOWER_IS_BETTER
    better = "lower is better" if lower else "higher is better"
    name = METRIC_NAMES.get(metric, metric)
    top = None
    if lower:
        top = cut_axis(heights + ([float(guess_value)] if _number(guess_value) else []))
        biggest = max(heights + ([float(guess_value)] if _number(guess_value) else []) + [0.0])
        ax.set_ylim(0, top if top is not None else (biggest * 1.25 or 1.0))
    else:
        ax.set_ylim(0, 1.18)
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%" if v <= 1.0001 else "")
    shown = [min(h, top) if top is not None else h for h in heights]
    bars = ax.bar(range(len(names)), shown, color=colors, width=0.6, zorder=2)
    for bar, value, metrics, height in zip(bars, values, (m for _, m in models), heights, strict=True):
        label = format_metric(metric, value)
        note = format_note(report, metrics)
        if note:
            label += "\n(" + note.replace(" of answers", "") + ")"
        x = bar.get_x() + bar.get_width() / 2
        if top is not None and height > top:
            # Cut: a white break across the bar near the top, and the true value on it.
            for y in (0.9, 0.93):
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [top * y, top * (y + 0.015)],
                        color="white", lw=2.5, zorder=3)  # fmt: skip
            ax.text(x, top * 0.84, label + "\n(off scale)", ha="center", va="top", fontsize=9, zorder=4,
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#999999", "alpha": 0.95})  # fmt: skip
        else:
            ax.annotate(label, (x, bar.get_height()), ha="center", va="bottom", xytext=(0, 3),
                        textcoords="offset points", fontsize=10, zorder=4)  # fmt: skip
    ax.set_xticks(range(len(names)), [_LABELS.get(n, n) for n in names])
    ax.set_ylabel(f"{name}\n({better})")
    if _number(guess_value):
        above = top is not None and guess_value > top  # the constant answer itself off scale
        line = ax.axhline(min(guess_value, top or guess_value), color=_CONSTANT_COLOR, ls="--", lw=1.4,
                          zorder=5)  # fmt: skip
        answer = textwrap.shorten(str(guess.get("answer")), 24, placeholder="…")
        text = f"always answering {answer!r} (no model): {format_metric(metric, guess_value)}"
        ax.legend(
            [line],
            [_wrap(text + (" (off scale)" if above else ""), 48 if numeric else 60)],
            loc="upper left" if not lower else "upper right",
            fontsize=8,
            framealpha=0.95,
        )
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(_wrap(f"{name.capitalize()} on {report.get('n', 0)} eval examples ({better})", 60))


def _headline(report: Mapping[str, Any]) -> tuple[str, str]:
    """The chart's title and its colour: the verdict, never better than the constant answer allows."""
    guess = report.get("guess") or {}
    verdict = report.get("verdict")
    headline = {
        "improved": "Verdict: fine-tuning helped",
        "worse": "Verdict: fine-tuning made it worse",
        "no_significant_difference": "Verdict: no clear difference",
    }.get(verdict or "", "Baseline results")
    beats = report.get("beats_constant") or {}
    color = _VERDICT_COLORS.get(verdict or "", "#333333")
    if beats and verdict == "improved" and beats.get("finetuned") is False:
        headline = "Verdict: better than the baselines, but not than a constant answer"
        color = _VERDICT_COLORS["no_significant_difference"]
    if beats and not any(beats.values()) and guess:
        answer = textwrap.shorten(str(guess.get("answer")), 30, placeholder="…")
        headline += f"\nNone of the models beats always answering {answer!r}"
    if not report.get("n"):
        headline = "No eval examples to compare"
    return headline, color


def _interval_note(report: Mapping[str, Any]) -> str | None:
    """The line under the chart: the confidence range of the change (None without one)."""
    interval = report.get("interval")
    if not interval:
        return None
    metric = report["metric"]
    note = (
        f"{round(100 * interval['confidence'])}% confidence range for the change, fine-tuned vs "
        f"{str(interval['compared'][1]).replace('_', '-')}: "
        f"{format_interval(metric, interval['low'], interval['high'])}"
    )
    smallest = interval.get("min_effect") or 0.0
    if abs(interval.get("mean_difference", 0.0)) < smallest:
        note += f" (smaller than the {format_metric(metric, smallest)} that would matter)"
    return note


def _error_panel(
    ax: Any, names: Sequence[str], per_example: Mapping[str, Any], *, scale: float | None
) -> None:
    """Each example's absolute error per model: a box (middle half of the examples) and the
    points, on a linear axis; errors far beyond the task's scale sit on the top edge as
    triangles, with their count. ``scale``: the constant answer's worst error (what always
    giving the typical answer costs at most), else the median error is the scale."""
    data = [[float(e) for e in (per_example.get(name) or []) if _number(e)] for name in names]
    positions = [i for i, d in enumerate(data) if d]
    errors = sorted(e for d in data for e in d)
    cap = None
    if errors:
        # The axis ends a little above the largest error within 3x the task's scale; a base
        # model answering nine-digit numbers is drawn on the edge and counted, not stretching it.
        limit = 3 * max(scale or 0.0, errors[len(errors) // 2])
        kept = [e for e in errors if e <= limit] or errors
        cap = kept[-1] * 1.12 or 1.0
    if positions:
        box = ax.boxplot(
            [[min(e, cap) if cap else e for e in data[i]] for i in positions],
            positions=positions,
            widths=0.5,
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for patch, i in zip(box["boxes"], positions, strict=True):
            patch.set_facecolor(_COLORS.get(names[i], "#8c8c8c"))
            patch.set_alpha(0.45)
    jitter = random.Random(0)  # fixed jitter: the same report draws the same chart
    for i in positions:
        color = _COLORS.get(names[i], "#8c8c8c")
        inside = [e for e in data[i] if cap is None or e <= cap]
        outside = [e for e in data[i] if cap is not None and e > cap]
        ax.scatter([i + jitter.uniform(-0.18, 0.18) for _ in inside], inside, s=12, color=color, alpha=0.8,
                   zorder=3)  # fmt: skip
        if outside and cap is not None:
            ax.scatter([i + jitter.uniform(-0.18, 0.18) for _ in outside], [cap * 0.985] * len(outside),
                       s=30, marker="^", color=color, edgecolor="black", lw=0.5, zorder=4)  # fmt: skip
            ax.annotate(f"{len(outside)} above, up to {max(outside):,.0f}", (i, cap), xytext=(0, -14),
                        textcoords="offset points", ha="center", va="top", fontsize=8, zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
    ax.set_xticks(range(len(names)), [_LABELS.get(n, n) for n in names])
    ax.set_xlim(-0.6, len(names) - 0.4)
    if cap:
        ax.set_ylim(0, cap)
    ax.set_ylabel("absolute error on each example\n(lower is better)")
    ax.set_title("Error on each example\n(box: the middle half of the examples)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
