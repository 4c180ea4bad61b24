"""OpenAI's fine-tuning shutdown, on either side of each date (issue 12).

OpenAI's deprecations page: from 2027-01-06 no organisation can create fine-tuning jobs; gpt-4o,
gpt-4.1 (and their mini models) and every fine-tune of them stop answering on 2027-01-14. The
backend knows the dates (a dated table in engine/backends/openai_dates.py, overridable like the
prices) and the day is injected (``engine.use_openai(today=...)``). The real Engine,
SQLite and scheduler, the real ``openai`` client against the fake OpenAI server, and for the job's
thread the real Bolt app with signed requests against the fake Slack Web API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from engine import Engine, JobState, Settings
from engine.backends.openai_dates import FINE_TUNING_ENDS, fine_tuning_closed_message, retirement_date
from engine.errors import BackendUnavailable, RemoteError
from engine.store import ModelRecord
from tests.fakes.clock import FakeTime
from tests.fakes.datasets import write_price_dataset
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.waiting import wait_for
from tests.test_slack_app import make_harness

BASE = "gpt-4o-mini-2024-07-18"
GPT4O = "gpt-4o-2024-08-06"
FT_GPT4O = f"ft:{GPT4O}:org-fake:ftbot:abc123"
CLOSED = fine_tuning_closed_message(FINE_TUNING_ENDS)


@dataclass
class Day:
    """The calendar day the pipeline sees; tests move it."""

    today: date

    def __call__(self) -> date:
        return self.today


@pytest.fixture
def day() -> Day:
    return Day(date(2026, 12, 4))


@pytest.fixture
def oa_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return replace(settings, openai_api_key="test", openai_base_url=fake.url + "/v1", openai_poll_seconds=0.05)


@pytest.fixture
def make_engine(fake: FakeOpenAI, ftime: FakeTime, day: Day) -> Iterator[Callable[[Settings], Engine]]:
    made: list[Engine] = []

    def make(settings: Settings) -> Engine:
        engine = Engine(settings, openai_client=fake.client(), scheduler_interval=0.05, throttle_seconds=0.0)
        engine.use_openai(clock=ftime.clock, sleep=ftime.sleep, today=day)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def _submit(engine: Engine, tmp_path: Path, base: str = BASE):
    record = engine.add_dataset(write_price_dataset(tmp_path / "prices.jsonl"), team="T1", channel="C1")
    return engine.submit(
        record.hash, options={"backend": "openai", "base": base}, owner="U1", team="T1", channel="C1"
    )


def _preflight(engine: Engine, job_id: str):
    return next(e for e in engine.events(job_id) if e.kind == "preflight")


# ------------------------------------------------------------------ before the end: a warning


def test_before_the_end_the_preflight_says_how_many_days_are_left(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, day: Day, tmp_path: Path
) -> None:
    engine = make_engine(oa_settings)
    preflight = _preflight(engine, _submit(engine, tmp_path).id)
    assert preflight.message.startswith("New OpenAI fine-tuning jobs end on 2027-01-06 (33 days left)")
    assert "backend=local" in preflight.message
    assert f"OpenAI retires {BASE} and every fine-tune of it on 2027-01-14 (41 days left)" in preflight.message
    assert preflight.data["openai_fine_tuning_ends"] == "2027-01-06"
    assert preflight.data["openai_fine_tuning_days_left"] == 33
    assert preflight.data["base_model_retires"] == "2027-01-14"

    day.today = date(2027, 1, 5)  # the last day
    preflight = _preflight(engine, _submit(engine, tmp_path).id)
    assert preflight.message.startswith("New OpenAI fine-tuning jobs end on 2027-01-06 (1 day left)")


def test_the_warning_reaches_the_jobs_slack_thread(
    oa_settings: Settings, fake: FakeOpenAI, ftime: FakeTime, day: Day
) -> None:
    with FakeSlack() as slack:
        h = make_harness(oa_settings, slack)
        try:
            h.engine.use_openai(clock=ftime.clock, sleep=ftime.sleep, today=day)
            h.engine.start()
            h.upload()
            h.slack.wait_for("chat.postMessage")
            h.command("/finetune", f"backend=openai base={BASE}")

            def warned() -> bool:
                return any(
                    "New OpenAI fine-tuning jobs end on 2027-01-06 (33 days left)" in c.args.get("text", "")
                    and c.args.get("thread_ts")
                    for c in slack.calls_to("chat.postMessage")
                )

            wait_for(warned, 30.0, "the pre-flight with the shutdown notice in the job's thread")
        finally:
            h.engine.close()


# ------------------------------------------------------------------ from the end: refused at submit


@pytest.mark.parametrize("today", [date(2027, 1, 6), date(2027, 3, 1)])
def test_from_the_end_date_new_jobs_are_refused_at_submit(
    make_engine: Callable[[Settings], Engine],
    oa_settings: Settings,
    fake: FakeOpenAI,
    day: Day,
    tmp_path: Path,
    today: date,
) -> None:
    day.today = today
    engine = make_engine(oa_settings)
    with pytest.raises(BackendUnavailable) as refused:
        _submit(engine, tmp_path)
    text = str(refused.value)
    assert CLOSED in text and "2027-01-06" in text and "backend=local" in text
    assert engine.jobs() == []
    assert fake.requests == []  # nothing was uploaded, nothing asked


def test_the_end_date_and_the_retirements_can_be_moved_by_settings(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, day: Day, tmp_path: Path
) -> None:
    moved = Settings.from_env(
        {
            "FTBOT_HOME": str(oa_settings.home),
            "FTBOT_BASE_MODEL": "builtin:tiny",
            "FTBOT_OPENAI_FINE_TUNING_ENDS": "2027-03-01",
            "FTBOT_OPENAI_RETIREMENTS": "gpt-4o-mini=2027-06-30, gpt-4.1=2027-01-20",
        }
    )
    engine = make_engine(
        replace(
            oa_settings,
            openai_fine_tuning_ends=moved.openai_fine_tuning_ends,
            openai_retirements=moved.openai_retirements,
        )
    )
    day.today = date(2027, 1, 6)
    preflight = _preflight(engine, _submit(engine, tmp_path).id)
    assert preflight.message.startswith("New OpenAI fine-tuning jobs end on 2027-03-01 (54 days left)")
    assert "on 2027-06-30 (175 days left)" in preflight.message
    day.today = date(2027, 1, 20)  # before the moved end, but gpt-4.1 has retired
    with pytest.raises(BackendUnavailable, match=r"OpenAI retired gpt-4\.1-2025-04-14 on 2027-01-20"):
        _submit(engine, tmp_path, base="gpt-4.1-2025-04-14")
    assert len(engine.jobs()) == 1


# ------------------------------------------------------------------ OpenAI's own refusal, the same words


def test_openais_refusal_reads_like_the_date_refusal(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Before the end date an organisation may already be refused (never fine-tuned, or no use in
    60 days): OpenAI answers 403 on jobs.create, and the job fails in the same plain words."""
    fake.allow_fine_tuning = False
    engine = make_engine(oa_settings)
    engine.start()
    job = _submit(engine, tmp_path)
    wait_for(lambda: engine.job(job.id).is_final, 30.0, "the job to end")
    failed = engine.job(job.id)
    assert failed.state is JobState.FAILED
    assert CLOSED in failed.error and "OpenAI said: This organization does not have access" in failed.error
    assert fake.files == {}  # the uploads were removed again


