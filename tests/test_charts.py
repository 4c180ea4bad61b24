"""engine/charts.py: the PNGs are written, sized as designed, survive odd input, and show what a
team lead needs: readable scales, values on the bars, the constant answer, nothing clipped."""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import pytest

from engine.charts import (
    LOSS_AXIS,
    STEP_AXIS,
    cut_axis,
    eval_chart,
    eval_figure,
    loss_chart,
    loss_figure,
)
from engine.evaluate import build_report
from engine.progress import ProgressEvent


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def training_events(steps: int = 60) -> list[ProgressEvent]:
    rng = random.Random(0)
    events = [ProgressEvent("j", "state", data={"state": "training"})]
    for s in range(1, steps + 1):
        events.append(
            ProgressEvent(
                "j",
                "step",
                step=s,
                total=steps,
                metrics={
                    "loss": 2.5 * math.exp(-s / 20) + 0.3 + 0.1 * rng.random(),
                    "learning_rate": 2e-4 * min(1.0, s / 5) * (1 - s / (steps + 1)),
                },
            )
        )
        if s % 20 == 0:
            events.append(
                ProgressEvent("j", "eval", step=s, metrics={"eval_loss": 2.5 * math.exp(-s / 20) + 0.5})
            )
    return events


def test_loss_chart(tmp_path: Path) -> None:
    out = loss_chart(training_events(), tmp_path / "charts" / "loss.png")
    assert out == tmp_path / "charts" / "loss.png"
    assert png_size(out) == (880, 495)  # 8 x 4.5 inches at 110 dpi
    assert out.stat().st_size > 10_000


def test_loss_chart_without_data_or_with_odd_values(tmp_path: Path) -> None:
    assert png_size(loss_chart([], tmp_path / "empty.png")) == (880, 495)
    odd = [
        ProgressEvent("j", "step", step=1, metrics={"loss": float("nan")}),
        ProgressEvent("j", "step", step=2, metrics={"loss": 1.0}),  # no learning rate
        ProgressEvent("j", "step", metrics={"loss": 1.0}),  # no step number: ignored
        ProgressEvent("j", "eval", step=2, metrics={}),
    ]
    assert png_size(loss_chart(odd, str(tmp_path / "odd.png"))) == (880, 495)


def _report(task: str) -> dict:
    rng = random.Random(1)
    if task == "numeric":
        refs = [f"{rng.randint(10, 500)}.00" for _ in range(40)]
        preds = {
            "zero_shot": ["dunno"] * 20 + [str(float(r) + rng.randint(-90, 90)) for r in refs[20:]],
            "few_shot": [str(float(r) + rng.randint(-50, 50)) for r in refs],
            "finetuned": [str(float(r) + rng.randint(-20, 20)) for r in refs],
        }
    else:
        refs = ['{"a": 1, "b": "x"}'] * 30
        preds = {
            "zero_shot": ["no"] * 30,
            "few_shot": ['{"a": 1}'] * 30,
            "finetuned": ['{"a": 1, "b": "x"}'] * 30,
        }
    return build_report(refs, preds)


def test_eval_chart_numeric_has_the_error_panel(tmp_path: Path) -> None:
    out = eval_chart(_report("numeric"), tmp_path / "eval.png")
    assert png_size(out) == (1210, 572)  # two panels
    # A report read back from the store (JSON) draws the same.
    again = eval_chart(json.loads(json.dumps(_report("numeric"))), tmp_path / "again.png")
    assert again.read_bytes() == out.read_bytes()


def test_eval_chart_other_tasks_and_baseline_only(tmp_path: Path) -> None:
    assert png_size(eval_chart(_report("json"), tmp_path / "json.png")) == (715, 572)  # one panel
    report = _report("numeric")
    report["finetuned"] = None
    report["verdict"] = report["interval"] = None
    del report["per_example"]["finetuned"]
    assert png_size(eval_chart(report, tmp_path / "baseline.png"))[0] == 1210
    empty = build_report([], {"zero_shot": [], "finetuned": []}, task="numeric")
    assert png_size(eval_chart(empty, tmp_path / "empty.png"))[0] > 0


def test_importing_charts_does_not_load_matplotlib() -> None:
    code = "import sys, engine.charts; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_text())]


