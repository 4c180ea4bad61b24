"""/ask on OpenAI models has the same wall-clock limit as local models (FTBOT_ASK_TIMEOUT_SECONDS):
the answer is a streamed chat completion, cut at the deadline with the local "time" note.

Real pieces only: the real ``openai`` client against the fake OpenAI server (real HTTP and
Server-Sent Events on 127.0.0.1, a free port, with real delays), a real Engine on SQLite under
tmp_path, and `ftbot ask` through click's CliRunner. Timing assertions leave :data:`SLACK`
seconds for a busy two-core CI box; the limit in these tests is :data:`LIMIT` second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import main as cli
from engine import Engine, GenerationError, ModelRecord, Settings
from engine.backends.openai_backend import INTERRUPTED_NOTE
from engine.backends.openai_chat import Completion
from engine.backends.openai_costs import estimate_tokens
from engine.backends.openai_tuner import OpenAIFineTuner
from engine.errors import RemoteError
from tests.fakes.clock import FakeTime
from tests.fakes.openai_api import FakeOpenAI

LIMIT = 1.0  # FTBOT_ASK_TIMEOUT_SECONDS in these tests
SLACK = 0.75  # seconds a call may take past the limit on a loaded machine
BASE = "gpt-4o-mini-2024-07-18"
FT = f"ft:{BASE}:org-fake:ftbot:lim123"
WORDS = [f"w{i:02d}" for i in range(20)]
ANSWER = " ".join(WORDS)  # 20 fake tokens; at 0.15 s each the whole answer takes 3 s
TIME_NOTE = "Answer cut at the 1-second time limit."


@pytest.fixture
def oa_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    fake.add_model(FT)
    fake.answer = lambda model, messages: ANSWER
    # gpt-4o-mini retires on 2027-01-14: these tests are about time limits, not the calendar.
    return replace(
        settings,
        ask_timeout_seconds=LIMIT,
        openai_api_key="test",
        openai_base_url=fake.url + "/v1",
        openai_retirements={"gpt-4o-mini": date(2099, 12, 31)},
    )


@contextlib.contextmanager
def _engine(settings: Settings, fake: FakeOpenAI, ftime: FakeTime) -> Iterator[Engine]:
    with Engine(settings, openai_client=fake.client()) as eng:
        # Retry waits go through the fake sleep (instant); the deadline itself is real time.
        eng.use_openai(clock=ftime.clock, sleep=ftime.sleep)
        _register(eng, "oa-1", team="T1")
        yield eng


@pytest.fixture
def engine(oa_settings: Settings, fake: FakeOpenAI, ftime: FakeTime) -> Iterator[Engine]:
    with _engine(oa_settings, fake, ftime) as eng:
        yield eng


def _register(engine: Engine, model_id: str, *, team: str = "") -> None:
    engine.store.add_model(
        ModelRecord(
            id=model_id,
            kind="openai",
            base_model=BASE,
            remote_name=FT,
            job_id=None,
            team=team,
            channel="",
            created_at=datetime.now(UTC),
            verdict="improved",
        )
    )


def _chat_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests_to("POST", "/v1/chat/completions")]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def _wait_for(predicate: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ------------------------------------------------------------------ the fake speaks OpenAI's SSE


def test_the_fake_streams_server_sent_events_shaped_like_openai(fake: FakeOpenAI) -> None:
    fake.answer = lambda model, messages: "a  b"
    conn = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), timeout=5)
    body = {
        "model": BASE,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(body),
        {"Authorization": "Bearer test", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    raw = response.read().decode()
    events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in raw.split("\n\n") if block)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "a  b"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c["usage"] is None for c in chunks[:-1])  # like OpenAI with include_usage


# ------------------------------------------------------------------ the tuner


def test_a_fast_streamed_answer_equals_the_plain_one_with_usage_tokens(
    settings: Settings, fake: FakeOpenAI
) -> None:
    tuner = OpenAIFineTuner(fake.client(), settings=settings)
    fake.answer = lambda model, messages: "alpha  beta\ngamma delta "  # odd whitespace survives
    messages = [{"role": "user", "content": "q"}]
    (plain,) = tuner.generate_detailed(BASE, [messages], max_new_tokens=10)
    streamed, seconds = _timed(tuner.stream_answer, BASE, messages, max_new_tokens=10, timeout=5)
    assert streamed == plain == Completion("alpha  beta\ngamma delta ", "stop", 4)
    assert seconds < 2
    cut = tuner.stream_answer(BASE, messages, max_new_tokens=3, timeout=5)
    assert cut == Completion("alpha beta gamma", "length", 3)  # the fake cuts at 3 words
    assert [cut] == tuner.generate_detailed(BASE, [messages], max_new_tokens=3)
    requests = _chat_requests(fake)
    streamed_requests = [requests[1], requests[2]]
    for plain_request in (requests[0], requests[3]):
        assert "stream" not in plain_request  # evaluation's generate_detailed does not stream
    for sent in streamed_requests:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [r["max_completion_tokens"] for r in streamed_requests] == [10, 3]


def test_without_a_usage_chunk_the_tokens_are_unknown_and_a_filter_is_reported(
    settings: Settings, fake: FakeOpenAI
) -> None:
    tuner = OpenAIFineTuner(fake.client(), settings=settings)
    fake.send_usage = False
    fake.finish_reason = "content_filter"
    done = tuner.stream_answer(BASE, [{"role": "user", "content": "q"}], max_new_tokens=50, timeout=5)
    assert done == Completion("base: q", "content_filter", None)


# ------------------------------------------------------------------ the deadline, end to end


def test_a_slow_stream_is_cut_at_the_deadline_with_the_time_note(engine: Engine, fake: FakeOpenAI) -> None:
    fake.stream_delay = 0.15
    answer, seconds = _timed(engine.ask, "describe it", model="oa-1", team="T1")
    assert LIMIT - 0.05 <= seconds <= LIMIT + SLACK
    assert answer.finish_reason == "time" and answer.truncated
    assert answer.note == TIME_NOTE  # the local server's wording
    assert answer.text and ANSWER.startswith(answer.text) and len(answer.text) < len(ANSWER) // 2
    assert answer.tokens == estimate_tokens(answer.text)  # no usage chunk came
    assert answer.model == "oa-1"
    # The stream was closed, so OpenAI stops generating (and billing) the rest.
    assert _wait_for(lambda: fake.stream_ends == ["client_closed"], 3.0), fake.stream_ends


def test_compare_asks_both_models_at_once_within_one_limit(engine: Engine, fake: FakeOpenAI) -> None:
    fake.stream_delay = 0.15
    (base, tuned), seconds = _timed(engine.ask, "describe it", model="oa-1", team="T1", compare=True)
    assert seconds <= LIMIT + SLACK  # not twice the limit
    assert {r["model"] for r in _chat_requests(fake)} == {BASE, FT}
    for side in (base, tuned):
        assert side.finish_reason == "time" and side.note == TIME_NOTE and side.text
    assert base.model == f"base:{BASE}" and tuned.model == "oa-1"


@pytest.mark.parametrize("silence", ["no byte at all", "headers and an empty role chunk"])
def test_a_server_that_sends_nothing_gives_a_clear_error_at_the_deadline(
    engine: Engine, fake: FakeOpenAI, silence: str
) -> None:
    if silence == "no byte at all":
        fake.first_byte_delay = 30.0
    else:
        fake.stream_delay = 30.0
    before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(GenerationError) as caught:
        engine.ask("describe it", model="oa-1", team="T1")
    assert time.monotonic() - started <= LIMIT + SLACK
    text = str(caught.value)
    assert f"{FT} sent no answer within the 1-second time limit" in text
    assert "FTBOT_ASK_TIMEOUT_SECONDS" in text
    # The request's own HTTP timeout (the time left) ends the reader too: nothing stays waiting
    # on the silent server (which would answer after 30 s).
    readers = [t for t in set(threading.enumerate()) - before if t.name == "openai-stream"]
    assert readers and _wait_for(lambda: not any(t.is_alive() for t in readers), LIMIT + SLACK)
    assert len(_chat_requests(fake)) == 1  # waiting for the first byte is not a failure to retry


def test_a_server_error_before_any_text_is_retried_then_answered(
    fake: FakeOpenAI, ftime: FakeTime, oa_settings: Settings
) -> None:
    fake.fail("POST", "/v1/chat/completions", status=500, times=1)
    fake.fail("POST", "/v1/chat/completions", drop=True, times=1)
    # A limit long enough for the backoffs (2 s, 4 s, slept on the fake clock).
    with _engine(replace(oa_settings, ask_timeout_seconds=10.0), fake, ftime) as engine:
        answer = engine.ask("describe it", model="oa-1", team="T1")
    assert answer.text == ANSWER and answer.finish_reason == "stop" and answer.tokens == 20
    assert len(_chat_requests(fake)) == 3 and ftime.sleeps == [2.0, 4.0]


def test_a_retry_that_would_end_after_the_deadline_is_not_made(engine: Engine, fake: FakeOpenAI) -> None:
    fake.fail("POST", "/v1/chat/completions", status=500, times=1)
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        engine.ask("describe it", model="oa-1", team="T1")
    assert time.monotonic() - started < LIMIT  # the 2 s backoff does not fit in 1 s: fail now
    assert caught.value.code == "server_error" and "HTTP 500" in caught.value.message
    assert len(_chat_requests(fake)) == 1


def test_a_stream_that_breaks_after_text_keeps_it_and_is_not_retried(engine: Engine, fake: FakeOpenAI) -> None:
    fake.stream_drop_after = 3
    answer = engine.ask("describe it", model="oa-1", team="T1")
    assert answer.text == "w00 w01 w02"
    assert answer.finish_reason == "interrupted" and answer.note == INTERRUPTED_NOTE
    assert len(_chat_requests(fake)) == 1


def test_ftbot_ask_shows_the_time_note(oa_settings: Settings, fake: FakeOpenAI) -> None:
    with Engine(oa_settings) as eng:
        _register(eng, "oa-cli")
    fake.stream_delay = 0.15
    env = {
        "FTBOT_HOME": str(oa_settings.home),
        "FTBOT_ASK_TIMEOUT_SECONDS": str(LIMIT),
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "FTBOT_OPENAI_RETIREMENTS": "gpt-4o-mini=2099-12-31",
    }
    runner = CliRunner()
    started = time.monotonic()
    plain = runner.invoke(cli, ["ask", "--model", "oa-cli", "hi"], env=env)
    assert time.monotonic() - started <= LIMIT + SLACK + 1.0  # plus the engine's start and stop
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.strip() and ANSWER.startswith(plain.stdout.strip())
    assert TIME_NOTE in plain.stderr
    as_json = runner.invoke(cli, ["ask", "--model", "oa-cli", "--json", "hi"], env=env)
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.stdout)
    assert answer["finish_reason"] == "time" and answer["truncated"] is True
    assert answer["note"] == TIME_NOTE
