"""Job cards across bot restarts (bot/slack/progress.py, "Nothing lost, nothing twice").

The relay stores its cursor once it has handed an event to the card's sink, which only queues the
Slack call on its sender thread. A bot that dies with calls still queued must not lose those
milestones: the next bot posts each of them once, and the card ends in the final state. A clean
stop and restart, or a relay that hands events over again, posts nothing twice.

Real components: the Store (SQLite under tmp_path), the Engine and its scheduler's relay,
JobCards over the real slack_sdk WebClient against the fake Slack Web API. The "worker" here is
the test writing the events a worker writes, through the same Store; a crash is a sender
executor shut down with its queued Slack calls never run, after the relay stored its cursor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.commands.serve import build_slack
from bot.settings import BotSettings
from bot.slack.app import add_retry_handlers
from bot.slack.progress import JobCards
from engine import Engine, JobState, ProgressEvent, Settings
from engine.relay import RELAY_CURSOR_KEY
from engine.store import Store
from tests.fakes.datasets import write_price_dataset
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import bot_env

OWNER, TEAM, CHANNEL = "U0USER01", "T0001", "C0CHAN01"
MODEL_ID = "ft-model-0001"
PROMOTION = f"The fine-tuned model {MODEL_ID} is now this channel's default model (verdict: improved)."
REPORT = {
    "task": "numeric",
    "metric": "mae",
    "baseline": {"zero_shot": {"mae": 9.0}, "few_shot": {"mae": 5.0}},
    "finetuned": {"mae": 2.0},
    "verdict": "improved",
    "summary": "Fine-tuning helped.",
    "flips": {"fixed": [{"prompt": "p", "reference": "1", "baseline": "9", "finetuned": "1"}], "broken": []},
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
STEPS = 40


class Bot:
    """One bot process, wired as ``build_slack`` wires it (cards on a one-thread sender, drained
    when the engine stops), but with the sender in the test's hands."""

    def __init__(self, settings: Settings, slack: FakeSlack) -> None:
        client = WebClient(token=slack.bot_token, base_url=slack.api_url)
        add_retry_handlers(client)
        self.sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-cards")
        self.engine = Engine(settings)
        self.cards = JobCards(client, self.engine, min_interval=0.0, sender=self.sender)
        self.engine.subscribe(self.cards.sink_for)
        self.engine.add_stop_hook(self.cards.drain)
        self.store = self.engine.store

    def submit(self, tmp_path: Path) -> str:
        """A user's /finetune: the job is queued and its card posted (as the listener does); then
        a worker claims it (so the test's relay ticks never start a real worker)."""
        record = self.engine.add_dataset(
            write_price_dataset(tmp_path / "prices.jsonl"), uploaded_by=OWNER, team=TEAM, channel=CHANNEL
        )
        job = self.engine.submit(record.hash, owner=OWNER, team=TEAM, channel=CHANNEL)
        assert self.cards.ensure(job) is not None
        self.store.transition(job.id, JobState.VALIDATING, expect=JobState.QUEUED, message="Started.")
        return job.id

    def relay(self) -> None:
        """One scheduler tick: the relay hands the new events to the cards and stores its cursor."""
        self.engine.dispatcher.tick()

    def stop(self) -> None:
        """A clean stop: everything handed over is shown first (the drain stop hook)."""
        self.engine.close()
        self.sender.shutdown()

    def crash(self) -> None:
        """The process dies: Slack calls still queued on the sender are never made."""
        self.sender.shutdown(wait=False, cancel_futures=True)


def _slow_slack(bot: Bot) -> threading.Event:
    """Slack is slow: the sender thread is stuck in a call until the returned event is set."""
    gate = threading.Event()
    bot.sender.submit(gate.wait, 30)
    return gate


def worker_until_baseline(store: Store, job_id: str) -> None:
    store.add_event(ProgressEvent(job_id, "preflight", "about 20 s", data={"tokens": 1000, "steps": STEPS}))
    store.transition(job_id, JobState.BASELINE, message="Measuring the baseline.")
    store.add_event(
        ProgressEvent(
            job_id, "baseline", data={"metric": "mae", "zero_shot": {"mae": 9.0}, "few_shot": {"mae": 5.0}}
        )
    )


def worker_trains(store: Store, job_id: str, chart: Path) -> None:
    store.transition(job_id, JobState.TRAINING, message="Training.")
    for step in range(1, STEPS + 1):
        store.add_event(
            ProgressEvent(
                job_id, "step", step=step, total=STEPS, epoch=step / STEPS, metrics={"loss": 2.0 / step}
            )
        )
    store.add_event(ProgressEvent(job_id, "eval", step=STEPS, metrics={"eval_loss": 0.4}))
    chart.write_bytes(PNG)
    store.add_event(
        ProgressEvent(job_id, "artifact", "Training curves.", data={"kind": "loss_chart", "path": str(chart)})
    )


