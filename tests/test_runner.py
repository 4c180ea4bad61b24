"""The job runner (engine/runner.py) with a backend of the test's own: the seam a new backend plugs
into. A backend that trains elsewhere (start, then polls) goes through the same states, events and
registry as the local and OpenAI ones, a restart in the middle included; a step's error becomes a
failed job with its message and hint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine import runner
from engine.backends import TrainedModel
from engine.errors import RemoteError
from engine.jobs import JobState
from engine.pipeline import EvalData, JobContext
from engine.progress import utcnow
from engine.service import Engine
from engine.settings import Settings
from engine.store import ModelRecord
from tests.fakes.datasets import write_price_dataset as write_dataset


class EchoGenerator:
    """Answers every prompt with the reference-free constant "0" (base) or the last user turn's
    digits (the fine-tune), in batches of 4."""

    batch_size = 4
    context_tokens = 4096
    max_new_tokens_cap = 64

    def __init__(self, tuned: bool, calls: list[int]) -> None:
        self.tuned = tuned
        self.calls = calls

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in messages)

    def generate(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, max_new_tokens: int
    ) -> list[str]:
        self.calls.append(len(conversations))
        return ["42" if self.tuned else "0" for _ in conversations]

    def close(self) -> None:
        pass


class RemoteBackend:
    """Trains "elsewhere": :meth:`train` starts, the second :meth:`poll` finishes."""

    name = "stub"
    start_message = "Started (stub)."

    def __init__(self, fail_poll: bool = False) -> None:
        self.calls: list[int] = []
        self.polls = 0
        self.fail_poll = fail_poll

    def prepare(self, ctx: JobContext, data: EvalData) -> None:
        pass

    def base_generator(self, ctx: JobContext) -> EchoGenerator:
        return EchoGenerator(False, self.calls)

    def tuned_generator(self, ctx: JobContext, model: TrainedModel) -> EchoGenerator:
        assert model.name == "stub-model"
        return EchoGenerator(True, self.calls)

    def train(self, ctx: JobContext, data: EvalData) -> None:
        ctx.store.update_job(ctx.job_id, remote_id="remote-1")
        return None

    def started(self, ctx: JobContext) -> bool:
        return bool(ctx.job.remote_id)

    def poll(self, ctx: JobContext) -> TrainedModel | None:
        self.polls += 1
        if self.fail_poll:
            raise RemoteError("The remote service fell over.", hint="Try later.")
        ctx.emit("step", "step 1", step=1, total=1, metrics={"loss": 1.0})
        return TrainedModel(kind="openai", name="stub-model") if self.polls >= 2 else None

    def finished_training(self, ctx: JobContext, model: TrainedModel) -> tuple[str, dict[str, Any]]:
        return "Stub training done.", {"stub_model": model.name}

    def after_training(self, ctx: JobContext, model: TrainedModel) -> None:
        pass

    def trained_model(self, ctx: JobContext) -> TrainedModel:
        return TrainedModel(kind="openai", name=str(ctx.job.result["stub_model"]))

    def model_record(self, ctx: JobContext, model: TrainedModel, system_prompt: str | None) -> ModelRecord:
        job = ctx.job
        return ModelRecord(
            id=str(model.name),
            kind="openai",
            base_model=job.base_model,
            job_id=job.id,
            team=job.team,
            channel=job.channel,
            created_at=utcnow(),
            remote_name=model.name,
            system_prompt=system_prompt,
        )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    with Engine(settings) as eng:
        yield eng


def _stub_job(engine: Engine, tmp_path: Path) -> str:
    record = engine.add_dataset(
        write_dataset(tmp_path / "prices.jsonl"), uploaded_by="U1", team="T1", channel="C1"
    )
    job = engine.submit(record.hash, owner="U1", team="T1", channel="C1")
    engine.store.save_job(replace(engine.job(job.id), backend="stub"))
    return job.id


def test_a_polled_backend_goes_through_every_step_and_registers_its_model(
    engine: Engine, tmp_path: Path
) -> None:
    job_id = _stub_job(engine, tmp_path)
    backend = RemoteBackend()
    ctx = JobContext(store=engine.store, settings=engine.settings, job_id=job_id)
    assert runner.advance(ctx, backend) is True  # started elsewhere: poll again
    assert engine.job(job_id).state is JobState.TRAINING and engine.job(job_id).remote_id == "remote-1"
    # A restart: a new context (and backend) re-attaches to the remote job and polls it.
    backend = RemoteBackend()
    ctx = JobContext(store=engine.store, settings=engine.settings, job_id=job_id)
    assert runner.advance(ctx, backend) is True
    assert runner.advance(ctx, backend) is False
    job = engine.job(job_id)
    assert job.state is JobState.SUCCEEDED and job.model_id == "stub-model"
    assert job.result["stub_model"] == "stub-model" and "verdict" in job.result
    assert "Started (stub)." in [e.message for e in engine.events(job_id) if e.kind == "state"]
    kinds = [e.kind for e in engine.events(job_id)]
    assert kinds.index("baseline") < kinds.index("step") < kinds.index("artifact") < kinds.index("evaluation")
    assert all(n <= EchoGenerator.batch_size for n in backend.calls)  # in the generator's batches
    assert [m.id for m in engine.models("T1")] == ["stub-model"]


def test_a_backend_error_fails_the_job_with_its_message_and_hint(engine: Engine, tmp_path: Path) -> None:
    job_id = _stub_job(engine, tmp_path)
    backend = RemoteBackend(fail_poll=True)

    def step(ctx: JobContext) -> None:
        while runner.advance(ctx, backend):
            pass

    ctx = JobContext(store=engine.store, settings=engine.settings, job_id=job_id)
    assert runner.run(ctx, step) == 1
    job = engine.job(job_id)
    assert job.state is JobState.FAILED and job.error == "The remote service fell over. Try later."
