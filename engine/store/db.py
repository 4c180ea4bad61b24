"""The :class:`Store`: every read and write, each write one short ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from engine.errors import (
    DatasetNotFound,
    FtbotError,
    InvalidTransition,
    JobNotFound,
    ModelNotFound,
    StoreError,
    UsageError,
)
from engine.jobs import Job, JobState, advance
from engine.progress import ProgressEvent
from engine.store.migrations import MIGRATIONS
from engine.store.records import (
    CHOICE_AUTO,
    CHOICE_BASE,
    CHOICE_MODEL,
    CHOICE_MODES,
    MODEL_KINDS,
    PROMOTION_RULE,
    AuditRecord,
    DatasetRecord,
    DefaultChoice,
    ModelRecord,
    _utcnow,
)
from engine.store.rows import (
    _JOB_UPDATABLE,
    _dt,
    _dumps,
    _iso,
    _job_to_row,
    _loads,
    _row_to_dataset,
    _row_to_event,
    _row_to_job,
    _row_to_model,
)

BUSY_TIMEOUT_SECONDS = 30.0
_CHUNK = 1 << 20


class Store:
    """All persistent state. Thread-safe within a process; safe across processes (WAL).

    Build with :meth:`open` (a file) or :meth:`memory` (tests). ``clock`` stamps rows that carry
    no time of their own (events without ``at``, audit entries, dataset uploads).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        datasets_dir: Path | None = None,
        clock: Callable[[], datetime] = _utcnow,
        path: Path | None = None,
    ) -> None:
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self.datasets_dir = datasets_dir
        self.path = path
        self._clock = clock
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            if path is not None:
                self._db.enable_wal()
                # WAL + NORMAL is durable across application crashes (only an OS crash may lose
                # the last transactions) and much faster than FULL.
                self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write():
                MIGRATIONS.apply(self._db)
        except sqlite3.DatabaseError as exc:
            where = f" at {path}" if path else ""
            raise StoreError(
                f"The database{where} cannot be opened or migrated: {exc}.",
                hint="Check that FTBOT_HOME points to a writable directory and that the file is an ftbot database.",
            ) from exc

    # ----- construction

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        datasets_dir: Path | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Store:
        """Open (creating if needed) the database at ``path`` and apply pending migrations.

        ``datasets_dir`` defaults to ``path.parent / "datasets"``.

        Raises:
            StoreError: the file cannot be created, opened or migrated.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"The database at {path} cannot be opened: {exc}.",
                hint="Check that FTBOT_HOME points to a writable directory.",
            ) from exc
        return cls(conn, datasets_dir=datasets_dir or path.parent / "datasets", clock=clock, path=path)

    @classmethod
    def memory(cls, *, datasets_dir: Path | None = None, clock: Callable[[], datetime] = _utcnow) -> Store:
        """An in-memory store (one process only). ``datasets_dir`` is needed only to add datasets."""
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        return cls(conn, datasets_dir=datasets_dir, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- plumbing

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One short write transaction holding the database's write lock from the start."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._db.query(sql, params))

    def schema_migrations(self) -> list[str]:
        """Names of the applied migrations, in order."""
        return [m.name for m in MIGRATIONS.applied(self._db)]

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.journal_mode)

    # ----- datasets

    def add_dataset(
        self,
        source: Path | bytes,
        *,
        name: str,
        uploaded_by: str = "",
        team: str = "",
        channel: str = "",
        report: Mapping[str, Any] | None = None,
        source_id: str | None = None,
    ) -> DatasetRecord:
        """Store a dataset file content-addressed and record this upload.

        ``source`` is a path (streamed, any size) or the bytes. ``report`` is the validation
        report as a dict; the upload is usable when ``report["ok"]`` is true. ``source_id`` names
        where the upload came from (a Slack file id; see :meth:`dataset_by_source`).

        Raises:
            StoreError: no datasets directory, or the file cannot be written.
            DatasetNotFound: ``source`` is a path that does not exist.
        """
        if self.datasets_dir is None:
            raise StoreError("This store has no datasets directory; open it with datasets_dir=.")
        directory = Path(self.datasets_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            digest, size, tmp = self._copy_hashing(source, directory)
            target = directory / f"{digest}.jsonl"
            if target.exists():
                os.unlink(tmp)  # the same bytes are already stored
            else:
                os.replace(tmp, target)  # atomic: readers never see a half-written file
        except FileNotFoundError as exc:
            raise DatasetNotFound(f"The file {source} does not exist.") from exc
        except OSError as exc:
            raise StoreError(f"Could not store the dataset {name!r}: {exc}.") from exc
        report = dict(report or {})
        row = {
            "hash": digest,
            "name": name,
            "path": str(target),
            "size": size,
            "uploaded_by": uploaded_by,
            "team": team,
            "channel": channel,
            "report": _dumps(report),
            "usable": int(bool(report.get("ok", False))),
            "created_at": _iso(self._clock()),
            "source_id": source_id,
        }
        with self._write() as db:
            row_id = db["datasets"].insert(row).last_pk  # type: ignore[union-attr]
        return _row_to_dataset({**row, "id": row_id})

    @staticmethod
    def _copy_hashing(source: Path | bytes, directory: Path) -> tuple[str, int, str]:
        hasher = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes | bytearray | memoryview):
                    data = bytes(source)
                    hasher.update(data)
                    out.write(data)
                    size = len(data)
                else:
                    with open(source, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            hasher.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return hasher.hexdigest(), size, tmp

    def get_dataset(self, ref: str, *, team: str | None = None) -> DatasetRecord:
        """The latest upload of a dataset, seen from ``team`` when given. ``ref`` is its hash, a
        unique prefix of it (8+ hex digits), or the file name it was uploaded under.

        Raises:
            DatasetNotFound: no such dataset (or not visible to ``team``), or an ambiguous prefix.
        """
        raw = (ref or "").strip()
        key = raw.lower()
        scope, scope_params = ("and team = ? ", [team]) if team is not None else ("", [])
        rows: list[dict[str, Any]] = []
        if len(key) >= 8 and all(c in "0123456789abcdef" for c in key):
            rows = self._query(
                "select * from datasets where hash like ? " + scope + "order by id desc",
                [key + "%", *scope_params],
            )
            hashes = {r["hash"] for r in rows}
            if len(hashes) > 1:
                raise DatasetNotFound(
                    f"{raw!r} matches {len(hashes)} datasets.", hint="Give more characters of the hash."
                )
        if not rows and raw:
            rows = self._query(
                "select * from datasets where name = ? " + scope + "order by id desc limit 1",
                [raw, *scope_params],
            )
        if not rows:
            raise DatasetNotFound(
                f"No dataset {raw!r}.",
                hint="Upload the file first, or name it by its file name or the first 8+ characters of its hash.",
            )
        return _row_to_dataset(rows[0])

    def dataset_by_source(
        self, source_id: str, *, team: str, channel: str | None = None
    ) -> DatasetRecord | None:
        """The latest upload of ``team`` recorded with ``source_id`` (usable or not), or None;
        with ``channel``, only an upload recorded in that channel (one file shared into several
        channels has a record in each)."""
        if not source_id:
            return None
        sql, params = "select * from datasets where team = ? and source_id = ? ", [team, source_id]
        if channel is not None:
            sql, params = sql + "and channel = ? ", [*params, channel]
        rows = self._query(sql + "order by id desc limit 1", params)
        return _row_to_dataset(rows[0]) if rows else None

    def latest_dataset(self, team: str, channel: str, *, usable_only: bool = True) -> DatasetRecord | None:
        """The most recent upload in this team's channel (usable ones only by default)."""
        sql = "select * from datasets where team = ? and channel = ? "
        if usable_only:
            sql += "and usable = 1 "
        rows = self._query(sql + "order by id desc limit 1", [team, channel])
        return _row_to_dataset(rows[0]) if rows else None

    def datasets(self, *, team: str | None = None, limit: int = 50) -> list[DatasetRecord]:
        sql, params = "select * from datasets ", []
        if team is not None:
            sql, params = sql + "where team = ? ", [team]
        return [_row_to_dataset(r) for r in self._query(sql + "order by id desc limit ?", [*params, limit])]

    # ----- jobs

    def add_job(self, job: Job, *, message: str = "") -> Job:
        """Insert a new job, with its first ``state`` event, in one transaction.

        Raises:
            StoreError: a job with this id exists.
        """
        with self._write() as db:
            if self._job_row(job.id) is not None:
                raise StoreError(f"A job {job.id} already exists.")
            db["jobs"].insert(_job_to_row(job))  # type: ignore[union-attr]
            self._insert_event(
                ProgressEvent(
                    job_id=job.id,
                    kind="state",
                    message=message or "Job queued.",
                    data={"state": job.state.value},
                    at=job.created_at,
                )
            )
        return job

    def _job_row(self, job_id: str) -> dict[str, Any] | None:
        rows = list(self._db.query("select * from jobs where id = ?", [job_id]))
        return rows[0] if rows else None

    def get_job(self, job_id: str, *, team: str | None = None) -> Job:
        """Raises :class:`JobNotFound` when there is no such job (or it belongs to another team)."""
        with self._lock:
            row = self._job_row(job_id)
        if row is None or (team is not None and (row["team"] or "") != team):
            raise JobNotFound(f"No job {job_id!r}.", hint="List jobs with `/finetune list` or `ftbot jobs`.")
        return _row_to_job(row)

    def save_job(self, job: Job) -> Job:
        """Overwrite a job row as a whole (prefer :meth:`transition` and :meth:`update_job`, which
        cannot lose a concurrent change)."""
        with self._write() as db:
            if self._job_row(job.id) is None:
                raise JobNotFound(f"No job {job.id!r}.")
            db["jobs"].update(job.id, _job_to_row(job))  # type: ignore[union-attr]
        return job

    def update_job(self, job_id: str, **changes: Any) -> Job:
        """Change non-state fields of a job (``worker_pid``, ``result``, ``model_id``, ...) atomically.

        ``result`` is merged key by key into the stored result (so two writers adding different
        keys do not overwrite each other); other fields are replaced.
        """
        bad = set(changes) - _JOB_UPDATABLE
        if bad:
            raise ValueError(f"update_job cannot change {sorted(bad)}; use transition() for state")
        with self._write() as db:
            row = self._job_row(job_id)
            if row is None:
                raise JobNotFound(f"No job {job_id!r}.")
            job = _row_to_job(row)
            if "result" in changes:
                changes["result"] = {**job.result, **dict(changes["result"] or {})}
            job = replace(job, **changes)
            db["jobs"].update(job_id, _job_to_row(job))  # type: ignore[union-attr]
        return job

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        now: datetime | None = None,
        error: str | None = None,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
        expect: JobState | None = None,
    ) -> Job:
        """Move a job to state ``to`` and record its ``state`` event, in one transaction.

        ``changes`` sets other fields in the same write (as :meth:`update_job`). ``expect``:
        refuse unless the job is currently in that state (guards a compare-and-set).

        Raises:
            JobNotFound: no such job.
            InvalidTransition: the state machine forbids it (e.g. the job was cancelled meanwhile).
        """
        now = now or self._clock()
        with self._write() as db:
            row = self._job_row(job_id)
            if row is None:
                raise JobNotFound(f"No job {job_id!r}.")
            job = _row_to_job(row)
            if expect is not None and job.state != expect:
                raise InvalidTransition(job.state.value, to.value)
            previous = job.state
            job = advance(job, to, now=now, error=error)
            if changes:
                bad = set(changes) - _JOB_UPDATABLE
                if bad:
                    raise ValueError(f"transition cannot change {sorted(bad)}")
                extra = dict(changes)
                if "result" in extra:
                    extra["result"] = {**job.result, **dict(extra["result"] or {})}
                job = replace(job, **extra)
            db["jobs"].update(job_id, _job_to_row(job))  # type: ignore[union-attr]
            self._insert_event(
                ProgressEvent(
                    job_id=job_id,
                    kind="state",
                    message=message or (error or f"Job is {to.value}."),
                    data={**dict(data or {}), "state": to.value, "previous": previous.value},
                    at=now,
                )
            )
        return job

    def jobs(
        self,
        *,
        state: JobState | str | None = None,
        states: tuple[JobState, ...] | None = None,
        team: str | None = None,
        channel: str | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs, newest first, filtered by any of the arguments."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(JobState(state).value)
        if states:
            where.append(f"state in ({', '.join('?' for _ in states)})")
            params.extend(JobState(s).value for s in states)
        for column, value in (("team", team), ("channel", channel), ("owner", owner)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "select * from jobs" + (" where " + " and ".join(where) if where else "")
        sql += " order by created_at desc, rowid desc limit ?"
        return [_row_to_job(r) for r in self._query(sql, [*params, limit])]

    def queued_jobs(self) -> list[Job]:
        """Queued jobs in dispatch order (oldest first)."""
        rows = self._query("select * from jobs where state = 'queued' order by created_at, rowid")
        return [_row_to_job(r) for r in rows]

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 for the one after, ...; None when the job is not queued.

        Jobs waiting for a cost confirmation (``result["awaiting_confirmation"]``) do not hold a
        place and have none.
        """
        ready = [j for j in self.queued_jobs() if not j.result.get("awaiting_confirmation")]
        for position, job in enumerate(ready, start=1):
            if job.id == job_id:
                return position
        self.get_job(job_id)  # raises JobNotFound for an unknown id
        return None

    # ----- events

    def _insert_event(self, event: ProgressEvent) -> int:
        """Inside a write transaction: append ``event`` with the job's next sequence number."""
        (seq,) = self._conn.execute(
            "select coalesce(max(seq), 0) + 1 from events where job_id = ?", [event.job_id]
        ).fetchone()
        self._db["events"].insert(  # type: ignore[union-attr]
            {
                "job_id": event.job_id,
                "seq": seq,
                "kind": event.kind,
                "message": event.message,
                "step": event.step,
                "total": event.total,
                "epoch": event.epoch,
                "metrics": _dumps(dict(event.metrics)),
                "data": _dumps(dict(event.data)),
                "at": _iso(event.at or self._clock()),
            }
        )
        return int(seq)

    def add_event(self, event: ProgressEvent) -> int:
        """Append an event to its job's log; returns its sequence number (1, 2, ... per job)."""
        with self._write():
            return self._insert_event(event)

    def events(
        self,
        job_id: str,
        *,
        after_seq: int = 0,
        kinds: tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> list[ProgressEvent]:
        """A job's events with ``seq > after_seq``, in order."""
        sql = "select * from events where job_id = ? and seq > ?"
        params: list[Any] = [job_id, after_seq]
        if kinds:
            sql += f" and kind in ({', '.join('?' for _ in kinds)})"
            params.extend(kinds)
        sql += " order by seq"
        if limit is not None:
            sql += " limit ?"
            params.append(limit)
        return [_row_to_event(r) for r in self._query(sql, params)]

    def event_feed(self, *, after: int = 0, limit: int = 1000) -> list[tuple[int, ProgressEvent]]:
        """Every job's events in the order they were written, as ``(cursor, event)`` pairs with
        ``cursor > after``. The relay keeps the last cursor and asks for what came next."""
        rows = self._query(
            "select rowid as _cursor, * from events where rowid > ? order by rowid limit ?", [after, limit]
        )
        return [(int(r["_cursor"]), _row_to_event(r)) for r in rows]

    def event_feed_cursor(self) -> int:
        """The cursor of the newest event (0 when there is none)."""
        return int(self._query("select coalesce(max(rowid), 0) as c from events")[0]["c"])

    def last_event_seq(self, job_id: str) -> int:
        rows = self._query("select coalesce(max(seq), 0) as s from events where job_id = ?", [job_id])
        return int(rows[0]["s"])

    # ----- deliveries: how far a display has really shown a job's events

    def delivered_seq(self, job_id: str) -> int | None:
        """The highest ``seq`` of ``job_id``'s events a display recorded as shown, or None when
        nothing was recorded for the job (it is not tracked)."""
        rows = self._query("select seq from deliveries where job_id = ?", [job_id])
        return int(rows[0]["seq"]) if rows else None

    def set_delivered_seq(self, job_id: str, seq: int) -> int:
        """Record that ``job_id``'s events up to ``seq`` were shown; starts tracking the job.
        Never moves back (a lower ``seq`` keeps the stored one). Returns the stored value."""
        with self._write():
            self._conn.execute(
                "insert into deliveries (job_id, seq, updated_at) values (?, ?, ?) "
                "on conflict(job_id) do update set seq = max(seq, excluded.seq), "
                "updated_at = excluded.updated_at",
                [job_id, int(seq), _iso(self._clock())],
            )
            (stored,) = self._conn.execute("select seq from deliveries where job_id = ?", [job_id]).fetchone()
        return int(stored)

    def undelivered_jobs(self, *, limit: int = 200) -> list[Job]:
        """Tracked jobs (see :meth:`set_delivered_seq`) with events after the recorded one,
        oldest first: what a display must catch up on after a restart."""
        rows = self._query(
            "select j.* from jobs j join deliveries d on d.job_id = j.id "
            "where d.seq < (select coalesce(max(e.seq), 0) from events e where e.job_id = j.id) "
            "order by j.created_at, j.rowid limit ?",
            [limit],
        )
        return [_row_to_job(r) for r in rows]

    # ----- evals

    def save_eval(self, job_id: str, report: Mapping[str, Any]) -> None:
        with self._write() as db:
            db["evals"].upsert(  # type: ignore[union-attr]
                {"job_id": job_id, "report": _dumps(dict(report)), "created_at": _iso(self._clock())},
                pk="job_id",
            )

    def get_eval(self, job_id: str) -> dict[str, Any] | None:
        rows = self._query("select report from evals where job_id = ?", [job_id])
        return _loads(rows[0]["report"], {}) if rows else None

    # ----- models

    def add_model(self, model: ModelRecord) -> ModelRecord:
        """Register a model. Raises :class:`UsageError` for an unknown kind, StoreError for a taken id."""
        if model.kind not in MODEL_KINDS:
            raise UsageError(f"Unknown model kind {model.kind!r}; expected one of {sorted(MODEL_KINDS)}.")
        row = {
            "id": model.id,
            "kind": model.kind,
            "base_model": model.base_model,
            "path": str(model.path) if model.path else None,
            "remote_name": model.remote_name,
            "job_id": model.job_id,
            "team": model.team,
            "channel": model.channel,
            "verdict": model.verdict,
            "system_prompt": model.system_prompt,
            "metrics": _dumps(dict(model.metrics)),
            "created_at": _iso(model.created_at),
        }
        with self._write() as db:
            if list(db.query("select 1 from models where id = ?", [model.id])):
                raise StoreError(f"A model {model.id} already exists.")
            db["models"].insert(row)  # type: ignore[union-attr]
        return model

    def get_model(self, model_id: str, *, team: str) -> ModelRecord:
        """The model ``model_id`` of ``team`` (an OpenAI ``ft:`` name works too).

        Raises:
            ModelNotFound: no such model in this team (another team's models are invisible).
        """
        rows = self._query(
            "select * from models where team = ? and (id = ? or remote_name = ?)", [team, model_id, model_id]
        )
        if not rows:
            raise ModelNotFound(
                f"No model {model_id!r} in this workspace.", hint="List models with `ftbot models`."
            )
        return _row_to_model(rows[0])

    def models(self, team: str, *, channel: str | None = None, limit: int = 100) -> list[ModelRecord]:
        """A team's models, newest first."""
        sql, params = "select * from models where team = ?", [team]
        if channel is not None:
            sql += " and channel = ?"
            params.append(channel)
        sql += " order by created_at desc, rowid desc limit ?"
        return [_row_to_model(r) for r in self._query(sql, [*params, limit])]

    # ----- the channel's current model (DefaultChoice)

    def set_default(self, team: str, channel: str, model_id: str | None, *, set_by: str = "") -> None:
        """A user's choice: make ``model_id`` (one of ``team``'s models) the channel's current
        model (mode ``model``: later promotions do not replace it). None forgets the channel's
        entry altogether (the choice and the rule's last pick): no current model until the next
        promotion.

        Raises:
            ModelNotFound: the model is not one of this team's.
        """
        if model_id is None:
            with self._write() as db:
                db.execute("delete from defaults where team = ? and channel = ?", [team, channel])
            return
        self.set_default_choice(team, channel, CHOICE_MODEL, model_id, set_by=set_by)

    def set_default_choice(
        self, team: str, channel: str, mode: str, model_id: str | None = None, *, set_by: str = ""
    ) -> DefaultChoice:
        """Set how the channel's current model is chosen (see :class:`DefaultChoice`), in one
        transaction, and return the result:

        * ``mode="model"``: ``model_id`` (one of ``team``'s models) is current until changed.
        * ``mode="base"``: the base model alone answers until changed.
        * ``mode="auto"``: the promotion rule's latest pick in this channel is current again
          (none yet: the base model answers), and later promotions replace it.

        ``set_by`` (a user id) and the time are recorded; the rule's latest pick is kept.

        Raises:
            ModelNotFound: ``mode="model"`` and the model is not one of this team's.
            ValueError: an unknown ``mode``, or a ``model_id`` with another mode (a bug).
        """
        if mode not in CHOICE_MODES:
            raise ValueError(f"mode must be one of {CHOICE_MODES}, not {mode!r}")
        if (mode == CHOICE_MODEL) != (model_id is not None):
            raise ValueError("model_id is needed with mode 'model' and only then")
        with self._write() as db:
            if mode == CHOICE_MODEL and not list(
                db.query("select 1 from models where id = ? and team = ?", [model_id, team])
            ):
                raise ModelNotFound(
                    f"No model {model_id!r} in this workspace.", hint="List models with `ftbot models`."
                )
            row = self._default_row(team, channel)
            promoted_id = row.get("promoted_id") if row else None
            current = {CHOICE_MODEL: model_id, CHOICE_AUTO: promoted_id, CHOICE_BASE: None}[mode]
            db["defaults"].upsert(  # type: ignore[union-attr]
                {
                    "team": team,
                    "channel": channel,
                    "model_id": current,
                    "set_by": set_by,
                    "set_at": _iso(self._clock()),
                    "choice": mode,
                },
                pk=("team", "channel"),
            )
        return self.default_choice(team, channel)

    def promote(self, team: str, channel: str, model_id: str) -> DefaultChoice:
        """The promotion rule picked ``model_id`` (a fine-tune of this channel that was not worse
        than its baseline and learned something). It is recorded as the channel's latest promoted model either way, and
        becomes the current model only in mode ``auto``: a user's choice (``model`` or ``base``)
        stands. Returns the channel's choice afterwards; ``result.model_id == model_id`` says
        whether the model became current. Calling it again for the same model is harmless.

        Raises:
            ModelNotFound: the model is not one of this team's.
        """
        now = _iso(self._clock())
        with self._write() as db:
            if not list(db.query("select 1 from models where id = ? and team = ?", [model_id, team])):
                raise ModelNotFound(f"No model {model_id!r} in this workspace.")
            row = self._default_row(team, channel)
            values: dict[str, Any] = {
                "team": team,
                "channel": channel,
                "promoted_id": model_id,
                "promoted_at": now,
            }
            if row is None or (row.get("choice") or CHOICE_AUTO) == CHOICE_AUTO:
                values.update(model_id=model_id, set_by=PROMOTION_RULE, set_at=now, choice=CHOICE_AUTO)
            db["defaults"].upsert(values, pk=("team", "channel"))  # type: ignore[union-attr]
        return self.default_choice(team, channel)

    def _default_row(self, team: str, channel: str) -> dict[str, Any] | None:
        rows = self._query("select * from defaults where team = ? and channel = ?", [team, channel])
        return rows[0] if rows else None

    def _team_model(self, team: str, model_id: str | None) -> ModelRecord | None:
        if not model_id:
            return None
        rows = self._query("select * from models where team = ? and id = ?", [team, model_id])
        return _row_to_model(rows[0]) if rows else None

    def default_choice(self, team: str, channel: str) -> DefaultChoice:
        """The channel's :class:`DefaultChoice` (mode ``auto`` with no model when nothing was set)."""
        row = self._default_row(team, channel)
        if row is None:
            return DefaultChoice(team=team, channel=channel)
        mode = row.get("choice") or CHOICE_AUTO
        return DefaultChoice(
            team=team,
            channel=channel,
            mode=mode,
            model=None if mode == CHOICE_BASE else self._team_model(team, row["model_id"]),
            set_by=row["set_by"] or "",
            set_at=_dt(row["set_at"]),
            promoted=self._team_model(team, row.get("promoted_id")),
        )

    def default_model(self, team: str, channel: str) -> ModelRecord | None:
        """The channel's current model, or None when the base model answers (nothing promoted
        yet, or a user chose ``base``)."""
        return self.default_choice(team, channel).model

    # ----- meta

    def get_meta(self, key: str) -> str | None:
        rows = self._query("select value from meta where key = ?", [key])
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db["meta"].upsert({"key": key, "value": value}, pk="key")  # type: ignore[union-attr]

    # ----- audit

    def audit(
        self, actor: str, action: str, subject: str = "", details: Mapping[str, Any] | None = None
    ) -> None:
        """Record who did what (submit, cancel, set default, ...). Never raises for the caller's
        sake: an audit write failure must not undo the action it describes."""
        try:
            with self._write() as db:
                db["audit"].insert(  # type: ignore[union-attr]
                    {
                        "at": _iso(self._clock()),
                        "actor": actor,
                        "action": action,
                        "subject": subject,
                        "details": _dumps(dict(details or {})),
                    }
                )
        except (sqlite3.Error, FtbotError):
            pass

    def audit_log(self, *, subject: str | None = None, limit: int = 100) -> list[AuditRecord]:
        sql, params = "select * from audit", []
        if subject is not None:
            sql, params = sql + " where subject = ?", [subject]
        rows = self._query(sql + " order by id desc limit ?", [*params, limit])
        return [
            AuditRecord(
                id=r["id"],
                at=_dt(r["at"]),  # type: ignore[arg-type]
                actor=r["actor"] or "",
                action=r["action"] or "",
                subject=r["subject"] or "",
                details=_loads(r["details"], {}),
            )
            for r in rows
        ]