def worker_evaluates(store: Store, job_id: str) -> None:
    store.transition(job_id, JobState.EVALUATING, message="Evaluating.")
    store.save_eval(job_id, REPORT)
    store.add_event(ProgressEvent(job_id, "evaluation", REPORT["summary"], data=REPORT))
    store.add_event(ProgressEvent(job_id, "alert", PROMOTION, data={"code": "promotion", "promoted": True}))
    store.transition(
        job_id,
        JobState.SUCCEEDED,
        message="Fine-tuning helped.",
        changes={"model_id": MODEL_ID, "result": {"promoted": True, "verdict": "improved"}},
    )


def thread_texts(slack: FakeSlack) -> list[str]:
    return [str(m["text"]) for m in slack.messages(CHANNEL) if m.get("thread_ts")]


def milestones(job_id: str) -> list[str]:
    """Every thread message a finished job gets, in the order they are posted."""
    return [
        "Pre-flight: about 20 s",
        "Baseline measured",
        "Evaluation results",
        "Verdict: Fine-tuning helped",
        "Examples that changed",
        PROMOTION,
        f"Fine-tune {job_id} finished: fine-tuning helped. Model `{MODEL_ID}`. "
        "It is now this channel's default for /ask.",
    ]


def assert_shown_once(slack: FakeSlack, job_id: str) -> None:
    texts = thread_texts(slack)
    for text in milestones(job_id):
        assert texts.count(text) == 1, (text, texts)
    assert len(texts) == len(milestones(job_id)), texts
    assert len(slack.calls_to("files.completeUploadExternal")) == 1  # the loss chart, once
    assert len([m for m in slack.messages(CHANNEL) if not m.get("thread_ts")]) == 1  # one card
    final = slack.calls_to("chat.update")[-1].args
    assert "succeeded" in str(final["blocks"]) and "cancel_job" not in str(final["blocks"])


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def restarted_bot(settings: Settings, slack: FakeSlack) -> Engine:
    """The next ``ftbot serve``: the real build_slack wiring, engine started (its start hook
    catches up on the cards)."""
    engine, _app = build_slack(BotSettings.from_env(bot_env(slack)), settings, mode="http")
    engine.start()
    return engine


def test_milestones_handed_over_but_never_shown_are_posted_once_by_the_next_bot(
    settings: Settings, slack: FakeSlack, tmp_path: Path
) -> None:
    bot = Bot(settings, slack)
    job_id = bot.submit(tmp_path)
    worker_until_baseline(bot.store, job_id)
    bot.relay()
    slack.wait_for("chat.postMessage", where=lambda c: c.args.get("text") == "Baseline measured")
    bot.cards.drain()

    gate = _slow_slack(bot)
    worker_trains(bot.store, job_id, tmp_path / "loss.png")
    worker_evaluates(bot.store, job_id)
    bot.relay()
    # The relay has handed every event over and stored how far it got; Slack has seen none of it.
    assert bot.store.get_meta(RELAY_CURSOR_KEY) == str(bot.store.event_feed_cursor())
    assert "Evaluation results" not in thread_texts(slack)
    bot.crash()
    gate.set()
    bot.sender.shutdown(wait=True)
    bot.store.close()
    assert thread_texts(slack) == milestones(job_id)[:2]
    updates_before = len(slack.calls_to("chat.update"))

    engine = restarted_bot(settings, slack)
    slack.wait_for("chat.postMessage", where=lambda c: bool(c.args.get("reply_broadcast")))
    engine.close()  # drains the cards

    assert_shown_once(slack, job_id)
    assert len(slack.calls_to("chat.update")) - updates_before <= 2  # not one edit per missed step
    with Store.open(settings.db_path) as store:
        assert store.delivered_seq(job_id) == store.last_event_seq(job_id)
        assert store.undelivered_jobs() == []


def test_a_job_still_running_after_the_crash_gets_its_lost_milestones_before_its_new_ones(
    settings: Settings, slack: FakeSlack, tmp_path: Path
) -> None:
    # The lost events are replayed when the job's next event reaches the new bot's card (no
    # start hook here: the relay comes first).
    bot = Bot(settings, slack)
    job_id = bot.submit(tmp_path)
    worker_until_baseline(bot.store, job_id)
    bot.relay()
    bot.cards.drain()
    gate = _slow_slack(bot)
    worker_trains(bot.store, job_id, tmp_path / "loss.png")
    bot.relay()
    bot.crash()
    gate.set()
    bot.sender.shutdown(wait=True)
    bot.store.close()
    assert slack.calls_to("files.completeUploadExternal") == []  # the chart was lost with the bot

    second = Bot(settings, slack)
    worker_evaluates(second.store, job_id)
    second.relay()
    second.stop()

    assert_shown_once(slack, job_id)
    texts = thread_texts(slack)
    chart = slack.calls_to("files.completeUploadExternal")[0]
    verdict = next(
        c for c in slack.calls_to("chat.postMessage") if c.args.get("text") == "Evaluation results"
    )
    assert chart.at <= verdict.at and texts.index("Baseline measured") < texts.index("Evaluation results")


