"""bot/settings.py: the bot's environment, read once, checked with clear messages."""

from __future__ import annotations

import pytest

from bot.settings import DEFAULT_API_URL, BotSettings, normalize_origin
from engine import UsageError

BOT = "xoxb-1234-5678-abcdefgh"
APP = "xapp-1-A0APP-1234-abcdef"
SECRET = "0123456789abcdef0123456789abcdef"


def test_defaults_without_any_variable_mean_the_console() -> None:
    s = BotSettings.from_env({})
    assert s.mode == "console"
    assert s.api_url == DEFAULT_API_URL
    assert s.file_hosts == ("https://files.slack.com",)
    assert s.max_upload_bytes == 100 * 1024 * 1024
    assert s.may_start_jobs("U123") and not s.is_admin("U123")


def test_modes_follow_the_tokens() -> None:
    assert BotSettings.from_env({"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP}).mode == "socket"
    assert BotSettings.from_env({"SLACK_BOT_TOKEN": BOT, "SLACK_SIGNING_SECRET": SECRET}).mode == "http"


def test_all_values_are_read() -> None:
    s = BotSettings.from_env(
        {
            "SLACK_BOT_TOKEN": BOT,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": "http://127.0.0.1:8080/api",
            "FTBOT_FILE_HOSTS": "https://files.slack.com, http://127.0.0.1:8080",
            "FTBOT_ADMINS": "UADMIN1",
            "FTBOT_ALLOWED_USERS": "UALICE1,UBOB0001",
            "FTBOT_MAX_UPLOAD_MB": "2.5",
        }
    )
    assert s.api_url == "http://127.0.0.1:8080/api/"
    assert s.file_hosts == ("https://files.slack.com", "http://127.0.0.1:8080")
    assert s.may_start_jobs("UALICE1") and s.may_start_jobs("UADMIN1") and not s.may_start_jobs("UEVE0001")
    assert s.is_admin("UADMIN1")
    assert s.max_upload_bytes == int(2.5 * 1024 * 1024)


def test_secrets_never_appear_in_repr() -> None:
    s = BotSettings.from_env({"SLACK_BOT_TOKEN": BOT, "SLACK_SIGNING_SECRET": SECRET})
    assert BOT not in repr(s) and SECRET not in repr(s)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLACK_BOT_TOKEN": "xapp-1-A0-1-abc"}, "app-level token"),
        ({"SLACK_BOT_TOKEN": "xoxp-1-2-3-abcdef"}, "user token"),
        ({"SLACK_BOT_TOKEN": "hello"}, "starts with xoxb-"),
        ({"SLACK_APP_TOKEN": "xoxb-1-2-abcdef"}, "SLACK_APP_TOKEN must be an app-level token"),
        ({"SLACK_SIGNING_SECRET": "not a secret!"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "abc"}, "OAuth"),
        ({"SLACK_API_URL": "ftp://x"}, "SLACK_API_URL"),
        ({"FTBOT_FILE_HOSTS": "https://files.slack.com/path"}, "FTBOT_FILE_HOSTS"),
        ({"FTBOT_ADMINS": "@alice"}, "FTBOT_ADMINS"),
        ({"FTBOT_MAX_UPLOAD_MB": "-3"}, "FTBOT_MAX_UPLOAD_MB"),
        ({"FTBOT_MAX_UPLOAD_MB": "lots"}, "FTBOT_MAX_UPLOAD_MB"),
    ],
)
def test_bad_values_get_clear_messages(env: dict[str, str], expected: str) -> None:
    with pytest.raises(UsageError) as info:
        BotSettings.from_env(env)
    assert expected in str(info.value)
    for value in env.values():
        if value.startswith(("xox", "xapp")):
            assert value not in str(info.value)  # never echo a token


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(UsageError) as info:
        BotSettings.from_env({"SLACK_BOT_TOKEN": "nope", "FTBOT_MAX_UPLOAD_MB": "x"})
    assert "SLACK_BOT_TOKEN" in str(info.value) and "FTBOT_MAX_UPLOAD_MB" in str(info.value)


def test_require_names_what_each_mode_misses() -> None:
    with pytest.raises(UsageError, match="SLACK_SIGNING_SECRET"):
        BotSettings.from_env({"SLACK_BOT_TOKEN": BOT}).require("http")
    with pytest.raises(UsageError, match="SLACK_BOT_TOKEN"):
        BotSettings.from_env({"SLACK_APP_TOKEN": APP}).require("socket")
    BotSettings.from_env({"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP}).require("socket")


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://files.slack.com", "https://files.slack.com"),
        ("HTTPS://Files.Slack.com:443/", "https://files.slack.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://user:pw@files.slack.com", None),
        ("https://files.slack.com/x", None),
        ("file:///etc/passwd", None),
    ],
)
def test_normalize_origin(raw: str, origin: str | None) -> None:
    assert normalize_origin(raw) == origin
