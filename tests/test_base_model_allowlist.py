"""Who may choose which base model, and how many unfinished jobs one person may have (issue 12).

The rule lives in ``Engine.submit`` (``is_admin``), so Slack, the console and the CLI share it:
people who are not admins choose from ``Engine.allowed_base_models`` (FTBOT_BASE_MODELS) and have
at most FTBOT_MAX_QUEUED_PER_USER unfinished jobs; Slack admins and the local operator (``ftbot
run``, ``ftbot chat``) are trusted. A refused job is never stored. Real Engine and SQLite, the real
Bolt app driven by signed requests against the fake Slack Web API, the console.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from bot.console import Console
from engine import Engine, JobState, Settings
from engine.errors import BackendUnavailable, PermissionDenied, UsageError
from engine.paths import worker_log_path
from engine.workers import WorkerProcess
from tests.fakes.datasets import write_price_dataset
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.test_slack_app import ADMIN, OTHER, OWNER, Harness, make_harness

TEAM, CHANNEL = "T0001", "C0CHAN01"
HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    with Engine(settings) as eng:
        yield eng


def _dataset(engine: Engine, tmp_path: Path, team: str = "T1") -> str:
    record = engine.add_dataset(write_price_dataset(tmp_path / "prices.jsonl"), team=team, channel="C1")
    assert record.usable
    return record.hash


def _submit(engine: Engine, dataset: str, owner: str = "U1", *, is_admin: bool = False, **options: str):
    return engine.submit(dataset, options=options, owner=owner, team="T1", channel="C1", is_admin=is_admin)


# ------------------------------------------------------------------ base models (engine)


@pytest.mark.parametrize("base", ["/etc", "models/ft-0123abcd", HUB_ID, "ft:gpt-4o-mini-2024-07-18:org::x"])
def test_someone_not_an_admin_cannot_choose_any_base_model(
    engine: Engine, tmp_path: Path, base: str
) -> None:
    """A local path, another job's adapter directory, any hub repository: refused with the list of
    what may be chosen, and no job is stored."""
    adapter_dir = str(engine.settings.models_dir / "ft-0123abcd")
    base = adapter_dir if base.startswith("models/") else base
    dataset = _dataset(engine, tmp_path)
    with pytest.raises(PermissionDenied) as refused:
        _submit(engine, dataset, base=base)
    text = str(refused.value)
    assert "builtin:tiny" in text and "builtin:smollm2" in text and "FTBOT_BASE_MODELS" in text
    assert "Only an admin" in text
    assert engine.jobs() == []


def test_the_default_list_is_the_default_model_and_the_builtin_ones(engine: Engine, tmp_path: Path) -> None:
    assert engine.allowed_base_models() == ("builtin:tiny", "builtin:smollm2")
    dataset = _dataset(engine, tmp_path)
    chosen = _submit(engine, dataset, base="builtin:smollm2")
    assert chosen.base_model == "builtin:smollm2" and chosen.state is JobState.QUEUED


def test_ftbot_base_models_sets_the_list_and_the_default_stays_allowed(settings: Settings, tmp_path: Path) -> None:
    listed = replace(settings, base_models=(HUB_ID, "gpt-4o-mini"))
    with Engine(listed) as engine:
        assert engine.allowed_base_models() == ("builtin:tiny", HUB_ID)
        assert engine.allowed_base_models("openai") == ("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
        dataset = _dataset(engine, tmp_path)
        assert _submit(engine, dataset, base=HUB_ID).base_model == HUB_ID
        assert _submit(engine, dataset, base="builtin:tiny").base_model == "builtin:tiny"
        with pytest.raises(PermissionDenied, match="builtin:smollm2"):
            _submit(engine, dataset, base="builtin:smollm2")
        assert len(engine.jobs()) == 2


def test_an_admin_may_choose_another_model_but_a_path_must_hold_a_model(
    engine: Engine, tmp_path: Path, tiny_model_dir: Path
) -> None:
    dataset = _dataset(engine, tmp_path)
    assert _submit(engine, dataset, is_admin=True, base=HUB_ID).base_model == HUB_ID
    assert _submit(engine, dataset, is_admin=True, base=str(tiny_model_dir)).base_model == str(tiny_model_dir)
    with pytest.raises(UsageError) as refused:
        _submit(engine, dataset, is_admin=True, base="/etc")
    # Our own words, said at once, rather than the loader's error text in the job's thread later.
    assert "no model directory there" in str(refused.value) and "config.json" in str(refused.value)
    assert len(engine.jobs()) == 2


def test_openai_models_allowed_by_default_are_the_priced_families_still_served(
    settings: Settings, tmp_path: Path
) -> None:
    with FakeOpenAI() as fake:
        oa = replace(settings, openai_api_key="test", openai_base_url=fake.url + "/v1")
        with Engine(oa, openai_client=fake.client()) as engine:
            engine.use_openai(today=lambda: date(2026, 12, 4))
            allowed = engine.allowed_base_models("openai")
            # gpt-4.1-nano shut down on 2026-10-23: no longer offered.
            assert allowed[0] == "gpt-4o-mini-2024-07-18" and "gpt-4.1-nano" not in allowed
            assert {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o", "gpt-4.1"} <= set(allowed)
            dataset = _dataset(engine, tmp_path)
            job = _submit(engine, dataset, backend="openai", base="gpt-4.1-mini-2025-04-14")
            assert job.base_model == "gpt-4.1-mini-2025-04-14"  # a dated snapshot of an allowed family
            with pytest.raises(PermissionDenied, match="gpt-4o-mini") as refused:
                _submit(engine, dataset, backend="openai", base="gpt-5-mini-2025-08-07")
            assert "dated snapshot" in str(refused.value)
            with pytest.raises(BackendUnavailable, match=r"retired gpt-4\.1-nano-2025-04-14 on 2026-10-23"):
                _submit(engine, dataset, backend="openai", base="gpt-4.1-nano-2025-04-14")
            assert len(engine.jobs()) == 1


# ------------------------------------------------------------------ unfinished jobs per person (engine)


def test_a_person_may_have_three_unfinished_jobs(engine: Engine, tmp_path: Path) -> None:
    dataset = _dataset(engine, tmp_path)
    first = [_submit(engine, dataset) for _ in range(3)]
    with pytest.raises(PermissionDenied) as refused:
        _submit(engine, dataset)
    text = str(refused.value)
    assert "You already have 3 fine-tuning jobs queued or running" in text
    assert all(job.id in text for job in first) and "The limit is 3 per person" in text
    assert "/finetune cancel JOB" in text and "FTBOT_MAX_QUEUED_PER_USER" in text
    assert len(engine.jobs()) == 3
    # Someone else is not held back, nor is an admin.
    assert _submit(engine, dataset, owner="U2").owner == "U2"
    admin = [_submit(engine, dataset, owner="UADMIN", is_admin=True) for _ in range(4)]
    assert len(admin) == 4
    # A finished job no longer counts.
    engine.cancel(first[0].id, user="U1")
    assert _submit(engine, dataset).state is JobState.QUEUED


def test_a_burst_of_submissions_stops_at_the_limit(engine: Engine, tmp_path: Path) -> None:
    """One person's 12 requests at the same moment (Slack's listeners run in parallel)."""
    dataset = _dataset(engine, tmp_path)
    start = threading.Barrier(12)
    refused: list[Exception] = []

    def one() -> None:
        start.wait()
        try:
            _submit(engine, dataset, owner="U9")
        except PermissionDenied as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(engine.jobs(limit=50)) == 3 and len(refused) == 9


def test_no_limit_when_the_setting_is_zero(settings: Settings, tmp_path: Path) -> None:
    with Engine(replace(settings, max_queued_per_user=0)) as engine:
        dataset = _dataset(engine, tmp_path)
        for _ in range(5):
            _submit(engine, dataset)
        assert len(engine.jobs()) == 5


# ------------------------------------------------------------------ Slack (signed requests, real Bolt app)


@pytest.fixture
def h(settings: Settings) -> Iterator[Harness]:
    with FakeSlack() as slack:
        harness = make_harness(settings, slack)
        yield harness
        harness.engine.close()


def _uploaded(h: Harness) -> None:
    h.upload()
    h.slack.wait_for("chat.postMessage")


def test_slack_a_refused_base_model_gets_a_private_error_and_no_job(h: Harness) -> None:
    _uploaded(h)
    response = h.command("/finetune", "base=/etc epochs=1")
    assert response.status == 200
    (error,) = h.slack.wait_for("chat.postEphemeral")
    text = error.args["text"]
    assert error.args["user"] == OWNER and error.args["channel"] == CHANNEL
    assert "/etc" in text and "builtin:tiny" in text and "builtin:smollm2" in text
    assert "Errno" not in text and "config.json" not in text  # no loader or file-system text
    assert h.engine.jobs() == []
    assert len(h.slack.calls_to("chat.postMessage")) == 1  # only the upload's report: no job card


def test_slack_an_admin_may_choose_another_base_model(h: Harness) -> None:
    _uploaded(h)
    h.command("/finetune", f"base={HUB_ID} epochs=1", user=ADMIN)
    h.slack.wait_for("chat.postMessage", count=2)  # the job card
    (job,) = h.engine.jobs(team=TEAM)
    assert job.owner == ADMIN and job.base_model == HUB_ID


def test_slack_the_fourth_unfinished_job_is_refused_privately(h: Harness) -> None:
    _uploaded(h)
    for _ in range(4):
        assert h.command("/finetune", "epochs=1").status == 200
    (error,) = h.slack.wait_for("chat.postEphemeral")
    assert error.args["user"] == OWNER
    assert "You already have 3 fine-tuning jobs" in error.args["text"]
    assert "/finetune cancel JOB" in error.args["text"]
    h.slack.wait_for("chat.postMessage", count=4)  # the report and three cards
    assert len(h.engine.jobs(team=TEAM)) == 3
    # Someone else in the channel still may.
    h.command("/finetune", "epochs=1", user=OTHER)
    h.slack.wait_for("chat.postMessage", count=5)
    assert len(h.engine.jobs(team=TEAM)) == 4


# ------------------------------------------------------------------ the local operator (console, CLI)


@pytest.fixture
def sleeping_workers(settings: Settings) -> Iterator[tuple[list[subprocess.Popen[bytes]], object]]:
    """A launcher whose 'worker' only sleeps (the jobs stay unfinished); every one is ended after."""
    started: list[subprocess.Popen[bytes]] = []

    def launch(job_id: str, resume: bool) -> WorkerProcess:
        log_path = worker_log_path(settings, job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        popen = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", "engine.worker", job_id],
            start_new_session=True,
        )
        started.append(popen)
        return WorkerProcess(job_id=job_id, pid=popen.pid, popen=popen, log_path=log_path)

    yield started, launch
    for popen in started:
        popen.kill()
        popen.wait()


def test_the_console_user_is_the_trusted_local_operator(
    settings: Settings, tmp_path: Path, sleeping_workers: tuple[list[subprocess.Popen[bytes]], object]
) -> None:
    data = write_price_dataset(tmp_path / "prices.jsonl")
    _, launch = sleeping_workers
    listed = replace(settings, base_models=("builtin:tiny",))
    out = io.StringIO()
    with Engine(listed, launcher=launch) as engine:  # type: ignore[arg-type]
        Console(engine, out=out).run(
            # The first /quit explains that the jobs keep going; the second leaves.
            [f"/upload {data}", *["/finetune base=builtin:smollm2 epochs=1"] * 4, "/quit", "/quit"]
        )
        jobs = engine.jobs()
    text = out.getvalue()
    assert "not one of the base models" not in text and "already have" not in text
    assert len(jobs) == 4 and {job.base_model for job in jobs} == {"builtin:smollm2"}
