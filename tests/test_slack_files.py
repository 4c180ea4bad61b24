"""bot/slack/files.py: the bot token only goes to allowed origins; size caps; the login page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.slack.files import (
    DownloadError,
    check_file_meta,
    display_name,
    download,
    is_allowed,
    is_dataset_name,
    is_slack_file_id,
    safe_filename,
)
from tests.fakes.slack_api import FakeSlack

DATA = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "1"}]}\n' * 10


@pytest.fixture
def other_host() -> Iterator[FakeSlack]:
    """A second server on another origin (localhost, not 127.0.0.1): 'not Slack'."""
    with FakeSlack(host="localhost") as fake:
        yield fake


def _download(
    slack: FakeSlack, file: dict[str, Any], out: Path, *, token: str | None = None, max_bytes: int = 10_000
) -> int:
    """Download ``file`` to ``out`` as the bot would, allowing only ``slack``'s origin."""
    return download(
        file["url_private_download"],
        out,
        token=slack.bot_token if token is None else token,
        allowed_origins=[slack.url],
        max_bytes=max_bytes,
    )


def test_downloads_with_the_bot_token(slack: FakeSlack, tmp_path: Path) -> None:
    file = slack.add_file(DATA)
    n = _download(slack, file, tmp_path / "x.jsonl")
    assert n == len(DATA) and (tmp_path / "x.jsonl").read_bytes() == DATA
    assert slack.downloads[-1].headers["authorization"] == f"Bearer {slack.bot_token}"


def test_a_host_not_allowed_never_sees_the_token(
    slack: FakeSlack, other_host: FakeSlack, tmp_path: Path
) -> None:
    file = other_host.add_file(DATA)
    with pytest.raises(DownloadError, match="not hosted by Slack"):
        _download(slack, file, tmp_path / "x.jsonl")
    assert other_host.downloads == []  # not even a request
    assert not (tmp_path / "x.jsonl").exists()


def test_redirects_are_not_followed(slack: FakeSlack, other_host: FakeSlack, tmp_path: Path) -> None:
    target = other_host.add_file(DATA)
    file = slack.add_file(DATA, redirect_to=target["url_private_download"])
    with pytest.raises(DownloadError, match="redirected") as info:
        _download(slack, file, tmp_path / "x.jsonl")
    assert other_host.downloads == []
    assert slack.bot_token not in str(info.value) and "files-pri" not in str(info.value)


def test_the_login_page_is_an_error_not_data(slack: FakeSlack, tmp_path: Path) -> None:
    file = slack.add_file(DATA)
    with pytest.raises(DownloadError, match="sign-in page") as info:
        _download(slack, file, tmp_path / "x.jsonl", token="xoxb-wrong-token")
    assert "files:read" in str(info.value)
    assert not (tmp_path / "x.jsonl").exists()


def test_size_is_capped_before_and_while_downloading(slack: FakeSlack, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="limit"):
        check_file_meta({"size": 5_000_000}, max_bytes=1_000_000)
    check_file_meta({"size": 10}, max_bytes=1_000_000)
    check_file_meta({}, max_bytes=1_000_000)  # unknown size: the stream cap decides
    file = slack.add_file(DATA, size=10)  # Slack's size field lies
    with pytest.raises(DownloadError, match="limit"):
        _download(slack, file, tmp_path / "x.jsonl", max_bytes=len(DATA) - 1)
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/x.jsonl", True),
        ("https://files.slack.com:443/files-pri/x", True),
        ("http://files.slack.com/files-pri/x", False),
        ("https://files.slack.com.evil.com/x", False),
        ("https://evil.com/https://files.slack.com/x", False),
        ("https://user@files.slack.com/x", False),
        ("https://files.slack.com:8443/x", False),
        ("not a url", False),
    ],
)
def test_is_allowed(url: str, ok: bool) -> None:
    assert is_allowed(url, ["https://files.slack.com"]) is ok


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd", "F1.jsonl") == "passwd"
    assert safe_filename("..\\x\\data set.jsonl", "F1") == "data set.jsonl"
    assert safe_filename("", "F1.jsonl") == "F1.jsonl"
    assert safe_filename("a;rm -rf.jsonl", "F") == "a_rm -rf.jsonl"


def test_safe_filename_keeps_the_extension_of_long_and_odd_names() -> None:
    long = "x" * 150 + ".jsonl"
    assert safe_filename(long, "F1.jsonl") == "x" * 94 + ".jsonl"  # cut in the stem: 100 in all
    assert safe_filename("....jsonl", "F1.jsonl") == "F1.jsonl"  # nothing left of the stem
    assert safe_filename(".hidden.JSONL", "F1.jsonl") == "hidden.JSONL"
    assert safe_filename("<!here> & co.jsonl", "F1.jsonl") == "__here_ _ co.jsonl"
    assert safe_filename("naïve données.jsonl", "F1.jsonl") == "naïve données.jsonl"


def test_a_dataset_is_known_by_its_own_names_extension() -> None:
    assert is_dataset_name("x" * 300 + ".jsonl") and is_dataset_name("....jsonl")
    assert is_dataset_name("DATA.JSONL") and is_dataset_name("dir/../a b.jsonl ")
    assert not is_dataset_name("data.jsonl.png") and not is_dataset_name("data.json")
    assert not is_dataset_name("a.jsonl/x") and not is_dataset_name("") and not is_dataset_name(None)


def test_only_slack_shaped_file_ids_are_accepted() -> None:
    assert is_slack_file_id("F0123ABCDEF") and is_slack_file_id("F" * 64)
    for bad in ("", "../F1", "f0123", "F01 23", "F01/23", "F0\n", "F" * 65, None, 123):
        assert not is_slack_file_id(bad), bad


def test_display_name_removes_control_characters_and_caps_length() -> None:
    assert display_name("a\u202eb\nc\x00.jsonl") == "a b c .jsonl"
    shown = display_name("y" * 500 + ".jsonl")
    assert len(shown) == 200 and shown.endswith("…")
    assert display_name("<!here>.jsonl") == "<!here>.jsonl"  # escaping is the message's job


def test_a_link_urllib_cannot_send_is_a_download_error(slack: FakeSlack, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="could not download") as info:
        _download(slack, {"url_private_download": slack.url + "/files-pri/T-F1/a b.jsonl"}, tmp_path / "x")
    assert "files-pri" not in str(info.value)
    assert not (tmp_path / "x").exists()
