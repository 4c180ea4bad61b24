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
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bot.settings import normalize_origin
from engine import UsageError

CHUNK = 64 * 1024
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
    except (urllib.error.URLError, OSError, TimeoutError):
        dest.unlink(missing_ok=True)
        raise DownloadError(
            "I could not reach Slack to download the file.", hint="Try sharing it again in a minute."
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


def safe_filename(name: str | None, fallback: str) -> str:
    """A display/storage name without any path parts (the Slack name is user-controlled)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "_" for c in base)[:100]
    return cleaned or fallback
