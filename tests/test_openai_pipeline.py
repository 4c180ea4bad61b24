"""The OpenAI job pipeline end to end: the real Engine, real SQLite, the real scheduler (APScheduler
pollers every 0.05 s) and the real ``openai`` client against the fake OpenAI server.

The fine-tuner's clock and sleep are injected (file-processing waits and retry backoff take no
real time); polling itself is fast because FTBOT_OPENAI_POLL_SECONDS is small.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import main as cli
from engine.backends.openai_backend import DEFAULT_BASE_MODEL
from engine.errors import BackendUnavailable, UsageError
from engine.jobs import Job, JobState
from engine.progress import ListSink
from engine.service import Engine, job_summary
from engine.settings import Settings
from tests.contract import RUN_JSON_KEYS
from tests.fakes.clock import FakeTime
from tests.fakes.datasets import write_examples
from tests.fakes.openai_api import FakeOpenAI, Frame, metrics_event
from tests.fakes.waiting import wait_for

BASE = "gpt-4o-mini-2024-07-18"
ITEMS = ["laptop", "phone", "camera", "speaker", "watch", "monitor", "keyboard", "lamp", "tablet", "router"]
SYSTEM = "Estimate the price in USD. Answer with a number only."
WRONG = "I am not sure, maybe 1000."
# The day these tests stand on (OpenAI still creates fine-tuning jobs; see tests/test_openai_dates.py
# for either side of each shutdown date), so they do not depend on the calendar.
TODAY = date(2026, 12, 4)


def write_dataset(path: Path, n: int = 60) -> dict[str, str]:
    """A numeric task; returns question -> answer (what a perfect fine-tune answers)."""
    truth = {
        f"used {ITEMS[i % len(ITEMS)]} in condition {i}": f"{(i % len(ITEMS) + 1) * 25 + i % 7}.00"
        for i in range(n)
    }
    write_examples(path, truth.items(), system=SYSTEM)
    return truth


def answers(truth: dict[str, str]) -> Callable[[str, list[dict[str, Any]]], str]:
    """The fake's chat completions: the fine-tuned model knows the answers, the base model does not."""

    def answer(model: str, messages: list[dict[str, Any]]) -> str:
        question = str(messages[-1].get("content", ""))
        if model.startswith("ft:"):
            return truth.get(question, f"tuned: {question}")
        return WRONG if question in truth else f"base: {question}"

    return answer


@pytest.fixture
def oa_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return replace(
        settings, openai_api_key="test", openai_base_url=fake.url + "/v1", openai_poll_seconds=0.05
    )


@pytest.fixture
def truth(tmp_path: Path, fake: FakeOpenAI) -> dict[str, str]:
    known = write_dataset(tmp_path / "prices.jsonl")
    fake.answer = answers(known)
    return known


class Engines:
    """Builds engines on the fake (several, for restarts) and closes them all."""

    def __init__(self, fake: FakeOpenAI, ftime: FakeTime) -> None:
        self.fake, self.ftime = fake, ftime
        self.made: list[Engine] = []

    def __call__(self, settings: Settings, *, client: bool = True) -> Engine:
        openai_client = self.fake.client() if client else None
        engine = Engine(settings, openai_client=openai_client, scheduler_interval=0.05, throttle_seconds=0.0)
        engine.use_openai(clock=self.ftime.clock, sleep=self.ftime.sleep, today=lambda: TODAY)
        self.made.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.made:
            engine.close()


@pytest.fixture
def engines(fake: FakeOpenAI, ftime: FakeTime) -> Iterator[Engines]:
    made = Engines(fake, ftime)
    yield made
    made.close()


def submit(engine: Engine, tmp_path: Path, **options: str) -> Job:
    record = engine.add_dataset(tmp_path / "prices.jsonl", uploaded_by="U1", team="T1", channel="C1")
    assert record.usable
    return engine.submit(
        record.hash,
        options={"backend": "openai", "base_model": BASE, **options},
        owner="U1",
        team="T1",
        channel="C1",
    )


def final(engine: Engine, job_id: str, timeout: float = 30.0) -> Job:
    wait_for(lambda: engine.job(job_id).is_final, timeout, f"job {job_id} to finish")
    return engine.job(job_id)