def test_one_wild_value_does_not_squash_the_others() -> None:
    # A base model answering with nine-digit numbers next to models off by tens to hundreds.
    refs = [f"{100 + 7 * i}.99" for i in range(30)]
    report = build_report(
        refs,
        {
            "zero_shot": ["933301975"] * 15 + ["12"] * 15,
            "few_shot": [f"{float(r) + 60:.2f}" for r in refs],
            "finetuned": [f"{float(r) + 20:.2f}" for r in refs],
        },
    )
    fig = eval_figure(report)
    try:
        bars, errors = fig.axes[0], fig.axes[1]
        # Linear axes from 0 (no log scale a team lead has to decode), ending near the models that
        # matter: the few-shot error (60) is not squashed by the zero-shot one (466 million).
        assert bars.get_yscale() == "linear" and errors.get_yscale() == "linear"
        low, high = bars.get_ylim()
        assert low == 0 and report["baseline"]["few_shot"]["mae"] < high < 500
        assert errors.get_ylim()[1] < 1000
        texts = _texts(fig)
        # Values on the bars, the cut one marked as off scale with its true value.
        assert "60.0" in texts and "20.0" in texts
        assert any(t.startswith("466,65") and t.endswith("(off scale)") for t in texts)
        assert any(t.startswith("15 above, up to 933,3") for t in texts)
    finally:
        plt.close(fig)


def test_the_constant_answer_is_a_dashed_line_with_its_value() -> None:
    report = _report("numeric")
    guess = report["guess"]
    fig = eval_figure(report)
    try:
        ax = fig.axes[0]
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in dashed] == pytest.approx([guess["metrics"]["mae"]])
        (legend,) = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend.startswith(f"always answering {guess['answer']!r} (no model): ")
    finally:
        plt.close(fig)


def test_the_headline_says_when_no_model_beats_the_constant_answer() -> None:
    refs = ["billing"] * 12 + ["bug"] * 8 + ["shipping"] * 6
    report = build_report(
        refs, {"zero_shot": ["zq"] * 26, "few_shot": ["zq"] * 26, "finetuned": ["billing"] * 26}
    )
    assert report["verdict"] == "improved"
    fig = eval_figure(report)
    try:
        headline = fig.get_suptitle().replace("\n", " ")
        assert "fine-tuning helped" not in headline
        assert "None of the models beats always answering 'billing'" in headline
    finally:
        plt.close(fig)


def test_parse_rates_are_written_under_the_values() -> None:
    refs = [str(100 + i) for i in range(20)]
    few = [r if i % 4 else "no idea" for i, r in enumerate(refs)]
    fig = eval_figure(build_report(refs, {"few_shot": few, "finetuned": refs}))
    try:
        assert any(t.endswith("(numbers in 75%)") for t in _texts(fig))
    finally:
        plt.close(fig)


def test_the_loss_axes_say_what_they_measure() -> None:
    fig = loss_figure(training_events(), title="Training")
    try:
        ax = fig.axes[0]
        assert ax.get_ylabel() == LOSS_AXIS and "lower = the model predicts the examples better" in LOSS_AXIS
        assert ax.get_xlabel() == STEP_AXIS and STEP_AXIS.startswith("optimizer step")
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0] == "training loss" and labels[1].startswith("eval (validation) loss")
        # Steps are whole numbers: no "2.5" tick on a run of four steps.
        short = loss_figure(training_events(4))
        try:
            fig.canvas.draw()
            short.canvas.draw()
            ticks = [
                float(t.get_text().replace("\u2212", "-"))
                for t in short.axes[0].get_xticklabels()
                if t.get_text()
            ]
            assert ticks and all(t == int(t) for t in ticks)
        finally:
            plt.close(short)
    finally:
        plt.close(fig)


def _edge_is_blank(path: Path) -> bool:
    """Nothing drawn on the outermost 2 pixels: no title, label or caption runs off the image."""
    pixels = matplotlib.image.imread(str(path))[:, :, :3]
    border = [pixels[:2, :], pixels[-2:, :], pixels[:, :2], pixels[:, -2:]]
    return all(float(part.min()) > 0.98 for part in border)


def test_nothing_is_clipped(tmp_path: Path) -> None:
    long_title = "Training ft-1234abcd on a-rather-long-dataset-name-for-testing.jsonl " * 3
    assert _edge_is_blank(loss_chart(training_events(), tmp_path / "loss.png", title=long_title))
    refs = ["billing"] * 12 + ["bug"] * 8 + ["shipping"] * 6
    labels = build_report(
        refs, {"zero_shot": ["zq"] * 26, "few_shot": ["zq"] * 26, "finetuned": ["billing"] * 26}
    )
    assert _edge_is_blank(eval_chart(labels, tmp_path / "labels.png"))
    assert _edge_is_blank(eval_chart(_report("numeric"), tmp_path / "numeric.png"))


def test_cut_axis() -> None:
    assert cut_axis([10, 12, 15]) is None  # nothing off scale: the axis fits them all
    assert cut_axis([1000, 150, 130]) is None  # under 10x: a readable linear axis
    assert cut_axis([2000, 150, 130]) == pytest.approx(150 * 1.6)
    assert cut_axis([10**9, 10**6, 100]) == pytest.approx(160)  # two wild ones
    assert cut_axis([5]) is None and cut_axis([]) is None and cut_axis([0, 0]) is None
