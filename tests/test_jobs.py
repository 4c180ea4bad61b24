"""The job state machine (engine/jobs.py), exhaustively: every (from, to) pair is either allowed
by ARCHITECTURE.md's diagram or refused with InvalidTransition."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import InvalidTransition
from engine.jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    Job,
    JobState,
    advance,
    can_transition,
    new_job_id,
)
from tests.fakes.jobs import make_job as fake_job

S = JobState
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

# Written out by hand from ARCHITECTURE.md, independent of how jobs.py builds its table.
PIPELINE = [S.QUEUED, S.VALIDATING, S.BASELINE, S.TRAINING, S.EVALUATING, S.SUCCEEDED]
ALLOWED = {
    (S.QUEUED, S.VALIDATING),
    (S.VALIDATING, S.BASELINE),
    (S.BASELINE, S.TRAINING),
    (S.TRAINING, S.EVALUATING),
    (S.EVALUATING, S.SUCCEEDED),
    *((s, S.FAILED) for s in PIPELINE[:-1]),
    *((s, S.CANCELLED) for s in PIPELINE[:-1]),
}
ALL_PAIRS = list(itertools.product(list(S), list(S)))


def make_job(state: JobState = S.QUEUED, **kw: object) -> Job:
    return fake_job(state, at=T0, **kw)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED), ids=lambda s: s.value)
def test_allowed_transition(current: JobState, target: JobState) -> None:
    assert can_transition(current, target)
    moved = advance(make_job(current), target, now=T1)
    assert moved.state is target
    assert moved.updated_at == T1


@pytest.mark.parametrize(("current", "target"), sorted(set(ALL_PAIRS) - ALLOWED), ids=lambda s: s.value)
def test_forbidden_transition(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)
    job = make_job(current)
    with pytest.raises(InvalidTransition) as info:
        advance(job, target, now=T1)
    assert info.value.current == current.value
    assert info.value.target == target.value
    assert current.value in str(info.value) and target.value in str(info.value)


def test_table_covers_every_state_and_matches_design() -> None:
    assert set(TRANSITIONS) == set(S)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_final_and_active_states() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED} == FINAL_STATES
    assert {S.VALIDATING, S.BASELINE, S.TRAINING, S.EVALUATING} == ACTIVE_STATES
    for state in S:
        assert state.is_final == (state in FINAL_STATES)
        assert state.is_active == (state in ACTIVE_STATES)
        # a final state has no way out; every other state can fail and be cancelled
        if state.is_final:
            assert not TRANSITIONS[state]
        else:
            assert {S.FAILED, S.CANCELLED} <= TRANSITIONS[state]


def test_no_self_loops_and_no_going_back() -> None:
    for a, b in ALLOWED:
        assert a != b
        if b in PIPELINE:
            assert PIPELINE.index(b) == PIPELINE.index(a) + 1


def test_timestamps_started_and_finished() -> None:
    job = make_job()
    assert job.started_at is None and job.finished_at is None
    validating = advance(job, S.VALIDATING, now=T1)
    assert validating.started_at == T1 and validating.finished_at is None
    later = T1 + timedelta(seconds=30)
    baseline = advance(validating, S.BASELINE, now=later)
    assert baseline.started_at == T1  # the first active state sets it once
    done = advance(
        advance(advance(baseline, S.TRAINING, now=later), S.EVALUATING, now=later), S.SUCCEEDED, now=later
    )
    assert done.finished_at == later and done.is_final


def test_cancel_from_queue_never_started() -> None:
    cancelled = advance(make_job(), S.CANCELLED, now=T1)
    assert cancelled.started_at is None and cancelled.finished_at == T1


def test_error_is_kept_and_advance_is_pure() -> None:
    job = make_job(S.TRAINING)
    failed = advance(job, S.FAILED, now=T1, error="out of memory")
    assert failed.error == "out of memory"
    assert job.state is S.TRAINING and job.error is None  # the original is untouched (frozen)
    with pytest.raises(AttributeError):
        job.state = S.FAILED  # type: ignore[misc]


def test_full_pipeline_walk() -> None:
    job = make_job()
    for target in PIPELINE[1:]:
        job = advance(job, target, now=T1)
    assert job.state is S.SUCCEEDED


def test_new_job_ids_are_short_and_unique() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("ft-") and len(i) == 11 for i in ids)