def test_a_job_that_reaches_openai_after_the_end_date_fails_before_uploading(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, fake: FakeOpenAI, day: Day, tmp_path: Path
) -> None:
    day.today = date(2027, 1, 5)
    engine = make_engine(oa_settings)
    job = _submit(engine, tmp_path)  # accepted on the last day...
    day.today = date(2027, 1, 6)  # ...and driven after midnight
    engine.start()
    wait_for(lambda: engine.job(job.id).is_final, 30.0, "the job to end")
    failed = engine.job(job.id)
    assert failed.state is JobState.FAILED and CLOSED in failed.error
    assert fake.requests_to("POST", "/v1/files") == [] and fake.requests_to("POST", "/v1/fine_tuning/jobs") == []


# ------------------------------------------------------------------ /ask on a retired model


def _register(engine: Engine, remote: str, base: str) -> None:
    engine.store.add_model(
        ModelRecord(
            id=remote,
            kind="openai",
            base_model=base,
            job_id=None,
            team="T1",
            channel="C1",
            created_at=datetime.now(UTC),
            verdict="improved",
            remote_name=remote,
        )
    )


def test_ask_on_a_fine_tune_of_a_retired_model_says_so(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, fake: FakeOpenAI, day: Day
) -> None:
    fake.add_model(FT_GPT4O)
    engine = make_engine(oa_settings)
    _register(engine, FT_GPT4O, GPT4O)
    day.today = date(2027, 1, 13)
    assert engine.ask("hello", model=FT_GPT4O, team="T1").text == "tuned: hello"

    day.today = date(2027, 1, 14)
    fake.retired_models.add(GPT4O)  # what OpenAI does that day
    asked = len(fake.requests_to("POST", "/v1/chat/completions"))
    with pytest.raises(BackendUnavailable) as refused:
        engine.ask("hello", model=FT_GPT4O, team="T1")
    text = str(refused.value)
    assert f"The fine-tuned model {FT_GPT4O} stands on {GPT4O}, which OpenAI retired on 2027-01-14" in text
    assert "backend=local" in text and "HTTP 404" not in text
    assert len(fake.requests_to("POST", "/v1/chat/completions")) == asked  # not even asked