def test_a_clean_restart_posts_nothing_again(settings: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    bot = Bot(settings, slack)
    job_id = bot.submit(tmp_path)
    worker_until_baseline(bot.store, job_id)
    worker_trains(bot.store, job_id, tmp_path / "loss.png")
    worker_evaluates(bot.store, job_id)
    bot.relay()
    bot.stop()
    assert_shown_once(slack, job_id)
    calls = len(slack.calls)

    engine = restarted_bot(settings, slack)
    engine.dispatcher.tick()
    engine.close()
    assert [c.method for c in slack.calls[calls:]] == ["auth.test"]


def test_events_the_relay_hands_over_again_are_not_posted_twice(
    settings: Settings, slack: FakeSlack, tmp_path: Path
) -> None:
    # The bot died after Slack showed the events but before the relay stored its cursor: the
    # next bot's relay hands all of them over again.
    bot = Bot(settings, slack)
    job_id = bot.submit(tmp_path)
    worker_until_baseline(bot.store, job_id)
    worker_trains(bot.store, job_id, tmp_path / "loss.png")
    worker_evaluates(bot.store, job_id)
    bot.relay()
    bot.cards.drain()
    bot.store.set_meta(RELAY_CURSOR_KEY, "0")
    bot.crash()
    bot.sender.shutdown(wait=True)
    bot.store.close()
    posts = len(slack.calls_to("chat.postMessage"))

    second = Bot(settings, slack)
    second.relay()
    second.stop()
    assert len(slack.calls_to("chat.postMessage")) == posts
    assert_shown_once(slack, job_id)


def test_a_running_job_goes_on_after_a_clean_restart_without_repeats(
    settings: Settings, slack: FakeSlack, tmp_path: Path
) -> None:
    bot = Bot(settings, slack)
    job_id = bot.submit(tmp_path)
    worker_until_baseline(bot.store, job_id)
    bot.relay()
    worker_trains(bot.store, job_id, tmp_path / "loss.png")
    bot.relay()
    bot.stop()
    shown = thread_texts(slack)
    assert shown == milestones(job_id)[:2]
    updates = len(slack.calls_to("chat.update"))

    engine = restarted_bot(settings, slack)
    engine.dispatcher.tick()
    assert len(slack.calls_to("chat.update")) - updates <= 1  # at most the card shown once more
    worker_evaluates(engine.store, job_id)
    engine.dispatcher.tick()
    slack.wait_for("chat.postMessage", where=lambda c: bool(c.args.get("reply_broadcast")))
    engine.close()
    assert_shown_once(slack, job_id)


def test_a_card_from_before_delivery_records_is_not_replayed(
    settings: Settings, slack: FakeSlack, tmp_path: Path
) -> None:
    # A job whose card an older bot posted has no delivery record: the first start after the
    # upgrade must not post its history again; its new events are shown as before.
    with Engine(settings) as old_bot:
        record = old_bot.add_dataset(
            write_price_dataset(tmp_path / "prices.jsonl"), uploaded_by=OWNER, team=TEAM, channel=CHANNEL
        )
        job = old_bot.submit(record.hash, owner=OWNER, team=TEAM, channel=CHANNEL)
        old_bot.set_reply_to(job.id, {"team": TEAM, "channel": CHANNEL, "ts": "1699000000.000100"})
        old_bot.store.transition(job.id, JobState.VALIDATING, expect=JobState.QUEUED)
        worker_until_baseline(old_bot.store, job.id)
        worker_trains(old_bot.store, job.id, tmp_path / "loss.png")
        old_bot.store.set_meta(RELAY_CURSOR_KEY, str(old_bot.store.event_feed_cursor()))
        assert old_bot.delivered_seq(job.id) is None and old_bot.undelivered_jobs() == []

    engine = restarted_bot(settings, slack)
    engine.dispatcher.tick()
    assert [c.method for c in slack.calls] == ["auth.test"]
    worker_evaluates(engine.store, job.id)
    engine.dispatcher.tick()
    slack.wait_for("chat.postMessage", where=lambda c: bool(c.args.get("reply_broadcast")))
    engine.close()
    assert thread_texts(slack) == milestones(job.id)[2:]
