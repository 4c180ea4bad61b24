"""The schema, as sqlite-utils ``Migrations`` applied in order on open. Add new ones at the end; never edit an applied one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlite_utils

from engine.store.records import CHOICE_AUTO, PROMOTION_RULE

# --------------------------------------------------------------------------- migrations

MIGRATIONS = sqlite_utils.Migrations("ftbot")


@MIGRATIONS(name="0001_initial")
def _m0001_initial(db: sqlite_utils.Database) -> None:
    db["datasets"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "hash": str,
            "name": str,
            "path": str,
            "size": int,
            "uploaded_by": str,
            "team": str,
            "channel": str,
            "report": str,
            "usable": int,
            "created_at": str,
        },
        pk="id",
        not_null={"hash", "name", "path", "created_at"},
    )
    db["datasets"].create_index(["hash"])  # type: ignore[union-attr]
    db["datasets"].create_index(["team", "channel", "id"])  # type: ignore[union-attr]
    db["jobs"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "backend": str,
            "base_model": str,
            "dataset_hash": str,
            "eval_dataset_hash": str,
            "state": str,
            "config": str,
            "owner": str,
            "team": str,
            "channel": str,
            "reply_to": str,
            "created_at": str,
            "updated_at": str,
            "started_at": str,
            "finished_at": str,
            "error": str,
            "remote_id": str,
            "worker_pid": int,
            "model_id": str,
            "result": str,
        },
        pk="id",
        not_null={"backend", "state", "created_at", "updated_at"},
    )
    db["jobs"].create_index(["state", "created_at"])  # type: ignore[union-attr]
    db["jobs"].create_index(["team", "channel"])  # type: ignore[union-attr]
    db["events"].create(  # type: ignore[union-attr]
        {
            "job_id": str,
            "seq": int,
            "kind": str,
            "message": str,
            "step": int,
            "total": int,
            "epoch": float,
            "metrics": str,
            "data": str,
            "at": str,
        },
        pk=("job_id", "seq"),
    )
    db["evals"].create(  # type: ignore[union-attr]
        {"job_id": str, "report": str, "created_at": str}, pk="job_id"
    )
    db["models"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "kind": str,
            "base_model": str,
            "path": str,
            "remote_name": str,
            "job_id": str,
            "team": str,
            "channel": str,
            "verdict": str,
            "system_prompt": str,
            "metrics": str,
            "created_at": str,
        },
        pk="id",
    )
    db["models"].create_index(["team", "created_at"])  # type: ignore[union-attr]
    db["defaults"].create(  # type: ignore[union-attr]
        {"team": str, "channel": str, "model_id": str, "set_by": str, "set_at": str},
        pk=("team", "channel"),
    )
    db["audit"].create(  # type: ignore[union-attr]
        {"id": int, "at": str, "actor": str, "action": str, "subject": str, "details": str},
        pk="id",
    )


@MIGRATIONS(name="0002_meta")
def _m0002_meta(db: sqlite_utils.Database) -> None:
    # Small process state that must survive restarts (e.g. how far the scheduler relayed events).
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


@MIGRATIONS(name="0003_dataset_source")
def _m0003_dataset_source(db: sqlite_utils.Database) -> None:
    # The upload's origin (a Slack file id): the Slack app's file -> dataset map and its dedupe
    # of repeated deliveries survive a restart.
    db["datasets"].add_column("source_id", str)  # type: ignore[union-attr]
    db["datasets"].create_index(["team", "source_id"])  # type: ignore[union-attr]


@MIGRATIONS(name="0004_default_choice")
def _m0004_default_choice(db: sqlite_utils.Database) -> None:
    # A channel's current model is now one of three choices (DefaultChoice.mode): the promotion
    # rule's pick ("auto"), a user's model ("model") or a user's "base" (model_id NULL). The rule's
    # latest pick is kept apart (promoted_id) so that a user's choice survives later promotions and
    # going back to "auto" restores the latest promoted fine-tune.
    defaults = db["defaults"]
    defaults.add_column("choice", str)  # type: ignore[union-attr]
    defaults.add_column("promoted_id", str)  # type: ignore[union-attr]
    defaults.add_column("promoted_at", str)  # type: ignore[union-attr]
    db.execute(
        "update defaults set choice = case when set_by = ? then 'auto' else 'model' end, "
        "promoted_id = case when set_by = ? then model_id end, "
        "promoted_at = case when set_by = ? then set_at end",
        [PROMOTION_RULE] * 3,
    )
    # A user's choice made before this migration had replaced the rule's pick: find the channel's
    # latest promoted fine-tune again from its job's recorded result (parsed here, not by SQLite's
    # JSON functions, so one odd row cannot stop the migration).
    for row in list(db.query("select team, channel from defaults where choice = 'model'")):
        candidates = list(
            db.query(
                "select m.id, m.created_at, j.result from models m join jobs j on j.id = m.job_id "
                "where m.team = ? and m.channel = ? order by m.created_at desc, m.rowid desc",
                [row["team"], row["channel"]],
            )
        )
        for candidate in candidates:
            try:
                promoted = bool(json.loads(candidate["result"] or "{}").get("promoted"))
            except (ValueError, AttributeError):
                promoted = False
            if promoted:
                db.execute(
                    "update defaults set promoted_id = ?, promoted_at = ? where team = ? and channel = ?",
                    [candidate["id"], candidate["created_at"], row["team"], row["channel"]],
                )
                break


@MIGRATIONS(name="0005_deliveries")
def _m0005_deliveries(db: sqlite_utils.Database) -> None:
    # How far a display that shows a job's events on its own thread (the Slack card) has really
    # shown them: the relay's cursor only says what was handed over. No rows for older jobs: a
    # job without a row is not caught up after a restart (nothing to replay twice).
    db["deliveries"].create(  # type: ignore[union-attr]
        {"job_id": str, "seq": int, "updated_at": str}, pk="job_id"
    )


# Where the local console (`ftbot chat`) worked before 0006, and the one local workspace that the
# console and the CLI (`ftbot run/ask/jobs/models`) share since (bot/commands/common.py's
# LOCAL_TEAM, LOCAL_CHANNEL; the engine cannot import bot/, so the values are repeated here).
_OLD_CONSOLE_WORKSPACE = ("local", "console")
_LOCAL_WORKSPACE = ("", "")


@MIGRATIONS(name="0006_local_workspace")
def _m0006_local_workspace(db: sqlite_utils.Database) -> None:
    # The console ran in team "local", channel "console" while the CLI used team "", channel "":
    # a fine-tune made in the console was listed by `ftbot jobs` but `ftbot ask --model ID` could
    # not find it. Both now use the CLI's workspace; move the console's rows there. Every step
    # only touches rows still in the old workspace, so running it again changes nothing.
    old_team, old_channel = _OLD_CONSOLE_WORKSPACE
    team, channel = _LOCAL_WORKSPACE
    for table in ("datasets", "jobs", "models"):
        db.execute(
            f"update {table} set team = ?, channel = ? where team = ? and channel = ?",
            [team, channel, old_team, old_channel],
        )
    # The channel's current-model row: the two workspaces may each have one; keep one, merged.
    rows = {
        (row["team"], row["channel"]): row
        for row in db.query(
            "select * from defaults where (team = ? and channel = ?) or (team = ? and channel = ?)",
            [old_team, old_channel, team, channel],
        )
    }
    legacy = rows.get(_OLD_CONSOLE_WORKSPACE)
    if legacy is None:
        return
    current = rows.get(_LOCAL_WORKSPACE)
    merged = _merge_defaults(legacy, current) if current is not None else dict(legacy)
    merged.update(team=team, channel=channel)
    db.execute("delete from defaults where team = ? and channel = ?", [old_team, old_channel])
    db["defaults"].upsert(merged, pk=("team", "channel"))  # type: ignore[union-attr]


def _merge_defaults(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """One channel's current-model row made of two (0006: the console's and the CLI's).

    A person's choice (``model`` or ``base``) beats the promotion rule's; between two of the same
    kind the later one wins. The rule's latest pick (``promoted_id``) is the later of the two
    promotions, and under ``auto`` it is also the current model, as :meth:`Store.promote` keeps it.
    """

    def by_user(row: Mapping[str, Any]) -> bool:
        return (row.get("choice") or CHOICE_AUTO) != CHOICE_AUTO

    ranked = sorted((a, b), key=lambda row: (by_user(row), row.get("set_at") or ""))
    merged = dict(ranked[-1])
    promotions = [row for row in (a, b) if row.get("promoted_id")]
    if promotions:
        latest = max(promotions, key=lambda row: row.get("promoted_at") or "")
        merged.update(promoted_id=latest["promoted_id"], promoted_at=latest.get("promoted_at"))
    if not by_user(merged):
        merged.update(choice=CHOICE_AUTO, model_id=merged.get("promoted_id"))
    return merged


# --------------------------------------------------------------------------- conversions
