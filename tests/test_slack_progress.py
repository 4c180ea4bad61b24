"""bot/slack/progress.py: the card is posted once, edited in place (throttled), milestones go to
its thread, the chart is uploaded there, and the result is broadcast."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from slack_sdk import WebClient

from bot.slack.app import add_retry_handlers
from bot.slack.progress import JobCards
from engine import Job, JobState, ProgressEvent
from tests.fakes.jobs import slack_job
from tests.fakes.slack_api import FakeSlack

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _client(slack: FakeSlack) -> WebClient:
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    add_retry_handlers(client)
    return client


def _job(state: JobState = JobState.QUEUED, **kw: object) -> Job:
    return slack_job(state, **kw)


def test_card_posted_once_then_edited_with_throttle(slack: FakeSlack, tmp_path: Path) -> None:
    clock = Clock()
    cards = JobCards(_client(slack), min_interval=3.0, clock=clock)
    job = _job()
    where = cards.ensure(job)
    assert where is not None and cards.ensure(job) == where
    assert len(slack.calls_to("chat.postMessage")) == 1
    sink = cards.sink_for(job)
    sink.emit(ProgressEvent(job.id, "state", data={"state": "training"}))
    for step in range(1, 11):  # ten steps within a second of the state change: no edit
        clock.now += 0.1
        sink.emit(ProgressEvent(job.id, "step", step=step, total=10, metrics={"loss": 2.0 / step}))
    updates = slack.calls_to("chat.update")
    assert len(updates) == 1  # the state change, at once
    assert all(u.args["ts"] == where["ts"] and u.args["channel"] == "C0CHAN01" for u in updates)
    clock.now += 5
    sink.emit(ProgressEvent(job.id, "step", step=10, total=10, metrics={"loss": 0.2}))
    assert len(slack.calls_to("chat.update")) == 2
    assert "10/10" in str(slack.calls_to("chat.update")[-1].args["blocks"])


def test_milestones_go_to_the_thread_and_the_result_is_broadcast(slack: FakeSlack, tmp_path: Path) -> None:
    cards = JobCards(_client(slack), min_interval=0.0)
    job = _job()
    where = cards.ensure(job)
    assert where is not None
    chart = tmp_path / "loss.png"
    chart.write_bytes(PNG)
    sink = cards.sink_for(job)
    report = {
        "task": "numeric",
        "metric": "mae",
        "baseline": {"zero_shot": {"mae": 9.0}, "few_shot": {"mae": 5.0}},
        "finetuned": {"mae": 2.0},
        "verdict": "improved",
        "flips": {
            "fixed": [{"prompt": "p", "reference": "1", "baseline": "9", "finetuned": "1"}],
            "broken": [],
        },
    }
    for event in [
        ProgressEvent(job.id, "preflight", "about 20 s", data={"tokens": 1000, "steps": 10, "seconds": 20}),
        ProgressEvent(
            job.id, "baseline", data={"metric": "mae", "zero_shot": {"mae": 9.0}, "few_shot": {"mae": 5.0}}
        ),
        ProgressEvent(job.id, "alert", "Loss is not going down", data={"code": "flat_loss"}),
        ProgressEvent(
            job.id, "artifact", "Loss over training", data={"kind": "loss_chart", "path": str(chart)}
        ),
        ProgressEvent(job.id, "evaluation", data=report),
    ]:
        sink.emit(event)
    thread = [m for m in slack.messages() if m.get("thread_ts") == where["ts"]]
    texts = [m["text"] for m in thread]
    assert (
        texts[0].startswith("Pre-flight") and texts[1] == "Baseline measured" and texts[2].startswith("Alert")
    )
    assert (
        "Evaluation results" in texts
        and "Verdict: Fine-tuning helped" in texts
        and "Examples that changed" in texts
    )
    (upload,) = slack.calls_to("files.completeUploadExternal")
    assert upload.args["channel_id"] == "C0CHAN01" and upload.args["thread_ts"] == where["ts"]
    assert list(slack.uploads.values()) == [PNG]
    assert all(
        "authorization" not in c.headers for c in slack.calls_to("upload")
    )  # no token to the upload URL

    # The job ends: the card loses its Cancel button and the result is broadcast.
    done = _job(JobState.SUCCEEDED, model_id="ft-00000001", reply_to=where, result={"promoted": True})
    sink.job = done
    sink.emit(ProgressEvent(job.id, "state", data={"state": "succeeded"}))
    final = slack.calls_to("chat.postMessage")[-1].args
    assert final["reply_broadcast"] is True and final["thread_ts"] == where["ts"]
    assert "finished" in final["text"] and "default" in final["text"]
    assert "cancel_job" not in str(slack.calls_to("chat.update")[-1].args["blocks"])


def test_a_rate_limited_post_is_retried(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    cards = JobCards(_client(slack))
    assert cards.ensure(_job()) is not None
    assert len(slack.calls_to("chat.postMessage")) == 2  # the 429, then the retry


def test_slack_errors_never_reach_the_job(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", "not_in_channel")
    cards = JobCards(_client(slack))
    job = _job()
    assert cards.ensure(job) is None
    cards.sink_for(job).emit(ProgressEvent(job.id, "alert", "x"))  # does not raise


def test_a_restarted_bot_edits_the_stored_card(slack: FakeSlack) -> None:
    cards = JobCards(_client(slack), min_interval=0.0)
    job = _job(JobState.TRAINING, reply_to={"team": "T0001", "channel": "C0CHAN01", "ts": "1699.0001"})
    cards.sink_for(job).emit(ProgressEvent(job.id, "step", step=1, total=4, metrics={"loss": 1.0}))
    assert slack.calls_to("chat.postMessage") == []
    assert slack.calls_to("chat.update")[0].args["ts"] == "1699.0001"


def test_with_a_sender_the_relay_never_waits_for_slack(slack: FakeSlack) -> None:
    # The bot gives the cards their own thread: a slow Slack (or a 429's Retry-After, which the
    # SDK sleeps out) must not hold up the job queue's tick that emits the events.
    sender = ThreadPoolExecutor(max_workers=1)
    slack_busy = threading.Event()
    sender.submit(slack_busy.wait, 10)  # Slack is slow: the sender thread is stuck for now
    cards = JobCards(_client(slack), min_interval=0.0, sender=sender)
    job = _job()
    sink = cards.sink_for(job)
    started = time.monotonic()
    sink.emit(ProgressEvent(job.id, "state", data={"state": "training"}))
    sink.emit(ProgressEvent(job.id, "step", step=1, total=4, metrics={"loss": 1.0}))
    assert time.monotonic() - started < 1.0
    assert not slack.calls_to("chat.postMessage")  # nothing sent yet, and the emitter went on
    slack_busy.set()
    cards.drain()  # what the bot does when the engine stops: everything handed over is shown
    assert len(slack.calls_to("chat.postMessage")) == 1  # the card, then its edits, in order
    assert "1/4" in str(slack.calls_to("chat.update")[-1].args["blocks"])
    sender.shutdown()
