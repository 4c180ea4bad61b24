"""The HTTP intake of `ftbot serve --http` under hostile clients, over real sockets against a real
`make_http_server` (port 0) around the real Bolt app, and one real `python -m bot serve --http`
process for memory: an oversized body is refused (413) before it is read, unsigned, badly signed,
stale or garbage requests get 401 before Bolt sees them (no traceback), silent and trickling
clients are cut, connections are bounded, and a flood of big unsigned POSTs leaves the bot's
memory flat. A request Slack signed still works."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.commands.serve import EVENTS_PATH, build_slack, make_http_server, serve_in_thread
from bot.settings import BotSettings
from engine import Settings
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import FORM, bot_env, command_body, signed_headers
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
# The defaults `ftbot serve` uses (bot/commands/serve.py IntakeLimits); the tests run on them.
READ_SECONDS = 5.0
MAX_CONNECTIONS = 64
CHALLENGE = json.dumps({"type": "url_verification", "challenge": "c-42", "token": "x"})


@dataclass
class Intake:
    slack: FakeSlack
    port: int
    dispatched: list[Any] = field(default_factory=list)  # every request Bolt was handed

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, data: bytes, *, timeout: float = 10.0) -> tuple[int, bytes, float]:
        """Send ``data`` raw, read the answer to its end: (status or 0 for none, bytes, seconds)."""
        started = time.monotonic()
        with self.connect(timeout) as conn:
            with contextlib.suppress(OSError):  # the server may close while we still send
                conn.sendall(data)
            answer = read_answer(conn)
        return status_of(answer), answer, time.monotonic() - started


def read_answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset or the socket's timeout ends it too)."""
    chunks: list[bytes] = []
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else 0


def request(body: bytes, headers: dict[str, str], *, path: str = EVENTS_PATH, length: bool = True) -> bytes:
    """A raw HTTP/1.1 POST: ``headers`` as given, plus Content-Length unless ``length`` is False."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed(body: str, **kw: Any) -> bytes:
    return request(body.encode(), signed_headers(body, **kw))


@pytest.fixture
def intake(settings: Settings) -> Iterator[Intake]:
    """`serve --http`'s server (default limits) on port 0, with a record of what reaches Bolt."""
    with FakeSlack() as slack:
        engine, app = build_slack(BotSettings.from_env(bot_env(slack)), settings, mode="http")
        served = Intake(slack, 0)
        dispatch = app.dispatch

        def recording_dispatch(req: Any) -> Any:  # a spy on Bolt's entry point, not on our code
            served.dispatched.append(req)
            return dispatch(req)

        app.dispatch = recording_dispatch  # type: ignore[method-assign]
        server = make_http_server(app, "127.0.0.1", 0)
        serve_in_thread(server)
        served.port = server.server_port
        try:
            yield served
        finally:
            server.shutdown()
            server.server_close()
            engine.close()