def test_a_retirement_the_table_does_not_know_is_still_said_plainly(
    make_engine: Callable[[Settings], Engine], oa_settings: Settings, fake: FakeOpenAI, day: Day
) -> None:
    """OpenAI retired the model earlier than the table (or the settings) say: its 404 "has been
    deprecated" answer becomes a plain message, not the raw API error."""
    fake.add_model(FT_GPT4O)
    fake.retired_models.add(GPT4O)
    engine = make_engine(replace(oa_settings, openai_retirements={"gpt-4o": date(2027, 6, 30)}))
    _register(engine, FT_GPT4O, GPT4O)
    day.today = date(2027, 2, 1)
    with pytest.raises(RemoteError) as refused:
        engine.ask("hello", model=FT_GPT4O, team="T1")
    assert refused.value.code == "model_retired"
    assert f"OpenAI has retired {FT_GPT4O}" in str(refused.value) and "backend=local" in str(refused.value)


def test_the_dated_table_and_its_overrides() -> None:
    assert date(2027, 1, 6) == FINE_TUNING_ENDS
    assert retirement_date(GPT4O) == retirement_date(FT_GPT4O) == date(2027, 1, 14)
    assert retirement_date("gpt-4.1-mini-2025-04-14") == date(2027, 1, 14)
    assert retirement_date("gpt-4o-2024-05-13") == date(2026, 10, 23)  # an earlier snapshot
    assert retirement_date(FT_GPT4O, {"gpt-4o": date(2027, 2, 1)}) == date(2027, 2, 1)
    assert retirement_date("gpt-5-mini-2025-08-07") is None


def test_openais_refusal_names_the_end_date_of_the_settings(
    oa_settings: Settings, fake: FakeOpenAI, ftime: FakeTime, tmp_path: Path
) -> None:
    from engine.backends.openai_tuner import OpenAIFineTuner

    fake.allow_fine_tuning = False
    moved = replace(oa_settings, openai_fine_tuning_ends=date(2027, 3, 1))
    tuner = OpenAIFineTuner(fake.client(), settings=moved, clock=ftime.clock, sleep=ftime.sleep)
    train = tmp_path / "train.jsonl"
    write_price_dataset(train, n=20)
    with pytest.raises(RemoteError) as refused:
        tuner.start("ft-dates01", train, model=BASE)
    assert refused.value.code == "fine_tuning_unavailable"
    assert fine_tuning_closed_message(date(2027, 3, 1)) in str(refused.value)
