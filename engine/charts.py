"""PNG charts for the job thread: training curves and the evaluation comparison.

matplotlib is imported inside the functions, with the non-interactive Agg backend, so that
``import engine`` stays fast and no display is ever needed (the bot runs headless).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.progress import ProgressEvent

_COLORS = {"zero_shot": "#9aa5b1", "few_shot": "#5b7b9a", "finetuned": "#e07b39"}
_LABELS = {
    "zero_shot": "Base model\n(zero-shot)",
    "few_shot": "Base + examples\n(few-shot)",
    "finetuned": "Fine-tuned",
}
_VERDICT_COLORS = {"improved": "#2e7d32", "worse": "#c62828", "no_significant_difference": "#555555"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_chart(events: Sequence[ProgressEvent], path: Path | str, *, title: str = "Training") -> Path:
    """Training loss and eval loss (left axis) and learning rate (right axis) against the step.

    Reads ``step`` events (metrics ``loss``, ``learning_rate``) and ``eval`` events (metric
    ``eval_loss``); other events are ignored. With no data the chart says so. Returns ``path``.
    """
    plt = _pyplot()
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        if not (loss or eval_loss or lr):
            ax.text(0.5, 0.5, "No training steps were recorded.", ha="center", va="center", fontsize=13)
            ax.set_axis_off()
        else:
            handles = []
            if loss:
                handles += ax.plot(
                    *zip(*sorted(loss), strict=True), color="#1f77b4", lw=1.6, label="training loss"
                )
            if eval_loss:
                handles += ax.plot(
                    *zip(*sorted(eval_loss), strict=True),
                    color="#d62728",
                    lw=2,
                    marker="o",
                    label="eval loss",
                )
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.grid(alpha=0.3)
            if lr:
                ax2 = ax.twinx()
                handles += ax2.plot(
                    *zip(*sorted(lr), strict=True), color="#7f7f7f", lw=1.2, ls="--", label="learning rate"
                )
                ax2.set_ylabel("learning rate", color="#555555")
                ax2.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
                ax2.set_ylim(bottom=0)
            ax.legend(handles=handles, loc="upper right", framealpha=0.9)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def eval_chart(report: Mapping[str, Any], path: Path | str) -> Path:
    """The models side by side on the report's primary metric (bars, fine-tuned highlighted, the
    verdict in the title); for numeric tasks also each model's absolute error per example (box plot
    with the points), where an answer without a number shows at its penalty. Returns ``path``.

    ``report`` is :func:`engine.evaluate.build_report`'s dict (or one loaded back from JSON).
    """
    from engine.evaluate import LOWER_IS_BETTER, METRIC_NAMES, format_interval, format_metric

    plt = _pyplot()
    metric = report["metric"]
    models: list[tuple[str, Mapping[str, Any]]] = list((report.get("baseline") or {}).items())
    if report.get("finetuned") is not None:
        models.append(("finetuned", report["finetuned"]))
    per_example = report.get("per_example") or {}
    numeric = report.get("task") == "numeric" and any(per_example.get(name) for name, _ in models)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(
        1, 2 if numeric else 1, figsize=(11 if numeric else 6.5, 4.8), dpi=110, squeeze=False
    )
    try:
        ax = axes[0][0]
        names = [name for name, _ in models]
        values = [m.get(metric) for _, m in models]
        heights = [v if _number(v) else 0.0 for v in values]
        colors = [_COLORS.get(name, "#8c8c8c") for name in names]
        guess = report.get("guess") or {}
        guess_value = (guess.get("metrics") or {}).get(metric)
        lower = metric in LOWER_IS_BETTER or metric == "mape"
        positive = [h for h in heights if h > 0] + (
            [guess_value] if _number(guess_value) and guess_value > 0 else []
        )
        # One wild model (a base model answering with a 9-digit number) would flatten every other
        # bar: switch to a log scale when the values span more than ~30x.
        log = lower and len(positive) > 1 and max(positive) / min(positive) > 30
        bars = ax.bar(range(len(names)), heights, color=colors, width=0.6)
        if log:
            ax.set_yscale("log")
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                format_metric(metric, value),
                (
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height() if bar.get_height() > 0 or not log else min(positive),
                ),
                ha="center",
                va="bottom",
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=11,
            )
        ax.set_xticks(range(len(names)), [_LABELS.get(n, n) for n in names])
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} ({better})")
        if not lower:
            ax.set_ylim(0, 1.12)
            ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        elif log:
            ax.set_ylim(min(positive) / 3, max(positive) * 4)
            ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} ({better}, log scale)")
        else:
            ax.set_ylim(0, max(positive or [1.0]) * 1.15)
        if _number(guess_value):
            line = ax.axhline(guess_value, color="#333333", ls="--", lw=1.2, zorder=3)
            answer = textwrap.shorten(str(guess.get("answer")), 16, placeholder="…")
            ax.legend(
                [line],
                [f"always answering {answer!r} (no model): {format_metric(metric, guess_value)}"],
                loc="best",
                fontsize=9,
                framealpha=0.9,
            )
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(f"{METRIC_NAMES.get(metric, metric).capitalize()} on {report.get('n', 0)} eval examples")

        if numeric:
            ax2 = axes[0][1]
            data = [list(per_example.get(name) or []) for name in names]
            positions = [i for i, d in enumerate(data) if d]
            box = ax2.boxplot(
                [data[i] for i in positions],
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
                xs = [i + jitter.uniform(-0.18, 0.18) for _ in data[i]]
                ax2.scatter(xs, data[i], s=10, color=_COLORS.get(names[i], "#8c8c8c"), alpha=0.8, zorder=3)
            ax2.set_xticks(range(len(names)), [_LABELS.get(n, n) for n in names])
            ax2.set_xlim(-0.6, len(names) - 0.4)
            ax2.set_ylabel("absolute error per example")
            errors = sorted(e for d in data for e in d if e > 0)
            if errors:
                ax2.set_ylim(0, errors[-1] * 1.08)
            if errors and errors[-1] / errors[len(errors) // 2] > 30:
                # Linear near zero, logarithmic beyond the typical error: the outliers stay visible
                # without squashing everything else onto the axis.
                ax2.set_yscale("symlog", linthresh=errors[len(errors) // 2])
                ax2.set_ylim(0, errors[-1] * 3)
                ax2.set_ylabel("absolute error per example (log scale)")
            ax2.set_title("Error per example (lower is better)")
            ax2.grid(axis="y", alpha=0.3)
            ax2.set_axisbelow(True)

        verdict = report.get("verdict")
        headline = {
            "improved": "Verdict: fine-tuning helped",
            "worse": "Verdict: fine-tuning made it worse",
            "no_significant_difference": "Verdict: no clear difference",
        }.get(verdict or "", "Baseline results")
        if not report.get("n"):
            headline = "No eval examples to compare"
        fig.suptitle(
            headline, fontsize=14, fontweight="bold", color=_VERDICT_COLORS.get(verdict or "", "#333333")
        )
        interval = report.get("interval")
        if interval:
            note = (
                f"{round(100 * interval['confidence'])}% range for the change vs "
                f"{interval['compared'][1].replace('_', '-')}: "
                f"{format_interval(metric, interval['low'], interval['high'])}"
            )
            smallest = interval.get("min_effect") or 0.0
            if abs(interval.get("mean_difference", 0.0)) < smallest:
                note += f" (smaller than the {format_metric(metric, smallest)} that would matter)"
            fig.text(
                0.5, 0.01, textwrap.shorten(note, 140), ha="center", va="bottom", fontsize=9, color="#444444"
            )
        fig.tight_layout(rect=(0, 0.04, 1, 0.95))
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
