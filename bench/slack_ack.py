"""Benchmark: how fast the Slack app acknowledges /finetune and /ask while a training job runs.

    python bench/slack_ack.py [--concurrency 20] [--rounds 5]

Slack shows an error when a slash command is not acknowledged within 3 s. This runs the real
`ftbot serve --http` code path (threaded WSGI server on 127.0.0.1, port 0) against the fake Slack
Web API from the test suite, starts a long fine-tune on builtin:tiny (a real worker process), waits
until it is training, then fires ``--concurrency`` signed /finetune requests at once, then as many
/ask requests, ``--rounds`` times, and times each request from send to the HTTP response (the ack).
The work behind each ack (20 job cards, 20 answers from the tiny model) runs meanwhile, as it would.

Goal: p99 under 500 ms (Slack's limit is 3000 ms). Prints p50/p95/p99/max per command and the
ratio of p99 to the goal (below 1.0 meets it).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.settings import BotSettings  # noqa: E402
from engine import JobState, Settings  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.fakes.slack_requests import (  # noqa: E402
    FORM,
    bot_env,
    command_body,
    event_body,
    file_share_event,
    post_signed,
    serve_http,
)

GOAL_P99_MS = 500.0


def _post(url: str, body: str, content_type: str) -> tuple[int, float, str]:
    reply = post_signed(url, body, content_type=content_type, timeout=30)
    if reply.status >= 400:  # as loud as urllib's HTTPError was: a refused request ends the run
        raise SystemExit(f"the app answered HTTP {reply.status}: {reply.body[:200]}")
    return reply.status, reply.ms, str(reply.body)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ftbot-bench-"))
    # Short answers: the bench measures acks; the answers only have to finish before teardown.
    # builtin:tiny: the bench measures acks, not a model (the default base model trains for minutes).
    settings = Settings.from_env(
        {"FTBOT_HOME": str(home), "FTBOT_ASK_MAX_NEW_TOKENS": "32", "FTBOT_BASE_MODEL": "builtin:tiny"}
    )
    with FakeSlack() as slack, serve_http(BotSettings.from_env(bot_env(slack)), settings) as (engine, url):
        try:
            # A dataset, and a long training job that runs during the measurement.
            file = slack.add_file((ROOT / "examples" / "prices.jsonl").read_bytes(), name="prices.jsonl")
            _post(url, event_body(file_share_event(file)), "application/json")
            _wait(lambda: engine.latest_dataset("T0001", "C0CHAN01") is not None, 120, "the upload")
            # batch=1 accum=1: thousands of steps, so the job trains through the whole measurement.
            _post(url, command_body("/finetune", "epochs=50 batch=1 accum=1"), FORM)
            _wait(lambda: any(j.state == JobState.TRAINING for j in engine.jobs()), 300, "training to start")
            print(f"training job running; {args.rounds} rounds of {args.concurrency} concurrent requests")

            timings: dict[str, list[float]] = {"/finetune": [], "/ask": []}
            busy = 0  # questions beyond the /ask pool's capacity: their ack is the whole answer
            bodies = {"/finetune": "epochs=1", "/ask": "New Valuline trail running shoes in navy."}
            training_rounds = 0
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                for _ in range(args.rounds):
                    training_rounds += any(j.state == JobState.TRAINING for j in engine.jobs(limit=200))
                    for command, text in bodies.items():
                        futures = [
                            pool.submit(_post, url, command_body(command, text, user=f"U{i:08d}"), FORM)
                            for i in range(args.concurrency)
                        ]
                        for future in futures:
                            status, ms, reply = future.result()
                            assert status == 200, status
                            timings[command].append(ms)
                            busy += command == "/ask" and "The model is busy" in reply
                    time.sleep(0.5)
            still_training = any(j.state == JobState.TRAINING for j in engine.jobs(limit=200))
            # Let the work behind the acks finish (answers, cards) before tearing down.
            asks = len(timings["/ask"]) - busy
            _wait(
                lambda: (
                    sum(
                        "Answered by" in str(c.args.get("blocks"))
                        for c in slack.calls
                        if c.method in ("chat.postMessage", "chat.update")
                    )
                    >= asks
                ),
                300,
                "the answers",
            )
        finally:
            for job in engine.jobs(limit=1000):
                if not job.is_final:
                    with contextlib.suppress(Exception):  # it may have just finished
                        engine.cancel(job.id, user="bench", is_admin=True)

    print(
        f"training job running during {training_rounds}/{args.rounds} rounds, still at the end: {still_training}"
    )
    print(f"{'command':<10} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/goal':>9}")
    ok = True
    for command, values in timings.items():
        p99 = _percentile(values, 99)
        ok &= p99 < GOAL_P99_MS
        print(
            f"{command:<10} {len(values):>4} {statistics.median(values):>8.1f} {_percentile(values, 95):>8.1f} "
            f"{p99:>8.1f} {max(values):>8.1f} {p99 / GOAL_P99_MS:>9.2f}"
        )
    print(f"/ask beyond the pool's capacity, answered 'the model is busy' in the ack: {busy}")
    print(f"goal: p99 < {GOAL_P99_MS:.0f} ms: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
