"""Persistent state: datasets, jobs, events, evals, models, defaults and an audit log, in SQLite.

Only this package imports ``sqlite_utils`` (:mod:`~engine.store.db`, :mod:`~engine.store.migrations`).
Rows go in and out as frozen dataclasses
(:class:`~engine.jobs.Job`, :class:`~engine.progress.ProgressEvent`, :class:`DatasetRecord`,
:class:`ModelRecord`, :class:`AuditRecord`); no sqlite-utils object leaves this package.

The package: :mod:`~engine.store.db` (the :class:`Store`), :mod:`~engine.store.records` (the
records), :mod:`~engine.store.rows` (records to rows and back), :mod:`~engine.store.migrations`
(the schema).

Concurrency: the bot process and one worker child write the same file. The database runs in WAL
mode (readers never block the writer) with a busy timeout, and every write is one short
``BEGIN IMMEDIATE`` transaction: taking the write lock up front means a read-then-write (a state
transition, the next event number) can never fail half way with ``SQLITE_BUSY`` when another
process wrote in between. Within one process a lock serialises threads on the shared connection.

Schema changes are sqlite-utils ``Migrations``, applied in order on open (under the same write
lock, so two processes opening a fresh file at once do not race) and recorded in
``_sqlite_migrations``. Add a new migration at the end; never edit an applied one.

Dataset files are content-addressed: ``datasets_dir/<sha256>.jsonl``. The same bytes uploaded twice
are stored once; each upload still gets its own row (who, where, when), so a channel's latest
dataset can be a file first uploaded elsewhere.

Team isolation: models and datasets carry their team; lookups that take ``team`` never return
another team's rows (they raise ``*NotFound`` as if the row did not exist).
"""

from engine.store.db import BUSY_TIMEOUT_SECONDS, Store
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
)

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "CHOICE_AUTO",
    "CHOICE_BASE",
    "CHOICE_MODEL",
    "CHOICE_MODES",
    "MIGRATIONS",
    "MODEL_KINDS",
    "PROMOTION_RULE",
    "AuditRecord",
    "DatasetRecord",
    "DefaultChoice",
    "ModelRecord",
    "Store",
]