def creates(fake: FakeOpenAI) -> int:
    return len(fake.requests_to("POST", "/v1/fine_tuning/jobs"))


def start_until_running(engines: Engines, settings: Settings, tmp_path: Path) -> tuple[Engine, Job]:
    """A started engine with a submitted job, once OpenAI says that job is running."""
    engine = engines(settings)
    engine.start()
    job = submit(engine, tmp_path)
    wait_for(
        lambda: engine.job(job.id).result.get("openai_status") == "running",
        timeout=30.0,
        what="the remote job to run",
    )
    return engine, job


# ------------------------------------------------------------------ the whole lifecycle


def test_full_lifecycle_to_success(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    engine = engines(oa_settings)
    engine.start()
    job = submit(engine, tmp_path)
    done = final(engine, job.id)

    assert done.state is JobState.SUCCEEDED, done.error
    assert done.remote_id and done.remote_id.startswith("ftjob-")
    assert done.model_id and done.model_id.startswith(f"ft:{BASE}:")
    assert creates(fake) == 1
    # The states, in order, each with its event.
    states = [e.data["state"] for e in engine.events(job.id) if e.kind == "state"]
    assert states == ["queued", "validating", "baseline", "training", "evaluating", "succeeded"]
    kinds = {e.kind for e in engine.events(job.id)}
    assert {"preflight", "baseline", "submitted", "step", "evaluation", "alert"} <= kinds
    preflight = next(e for e in engine.events(job.id) if e.kind == "preflight")
    assert preflight.data["model"] == BASE and preflight.data["usd"] is not None
    assert preflight.data["confirmation_required"] is False and preflight.data["tokens"] > 0
    steps = [e for e in engine.events(job.id) if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2] and steps[-1].metrics["loss"] == pytest.approx(0.9)

    # The uploaded training file is the training split, in OpenAI's chat format.
    upload = fake.requests_to("POST", "/v1/files")[0]
    lines = [json.loads(line) for line in upload.files["file"][1].decode().splitlines()]
    split = done.result["eval_split"]
    assert len(lines) == split["train_examples"] and len(fake.requests_to("POST", "/v1/files")) == 2
    assert all(set(line) == {"messages"} for line in lines)
    created = fake.requests_to("POST", "/v1/fine_tuning/jobs")[0].json
    assert created["metadata"] == {"ftbot_job_id": job.id} and created["model"] == BASE

    # Baseline and evaluation went through chat completions, base and fine-tuned.
    models = {r.json["model"] for r in fake.requests_to("POST", "/v1/chat/completions")}
    assert models == {BASE, done.model_id}
    summary = job_summary(done)
    assert summary["verdict"] == "improved" and summary["task"] == "numeric" and summary["metric"] == "mae"
    assert summary["finetuned"]["mae"] == pytest.approx(0.0)
    assert summary["baseline"]["zero_shot"]["mae"] > 100 and summary["baseline"]["few_shot"]["mae"] > 100
    predictions = [json.loads(line) for line in Path(summary["predictions"]).read_text().splitlines()]
    assert len(predictions) == split["eval_examples"] >= 10
    for row in predictions:
        assert {"prompt", "reference", "zero_shot", "few_shot", "finetuned"} <= set(row)
        assert row["finetuned"] == row["reference"] and row["zero_shot"] == WRONG
    assert engine.evaluation(job.id)["verdict"] == "improved"

    # Registered as an OpenAI model and promoted; /ask routes it to chat completions.
    (model,) = engine.models("T1")
    assert (model.kind, model.id, model.remote_name, model.job_id) == (
        "openai",
        done.model_id,
        done.model_id,
        job.id,
    )
    assert model.system_prompt == SYSTEM and model.path is None
    assert engine.current_model("T1", "C1").id == done.model_id
    question = next(iter(truth))
    answer = engine.ask(question, team="T1", channel="C1")
    assert answer.text == truth[question] and answer.model == done.model_id
    asked = fake.requests_to("POST", "/v1/chat/completions")[-1].json
    assert asked["messages"][0] == {"role": "system", "content": SYSTEM}
    base, tuned = engine.ask(question, model=done.model_id, team="T1", channel="C1", compare=True)
    assert (base.text, tuned.text) == (WRONG, truth[question])
    wait_for(lambda: not engine.scheduler.pollers(), 5, "the poller to go")


def test_polls_that_do_not_get_through_back_off_and_the_job_goes_on(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.fail("GET", r"/v1/fine_tuning/jobs/ftjob-[^/]+$", drop=True, times=3)  # the network drops 3 polls
    engine = engines(oa_settings)
    engine.start()
    job = submit(engine, tmp_path)
    done = final(engine, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    alerts = [
        e for e in engine.events(job.id) if e.kind == "alert" and e.data.get("code") == "connection_error"
    ]
    assert len(alerts) == 1 and "keeps running on OpenAI" in alerts[0].message
    assert any("Reached OpenAI again" in e.message for e in engine.events(job.id))
    retrieves = [
        r
        for r in fake.requests
        if r.method == "GET" and r.path.startswith("/v1/fine_tuning/jobs/ftjob-") and r.path.count("/") == 4
    ]
    assert len(retrieves) == 3 + 5  # the dropped polls, then the scripted lifecycle
    assert creates(fake) == 1


def test_a_failed_remote_job_fails_the_job_in_plain_words(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.script = [
        Frame("validating_files"),
        Frame(
            "failed",
            error={
                "code": "invalid_training_file",
                "param": "training_file",
                "message": "Line 30: the assistant message is missing.",
            },
        ),
    ]
    engine = engines(oa_settings)
    engine.start()
    done = final(engine, submit(engine, tmp_path).id)
    assert done.state is JobState.FAILED
    assert done.error.startswith("OpenAI rejected the training file: Line 30")
    assert "Look at line/example 30" in done.error
    assert done.model_id is None and engine.models("T1") == []
    # OpenAI's line 30 is a line of the training split; the message names the user's own line.
    sent = json.loads(fake.requests_to("POST", "/v1/files")[0].files["file"][1].decode().splitlines()[29])
    original = [json.loads(line) for line in (tmp_path / "prices.jsonl").read_text().splitlines()]
    line = original.index(sent) + 1
    assert line != 30  # eval examples came out of the file before it
    assert done.error.endswith(
        f"Line 30 of the training examples ftbot sent to OpenAI is line {line} of prices.jsonl.)"
    )


def test_a_job_cancelled_on_openais_side_is_cancelled(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.script = [Frame("running"), Frame("cancelled")]
    engine = engines(oa_settings)
    engine.start()
    done = final(engine, submit(engine, tmp_path).id)
    assert done.state is JobState.CANCELLED
    assert "cancelled on OpenAI's side" in done.error
    assert not fake.requests_to("POST", r"/v1/fine_tuning/jobs/.+/cancel")


def test_cancel_here_cancels_the_remote_job(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.script = [Frame("running", events=[metrics_event(1, 100, 2.0)])]  # runs until cancelled
    engine, job = start_until_running(engines, oa_settings, tmp_path)
    remote_id = engine.job(job.id).remote_id

    cancelled = engine.cancel(job.id, user="U1")
    assert cancelled.state is JobState.CANCELLED
    (request,) = fake.requests_to("POST", r"/v1/fine_tuning/jobs/.+/cancel")
    assert request.path == f"/v1/fine_tuning/jobs/{remote_id}/cancel"
    assert fake.jobs[remote_id].record["status"] == "cancelled"
    wait_for(lambda: not engine.scheduler.pollers(), 5, "the poller to go")
    assert any(e.kind == "log" and "cancelled" in e.message for e in engine.events(job.id))
    assert engine.job(job.id).state is JobState.CANCELLED


def test_a_remote_cancel_that_does_not_get_through_is_retried(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.script = [Frame("running")]
    engine, job = start_until_running(engines, oa_settings, tmp_path)
    remote_id = engine.job(job.id).remote_id
    fake.fail("POST", r"/v1/fine_tuning/jobs/.+/cancel", drop=True, times=5)  # every retry of the first try

    assert engine.cancel(job.id, user="U1").state is JobState.CANCELLED  # at once, whatever OpenAI does
    alert = next(e for e in engine.events(job.id) if e.data.get("code") == "remote_cancel_failed")
    assert remote_id in alert.message and "keeps trying" in alert.message
    wait_for(lambda: fake.jobs[remote_id].record["status"] == "cancelled", 30.0, "the remote cancel")
    wait_for(lambda: not engine.scheduler.pollers(), 5, "the poller to go")
    assert engine.job(job.id).result["remote_cancel_pending"] is False


def test_restart_mid_job_resumes_polling_without_a_second_remote_job(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    fake.script = [
        Frame("validating_files"),
        Frame("running", events=[metrics_event(1, 2, 1.5)], estimated_finish=int(time.time()) + 60),
    ]
    first, job = start_until_running(engines, oa_settings, tmp_path)
    first.close()  # the bot stops in the middle of training
    remote_id = next(iter(fake.jobs))
    fake.add_frames(remote_id, [Frame("running", events=[metrics_event(2, 2, 0.9)]), Frame("succeeded")])

    second = engines(oa_settings)
    assert second.job(job.id).state is JobState.TRAINING and second.job(job.id).remote_id == remote_id
    second.start()
    done = final(second, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert creates(fake) == 1
    assert len(fake.requests_to("POST", "/v1/files")) == 2  # nothing uploaded again
    events = second.events(job.id)
    assert any(e.data.get("code") == "resumed" for e in events)
    # The stored cursor: every remote event became exactly one of ours.
    remote_events = [e.data["remote_event_id"] for e in events if e.data.get("remote_event_id")]
    assert len(remote_events) == len(set(remote_events)) == len(fake.jobs[remote_id].events)
    assert [e.step for e in events if e.kind == "step"] == [1, 2]


def test_two_engines_on_one_home_drive_a_job_once(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    """``ftbot serve`` and ``ftbot run`` on the same FTBOT_HOME: the job's lease keeps the second
    process from driving it too."""
    fake.script = [Frame("running", events=[metrics_event(1, 2, 1.5)])]
    first, job = start_until_running(engines, oa_settings, tmp_path)
    second = engines(oa_settings)
    second.start()  # it finds the job, and leaves it to the first engine
    assert f"openai:{job.id}" in second.scheduler.pollers()
    fake.add_frames(
        next(iter(fake.jobs)), [Frame("running", events=[metrics_event(2, 2, 0.9)]), Frame("succeeded")]
    )
    done = final(first, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert creates(fake) == 1
    events = first.events(job.id)
    remote_events = [e.data["remote_event_id"] for e in events if e.data.get("remote_event_id")]
    assert len(remote_events) == len(set(remote_events))
    assert len([e for e in events if e.kind == "evaluation"]) == 1
    assert not any(e.data.get("code") == "resumed" for e in events)
    wait_for(lambda: not second.scheduler.pollers(), 5, "the second engine to let go")


def test_confirmation_above_the_threshold(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    engine = engines(replace(oa_settings, openai_confirm_usd=0.0))
    engine.start()
    job = submit(engine, tmp_path)
    assert job.state is JobState.QUEUED and job.result["awaiting_confirmation"] is True
    preflight = next(e for e in engine.events(job.id) if e.kind == "preflight")
    assert preflight.data["confirmation_required"] is True and preflight.data["cost_usd"] > 0
    time.sleep(0.4)  # several poller ticks: it waits
    assert engine.job(job.id).state is JobState.QUEUED
    assert not fake.requests_to("POST", "/v1/files") and not fake.requests_to("POST", "/v1/chat/completions")
    assert engine.queue_position(job.id) is None

    engine.confirm(job.id, user="U1")
    done = final(engine, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert creates(fake) == 1


def test_submit_problems_are_refused_before_any_job_and_say_what_to_do(
    engines: Engines, oa_settings: Settings, truth: dict[str, str], tmp_path: Path
) -> None:
    no_key = engines(replace(oa_settings, openai_api_key=None), client=False)
    with pytest.raises(BackendUnavailable, match="OPENAI_API_KEY") as refused:
        submit(no_key, tmp_path)
    assert "No OpenAI API key" in str(refused.value) and "backend=local" in str(refused.value)
    assert no_key.jobs() == []  # refused at submit: no job to fail later

    engine = engines(replace(oa_settings, home=oa_settings.home / "other"))
    with pytest.raises(UsageError, match="not an OpenAI model"):
        submit(engine, tmp_path, base_model="builtin:tiny")
    assert engine.jobs() == []
    # No base model chosen: the default OpenAI model, said so.
    job = submit(engine, tmp_path, backend="openai", base_model=BASE)
    record = engine.add_dataset(tmp_path / "prices.jsonl", team="T1", channel="C1")
    default = engine.submit(record.hash, options={"backend": "openai"}, owner="U1", team="T1", channel="C1")
    assert default.base_model == DEFAULT_BASE_MODEL and job.state is JobState.QUEUED
    assert any(DEFAULT_BASE_MODEL in e.message for e in engine.events(default.id) if e.kind == "log")


def test_run_job_drives_an_openai_job_in_the_foreground(
    engines: Engines, oa_settings: Settings, fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    """``Engine.run_job`` (the console) without the scheduler: the job runs in the calling thread."""
    engine = engines(oa_settings)
    job = submit(engine, tmp_path)
    sink = ListSink()
    done = engine.run_job(job.id, sink, poll_seconds=0.01)
    assert done.state is JobState.SUCCEEDED, done.error
    assert [e.data["state"] for e in sink.events if e.kind == "state"][-1] == "succeeded"
    assert {"preflight", "baseline", "submitted", "step", "evaluation"} <= {e.kind for e in sink.events}
    assert not engine.scheduler.running

    waiting = engines(replace(oa_settings, home=oa_settings.home / "other", openai_confirm_usd=0.0))
    job = submit(waiting, tmp_path)
    assert (
        waiting.run_job(job.id, ListSink()).result["awaiting_confirmation"] is True
    )  # returns, still queued
    waiting.confirm(job.id, user="U1")
    assert waiting.run_job(job.id, ListSink(), poll_seconds=0.01).state is JobState.SUCCEEDED


# ------------------------------------------------------------------ the CLI


def test_cli_run_with_the_openai_backend(fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path) -> None:
    env = {
        "FTBOT_HOME": str(tmp_path / "cli-home"),
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "FTBOT_OPENAI_POLL_SECONDS": "0.05",
        "FTBOT_OPENAI_CONFIRM_USD": "0",  # every job needs a confirmation: --yes gives it
    }
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(tmp_path / "prices.jsonl"),
            "--backend",
            "openai",
            "--base-model",
            BASE,
            "--yes",
            "--json",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) >= RUN_JSON_KEYS
    assert out["status"] == "succeeded" and out["backend"] == "openai" and out["base_model"] == BASE
    assert out["model_id"].startswith(f"ft:{BASE}:")
    assert out["task"] == "numeric" and out["metric"] == "mae" and out["verdict"] == "improved"
    assert set(out["baseline"]) == {"zero_shot", "few_shot"} and "mae" in out["baseline"]["zero_shot"]
    assert out["finetuned"]["mae"] == pytest.approx(0.0)
    rows = [json.loads(line) for line in Path(out["predictions"]).read_text().splitlines()]
    assert rows and all({"prompt", "reference", "zero_shot", "few_shot", "finetuned"} <= set(r) for r in rows)
    assert creates(fake) == 1
    assert "Submitted to OpenAI" in result.stderr


def test_cli_run_without_yes_stops_when_a_confirmation_is_needed(
    fake: FakeOpenAI, truth: dict[str, str], tmp_path: Path
) -> None:
    env = {
        "FTBOT_HOME": str(tmp_path / "cli-home"),
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "FTBOT_OPENAI_POLL_SECONDS": "0.05",
        "FTBOT_OPENAI_CONFIRM_USD": "0",
    }
    result = CliRunner().invoke(
        cli,
        ["run", str(tmp_path / "prices.jsonl"), "--backend", "openai", "--base-model", BASE, "--json"],
        env=env,
    )
    assert result.exit_code == 1
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == "cancelled" and out["model_id"] is None
    assert "run again with --yes" in result.stderr
    assert not fake.requests_to("POST", "/v1/files") and creates(fake) == 0
