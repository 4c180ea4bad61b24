"""Download a file a user shared in Slack, safely.

The bot token is a workspace-wide secret, so it is only ever sent to an allowed origin
(FTBOT_FILE_HOSTS, default ``https://files.slack.com``), and redirects are never followed (a
redirect could carry the ``Authorization`` header elsewhere; Slack does not redirect downloads
that are authorised). The size is checked before downloading (the ``size`` from the event or
``files.info``) and again while streaming, because that field can be missing or wrong. Slack
answers a download without a valid token (or without the ``files:read`` scope) with its HTML
login page and status 200; that is recognised and reported, never stored as a dataset.

Every error is a :class:`DownloadError` whose message is safe to show to the user: it never
contains the token or the file's URL.

Names and ids from Slack are user-controlled: a file id becomes part of a path or a database key
only when :func:`is_slack_file_id` accepts it; whether a file is a dataset is decided on its own
name's extension (:func:`is_dataset_name`), then :func:`safe_filename` derives the name stored
(any length, any characters in) and :func:`display_name` the name shown (still to be escaped).
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bot.settings import normalize_origin
from engine import UsageError

CHUNK = 64 * 1024
MAX_NAME_CHARS = 100
DATASET_SUFFIXES = (".jsonl",)
# Slack ids (files, users, channels, teams) are capital letters and digits; the cap on length is
# generous (real ids have about 11 characters) and keeps a hostile value out of logs and keys.
_SLACK_ID = re.compile(r"[A-Z0-9]{1,64}")
# Control and format characters (newlines, RTL overrides, zero-width) in a name shown to users.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# The first bytes of a JSONL file are "{" (maybe after a BOM or blank lines); an HTML page starts
# with "<". Looking at the start catches the login page even when Content-Type is missing.
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<!--")


class DownloadError(UsageError):
    """A shared file could not be fetched; ``message`` says why and what to do."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError for the 3xx: handled as an error below


_OPENER = urllib.request.build_opener(_NoRedirect)


def is_allowed(url: str, allowed_origins: Iterable[str]) -> bool:
    """True when ``url``'s origin (scheme, host, port) is exactly one of ``allowed_origins``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        origin = normalize_origin(f"{parts.scheme}://{parts.netloc}")
    except ValueError:
        return False
    if origin is None or parts.username or parts.password:
        return False
    return origin in {normalize_origin(o) for o in allowed_origins}


def check_file_meta(meta: Mapping[str, Any], *, max_bytes: int) -> None:
    """Refuse a file whose declared size is over ``max_bytes`` (before any byte is fetched)."""
    size = meta.get("size")
    if isinstance(size, int | float) and size > max_bytes:
        raise DownloadError(
            f"The file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.",
            hint="Split it into smaller files, or ask the admin to raise FTBOT_MAX_UPLOAD_MB.",
        )


def download(
    url: str,
    dest: Path,
    *,
    token: str,
    allowed_origins: Iterable[str],
    max_bytes: int,
    timeout: float = 30.0,
) -> int:
    """Stream ``url`` into ``dest`` with ``Authorization: Bearer <token>``; return the byte count.

    Raises:
        DownloadError: host not allowed (nothing is sent), redirect, HTTP error, HTML login page,
            or more than ``max_bytes``. ``dest`` is removed on error.
    """
    if not is_allowed(url, allowed_origins):
        raise DownloadError(
            "That file is not hosted by Slack, so I did not download it.",
            hint="Upload the JSONL file itself into the channel (not a link).",
        )
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with _OPENER.open(request, timeout=timeout) as response, dest.open("wb") as out:
            content_type = (response.headers.get("Content-Type") or "").lower()
            if "text/html" in content_type:
                raise _login_page()
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _too_big(max_bytes)
            first = True
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                if first:
                    head = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
                    if head.startswith(_HTML_STARTS):
                        raise _login_page()
                    first = False
                total += len(chunk)
                if total > max_bytes:
                    raise _too_big(max_bytes)
                out.write(chunk)
    except DownloadError:
        dest.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        dest.unlink(missing_ok=True)
        if 300 <= exc.code < 400:
            raise DownloadError(
                "Slack redirected the download, which means the bot may not read that file.",
                hint="Check that the app has the files:read scope and was reinstalled after adding it.",
            ) from None
        raise DownloadError(
            f"Slack refused the download (HTTP {exc.code}).",
            hint="Try sharing the file again; if it keeps failing, check the app's files:read scope.",
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException):
        # HTTPException: a link urllib cannot send (InvalidURL), a response cut short.
        dest.unlink(missing_ok=True)
        raise DownloadError(
            "I could not download the file from Slack.", hint="Try sharing it again in a minute."
        ) from None
    return total


def _login_page() -> DownloadError:
    return DownloadError(
        "Slack sent its sign-in page instead of the file: the bot may not read files here.",
        hint="Add the files:read scope to the app and reinstall it, then share the file again.",
    )


def _too_big(max_bytes: int) -> DownloadError:
    return DownloadError(
        f"The file is larger than the {max_bytes / 1e6:.0f} MB limit.",
        hint="Split it into smaller files, or ask the admin to raise FTBOT_MAX_UPLOAD_MB.",
    )


def is_slack_file_id(value: object) -> bool:
    """True when ``value`` looks like a Slack id (``[A-Z0-9]+``, at most 64 characters). Only such
    an id may become part of a path or a database key; anything else is refused."""
    return isinstance(value, str) and _SLACK_ID.fullmatch(value) is not None


def _basename(name: str | None) -> str:
    """The last path part of a user-controlled name (``/`` and ``\\`` both separate)."""
    return (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()


def is_dataset_name(name: str | None) -> bool:
    """True when the file's own name has a dataset extension (``.jsonl``, any case), whatever
    the rest of the name is: ``....jsonl`` and names of any length are datasets too."""
    return _basename(name).lower().endswith(DATASET_SUFFIXES)


def safe_filename(name: str | None, fallback: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A storage name derived from a user-controlled one: no path parts, only letters, digits and
    ``-_. `` (anything else becomes ``_``), no leading dot, at most ``max_chars`` characters. The
    extension survives: a long name is cut in its stem, so ``x...x.jsonl`` stays a ``.jsonl``.
    ``fallback`` when nothing usable is left (``""``, ``....jsonl``)."""
    base = _basename(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or not ext.isalnum() or len(ext) > 10:
        stem, ext = base, ""
    else:
        ext = "." + ext
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "_" for c in stem).strip().lstrip(".").strip()
    cleaned = cleaned[: max(0, max_chars - len(ext))].rstrip()
    return cleaned + ext if cleaned else fallback


def display_name(name: str | None, *, max_chars: int = 200) -> str:
    """A user-controlled name as it may be shown (still to be escaped for mrkdwn): control and
    direction-changing characters become spaces, and a very long name is cut with ``…``."""
    shown = _UNPRINTABLE.sub(" ", name or "").strip()
    return shown if len(shown) <= max_chars else shown[: max_chars - 1] + "…"
