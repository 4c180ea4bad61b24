"""engine/charts.py: the PNGs are written, sized as designed, and survive odd input."""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

from engine.charts import eval_chart, loss_chart
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
    assert png_size(out) == (1210, 528)  # two panels
    # A report read back from the store (JSON) draws the same.
    again = eval_chart(json.loads(json.dumps(_report("numeric"))), tmp_path / "again.png")
    assert again.read_bytes() == out.read_bytes()


def test_eval_chart_other_tasks_and_baseline_only(tmp_path: Path) -> None:
    assert png_size(eval_chart(_report("json"), tmp_path / "json.png")) == (715, 528)  # one panel
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


def test_eval_chart_with_wild_errors_uses_log_scales(tmp_path: Path) -> None:
    # A base model answering with nine-digit numbers next to models off by a hundred.
    refs = [f"{100 + i}.99" for i in range(30)]
    report = build_report(
        refs,
        {
            "zero_shot": ["933301975"] * 15 + ["12"] * 15,
            "few_shot": ["no idea"] * 30,
            "finetuned": [".99"] * 30,
        },
    )
    out = eval_chart(report, tmp_path / "wild.png")
    assert png_size(out) == (1210, 528)
