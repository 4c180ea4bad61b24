"""The bot's settings. The only module in bot/ that reads the environment.

Everything else receives a :class:`BotSettings` (or values from it), so tests build one from a
plain dict: ``BotSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-test", ...})``.

Which mode ``ftbot serve`` runs in follows from the tokens present (:attr:`BotSettings.mode`):

* ``SLACK_APP_TOKEN`` (``xapp-``) and ``SLACK_BOT_TOKEN``  -> Socket Mode (no public URL needed)
* ``SLACK_BOT_TOKEN`` and ``SLACK_SIGNING_SECRET``        -> HTTP on ``/slack/events``
* no Slack variable at all                               -> the local console on builtin:tiny

Bolt itself also reads ``SLACK_*`` variables when it is not given values; ``create_app`` always
passes them explicitly. Bolt silently switches to multi-workspace OAuth when both
``SLACK_CLIENT_ID`` and ``SLACK_CLIENT_SECRET`` are set, dropping the bot token: ftbot is a
single-workspace app, so :meth:`BotSettings.from_env` refuses that combination with a clear
message instead of letting the bot start half-configured.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from engine import UsageError

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_FILE_HOSTS = ("https://files.slack.com",)
DEFAULT_MAX_UPLOAD_MB = 100.0

Mode = Literal["socket", "http", "console"]

# Slack ids: users U…/W…, bots B…; we accept any upper-case alphanumeric id so Enterprise Grid
# ids and test ids both pass, but reject names such as "@alice" that Slack never sends.
_USER_ID = re.compile(r"^[A-Z0-9]{2,32}$")
# Token shapes (https://docs.slack.dev/authentication/tokens): prefix, then dash-separated parts.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_.]{5,}$")


@dataclass(frozen=True)
class BotSettings:
    """What the Slack app and console need from the environment. Secrets are never printed:
    ``repr`` hides them."""

    bot_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    file_hosts: tuple[str, ...] = DEFAULT_FILE_HOSTS
    admins: frozenset[str] = frozenset()
    allowed_users: frozenset[str] = frozenset()
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def mode(self) -> Mode:
        """``socket`` with an app token, ``http`` with a bot token, else ``console``."""
        if self.app_token:
            return "socket"
        if self.bot_token or self.signing_secret:
            return "http"
        return "console"

    def may_start_jobs(self, user_id: str) -> bool:
        """FTBOT_ALLOWED_USERS may start jobs; an empty list means everyone (admins always may)."""
        return not self.allowed_users or user_id in self.allowed_users or user_id in self.admins

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    def require(self, mode: Mode) -> None:
        """Check that everything ``mode`` needs is present.

        Raises:
            UsageError: naming each missing variable and where to find its value.
        """
        missing: list[str] = []
        if mode in ("socket", "http") and not self.bot_token:
            missing.append("SLACK_BOT_TOKEN (xoxb-…, from 'OAuth & Permissions' after installing the app)")
        if mode == "socket" and not self.app_token:
            missing.append(
                "SLACK_APP_TOKEN (xapp-…, from 'Basic Information' > 'App-Level Tokens' with "
                "the connections:write scope)"
            )
        if mode == "http" and not self.signing_secret:
            missing.append("SLACK_SIGNING_SECRET (from 'Basic Information' > 'App Credentials')")
        if missing:
            raise UsageError(
                f"Cannot start the Slack app in {mode} mode: missing " + "; ".join(missing) + ".",
                hint="Unset every SLACK_* variable to use the local console instead (`ftbot chat`).",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Build settings from environment variables (``os.environ`` when ``env`` is None).

        Every problem is reported at once.

        Raises:
            UsageError: a variable is malformed; the message names it and says what is expected
                (it never repeats a secret's value).
        """
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = (env.get(name) or "").strip()
            return value or None

        bot_token = get("SLACK_BOT_TOKEN")
        app_token = get("SLACK_APP_TOKEN")
        signing_secret = get("SLACK_SIGNING_SECRET")
        if bot_token is not None:
            if bot_token.startswith(("xapp-", "xoxp-")):
                kind = "an app-level token" if bot_token.startswith("xapp-") else "a user token"
                problems.append(
                    f"SLACK_BOT_TOKEN holds {kind}; it must be the bot token that starts with xoxb-"
                )
            elif not bot_token.startswith("xoxb-") or not _TOKEN.match(bot_token):
                problems.append("SLACK_BOT_TOKEN must be a bot token that starts with xoxb-")
        if app_token is not None and (not app_token.startswith("xapp-") or not _TOKEN.match(app_token)):
            problems.append(
                "SLACK_APP_TOKEN must be an app-level token that starts with xapp- "
                "(leave it unset to serve over HTTP)"
            )
        if signing_secret is not None and not re.fullmatch(r"[A-Za-z0-9]{8,}", signing_secret):
            problems.append("SLACK_SIGNING_SECRET must be the hexadecimal signing secret of the app")
        if get("SLACK_CLIENT_ID") and get("SLACK_CLIENT_SECRET"):
            problems.append(
                "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set: they switch Bolt into multi-workspace "
                "OAuth mode and it would ignore SLACK_BOT_TOKEN; ftbot is installed in one workspace, "
                "so unset them"
            )

        api_url = get("SLACK_API_URL") or DEFAULT_API_URL
        if not _is_origin_like(api_url):
            problems.append(f"SLACK_API_URL={api_url!r} is not an http(s) URL")
        elif not api_url.endswith("/"):
            api_url += "/"

        hosts: list[str] = []
        for raw in (get("FTBOT_FILE_HOSTS") or ",".join(DEFAULT_FILE_HOSTS)).split(","):
            raw = raw.strip()
            if not raw:
                continue
            origin = normalize_origin(raw)
            if origin is None:
                problems.append(
                    f"FTBOT_FILE_HOSTS entry {raw!r} is not an origin such as https://files.slack.com"
                )
            else:
                hosts.append(origin)

        def ids(name: str) -> frozenset[str]:
            out = set()
            for raw in (get(name) or "").replace(";", ",").split(","):
                raw = raw.strip()
                if not raw:
                    continue
                if not _USER_ID.match(raw):
                    problems.append(f"{name} entry {raw!r} is not a Slack user id such as U012ABCDEF")
                else:
                    out.add(raw)
            return frozenset(out)

        admins = ids("FTBOT_ADMINS")
        allowed = ids("FTBOT_ALLOWED_USERS")

        max_mb = DEFAULT_MAX_UPLOAD_MB
        raw_mb = get("FTBOT_MAX_UPLOAD_MB")
        if raw_mb is not None:
            try:
                max_mb = float(raw_mb)
                if not max_mb > 0 or max_mb != max_mb:
                    raise ValueError
            except ValueError:
                problems.append(f"FTBOT_MAX_UPLOAD_MB={raw_mb!r} must be a positive number of megabytes")
                max_mb = DEFAULT_MAX_UPLOAD_MB

        if problems:
            raise UsageError("Bad Slack settings: " + "; ".join(problems) + ".")
        return cls(
            bot_token=bot_token,
            signing_secret=signing_secret,
            app_token=app_token,
            api_url=api_url,
            file_hosts=tuple(hosts),
            admins=admins,
            allowed_users=allowed,
            max_upload_mb=max_mb,
        )


def _is_origin_like(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def normalize_origin(url: str) -> str | None:
    """``scheme://host[:port]`` in lower case, default ports dropped; None when ``url`` has a
    path, query, credentials or a scheme other than http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
