"""A fake Slack Web API for tests: real HTTP on 127.0.0.1 (a free port), stdlib only.

It answers what ftbot calls (``auth.test``, ``chat.postMessage/update/postEphemeral/delete``,
``files.info``, the external upload trio, ``conversations.*``), records every call as
``Call(method, args, headers)``, and serves file downloads the way Slack does: the bytes with the
bot token, the HTML sign-in page (status 200) without it. Failure switches: ``rate_limit(method,
times, retry_after)`` answers HTTP 429 with ``Retry-After``; ``fail(method, error)`` answers
``{"ok": false, "error": ...}``; ``add_file(..., redirect_to=URL)`` makes a download redirect.
``apps.connections.open`` takes only the app-level token (``app_token``) and answers with a URL of
the FakeSocketMode registered as ``socket_mode`` (tests/fakes/slack_socket.py).

    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.api_url)
        ...
        slack.wait_for("chat.postMessage", count=2)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # bursts of calls (the benchmark) must not be refused at the socket


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Download:
    path: str
    headers: dict[str, str]


class FakeSlack:
    """The fake server. ``team_id``/``bot_user_id`` are what ``auth.test`` says."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        team_id: str = "T0001",
        bot_user_id: str = "UBOT0001",
        bot_id: str = "BBOT0001",
        app_token: str = "xapp-1-A0APP001-1-test",
        host: str = "127.0.0.1",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.socket_mode: Any = None  # a FakeSocketMode registers itself here
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.calls: list[Call] = []
        self.downloads: list[Download] = []
        self.uploads: dict[str, bytes] = {}
        self.webhooks: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._redirects: dict[str, str] = {}
        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, str] = {}
        self._hooks: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._cond = threading.Condition()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._server = _Server((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.host = host

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def start(self) -> FakeSlack:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- switches --------------------------------------------------------------------------------

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 0) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        with self._cond:
            self._rate_limits[method] = [times, retry_after]

    def fail(self, method: str, error: str) -> None:
        with self._cond:
            self._failures[method] = error

    def on(self, method: str, hook: Callable[[dict[str, Any]], None]) -> None:
        """Run ``hook(args)`` when ``method`` is called (before answering)."""
        self._hooks[method] = hook

    def add_file(
        self,
        content: bytes,
        *,
        name: str = "data.jsonl",
        size: int | None = None,
        user: str = "U0USER01",
        redirect_to: str | None = None,
        host_url: str | None = None,
        file_id: str | None = None,
    ) -> dict[str, Any]:
        """Register a file; return its Slack file object (``url_private_download`` on this fake,
        or on ``host_url`` to simulate another origin)."""
        fid = file_id or f"F{next(self._ids):08d}"
        base = host_url or self.url
        obj = {
            "id": fid,
            "name": name,
            "title": name,
            "mimetype": "application/octet-stream",
            "filetype": "text",
            "size": len(content) if size is None else size,
            "user": user,
            "mode": "hosted",
            "is_external": False,
            "url_private": f"{base}/files-pri/{self.team_id}-{fid}/{name}",
            "url_private_download": f"{base}/files-pri/{self.team_id}-{fid}/download/{name}",
            "shares": {},
        }
        with self._cond:
            self.files[fid] = obj
            self._file_bytes[fid] = content
            if redirect_to:
                self._redirects[fid] = redirect_to
        return dict(obj)

    # -- inspection ------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        with self._cond:
            return [c.method for c in self.calls]

    def wait_for(
        self,
        method: str,
        count: int = 1,
        *,
        timeout: float = 20.0,
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Block until ``count`` calls of ``method`` (matching ``where``) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self.calls if c.method == method and (where is None or where(c))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} call(s) to {method}, got {len(found)}; calls: {[c.method for c in self.calls]}"
                    )
                self._cond.wait(left)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Args of every chat.postMessage (optionally in one channel)."""
        return [
            c.args
            for c in self.calls_to("chat.postMessage")
            if channel is None or c.args.get("channel") == channel
        ]

    # -- the server ------------------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()

    def _answer(
        self, method: str, args: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._cond:
            limit = self._rate_limits.get(method)
            if limit and limit[0] > 0:
                limit[0] -= 1
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(limit[1])}
            failure = self._failures.get(method)
        if failure:
            return 200, {"ok": False, "error": failure}, {}
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(args.get("token", ""))
        if method == "apps.connections.open":
            return self._connections_open(token)
        if token != self.bot_token:
            return 200, {"ok": False, "error": "invalid_auth" if token else "not_authed"}, {}
        hook = self._hooks.get(method)
        if hook:
            hook(args)
        ts = f"1700000{next(self._ts):03d}.000100"
        if method == "auth.test":
            return (
                200,
                {
                    "ok": True,
                    "url": "https://acme.slack.com/",
                    "team": "Acme",
                    "user": "ftbot",
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "bot_id": self.bot_id,
                    "is_enterprise_install": False,
                },
                {},
            )
        if method == "chat.postMessage":
            return (
                200,
                {
                    "ok": True,
                    "channel": args.get("channel"),
                    "ts": ts,
                    "message": {
                        "text": args.get("text"),
                        "ts": ts,
                        "bot_id": self.bot_id,
                        "thread_ts": args.get("thread_ts"),
                    },
                },
                {},
            )
        if method == "chat.update":
            return (
                200,
                {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")},
                {},
            )
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": ts}, {}
        if method == "chat.delete":
            return 200, {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}, {}
        if method == "files.info":
            obj = self.files.get(str(args.get("file")))
            if obj is None:
                return 200, {"ok": False, "error": "file_not_found"}, {}
            return 200, {"ok": True, "file": obj}, {}
        if method == "files.getUploadURLExternal":
            fid = f"FUP{next(self._ids):06d}"
            return 200, {"ok": True, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}, {}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            if isinstance(files, str):
                files = json.loads(files)
            return (
                200,
                {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files or []]},
                {},
            )
        if method.startswith("conversations."):
            return (
                200,
                {"ok": True, "channel": {"id": args.get("channel"), "is_member": True}, "members": []},
                {},
            )
        return 200, {"ok": True}, {}

    def _connections_open(self, token: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Socket Mode's URL, for the app-level token only: Slack refuses a bot or user token
        with ``not_allowed_token_type`` and any other app token with ``invalid_auth``."""
        if not token:
            error = "not_authed"
        elif not token.startswith("xapp-"):
            error = "not_allowed_token_type"
        elif token != self.app_token:
            error = "invalid_auth"
        elif self.socket_mode is None:
            error = "fake_has_no_socket_mode_server"  # a test forgot FakeSocketMode(slack)
        else:
            return 200, {"ok": True, "url": self.socket_mode.new_url()}, {}
        return 200, {"ok": False, "error": error}, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(
                self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _json(
                self, status: int, payload: Mapping[str, Any], extra: Mapping[str, str] | None = None
            ) -> None:
                self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", extra)

            def _headers(self) -> dict[str, str]:
                return {k.lower(): v for k, v in self.headers.items()}

            def do_GET(self) -> None:
                self._dispatch(b"")

            def do_POST(self) -> None:
                self._dispatch(self._body())

            def _dispatch(self, body: bytes) -> None:
                parts = urlsplit(self.path)
                path = parts.path
                headers = self._headers()
                if path.startswith("/api/"):
                    method = path[len("/api/") :]
                    args: dict[str, Any] = dict(parse_qsl(parts.query))
                    ctype = headers.get("content-type", "")
                    if body and "json" in ctype:
                        args.update(json.loads(body))
                    elif body:
                        args.update(dict(parse_qsl(body.decode("utf-8", "replace"))))
                    for key in ("blocks", "files", "attachments"):
                        if isinstance(args.get(key), str):
                            with contextlib.suppress(ValueError):
                                args[key] = json.loads(args[key])
                    fake._record(Call(method, args, headers))
                    status, payload, extra = fake._answer(method, args, headers)
                    self._json(status, payload, extra)
                elif path.startswith("/upload/"):
                    fid = path.rsplit("/", 1)[-1]
                    with fake._cond:
                        fake.uploads[fid] = body
                    fake._record(Call("upload", {"file_id": fid, "bytes": len(body)}, headers))
                    self._send(200, f"OK - {len(body)}".encode(), "text/plain")
                elif path.startswith("/files-pri/"):
                    with fake._cond:
                        fake.downloads.append(Download(self.path, headers))
                    fid = path.split("/")[2].split("-", 1)[-1]
                    auth = headers.get("authorization", "")
                    if fid in fake._redirects:
                        self._send(302, b"", "text/plain", {"Location": fake._redirects[fid]})
                    elif auth != f"Bearer {fake.bot_token}" or fid not in fake._file_bytes:
                        self._send(200, LOGIN_PAGE, "text/html; charset=utf-8")
                    else:
                        self._send(200, fake._file_bytes[fid], "application/octet-stream")
                elif path.startswith("/webhook"):
                    payload = json.loads(body or b"{}")
                    with fake._cond:
                        fake.webhooks.append(payload)
                    fake._record(Call("webhook", payload, headers))
                    self._send(200, b"ok", "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

        return Handler
