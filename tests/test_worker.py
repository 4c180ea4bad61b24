"""The real worker (``python -m engine.worker``) on builtin:tiny: the whole pipeline through the
CLI, cancel mid-training, and a killed worker resumed from its checkpoint after a restart."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import evaluate
from engine.jobs import JobState
from engine.paths import latest_checkpoint
from engine.progress import CallbackSink, ListSink, ProgressEvent, TeeSink
from engine.service import Engine
from engine.settings import Settings
from engine.workers import pid_alive
from tests.contract import RUN_JSON_KEYS
from tests.fakes.datasets import write_price_dataset as write_dataset
from tests.fakes.waiting import wait_for


def test_run_refuses_bad_options_with_a_clear_message(settings: Settings, tmp_path: Path) -> None:
    from bot.cli import main

    data = write_dataset(tmp_path / "prices.jsonl")
    result = CliRunner().invoke(
        main,
        ["run", str(data), "--lr", "abc", "--lora-r", "0", "--json"],
        env={"FTBOT_HOME": str(settings.home)},
    )
    assert result.exit_code == 1
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == "error" and "lr" in out["error"] and "r:" in out["error"]
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(
        main, ["run", str(tmp_path / "nope.jsonl")], env={"FTBOT_HOME": str(settings.home)}
    )
    assert missing.exit_code == 1 and "does not exist" in missing.output


@pytest.mark.slow
def test_ftbot_run_json_contract_and_predictions_agree(settings: Settings, tmp_path: Path) -> None:
    from bot.cli import main

    data = write_dataset(tmp_path / "prices.jsonl", n=40)
    result = CliRunner().invoke(
        main,
        ["run", str(data), "--epochs", "2", "--json"],
        env={"FTBOT_HOME": str(settings.home), "OMP_NUM_THREADS": "1"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) >= RUN_JSON_KEYS
    assert summary["status"] == "succeeded" and summary["backend"] == "local"
    assert summary["base_model"] == "builtin:tiny"
    assert summary["task"] == "numeric" and summary["metric"] == "mae"
    assert summary["verdict"] in evaluate.VERDICTS
    for model in (summary["baseline"]["zero_shot"], summary["baseline"]["few_shot"], summary["finetuned"]):
        assert "mae" in model and "parse_rate" in model
    assert "[training]" in result.stderr and "step" in result.stderr  # progress went to stderr

    lines = [json.loads(line) for line in Path(summary["predictions"]).read_text().splitlines()]
    assert len(lines) == 10  # the deterministic 10% split, at least 10 examples
    for line in lines:
        assert {"prompt", "reference", "zero_shot", "few_shot", "finetuned"} <= set(line)
    again = evaluate.build_report(
        [x["reference"] for x in lines],
        {name: [x[name] for x in lines] for name in ("zero_shot", "few_shot", "finetuned")},
        task=summary["task"],
    )
    assert again["baseline"]["zero_shot"] == summary["baseline"]["zero_shot"]
    assert again["baseline"]["few_shot"] == summary["baseline"]["few_shot"]
    assert again["finetuned"] == summary["finetuned"]
    assert again["verdict"] == summary["verdict"]

    with Engine(settings) as engine:
        job = engine.job(summary["job_id"])
        assert (
            job.result["eval_split"]["source"] == "holdout"
            and job.result["eval_split"]["eval_examples"] == 10
        )
        assert job.result["versions"]["torch"]
        model = engine.model(summary["model_id"], team="")
        assert (model.path / "adapter_config.json").exists()
        assert model.path == settings.models_dir / job.id
        assert not (settings.runs_dir / job.id / "train" / "checkpoints").exists()  # only needed to resume
        assert model.verdict == summary["verdict"]
        assert model.system_prompt and "price" in model.system_prompt
        # Promoted only when not worse AND it learned something (engine.evaluate.promotion_decision).
        promoted = summary["verdict"] != "worse" and not job.result["promotion_reasons"]
        assert job.result["promoted"] is promoted
        assert (engine.current_model("", "") is not None) is promoted
        kinds = [e.kind for e in engine.events(job.id)]
        assert kinds.index("baseline") < kinds.index("step") < kinds.index("evaluation")
        assert "preflight" in kinds and "artifact" in kinds
        assert engine.evaluation(job.id)["verdict"] == summary["verdict"]
        # The registered model answers through the engine's model server.
        answer = engine.ask("used lamp number 7", model=summary["model_id"], team="", channel="")
        assert isinstance(answer.text, str) and answer.model == summary["model_id"]
        base, tuned = engine.ask("used lamp number 7", model=summary["model_id"], team="", compare=True)
        assert base.adapter is None and tuned.adapter is not None


@pytest.mark.slow
def test_eval_file_and_leakage(settings: Settings, tmp_path: Path) -> None:
    train = write_dataset(tmp_path / "train.jsonl", n=30)
    lines = train.read_text().splitlines()
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(lines[:12]) + "\n")  # all 12 also appear in training: leakage
    with Engine(settings) as engine:
        a = engine.add_dataset(train, team="T", channel="C")
        b = engine.add_dataset(eval_file, team="T", channel="C")
        job = engine.submit(
            a.hash, options={"epochs": "1"}, owner="U", team="T", channel="C", eval_dataset_hash=b.hash
        )
        done = engine.run_job(job.id, ListSink())
        assert done.state is JobState.SUCCEEDED, done.error
        split = done.result["eval_split"]
        assert split == {**split, "source": "file", "eval_examples": 12, "leakage": 12, "train_examples": 18}
        alerts = [e for e in engine.events(job.id) if e.kind == "alert" and e.data.get("code") == "leakage"]
        assert alerts and "left out of training" in alerts[0].message


@pytest.mark.slow
def test_cancel_mid_training(settings: Settings, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "prices.jsonl")
    with Engine(settings) as engine:
        record = engine.add_dataset(data, team="T", channel="C")
        job = engine.submit(record.hash, options={"epochs": "50"}, owner="U", team="T", channel="C")
        cancelled_at: list[float] = []

        def on_event(event: ProgressEvent) -> None:
            if event.kind == "step" and not cancelled_at:
                cancelled_at.append(time.monotonic())
                engine.cancel(job.id, user="U")

        events = ListSink()
        final = engine.run_job(job.id, TeeSink(events, CallbackSink(on_event)))
        assert cancelled_at, (final.state, final.error, [e.message for e in events.events][-8:])
        stopped_in = time.monotonic() - cancelled_at[0]
        assert final.state is JobState.CANCELLED
        assert stopped_in < 10, stopped_in
        steps = [e.step for e in events.events if e.kind == "step"]
        assert steps and max(steps) < 100  # 50 epochs x 2 steps: it stopped long before the end
        assert not (settings.runs_dir / job.id / "train").exists()
        assert not (settings.models_dir / job.id).exists()
        assert engine.models("T") == []
        assert not pid_alive(final.worker_pid, job.id)


@pytest.mark.slow
def test_killed_worker_resumes_from_its_checkpoint_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "prices.jsonl")
    first = Engine(settings)
    record = first.add_dataset(data, team="T", channel="C")
    job = first.submit(record.hash, options={"epochs": "12"}, owner="U", team="T", channel="C")
    first.dispatcher.tick()
    train_dir = settings.runs_dir / job.id / "train"
    wait_for(lambda: latest_checkpoint(train_dir) is not None, timeout=120, tick=first.dispatcher.tick)
    proc = first.dispatcher.current
    assert proc is not None and first.job(job.id).state is JobState.TRAINING
    first.close()  # the bot goes away first (a restart) ...
    os.kill(proc.pid, signal.SIGKILL)  # ... and the worker dies with it
    proc.popen.wait()
    checkpoint_step = int(latest_checkpoint(train_dir).name.rpartition("-")[2])

    second = Engine(settings, scheduler_interval=0.1)
    try:
        second.start()
        wait_for(lambda: second.job(job.id).is_final, timeout=180)
        final = second.job(job.id)
        assert final.state is JobState.SUCCEEDED, final.error
        events = second.events(job.id)
        resumed = [e for e in events if e.kind == "alert" and e.data.get("code") == "resumed"]
        assert resumed, [e.message for e in events if e.kind == "alert"]
        after = [e.step for e in events if e.kind == "step" and e.seq > resumed[0].seq]
        assert after and min(after) > checkpoint_step  # training went on from the checkpoint
        assert final.result["resumes"] == 1
        assert (settings.models_dir / job.id / "adapter_config.json").exists()
    finally:
        second.close()


@pytest.mark.slow
def test_worker_can_be_run_by_hand(settings: Settings, tmp_path: Path) -> None:
    """``python -m engine.worker JOB_ID --home DIR`` on a queued job runs it to the end."""
    import subprocess
    import sys

    data = write_dataset(tmp_path / "prices.jsonl", n=24)
    with Engine(settings) as engine:
        record = engine.add_dataset(data)
        job = engine.submit(record.hash, options={"epochs": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "engine.worker", job.id, "--home", str(settings.home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Engine(settings) as engine:
        assert engine.job(job.id).state is JobState.SUCCEEDED
    bad = subprocess.run(
        [sys.executable, "-m", "engine.worker", "ft-missing", "--home", str(settings.home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "No job ft-missing" in bad.stderr


@pytest.mark.slow
def test_ctrl_c_cancels_ftbot_run(settings: Settings, tmp_path: Path) -> None:
    """The real console script: Ctrl-C during training ends the job as cancelled, exit code 1."""
    import subprocess
    import sys

    data = write_dataset(tmp_path / "prices.jsonl")
    env = {**os.environ, "FTBOT_HOME": str(settings.home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", str(data), "--epochs", "50", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "training [" in line:
            break
    assert any("training [" in line for line in seen), "".join(seen)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - interrupted < 20
    assert proc.returncode == 1, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "cancelled" and "Traceback" not in err
    with Engine(settings) as engine:
        job = engine.job(summary["job_id"])
        assert job.state is JobState.CANCELLED
        assert not pid_alive(job.worker_pid, job.id)
        assert not (settings.runs_dir / job.id / "train").exists()