def _no_traceback(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, err[-2000:]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


# ----- size -----------------------------------------------------------------------------------


def test_an_oversized_body_is_refused_with_413_before_it_is_read(intake: Intake) -> None:
    head = (
        f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 262144000\r\n\r\n"
    ).encode()
    status, answer, seconds = intake.exchange(head + b'{"a": 1', timeout=5.0)
    assert status == 413, answer
    assert seconds < 2.0  # at once: the server did not wait for 250 MB
    assert intake.dispatched == []


def test_a_missing_or_chunked_length_is_refused_with_411(intake: Intake) -> None:
    body = '{"type": "url_verification", "challenge": "c"}'
    status, answer, _ = intake.exchange(request(body.encode(), signed_headers(body), length=False))
    assert status == 411, answer
    chunked = {**signed_headers(body), "Transfer-Encoding": "chunked"}
    status, answer, _ = intake.exchange(
        request(f"{len(body):x}\r\n{body}\r\n0\r\n\r\n".encode(), chunked, length=False)
    )
    assert status == 411, answer
    assert intake.dispatched == []


def test_oversized_headers_are_refused_with_431(intake: Intake) -> None:
    headers = {**signed_headers(CHALLENGE), "X-Pad-1": "a" * 40_000, "X-Pad-2": "b" * 40_000}
    status, answer, _ = intake.exchange(request(CHALLENGE.encode(), headers))
    assert status == 431, answer
    assert intake.dispatched == []


# ----- authentication --------------------------------------------------------------------------

NOW = int(time.time())
UNSIGNED = {
    "JSON garbage, no signature": (b'{"type": "event_callback", ', {"Content-Type": "application/json"}),
    "not UTF-8, no signature": (b"\xff\xfe\x00garbage", {"Content-Type": "application/json"}),
    "form garbage, no signature": (b"payload=%7Bnot-json", {"Content-Type": FORM}),
    "timestamp abc": (
        b"{}",
        {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": "abc",
            "X-Slack-Signature": "v0=00",
        },
    ),
    "timestamp abc, JSON garbage": (
        b"{not json",
        {"Content-Type": "application/json", "X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=1"},
    ),
    "timestamp with a sign": (
        CHALLENGE.encode(),
        signed_headers(CHALLENGE, timestamp=NOW) | {"x-slack-request-timestamp": f"+{NOW}"},
    ),
    "stale, signed": (CHALLENGE.encode(), signed_headers(CHALLENGE, timestamp=NOW - 6 * 60)),
    "far future, signed": (CHALLENGE.encode(), signed_headers(CHALLENGE, timestamp=NOW + 3600)),
    "another secret": (CHALLENGE.encode(), signed_headers(CHALLENGE, secret="0" * 32)),
    "signature of another body": (
        b'{"type": "url_verification", "challenge": "x"}',
        signed_headers(CHALLENGE),
    ),
    "huge timestamp": (
        CHALLENGE.encode(),
        {"X-Slack-Request-Timestamp": "9" * 400, "X-Slack-Signature": "v0=" + "0" * 64},
    ),
}


@pytest.mark.parametrize("case", list(UNSIGNED))
def test_what_slack_did_not_sign_gets_401_and_never_reaches_bolt(
    intake: Intake, case: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = UNSIGNED[case]
    status, answer, _ = intake.exchange(request(body, headers))
    assert status == 401, answer
    assert intake.dispatched == []
    assert set(intake.slack.methods()) <= {"auth.test"}
    _no_traceback(capfd, caplog)


def test_a_request_slack_signed_still_works(intake: Intake) -> None:
    status, answer, _ = intake.exchange(signed(CHALLENGE))
    assert status == 200 and b"c-42" in answer, answer
    status, answer, _ = intake.exchange(signed(command_body("/finetune", "help"), content_type=FORM))
    assert status == 200 and b"/finetune" in answer, answer
    assert len(intake.dispatched) == 2


def test_a_signed_body_bolt_cannot_parse_is_400_without_a_traceback(
    intake: Intake, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    for body in ('{"type": "event_callback", ', "[1, 2]"):
        status, answer, _ = intake.exchange(signed(body))
        assert status == 400, (body, answer)
    assert intake.dispatched == []
    _no_traceback(capfd, caplog)


def test_a_flood_of_refusals_is_one_log_line(intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(10):
        assert intake.exchange(signed(CHALLENGE, secret="1" * 32))[0] == 401
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "401" in warnings[0].getMessage() and "SLACK_SIGNING_SECRET" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


# ----- slow clients and many connections ------------------------------------------------------


def test_a_trickling_client_is_cut_after_the_read_deadline(intake: Intake) -> None:
    """One byte of headers every 0.1 s would take 20 s to finish: the server ends it after
    READ_SECONDS (counted from the connection), whatever each byte's pace."""
    head = request(CHALLENGE.encode(), signed_headers(CHALLENGE))
    with intake.connect() as conn:
        started = time.monotonic()
        cut_at = None
        for i in range(len(head)):
            if time.monotonic() - started > READ_SECONDS + 3:
                break
            try:
                conn.send(head[i : i + 1])
            except OSError:
                cut_at = time.monotonic() - started
                break
            readable, _, _ = select.select([conn], [], [], 0.1)  # pacing; and look for the cut
            if readable:
                answer = read_answer(conn)
                cut_at = time.monotonic() - started
                assert status_of(answer) in (0, 408), answer
                break
    assert cut_at is not None, "the server let a client trickle for longer than its read deadline"
    assert READ_SECONDS - 0.5 < cut_at < READ_SECONDS + 2
    assert intake.dispatched == []


def _connection_threads() -> int:
    return sum(t.name.endswith("(process_request_thread)") for t in threading.enumerate())


def test_connections_are_bounded_and_silent_ones_are_cut(intake: Intake) -> None:
    """MAX_CONNECTIONS silent clients hold every slot: one more is answered 503 at once (not
    queued, no thread); the silent ones are cut after READ_SECONDS, and then Slack gets through.
    (The server accepts in order, so the extra connection comes after the silent ones.)"""
    threads_before = _connection_threads()
    silent = [intake.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        status, answer, seconds = intake.exchange(signed(CHALLENGE), timeout=3.0)
        assert status == 503 and b"Retry-After: 1" in answer, answer
        assert seconds < 1.0
        assert _connection_threads() - threads_before <= MAX_CONNECTIONS
        started = time.monotonic()
        for conn in silent:
            conn.settimeout(max(0.1, READ_SECONDS + 3 - (time.monotonic() - started)))
            answer = read_answer(conn)  # ends when the server closes
            assert status_of(answer) in (0, 408), answer
        assert time.monotonic() - started < READ_SECONDS + 3
    finally:
        for conn in silent:
            conn.close()
    assert intake.exchange(signed(CHALLENGE))[0] == 200
    assert len(intake.dispatched) == 1  # only that last one reached Bolt


# ----- memory, in a real `ftbot serve --http` process --------------------------------------------


def _vm(pid: int, key: str) -> int:
    """A /proc/PID/status figure in KiB (VmHWM: the peak resident memory; VmRSS: now)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


@contextlib.contextmanager
def _serve_process(
    slack: FakeSlack, home: Path, log_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m bot serve --http --port 0`; yields the process and the port it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FTBOT_"))}
    # A base model that is not builtin: nothing is prepared in the background (torch stays out).
    env |= bot_env(slack, FTBOT_HOME=str(home), FTBOT_BASE_MODEL=str(home / "no-such-model"))
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found: list[int] = []

        def listening() -> bool:
            assert proc.poll() is None, log_path.read_text()
            match = re.search(r"listens on http://127\.0\.0\.1:(\d+)/", log_path.read_text())
            if match:
                found.append(int(match.group(1)))
            return bool(found)

        wait_for(listening, 60.0, "`ftbot serve --http` to listen")
        yield proc, found[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_memory_stays_flat_under_a_flood_of_big_unsigned_posts(tmp_path: Path) -> None:
    """20 unsigned POSTs of 32 MiB each, sent whole: the bot's peak resident memory (VmHWM) grows
    by less than one body (it read none of them); before, each body was read whole, twice over
    (bytes, then text), before the signature was checked."""
    body_size = 32 << 20
    head = (
        f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {body_size}\r\n\r\n"
    ).encode()
    chunk = b"{" + b"x" * ((1 << 20) - 1)
    home = tmp_path / "home"
    home.mkdir()
    with FakeSlack() as slack, _serve_process(slack, home, tmp_path / "serve.log") as (proc, port):
        served = Intake(slack, port)
        assert served.exchange(signed(CHALLENGE))[0] == 200  # warm: the first request's imports
        peak_before = _vm(proc.pid, "VmHWM")
        statuses = []
        for _ in range(20):
            with served.connect(10.0) as conn:
                with contextlib.suppress(OSError):  # refused mid-body: the server closed
                    conn.sendall(head)
                    for _ in range(body_size // len(chunk)):
                        conn.sendall(chunk)
                statuses.append(status_of(read_answer(conn)))
        grown_mib = (_vm(proc.pid, "VmHWM") - peak_before) / 1024
        assert grown_mib < 16, f"peak memory grew by {grown_mib:.0f} MiB; answers {statuses}"
        assert set(statuses) <= {0, 413} and 413 in statuses, statuses
        assert served.exchange(signed(CHALLENGE))[0] == 200  # still serving
        assert proc.poll() is None
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
