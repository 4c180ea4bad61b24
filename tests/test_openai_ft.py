"""The OpenAI backend against a fake OpenAI server, through the real ``openai`` client.

Time is injected (a fake clock whose sleep only moves the clock), so polling, backoff and file
processing waits take no real time.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.backends.openai_client import make_client
from engine.backends.openai_costs import (
    ESTIMATED_COUNTER,
    TokenCounter,
    count_example_tokens,
    default_epochs,
    default_token_counter,
    training_price,
)
from engine.backends.openai_dates import FINE_TUNING_CLOSED
from engine.backends.openai_errors import describe_job_error
from engine.backends.openai_events import poll_delay
from engine.backends.openai_models import (
    job_suffix,
    looks_like_openai_model,
    model_family,
    normalise_hyperparameters,
)
from engine.backends.openai_tuner import OpenAIFineTuner
from engine.errors import BackendUnavailable, RemoteError, UsageError
from engine.progress import ListSink
from engine.settings import Settings
from tests.fakes.clock import FakeTime
from tests.fakes.datasets import chat_example
from tests.fakes.openai_api import FakeOpenAI, Frame, metrics_event, success_script

BASE = "gpt-4o-mini-2024-07-18"
JOB = "ft-1234abcd"


@pytest.fixture
def settings(tmp_path: Path, fake: FakeOpenAI) -> Settings:
    return Settings(
        home=tmp_path, openai_api_key="test", openai_base_url=fake.url + "/v1", openai_poll_seconds=30.0
    )


@pytest.fixture
def tuner(fake: FakeOpenAI, settings: Settings, ftime: FakeTime) -> OpenAIFineTuner:
    return OpenAIFineTuner(
        fake.client(), settings=settings, clock=ftime.clock, sleep=ftime.sleep, file_poll_seconds=1.0
    )


def example(question: str, answer: str) -> dict:
    return chat_example(question, answer, system="Answer with a price.")


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    # CRLF line ends, non-ASCII text and no final newline: the upload must keep every byte.
    lines = [
        json.dumps(example(f"Price of item {i} — «café»?", f"{i}.99"), ensure_ascii=False) for i in range(12)
    ]
    path = tmp_path / "train.jsonl"
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    return path


@pytest.fixture
def eval_file(tmp_path: Path) -> Path:
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(example(f"Price of thing {i}?", f"{i}.50")) + "\n" for i in range(3)))
    return path


def fail_create(fake: FakeOpenAI, **failure: Any) -> None:
    """Make creating a fine-tuning job (POST /v1/fine_tuning/jobs) fail as ``failure`` says
    (the arguments of :meth:`FakeOpenAI.fail`)."""
    fake.fail("POST", "/v1/fine_tuning/jobs$", **failure)


def start_error(tuner: OpenAIFineTuner, train_file: Path) -> RemoteError:
    """The RemoteError that starting the job raises (the test fails when it raises none)."""
    with pytest.raises(RemoteError) as info:
        tuner.start(JOB, train_file, model=BASE)
    return info.value


# ---- client and settings ------------------------------------------------------------------------


def test_make_client_without_a_key_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        make_client(Settings(home=tmp_path))
    assert "OPENAI_API_KEY" in str(info.value)


def test_make_client_uses_the_settings_key_and_url(
    settings: Settings, fake: FakeOpenAI, ftime: FakeTime
) -> None:
    tuner = OpenAIFineTuner(make_client(settings), settings=settings, clock=ftime.clock, sleep=ftime.sleep)
    assert tuner.find_remote_job(JOB) is None
    (request,) = fake.requests
    assert request.headers["authorization"] == "Bearer test"
    assert request.query == {"metadata[ftbot_job_id]": JOB, "limit": "10"}


# ---- start ------------------------------------------------------------------------------------


def test_start_uploads_exact_bytes_and_creates_the_job(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path, eval_file: Path
) -> None:
    fake.file_statuses = ["uploaded", "uploaded", "processed"]  # processing takes one extra check
    sink = ListSink()
    remote = tuner.start(
        JOB,
        train_file,
        eval_file,
        model=BASE,
        seed=7,
        sink=sink,
        hyperparameters={"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "0.5"},
    )

    uploads = fake.requests_to("POST", "/v1/files")
    assert [u.form["purpose"] for u in uploads] == ["fine-tune", "fine-tune"]
    assert uploads[0].files["file"] == (f"{JOB}-train.jsonl", train_file.read_bytes())
    assert uploads[1].files["file"] == (f"{JOB}-eval.jsonl", eval_file.read_bytes())
    # It waited for OpenAI to process each file (status "uploaded", then "processed").
    assert len(fake.requests_to("GET", "/v1/files/.*")) == 4
    assert ftime.sleeps == [1.0, 1.0]

    (create,) = fake.requests_to("POST", "/v1/fine_tuning/jobs")
    train_id, eval_id = (f["id"] for f in fake.files.values())
    assert create.json == {
        "model": BASE,
        "training_file": train_id,
        "validation_file": eval_id,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}
            },
        },
        "suffix": "ftbot-ft-1234abcd",
        "metadata": {"ftbot_job_id": JOB},
        "seed": 7,
    }
    assert "hyperparameters" not in create.json  # deprecated top-level form is not used

    assert remote in fake.jobs
    submitted = [e for e in sink.events if e.kind == "submitted"]
    assert len(submitted) == 1 and submitted[0].data["remote_id"] == remote
    assert submitted[0].job_id == JOB
    assert sink.kinds() == ["log", "log", "submitted"]  # two uploads, then the remote id at once


def test_start_leaves_unset_hyperparameters_to_openai(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    tuner.start(JOB, train_file, model=BASE)
    (create,) = fake.requests_to("POST", "/v1/fine_tuning/jobs")
    assert create.json["method"] == {"type": "supervised", "supervised": {"hyperparameters": {}}}
    assert "validation_file" not in create.json and "seed" not in create.json


def test_bad_hyperparameters_are_all_reported_before_any_request(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    with pytest.raises(UsageError) as info:
        tuner.start(
            JOB,
            train_file,
            model=BASE,
            hyperparameters={"n_epochs": 0, "batch_size": 2.5, "lr": 1, "learning_rate_multiplier": "x"},
        )
    text = str(info.value)
    assert "n_epochs must be between 1 and 50" in text
    assert "batch_size must be a whole number" in text
    assert "unknown hyperparameter 'lr'" in text
    assert "learning_rate_multiplier='x' is not a number" in text
    assert fake.requests == []


def test_hyperparameter_normalisation() -> None:
    assert normalise_hyperparameters(
        {"epochs": "4", "batch_size": 8.0, "learning_rate_multiplier": "auto"}
    ) == {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": "auto"}
    assert job_suffix("ft-1234abcd") == "ftbot-ft-1234abcd"
    assert len(job_suffix("a very long job id with spaces and more")) <= 18


# ---- following a job ----------------------------------------------------------------------------


def test_scripted_lifecycle_to_success_becomes_progress_events(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path, eval_file: Path
) -> None:
    now = int(ftime.now)
    fake.script = [
        Frame("validating_files", events=[{"message": "Validating training file"}]),
        Frame("queued"),
        Frame(
            "running",
            events=[{"message": "Fine-tuning job started"}, metrics_event(1, 4, 2.0, 2.2, accuracy=0.4)],
            estimated_finish=now + 1800,
        ),
        Frame(
            "running",
            events=[metrics_event(2, 4, 1.5, accuracy=0.5), metrics_event(3, 4, 1.2)],
            checkpoints=[{"step_number": 2, "metrics": {"step": 2, "train_loss": 1.5, "valid_loss": 1.7}}],
            estimated_finish=now + 1800,
        ),
        Frame(
            "running",
            events=[
                metrics_event(4, 4, 0.9, 1.1, full_valid_loss=1.05, full_valid_mean_token_accuracy=0.7),
                {"message": "Usage policy check passed", "level": "warn"},
            ],
            estimated_finish=now + 1800,
        ),
        Frame("succeeded", events=[{"message": "The job has successfully completed"}], trained_tokens=30_000),
    ]
    remote = tuner.start(JOB, train_file, eval_file, model=BASE, hyperparameters={"n_epochs": 2})
    sink = ListSink()
    result = tuner.follow(remote, sink)

    assert result.succeeded and result.done and result.status == "succeeded"
    assert result.model_name is not None and result.model_name.startswith(f"ft:{BASE}:")
    assert result.trained_tokens == 30_000
    # The poll interval from settings, once between each of the 6 polls.
    assert ftime.sleeps[-5:] == [30.0] * 5

    steps = [e for e in sink.events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(e.total == 4 and e.job_id == JOB for e in steps)
    assert steps[0].metrics["loss"] == 2.0 and steps[0].metrics["eval_loss"] == 2.2
    assert steps[0].metrics["mean_token_accuracy"] == 0.4
    assert steps[0].epoch == pytest.approx(0.5)  # step 1 of 4 over 2 epochs
    assert 0 < steps[0].metrics["eta_seconds"] <= 1800
    assert steps[0].at is not None
    (full_eval,) = [e for e in sink.events if e.kind == "eval"]
    assert full_eval.metrics == {"eval_loss": 1.05, "eval_mean_token_accuracy": 0.7} and full_eval.step == 4

    messages = [e.message for e in sink.events]
    assert "OpenAI is validating the training files." in messages
    assert any(m.startswith("The job is queued at OpenAI") for m in messages)
    assert "OpenAI started training." in messages
    assert any(re.search(r"finish in about 2\d min", m) for m in messages)
    (checkpoint,) = [e for e in sink.events if "checkpoint" in e.data]
    assert checkpoint.step == 2 and checkpoint.data["checkpoint"].endswith(":ckpt-step-2")
    assert checkpoint.metrics["valid_loss"] == 1.7
    (warning,) = [e for e in sink.events if e.kind == "alert"]
    assert warning.message == "OpenAI: Usage policy check passed"
    final = sink.events[-1]
    assert final.kind == "log" and result.model_name in final.message
    assert final.data["trained_tokens"] == 30_000 and final.data["usd"] == pytest.approx(0.09)
    # Each OpenAI event appears once, in order, although polls overlap.
    remote_ids = [
        e.data["remote_event_id"] for e in sink.events if "remote_event_id" in e.data and e.kind != "eval"
    ]
    assert remote_ids == sorted(set(remote_ids))


def test_poll_reads_every_page_of_new_events_in_order(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fake.script = [
        Frame("running", events=[metrics_event(i, 250, 3.0 - i / 100) for i in range(1, 251)]),
        Frame("running", events=[metrics_event(251, 260, 0.4)]),
    ]
    remote = tuner.start(JOB, train_file, model=BASE)
    first = tuner.poll(remote)
    assert [e.step for e in first.events if e.kind == "step"] == list(range(1, 251))
    second = tuner.poll(remote, first.cursor)
    assert [e.step for e in second.events if e.kind == "step"] == [251]
    # A repeated poll with the same cursor finds nothing new twice (the job stays "running").
    third = tuner.poll(remote, second.cursor)
    assert [e for e in third.events if e.kind == "step"] == []


def test_failed_job_is_reported_in_plain_words(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fake.script = [
        Frame("validating_files"),
        Frame(
            "failed",
            error={
                "code": "invalid_file_format",
                "param": "training_file",
                "message": "Invalid file format. Example 7 message contains an invalid token: <|fim_suffix|>",
            },
        ),
    ]
    remote = tuner.start(JOB, train_file, model=BASE)
    sink = ListSink()
    result = tuner.follow(remote, sink)
    assert result.done and not result.succeeded and result.status == "failed"
    assert result.error_code == "invalid_file_format"
    assert result.error is not None
    assert result.error.startswith("OpenAI rejected the training file: Invalid file format. Example 7")
    assert "line/example 7" in result.error
    alert = sink.events[-1]
    assert alert.kind == "alert" and alert.message == result.error
    assert alert.data["code"] == "invalid_file_format" and alert.data["param"] == "training_file"
    assert alert.data["line"] == 7


def test_describe_job_error_cases() -> None:
    text = describe_job_error(
        "invalid_n_examples",
        "Training file has 3 example(s), but must have at least 10 examples",
        "training_file",
    )
    assert text.startswith("OpenAI needs at least 10 training examples: Training file has 3 example(s)")
    assert (
        describe_job_error("internal_error", "Something broke", None)
        == "OpenAI could not fine-tune (internal_error): Something broke."
    )
    assert (
        describe_job_error(None, None, None) == "OpenAI could not fine-tune (unknown error): no reason given."
    )


def test_job_cancelled_on_openais_side(tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path) -> None:
    fake.script = [Frame("running", events=[metrics_event(1, 10, 2.0)]), Frame("cancelled")]
    remote = tuner.start(JOB, train_file, model=BASE)
    sink = ListSink()
    result = tuner.follow(remote, sink)
    assert result.done and result.status == "cancelled" and result.error_code == "cancelled"
    assert sink.events[-1].kind == "alert" and "cancelled on OpenAI's side" in sink.events[-1].message
    # Polling a finished job again reports it done without repeating the final event.
    again = tuner.poll(remote, result.cursor)
    assert again.done and again.events == ()


def test_cancel_asks_openai_and_is_idempotent(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    remote = tuner.start(JOB, train_file, model=BASE)
    first = tuner.poll(remote)
    assert tuner.cancel(remote) == "cancelled"
    assert tuner.cancel(remote) == "cancelled"  # OpenAI answers 400 for a finished job: not an error here
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs/.*/cancel")) == 2
    result = tuner.poll(remote, first.cursor)
    assert result.done and result.status == "cancelled"


# ---- rate limits, network trouble, restarts ------------------------------------------------------


def test_429_on_create_is_retried_after_the_wait_openai_asks_for(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path
) -> None:
    fail_create(
        fake,
        status=429,
        code="rate_limit_exceeded",
        message="Rate limit reached",
        headers={"retry-after": "7"},
    )
    remote = tuner.start(JOB, train_file, model=BASE)
    assert len(fake.jobs) == 1 and remote in fake.jobs
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == 2
    assert 7.0 in ftime.sleeps


def test_429_that_never_ends_is_reported_and_files_are_cleaned_up(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path
) -> None:
    fail_create(fake, status=429, code="rate_limit_exceeded", message="Slow down", times=99)
    error = start_error(tuner, train_file)
    assert error.code == "rate_limit_exceeded"
    assert "429" in error.message and "try again" in error.message
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == 5
    assert [s for s in ftime.sleeps if s > 1] == [2.0, 4.0, 8.0, 16.0]  # backoff
    assert fake.jobs == {} and fake.files == {}  # nothing left behind on OpenAI


@pytest.mark.parametrize("after", [False, True], ids=["lost-request", "lost-answer"])
def test_a_network_error_on_create_never_makes_two_jobs(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path, after: bool
) -> None:
    # lost-answer: OpenAI created the job but the response never arrived; the retry must find it.
    fail_create(fake, drop=True, after=after)
    remote = tuner.start(JOB, train_file, model=BASE)
    assert list(fake.jobs) == [remote]
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == (1 if after else 2)


def test_create_that_keeps_failing_keeps_the_files_when_the_outcome_is_unknown(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fail_create(fake, status=503, message="Service unavailable", times=99)
    error = start_error(tuner, train_file)
    assert error.code == "server_error" and "503" in error.message
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == 5
    assert len(fake.files) == 1  # not deleted: OpenAI may have created the job with it


def test_daily_fine_tuning_limit_is_not_retried(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fail_create(
        fake,
        status=429,
        code="daily_rate_limit_exceeded",
        message=f"This organization has reached the maximum of 3 fine-tuning requests per day for the model '{BASE}'",
    )
    error = start_error(tuner, train_file)
    assert error.code == "daily_rate_limit_exceeded"
    assert "Try again tomorrow" in error.message
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == 1


def test_a_poll_that_hits_a_network_error_keeps_the_job_going(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path
) -> None:
    remote = tuner.start(JOB, train_file, model=BASE)
    first = tuner.poll(remote)
    assert first.status == "validating_files"
    fake.fail("GET", "/v1/fine_tuning/jobs/", drop=True)
    broken = tuner.poll(remote, first.cursor)
    assert broken.transient and not broken.done
    assert broken.status == "validating_files"  # the last known status
    assert broken.error_code == "connection_error" and "Could not reach OpenAI" in (broken.error or "")
    assert broken.events == ()  # one blip is not worth an alert
    back = tuner.poll(remote, broken.cursor)
    assert not back.transient and back.status == "queued"
    assert [e.message for e in back.events] == [
        "The job is queued at OpenAI (this can take minutes or hours).",
        "OpenAI: Files validated, moving job to queued state",
    ]
    # follow() rides out 5xx and dropped connections with backoff, then finishes.
    fake.fail("GET", "/v1/fine_tuning/jobs/", status=502, message="Bad gateway")
    fake.fail("GET", "/v1/fine_tuning/jobs/", drop=True)
    ftime.sleeps.clear()
    result = tuner.follow(remote, ListSink(), back.cursor)
    assert result.succeeded
    assert ftime.sleeps[:2] == [60.0, 120.0]


def test_network_trouble_that_lasts_raises_one_alert(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    remote = tuner.start(JOB, train_file, model=BASE)
    fake.fail("GET", "/v1/fine_tuning/jobs/", drop=True, times=5)
    cursor = None
    alerts = []
    for _ in range(5):
        result = tuner.poll(remote, cursor)
        assert result.transient
        cursor = result.cursor
        alerts += [e for e in result.events if e.kind == "alert"]
    assert len(alerts) == 1
    assert alerts[0].data["code"] == "connection_error" and "keeps running on OpenAI" in alerts[0].message
    assert alerts[0].job_id == remote  # no job id known yet: the remote id stands in
    back = tuner.poll(remote, cursor, job_id=JOB)
    assert (
        back.events[0].message == "Reached OpenAI again; following the job." and back.events[0].job_id == JOB
    )


def test_a_rejected_key_while_polling_alerts_once_and_does_not_fail_the_job(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path, settings: Settings, ftime: FakeTime
) -> None:
    remote = tuner.start(JOB, train_file, model=BASE)
    revoked = OpenAIFineTuner(
        fake.client("sk-revoked-secret"), settings=settings, clock=ftime.clock, sleep=ftime.sleep
    )
    first = revoked.poll(remote, job_id=JOB)
    assert first.transient and not first.done and first.error_code == "invalid_api_key"
    (alert,) = first.events
    assert alert.kind == "alert" and "OPENAI_API_KEY" in alert.message and "sk-revoked" not in alert.message
    second = revoked.poll(remote, first.cursor, job_id=JOB)
    assert second.transient and second.events == ()


def test_restart_mid_job_resumes_polling_without_a_second_job(
    fake: FakeOpenAI, settings: Settings, ftime: FakeTime, train_file: Path
) -> None:
    first_process = OpenAIFineTuner(fake.client(), settings=settings, clock=ftime.clock, sleep=ftime.sleep)
    remote = first_process.start(JOB, train_file, model=BASE)
    seen = ListSink()
    cursor = None
    for _ in range(3):  # validating, queued, running (step 1)
        result = first_process.poll(remote, cursor)
        for event in result.events:
            seen.emit(event)
        cursor = result.cursor
    assert result.status == "running"
    # "Restart": a new client and backend, given only what the store kept (remote id, cursor).
    second_process = OpenAIFineTuner(fake.client(), settings=settings, clock=ftime.clock, sleep=ftime.sleep)
    # Starting the same job again (the restart lost track of the id) finds the remote job.
    submitted = ListSink()
    assert second_process.start(JOB, train_file, model=BASE, sink=submitted) == remote
    assert submitted.events[0].data == {"remote_id": remote, "model": BASE, "resumed": True}
    rest = ListSink()
    final = second_process.follow(remote, rest, cursor)
    assert final.succeeded
    assert len(fake.jobs) == 1 and len(fake.requests_to("POST", "/v1/fine_tuning/jobs")) == 1
    assert len(fake.requests_to("POST", "/v1/files")) == 1
    steps = [e.step for e in seen.events + rest.events if e.kind == "step"]
    assert steps == [1, 2]  # nothing repeated, nothing lost
    assert all(e.job_id == JOB for e in rest.events)  # the job id comes back from the remote metadata


# ---- errors a user meets --------------------------------------------------------------------------


def test_bad_api_key(fake: FakeOpenAI, settings: Settings, ftime: FakeTime, train_file: Path) -> None:
    tuner = OpenAIFineTuner(
        fake.client("sk-wrong-secret"), settings=settings, clock=ftime.clock, sleep=ftime.sleep
    )
    error = start_error(tuner, train_file)
    assert error.code == "invalid_api_key"
    assert "401" in error.message and "OPENAI_API_KEY" in error.message
    assert "sk-wrong" not in str(error) and "wr***" not in str(error)
    assert fake.files == {}


def test_organisation_that_can_no_longer_fine_tune(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fake.allow_fine_tuning = False
    error = start_error(tuner, train_file)
    assert error.code == "fine_tuning_unavailable"
    assert error.message.startswith(FINE_TUNING_CLOSED)
    assert "winding down self-serve fine-tuning" in error.message and "backend=local" in error.message
    assert fake.files == {} and fake.jobs == {}


def test_the_wind_down_is_recognised_in_a_400_too(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fail_create(
        fake,
        status=400,
        code="invalid_request",
        message="Fine-tuning is no longer available for this organization.",
    )
    error = start_error(tuner, train_file)
    assert error.code == "fine_tuning_unavailable"


def test_unsupported_base_model(tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path) -> None:
    with pytest.raises(UsageError) as info:
        tuner.start(JOB, train_file, model="gpt-5-turbo-hyper")
    assert "OpenAI cannot fine-tune the base model 'gpt-5-turbo-hyper'" in str(info.value)
    assert "gpt-4.1-mini-2025-04-14" in str(info.value)
    assert fake.files == {}


@pytest.mark.parametrize("model", ["builtin:tiny", "Qwen/Qwen2.5-0.5B-Instruct", "./models/mine", ""])
def test_local_model_names_are_refused_before_any_request(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path, model: str
) -> None:
    with pytest.raises(UsageError):
        tuner.start(JOB, train_file, model=model)
    assert fake.requests == []


def test_upload_rejected_names_the_line(tuner: OpenAIFineTuner, fake: FakeOpenAI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(example("a", "b")) + "\n" + json.dumps(example("c", "d")) + "\nnot json\n")
    with pytest.raises(RemoteError) as info:
        tuner.start(JOB, bad, model=BASE)
    assert info.value.code == "file_rejected"
    assert "bad.jsonl" in info.value.message and "line/example 3" in info.value.message


def test_file_processing_error_names_the_line(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    fake.file_error = "Line 5: an example has no assistant message"
    error = start_error(tuner, train_file)
    assert error.code == "file_rejected"
    assert "no assistant message" in error.message and "line/example 5" in error.message
    assert fake.jobs == {} and fake.files == {}


def test_missing_training_file_is_a_usage_error(tuner: OpenAIFineTuner, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Cannot read the train file"):
        tuner.start(JOB, tmp_path / "nope.jsonl", model=BASE)


# ---- generation -----------------------------------------------------------------------------------


def test_generate_answers_differently_for_base_and_fine_tuned_models(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, train_file: Path
) -> None:
    remote = tuner.start(JOB, train_file, model=BASE)
    tuned = tuner.follow(remote).model_name
    assert tuned is not None

    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}

    def answer(model: str, messages: list[dict]) -> str:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(0.02)  # real time, so requests overlap
        with lock:
            in_flight["now"] -= 1
        question = messages[-1]["content"]
        return f"{question} = 9.99" if model.startswith("ft:") else f"I think {question} costs about ten"

    fake.answer = answer
    conversations = [[{"role": "user", "content": f"item {i}"}] for i in range(12)]
    base = tuner.generate(BASE, conversations, max_new_tokens=16, concurrency=3)
    ft = tuner.generate(tuned, conversations, max_new_tokens=16, concurrency=3)
    assert base == [f"I think item {i} costs about ten" for i in range(12)]
    assert ft == [f"item {i} = 9.99" for i in range(12)]
    assert 1 < in_flight["max"] <= 3
    request = fake.requests_to("POST", "/v1/chat/completions")[0]
    assert request.json["max_completion_tokens"] == 16 and request.json["temperature"] == 0.0
    assert tuner.generate(BASE, [], max_new_tokens=4) == []


def test_generate_retries_a_429_and_reports_a_missing_model(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime
) -> None:
    fake.fail(
        "POST",
        "/v1/chat/completions",
        status=429,
        code="rate_limit_exceeded",
        headers={"retry-after-ms": "1500"},
    )
    assert tuner.generate(BASE, [[{"role": "user", "content": "hi"}]], max_new_tokens=8) == ["base: hi"]
    assert 1.5 in ftime.sleeps
    with pytest.raises(RemoteError) as info:
        tuner.generate(
            "ft:gpt-4o-mini-2024-07-18:org::gone", [[{"role": "user", "content": "hi"}]], max_new_tokens=8
        )
    assert (
        info.value.code == "model_not_found" and "ft:gpt-4o-mini-2024-07-18:org::gone" in info.value.message
    )


# ---- cost -----------------------------------------------------------------------------------------


def test_cost_estimate_and_confirmation_threshold(
    tuner: OpenAIFineTuner, settings: Settings, ftime: FakeTime, fake: FakeOpenAI
) -> None:
    examples = [example("q" * 40, "a" * 20)["messages"] for _ in range(200)]
    # 3 + 3x3 per example, "Answer with a price." = 20 chars = 5 tokens, 10 + 5 -> 32 tokens each
    assert count_example_tokens(examples[0]) == 3 + (3 + 5) + (3 + 10) + (3 + 5)
    cost = tuner.estimate(examples, BASE)
    assert cost.epochs == 3 and cost.epochs_auto
    assert cost.tokens_per_epoch == 200 * 32 and cost.total_tokens == 3 * 200 * 32
    assert cost.usd_per_million == 3.0 and cost.usd == pytest.approx(19_200 * 3 / 1e6)
    assert not cost.confirmation_required and not cost.tokens_exact
    assert "that comes to about $0.06." in cost.message
    assert "about 19,200 training tokens" in cost.message and "about 4 characters each" in cost.message
    assert "2025-04-14" in cost.price_source
    assert cost.to_dict()["usd"] == cost.usd

    strict = OpenAIFineTuner(
        fake.client(),
        settings=replace(settings, openai_confirm_usd=0.01),
        clock=ftime.clock,
        sleep=ftime.sleep,
    )
    expensive = strict.estimate(examples, BASE, epochs=5)
    assert expensive.epochs == 5 and expensive.confirmation_required
    assert "above the $0.01 confirmation threshold" in expensive.message

    priced = OpenAIFineTuner(
        fake.client(),
        settings=replace(settings, openai_training_prices={"gpt-4o-mini": 100.0}),
        clock=ftime.clock,
        sleep=ftime.sleep,
    )
    override = priced.estimate(examples, BASE)
    assert override.usd_per_million == 100.0 and override.price_source == "FTBOT_OPENAI_PRICES"

    with pytest.raises(UsageError, match="n_epochs must be between 1 and 50"):
        tuner.estimate(examples, BASE, epochs=0)
    unknown = tuner.estimate(examples, "gpt-9-mega")
    assert unknown.usd is None and unknown.confirmation_required and "cost is unknown" in unknown.message
    assert fake.requests == []  # estimating never calls OpenAI


def test_exact_token_counter_is_used_when_given(
    fake: FakeOpenAI, settings: Settings, ftime: FakeTime
) -> None:
    words = TokenCounter(lambda text: len(text.split()), exact=True, method="word count")
    tuner = OpenAIFineTuner(
        fake.client(), settings=settings, clock=ftime.clock, sleep=ftime.sleep, token_counter=words
    )
    cost = tuner.estimate(
        [
            {
                "messages": [
                    {"role": "user", "content": "one two"},
                    {"role": "assistant", "content": "three", "name": "x"},
                ]
            }
        ],
        "gpt-4.1-mini-2025-04-14",
        epochs=1,
    )
    assert cost.tokens_exact and cost.total_tokens == 3 + (3 + 2) + (3 + 1 + 1)
    assert (
        ": 13 training tokens, 13 per epoch over 1 example x 1 epoch. Tokens counted with word count."
        in cost.message
    )
    assert "that comes to less than $0.01." in cost.message


def test_token_counting_works_offline(tmp_path: Path) -> None:
    # No tiktoken cache here: the estimate is used, and marked as one.
    counter = default_token_counter(cache_dir=tmp_path)
    assert counter is ESTIMATED_COUNTER or counter.exact is False


def test_tiktoken_is_used_only_when_its_encoding_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiktoken is not a dependency; a stand-in package on sys.path plays an installed one.
    package = tmp_path / "site" / "tiktoken"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class _Encoding:\n"
        "    def encode(self, text, disallowed_special=()):\n"
        "        return text.split()\n"
        "def get_encoding(name):\n"
        "    assert name == 'o200k_base'\n"
        "    return _Encoding()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "tiktoken", raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    assert not default_token_counter(cache_dir=cache).exact  # installed but not cached: estimate
    (
        cache
        / hashlib.sha1(
            b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
        ).hexdigest()
    ).write_text("")
    counter = default_token_counter(cache_dir=cache)
    assert counter.exact and counter.method == "tiktoken o200k_base"
    assert counter.count_text("three little words") == 3
    # Not monkeypatch.delitem: it would put the stand-in back at teardown, where later tests in
    # this process (datasets' pickler looks for tiktoken.Encoding) would find it.
    sys.modules.pop("tiktoken", None)


def test_token_count_covers_names_tool_calls_tools_and_content_parts() -> None:
    words = TokenCounter(lambda text: len(text.split()), exact=True, method="words")
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "two words"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "content": "ok", "name": "lookup"},
    ]
    # 3 per example; 3 + 2; 3 + 0 + 2 ('[{"id": "c1"}]' is two words); 3 + 1 + 1 (name); tools: 2
    assert (
        count_example_tokens({"messages": messages, "tools": [{"type": "function"}]}, words)
        == 3 + 5 + 5 + 5 + 2
    )


def test_openai_model_names_are_recognised() -> None:
    assert looks_like_openai_model("ft:gpt-4o-mini-2024-07-18:org::abc")
    assert looks_like_openai_model("gpt-4.1-mini-2025-04-14") and looks_like_openai_model("o4-mini")
    assert not looks_like_openai_model("builtin:tiny") and not looks_like_openai_model("Qwen/Qwen2.5-0.5B")


def test_price_table_and_epoch_heuristics() -> None:
    assert model_family("gpt-4.1-mini-2025-04-14") == "gpt-4.1-mini"
    assert model_family("ft:gpt-4o-mini-2024-07-18:org:ftbot-x:abc") == "gpt-4o-mini"
    assert training_price("gpt-4.1-nano-2025-04-14")[0] == 1.5
    assert training_price("gpt-4.1-2025-04-14")[0] == 25.0
    assert training_price("davinci-002")[0] is None
    assert default_epochs(10) == 10 and default_epochs(20) == 5 and default_epochs(1000) == 3
    assert default_epochs(10_000) == 2 and default_epochs(1) == 25


def test_poll_delay_backs_off_and_respects_retry_after() -> None:
    assert poll_delay(30, 0) == 30
    assert poll_delay(30, 1) == 60 and poll_delay(30, 3) == 240
    assert poll_delay(30, 9) == 600
    assert poll_delay(0.5, 0, retry_after=20) == 20
    assert poll_delay(900, 2) == 900  # never below the interval


def test_success_script_default_is_usable(
    tuner: OpenAIFineTuner, fake: FakeOpenAI, ftime: FakeTime, train_file: Path
) -> None:
    fake.script = success_script(ftime.now)
    result = tuner.follow(tuner.start(JOB, train_file, model="gpt-4.1-nano-2025-04-14"))
    assert (
        result.succeeded and result.model_name and result.model_name.startswith("ft:gpt-4.1-nano-2025-04-14:")
    )
