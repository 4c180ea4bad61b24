"""Uploads: ``message`` with files (subtype ``file_share``) and ``file_shared``. Download the JSONL
file (bot/slack/files.py), store and validate it (``Engine.add_dataset``), reply in the file's
thread with the report and a Start fine-tuning button.

A file is taken in once per ``(team, channel, file id)`` (:class:`bot.slack.once.OnceEach`): one
upload can arrive as both events, and a second delivery is dropped while the first is being
handled or once it succeeded; an intake that failed is forgotten, so sharing the file again works.
Across restarts the engine's record of each upload (``Engine.dataset_by_source``) answers. A file
id must look like a Slack id before it becomes part of a path or a database key.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from bot.slack.blockkit import as_dict
from bot.slack.context import SlackBot, Where, where_from_event
from bot.slack.files import (
    DownloadError,
    check_file_meta,
    display_name,
    download,
    is_dataset_name,
    is_slack_file_id,
    safe_filename,
)
from engine import DatasetError

log = logging.getLogger("ftbot.slack")

BAD_FILE_ID = (
    "I did not take that upload: Slack sent a file id that is not in Slack's format (capital "
    "letters and digits), so I did not use it. Share the file again; if this keeps happening, "
    "tell the bot's admin."
)


def register(app: App, bot: SlackBot) -> None:
    @app.event({"type": "message", "subtype": "file_share"})
    def file_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        where = where_from_event(body, event)
        thread_ts = event.get("thread_ts") or event.get("ts")
        for file in event.get("files") or []:
            if isinstance(file, Mapping):
                take_file(bot, Where(where.team, where.channel, where.user, thread_ts), dict(file))

    @app.event("file_shared")
    def file_shared(body: dict[str, Any], event: dict[str, Any]) -> None:
        file_id = event.get("file_id") or (event.get("file") or {}).get("id")
        take_file(bot, where_from_event(body, event), {"id": file_id})


def take_file(bot: SlackBot, where: Where, file: dict[str, Any]) -> None:
    """Queue the intake of one shared file, unless this channel's intake of it is running or
    succeeded (a repeated delivery). A file id not in Slack's format is refused, privately,
    and never used."""
    fid = file.get("id")
    if not is_slack_file_id(fid):
        log.warning("refused a shared file whose id is not in Slack's format")
        bot.submit_private(where, blocks.error(BAD_FILE_ID))
        return
    if bot.files.claim(where.team, where.channel, fid):
        bot.submit(_intake_once, where, file)


def _intake_once(bot: SlackBot, where: Where, file: dict[str, Any]) -> None:
    """:func:`intake`, then end the claim: remembered as done only when it succeeded."""
    done = False
    try:
        intake(bot, where, file)
        done = True
    finally:
        bot.files.release(where.team, where.channel, str(file["id"]), done=done)


def _file_info(bot: SlackBot, fid: str) -> dict[str, Any]:
    try:
        return dict(bot.client.files_info(file=fid)["file"])
    except SlackApiError as exc:
        raise DownloadError(
            "I could not read that file's details from Slack.",
            hint="Check that the app has the files:read scope, then share the file again.",
        ) from exc


def _share_ts(file: Mapping[str, Any], channel: str) -> str | None:
    """The message ts of ``file``'s share in ``channel`` (from files.info ``shares``)."""
    shares = file.get("shares") or {}
    for kind in ("public", "private"):
        for share in (shares.get(kind) or {}).get(channel) or []:
            if share.get("ts"):
                return str(share.get("thread_ts") or share["ts"])
    return None


def intake(bot: SlackBot, where: Where, file: dict[str, Any]) -> None:
    """Download, store and validate one shared file (``file["id"]`` already checked with
    ``is_slack_file_id``); reply in its thread in ``where.channel``. Returns quietly for a
    file that is not a dataset, or one this channel already has (a repeated delivery).

    Raises:
        DownloadError: Slack's details or the download failed (the user is told by
            :meth:`SlackBot.submit`; the file can be shared again).
    """
    fid = str(file["id"])
    if bot.engine.dataset_by_source(fid, team=where.team, channel=where.channel) is not None:
        log.info("ignoring shared file %s: already stored for this channel (a repeated delivery)", fid)
        return
    if not file.get("url_private_download") or file.get("mode") == "file_access" or "size" not in file:
        # file_shared or a Slack Connect stub: ask Slack (the id stays the one checked).
        file = {**file, **_file_info(bot, fid), "id": fid}
    original = str(file.get("name") or file.get("title") or "")
    if not is_dataset_name(original):
        log.info("ignoring shared file %s (%s): not JSONL", fid, file.get("filetype"))
        return
    name = safe_filename(original, f"{fid}.jsonl")  # stored and typed (`/finetune NAME`)
    shown = display_name(original) or name  # the reply shows the original (blocks escapes it)
    if where.thread_ts is None:
        where = Where(where.team, where.channel, where.user, _share_ts(file, where.channel))
    check_file_meta(file, max_bytes=bot.settings.max_upload_bytes)
    report, dataset_hash = _download_and_store(bot, where, file, name)
    usable = bool(as_dict(report).get("ok"))
    message = blocks.validation_report(report, name=shown, dataset_hash=dataset_hash if usable else None)
    bot.post(where, message, thread_ts=where.thread_ts)


def _download_and_store(
    bot: SlackBot, where: Where, file: Mapping[str, Any], name: str
) -> tuple[Any, str | None]:
    """Download ``file`` and add it to the engine: its validation report, and its hash when it is
    usable (else None). The download is removed afterwards."""
    fid = str(file["id"])
    url = str(file.get("url_private_download") or file.get("url_private") or "")
    # Unique per intake: the same file can be taken in for two channels at once. Without a
    # work_dir each download gets a temporary directory of its own, removed with the file.
    scratch = None if bot.work_dir is not None else tempfile.TemporaryDirectory(prefix="ftbot-upload-")
    folder = bot.work_dir if bot.work_dir is not None else Path(scratch.name)  # type: ignore[union-attr]
    dest = folder / f"{fid}-{uuid.uuid4().hex}.jsonl"
    try:
        download(
            url,
            dest,
            token=bot.settings.bot_token or "",
            allowed_origins=bot.settings.file_hosts,
            max_bytes=bot.settings.max_upload_bytes,
        )
        try:
            record = bot.engine.add_dataset(
                dest, name=name, uploaded_by=where.user, team=where.team, channel=where.channel, source_id=fid
            )
            return record.report, record.hash
        except DatasetError as exc:
            return exc.report, None
    finally:
        dest.unlink(missing_ok=True)
        if scratch is not None:
            scratch.cleanup()
