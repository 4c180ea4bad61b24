"""engine/store.py on real SQLite files (and in memory): schema, datasets, jobs, events, models."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.errors import DatasetNotFound, InvalidTransition, JobNotFound, ModelNotFound, StoreError
from engine.jobs import Job, JobState
from engine.progress import ProgressEvent
from engine.store import DatasetRecord, ModelRecord, Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "home" / "ftbot.db", clock=Clock())
    yield s
    s.close()


def job(job_id: str = "ft-00000001", *, at: datetime = T0, **kw: object) -> Job:
    fields: dict[str, object] = dict(
        id=job_id,
        backend="local",
        base_model="builtin:tiny",
        dataset_hash="ab" * 32,
        created_at=at,
        updated_at=at,
    )
    fields.update(kw)
    return Job(**fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------- schema


def test_open_creates_schema_wal_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "ftbot.db"
    with Store.open(path) as s:
        assert s.schema_migrations() == ["0001_initial", "0002_meta", "0003_dataset_source", "0004_default_choice", "0005_deliveries", "0006_local_workspace"]
        assert s.journal_mode() == "wal"
        s.add_job(job())
    with Store.open(path) as s:  # reopening applies nothing twice and keeps the data
        assert s.schema_migrations() == ["0001_initial", "0002_meta", "0003_dataset_source", "0004_default_choice", "0005_deliveries", "0006_local_workspace"]
        assert s.get_job("ft-00000001").base_model == "builtin:tiny"
    tables = {
        r[0] for r in sqlite3.connect(path).execute("select name from sqlite_master where type='table'")
    }
    assert {
        "datasets",
        "jobs",
        "events",
        "evals",
        "models",
        "defaults",
        "audit",
        "_sqlite_migrations",
    } <= tables


def test_an_old_database_is_migrated_forward(tmp_path: Path) -> None:
    import sqlite_utils

    from engine.store import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="0002_meta")  # a database from before the meta table
    old["jobs"].insert(
        {
            "id": "ft-old",
            "backend": "local",
            "state": "queued",
            "created_at": T0.isoformat(),
            "updated_at": T0.isoformat(),
        }
    )
    old.close()
    with Store.open(path) as s:
        assert s.schema_migrations() == ["0001_initial", "0002_meta", "0003_dataset_source", "0004_default_choice", "0005_deliveries", "0006_local_workspace"]
        assert s.get_job("ft-old").state is JobState.QUEUED  # the old row survived
        assert s.get_meta("x") is None
        s.set_meta("x", "1")
        s.set_meta("x", "2")
        assert s.get_meta("x") == "2"


def test_busy_timeout_is_set(store: Store) -> None:
    assert store._conn.execute("pragma busy_timeout").fetchone()[0] >= 10_000


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "ftbot.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store.open(bad)
    assert str(bad) in info.value.message


def test_memory_store_works_without_files() -> None:
    s = Store.memory()
    s.add_job(job())
    assert s.get_job("ft-00000001").state is JobState.QUEUED
    with pytest.raises(StoreError):
        s.add_dataset(b"x", name="x.jsonl")


# ----------------------------------------------------------------- datasets


def test_same_bytes_stored_once(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "prices.jsonl"
    src.write_bytes(b'{"messages": []}\n' * 1000)
    a = store.add_dataset(
        src, name="prices.jsonl", uploaded_by="U1", team="T1", channel="C1", report={"ok": True}
    )
    b = store.add_dataset(
        src.read_bytes(), name="copy.jsonl", uploaded_by="U2", team="T1", channel="C2", report={"ok": True}
    )
    assert a.hash == b.hash and a.path == b.path
    assert a.id != b.id  # two uploads, one file
    files = [p for p in store.datasets_dir.iterdir()]
    assert files == [a.path]
    assert a.path.name == a.hash + ".jsonl"
    assert a.path.read_bytes() == src.read_bytes()
    assert a.size == src.stat().st_size
    import hashlib

    assert a.hash == hashlib.sha256(src.read_bytes()).hexdigest()


def test_dataset_roundtrip_prefix_and_team(store: Store) -> None:
    rec = store.add_dataset(
        b"abc\n",
        name="a.jsonl",
        uploaded_by="U1",
        team="T1",
        channel="C1",
        report={"ok": True, "stats": {"examples": 12}},
    )
    assert isinstance(rec, DatasetRecord)
    got = store.get_dataset(rec.hash)
    assert got == rec
    assert store.get_dataset(rec.hash[:10]).hash == rec.hash
    assert store.get_dataset(rec.hash, team="T1").report["stats"]["examples"] == 12
    with pytest.raises(DatasetNotFound):
        store.get_dataset(rec.hash, team="T2")
    with pytest.raises(DatasetNotFound):
        store.get_dataset("0" * 64)
    with pytest.raises(DatasetNotFound):
        store.get_dataset("abc")  # too short to be meant
    assert store.get_dataset("a.jsonl", team="T1") == rec  # by the name it was uploaded under
    with pytest.raises(DatasetNotFound):
        store.get_dataset("a.jsonl", team="T2")
    newer = store.add_dataset(b"abc, again\n", name="a.jsonl", team="T1", channel="C1", report={"ok": True})
    assert store.get_dataset("a.jsonl").hash == newer.hash  # the latest upload of that name


def test_missing_source_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound):
        store.add_dataset(tmp_path / "nope.jsonl", name="nope.jsonl")
    assert not [p for p in store.datasets_dir.iterdir() if p.name.startswith(".upload-")]


def test_latest_dataset_usable_only(store: Store) -> None:
    assert store.latest_dataset("T1", "C1") is None
    good = store.add_dataset(b"good\n", name="good.jsonl", team="T1", channel="C1", report={"ok": True})
    bad = store.add_dataset(b"bad\n", name="bad.jsonl", team="T1", channel="C1", report={"ok": False})
    store.add_dataset(b"other\n", name="o.jsonl", team="T1", channel="C2", report={"ok": True})
    store.add_dataset(b"other team\n", name="o.jsonl", team="T2", channel="C1", report={"ok": True})
    assert store.latest_dataset("T1", "C1") == good
    assert store.latest_dataset("T1", "C1", usable_only=False) == bad
    assert not bad.usable


def test_dataset_by_source_id_survives_reopening(tmp_path: Path) -> None:
    import sqlite_utils

    from engine.store import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="0003_dataset_source")  # datasets without a source column
    old.close()
    with Store.open(path, datasets_dir=tmp_path / "ds") as s:
        plain = s.add_dataset(b"plain\n", name="p.jsonl", team="T1", channel="C1", report={"ok": True})
        assert plain.source_id is None and s.dataset_by_source("F1", team="T1") is None
        bad = s.add_dataset(b"bad\n", name="b.jsonl", team="T1", channel="C1", source_id="F1")
        first = s.add_dataset(
            b"good\n", name="g.jsonl", team="T1", channel="C1", report={"ok": True}, source_id="F2"
        )
        s.add_dataset(b"good\n", name="g.jsonl", team="T2", channel="C1", report={"ok": True}, source_id="F2")
    with Store.open(path, datasets_dir=tmp_path / "ds") as s:  # a restart
        assert s.dataset_by_source("F1", team="T1") == bad and not bad.usable  # usable or not
        found = s.dataset_by_source("F2", team="T1")
        assert found == first and found.source_id == "F2" and found.team == "T1"
        assert s.dataset_by_source("F2", team="T3") is None  # another team's upload is not visible
        assert s.dataset_by_source("", team="T1") is None
        assert s.get_dataset(plain.hash).source_id is None


# ----------------------------------------------------------------- jobs


def test_job_roundtrip_every_field(store: Store) -> None:
    full = job(
        state=JobState.QUEUED,
        config={"epochs": 3, "lr": 2e-4, "target": ["q_proj", "v_proj"]},
        owner="U1",
        team="T1",
        channel="C1",
        reply_to={"channel": "C1", "ts": "123.456"},
        eval_dataset_hash="cd" * 32,
        remote_id=None,
        result={"note": "x"},
    )
    store.add_job(full)
    assert store.get_job(full.id) == full
    events = store.events(full.id)
    assert [e.kind for e in events] == ["state"] and events[0].data["state"] == "queued"


def test_duplicate_and_missing_jobs(store: Store) -> None:
    store.add_job(job())
    with pytest.raises(StoreError):
        store.add_job(job())
    with pytest.raises(JobNotFound):
        store.get_job("ft-nope")
    with pytest.raises(JobNotFound):
        store.transition("ft-nope", JobState.VALIDATING)


def test_job_team_isolation(store: Store) -> None:
    store.add_job(job(team="T1"))
    assert store.get_job("ft-00000001", team="T1").team == "T1"
    with pytest.raises(JobNotFound):
        store.get_job("ft-00000001", team="T2")


def test_transition_writes_state_and_event_together(store: Store) -> None:
    store.add_job(job())
    moved = store.transition(
        "ft-00000001",
        JobState.VALIDATING,
        now=T0 + timedelta(seconds=5),
        message="Checking the dataset.",
        changes={"worker_pid": 4242},
    )
    assert moved.state is JobState.VALIDATING and moved.worker_pid == 4242
    assert moved.started_at == T0 + timedelta(seconds=5)
    assert store.get_job(moved.id) == moved
    last = store.events(moved.id)[-1]
    assert (last.kind, last.message, last.data["state"], last.data["previous"]) == (
        "state",
        "Checking the dataset.",
        "validating",
        "queued",
    )


def test_forbidden_transition_changes_nothing(store: Store) -> None:
    store.add_job(job())
    store.transition("ft-00000001", JobState.CANCELLED)
    before = (store.get_job("ft-00000001"), store.events("ft-00000001"))
    with pytest.raises(InvalidTransition):
        store.transition("ft-00000001", JobState.VALIDATING)
    assert (store.get_job("ft-00000001"), store.events("ft-00000001")) == before


def test_failed_write_rolls_back_state_and_event(store: Store) -> None:
    store.add_job(job())
    n = len(store.events("ft-00000001"))
    with pytest.raises(ValueError):  # a bad extra change aborts the whole transaction
        store.transition("ft-00000001", JobState.VALIDATING, changes={"state": "succeeded"})
    assert store.get_job("ft-00000001").state is JobState.QUEUED
    assert len(store.events("ft-00000001")) == n


def test_transition_expect_guards_compare_and_set(store: Store) -> None:
    store.add_job(job())
    with pytest.raises(InvalidTransition):
        store.transition("ft-00000001", JobState.FAILED, expect=JobState.TRAINING)
    assert store.get_job("ft-00000001").state is JobState.QUEUED


def test_update_job_merges_result(store: Store) -> None:
    store.add_job(job(result={"a": 1}))
    store.update_job("ft-00000001", result={"b": 2}, worker_pid=7)
    got = store.get_job("ft-00000001")
    assert dict(got.result) == {"a": 1, "b": 2} and got.worker_pid == 7
    with pytest.raises(ValueError):
        store.update_job("ft-00000001", state=JobState.FAILED)


def test_jobs_listing_filters_and_queue_positions(store: Store) -> None:
    for i in range(4):
        store.add_job(job(f"ft-0000000{i}", at=T0 + timedelta(minutes=i), team="T1", channel=f"C{i % 2}"))
    store.add_job(job("ft-other", at=T0, team="T2"))
    store.transition("ft-00000000", JobState.VALIDATING)
    assert [j.id for j in store.jobs(team="T1")] == [
        "ft-00000003",
        "ft-00000002",
        "ft-00000001",
        "ft-00000000",
    ]
    assert [j.id for j in store.jobs(team="T1", channel="C1")] == ["ft-00000003", "ft-00000001"]
    assert [j.id for j in store.jobs(state=JobState.VALIDATING)] == ["ft-00000000"]
    assert len(store.jobs(limit=2)) == 2
    assert [j.id for j in store.queued_jobs()] == ["ft-other", "ft-00000001", "ft-00000002", "ft-00000003"]
    assert store.queue_position("ft-other") == 1
    assert store.queue_position("ft-00000003") == 4
    assert store.queue_position("ft-00000000") is None  # running, not queued
    store.update_job("ft-00000001", result={"awaiting_confirmation": True})
    assert store.queue_position("ft-00000001") is None
    assert store.queue_position("ft-00000003") == 3
    with pytest.raises(JobNotFound):
        store.queue_position("ft-missing")


# ----------------------------------------------------------------- events, evals


def test_events_sequence_and_after_seq(store: Store) -> None:
    store.add_job(job())
    seqs = [
        store.add_event(
            ProgressEvent(
                "ft-00000001", "step", step=i, total=10, epoch=i / 10, metrics={"loss": 1.0 / (i + 1)}
            )
        )
        for i in range(1, 6)
    ]
    assert seqs == [2, 3, 4, 5, 6]  # 1 is the "queued" state event
    after = store.events("ft-00000001", after_seq=4)
    assert [e.seq for e in after] == [5, 6]
    assert after[0].step == 4 and after[0].metrics["loss"] == pytest.approx(0.2)
    assert after[0].at is not None
    assert [e.kind for e in store.events("ft-00000001", kinds=("state",))] == ["state"]
    assert store.last_event_seq("ft-00000001") == 6
    assert store.events("ft-unknown") == []


def test_evals(store: Store) -> None:
    assert store.get_eval("ft-1") is None
    store.save_eval("ft-1", {"verdict": "improved", "metric": "mae"})
    store.save_eval("ft-1", {"verdict": "worse", "metric": "mae"})
    assert store.get_eval("ft-1") == {"verdict": "worse", "metric": "mae"}


def _hammer(path: str, job_id: str, n: int) -> None:
    s = Store.open(Path(path))
    for i in range(n):
        s.add_event(ProgressEvent(job_id, "log", message=f"{i}"))
    s.close()


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "ftbot.db"
    s = Store.open(path)
    s.add_job(job())
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(path), "ft-00000001", 150)) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(150):  # this process writes too, and reads while they write
        s.add_event(ProgressEvent("ft-00000001", "log", message=f"main {i}"))
        s.events("ft-00000001", after_seq=max(0, i - 5))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [e.seq for e in s.events("ft-00000001")] == list(range(1, 452))


# ----------------------------------------------------------------- models and defaults


def model(model_id: str, team: str = "T1", channel: str = "C1", **kw: object) -> ModelRecord:
    fields: dict[str, object] = dict(
        id=model_id,
        kind="local_adapter",
        base_model="builtin:tiny",
        job_id=model_id,
        team=team,
        channel=channel,
        created_at=T0,
        path=Path("/x") / model_id,
        verdict="improved",
    )
    fields.update(kw)
    return ModelRecord(**fields)  # type: ignore[arg-type]


def test_models_registry_and_team_isolation(store: Store) -> None:
    store.add_model(model("ft-a"))
    store.add_model(
        model(
            "ft-b",
            kind="openai",
            path=None,
            remote_name="ft:gpt-4o-mini:org::abc",
            created_at=T0 + timedelta(hours=1),
            metrics={"mae": 1.5},
        )
    )
    store.add_model(model("ft-c", team="T2"))
    assert [m.id for m in store.models("T1")] == ["ft-b", "ft-a"]
    assert [m.id for m in store.models("T2")] == ["ft-c"]
    assert store.get_model("ft-a", team="T1") == model("ft-a")
    assert store.get_model("ft:gpt-4o-mini:org::abc", team="T1").id == "ft-b"
    assert store.get_model("ft-b", team="T1").metrics == {"mae": 1.5}
    with pytest.raises(ModelNotFound):
        store.get_model("ft-c", team="T1")  # exists, but in another team
    with pytest.raises(StoreError):
        store.add_model(model("ft-a"))
    with pytest.raises(Exception, match="kind"):
        store.add_model(model("ft-z", kind="weird"))


def test_channel_defaults(store: Store) -> None:
    store.add_model(model("ft-a"))
    store.add_model(model("ft-b"))
    store.add_model(model("ft-c", team="T2"))
    assert store.default_model("T1", "C1") is None
    store.set_default("T1", "C1", "ft-a", set_by="U1")
    assert store.default_model("T1", "C1").id == "ft-a"
    store.set_default("T1", "C1", "ft-b")
    assert store.default_model("T1", "C1").id == "ft-b"
    assert store.default_model("T1", "C2") is None
    assert store.default_model("T2", "C1") is None
    with pytest.raises(ModelNotFound):
        store.set_default("T1", "C1", "ft-c")  # another team's model cannot become ours
    store.set_default("T1", "C1", None)
    assert store.default_model("T1", "C1") is None


def test_audit(store: Store) -> None:
    store.audit("U1", "cancel", "ft-1", {"reason": "mistake"})
    store.audit("U2", "submit", "ft-2")
    log = store.audit_log()
    assert [(a.actor, a.action, a.subject) for a in log] == [
        ("U2", "submit", "ft-2"),
        ("U1", "cancel", "ft-1"),
    ]
    assert store.audit_log(subject="ft-1")[0].details == {"reason": "mistake"}


def test_times_are_stored_in_utc_and_order_across_time_zones(store: Store) -> None:
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    # 13:30 at UTC+2 is 11:30 UTC: earlier than 12:00 UTC although its clock reads later.
    store.add_job(job("ft-early", at=datetime(2026, 1, 1, 13, 30, tzinfo=plus_two)))
    store.add_job(job("ft-late", at=T0))
    store.add_job(job("ft-naive", at=datetime(2026, 1, 1, 12, 30)))  # naive: taken as UTC
    assert [j.id for j in store.jobs()] == ["ft-naive", "ft-late", "ft-early"]
    assert store.get_job("ft-early").created_at == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
