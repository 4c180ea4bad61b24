"""A fake Slack Socket Mode server for tests: a real WebSocket server (RFC 6455, stdlib only) on
127.0.0.1 (a free port), plus Slack requests shaped as Socket Mode envelopes and the
``ftbot serve`` Socket Mode code path against it.

How Slack's Socket Mode works, and what the fake does:

1. The app calls ``apps.connections.open`` with its app-level token (``xapp-``); the fake Web API
   (tests/fakes/slack_api.py) answers ``{"ok": true, "url": "ws://127.0.0.1:PORT/link/?ticket=..."}``
   from :meth:`FakeSocketMode.new_url` (a bot token is refused with ``not_allowed_token_type``,
   another app token with ``invalid_auth``). Each ticket opens one connection, once.
2. The app opens the WebSocket; the fake checks the handshake (key, version, ticket) and sends
   Slack's ``hello`` message.
3. The fake pushes envelopes ``{"envelope_id", "type": "slash_commands"|"events_api"|"interactive",
   "payload", "accepts_response_payload"}`` (events also carry ``retry_attempt`` and
   ``retry_reason``) and records the acks ``{"envelope_id", "payload"?}`` the app sends back
   (:meth:`FakeSocketMode.wait_ack`).
4. It answers the client's pings with pongs (the client pings every ``ping_interval`` and
   replaces a connection whose pong is late), and can end a connection the ways Slack's end:
   :meth:`refresh` (the ``disconnect`` message Slack sends before it rotates a connection),
   :meth:`drop` (a close frame), :meth:`cut` (the TCP connection just ends) and :meth:`stall`
   (nothing more comes back, the TCP connection left open: a link that died silently).
   ``refuse = True`` answers every handshake 403 (a proxy that blocks WebSockets).

    with FakeSlack() as slack, FakeSocketMode(slack) as ws:
        with serve_socket_mode(BotSettings.from_env(socket_env(slack)), settings) as (engine, handler):
            ack = ws.wait_ack(ws.push("slash_commands", command_payload("/finetune", "help")))
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from tests.fakes.slack_requests import APP_ID, action_body, command_body, event_body

if TYPE_CHECKING:
    from bot.settings import BotSettings
    from engine import Engine, Settings
    from tests.fakes.slack_api import FakeSlack

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20  # the client only sends acks; anything bigger is a bug
# A fast ping for tests: the client pings on this tick and replaces a connection whose pong is half
# a tick late (not too short for a loaded CI machine).
TEST_PING_SECONDS = 1.0


class ProtocolError(Exception):
    """The client broke RFC 6455; the fake closes with 1002 and records it."""


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    seconds: float  # from sending the envelope to receiving its ack
    connection: int  # which connection (1-based, in the order they were opened) carried it


@dataclass
class Connection:
    """One WebSocket connection from the app."""

    number: int
    sock: socket.socket
    ticket: str
    pings: int = 0  # pings from the client (each answered with a pong)
    pongs: list[bytes] = field(default_factory=list)  # answers to our pings
    close_code: int | None = None  # the client's close frame, if it sent one
    open: bool = True
    stalled: bool = False  # True: nothing is sent any more (see FakeSocketMode.stall)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """One unmasked frame (servers never mask, RFC 6455 section 5.1); none once stalled."""
        if self.stalled:
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self.send_lock:
            self.sock.sendall(header + payload)

    def send_json(self, message: Mapping[str, Any]) -> None:
        self.send_frame(OP_TEXT, json.dumps(message).encode())

    def shut(self) -> None:
        """End the TCP connection (wakes the reader thread)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _read_exact(rfile: Any, n: int) -> bytes:
    data = rfile.read(n) if n else b""
    if len(data) < n:
        raise EOFError
    return data


def read_frame(rfile: Any, *, from_client: bool = True) -> tuple[bool, int, bytes]:
    """``(fin, opcode, payload)`` of the next frame on ``rfile``: a client's (masked, as RFC 6455
    requires; unmasked here) or, with ``from_client=False``, a server's (never masked).

    Raises:
        EOFError: the connection ended. ProtocolError: wrong masking, reserved bits, a
        fragmented or oversized control frame, a frame over MAX_MESSAGE.
    """
    b1, b2 = _read_exact(rfile, 2)
    fin, opcode, masked, n = bool(b1 & 0x80), b1 & 0x0F, bool(b2 & 0x80), b2 & 0x7F
    if b1 & 0x70:
        raise ProtocolError("reserved bits set")
    if n == 126:
        (n,) = struct.unpack("!H", _read_exact(rfile, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _read_exact(rfile, 8))
    if masked != from_client:
        raise ProtocolError("a client frame was not masked" if from_client else "a server frame was masked")
    if opcode >= 0x8 and (n > 125 or not fin):
        raise ProtocolError("a control frame was fragmented or longer than 125 bytes")
    if n > MAX_MESSAGE:
        raise ProtocolError(f"a frame of {n} bytes")
    key = _read_exact(rfile, 4) if masked else b""
    data = _read_exact(rfile, n)
    if not masked or not n:
        return fin, opcode, data
    mask = (key * (n // 4 + 1))[:n]
    return fin, opcode, (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeSocketMode:
    """The WebSocket side of Socket Mode. Pass the FakeSlack whose ``apps.connections.open``
    should hand out this server's URLs (it registers itself there)."""

    def __init__(self, slack: FakeSlack | None = None, *, app_id: str = APP_ID, host: str = "127.0.0.1") -> None:
        self.app_id = app_id
        self.host = host
        self.connections: list[Connection] = []
        self.acks: dict[str, Ack] = {}
        self.messages: list[Any] = []  # every text message from the client, parsed
        self.rejected: list[str] = []  # handshakes refused, and why
        self.protocol_errors: list[str] = []
        self.refuse = False  # True: answer every handshake 403, as a blocking proxy would
        self._tickets: dict[str, bool] = {}  # issued ticket -> used
        self._sent: dict[str, float] = {}  # envelope id -> when it was sent
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._server = _TCPServer((host, 0), self._handler_class())
        self._thread: threading.Thread | None = None
        if slack is not None:
            slack.socket_mode = self

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> FakeSocketMode:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-socket", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        for conn in self.open_connections():
            conn.shut()
        self._server.server_close()

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def new_url(self) -> str:
        """A fresh one-time WebSocket URL (what ``apps.connections.open`` returns)."""
        ticket = uuid.uuid4().hex
        with self._cond:
            self._tickets[ticket] = False
        return f"ws://{self.host}:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # -- what the test does ----------------------------------------------------------------------

    def open_connections(self) -> list[Connection]:
        with self._cond:
            return [c for c in self.connections if c.open]

    def wait_connected(self, count: int = 1, *, timeout: float = 10.0) -> Connection:
        """Block until ``count`` connections have been opened in all and one is open; return the
        newest open one."""

        def ready() -> bool:
            return len(self.connections) >= count and any(c.open for c in self.connections)

        self._wait(ready, timeout, f"{count} connection(s) (have {len(self.connections)})")
        return self.open_connections()[-1]

    def push(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        timeout: float = 10.0,
    ) -> str:
        """Send one envelope on the newest open connection (waiting for one, as Slack holds
        deliveries while an app reconnects); return its envelope id."""
        conn = self.wait_connected(timeout=timeout)
        envelope_id = envelope_id or f"env-{next(self._ids):04d}-{uuid.uuid4().hex[:8]}"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": dict(payload),
            "accepts_response_payload": (
                type == "slash_commands" if accepts_response_payload is None else accepts_response_payload
            ),
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        with self._cond:
            self._sent[envelope_id] = time.monotonic()
            self.acks.pop(envelope_id, None)  # a redelivery waits for its own ack
        conn.send_json(envelope)
        return envelope_id

    def wait_ack(self, envelope_id: str, *, timeout: float = 5.0) -> Ack:
        self._wait(lambda: envelope_id in self.acks, timeout, f"the ack of {envelope_id}")
        with self._cond:
            return self.acks[envelope_id]

    def ping(self, payload: bytes = b"fake-ping") -> None:
        """Ping the app on the newest connection (Slack does too); its pong lands in ``pongs``."""
        self.wait_connected().send_frame(OP_PING, payload)

    def refresh(self, reason: str = "refresh_requested") -> Connection:
        """Slack's way of rotating a connection: a ``disconnect`` message; the app is expected to
        open a new connection at once (and close this one itself)."""
        conn = self.wait_connected()
        conn.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-socket"}})
        return conn

    def drop(self, code: int = 1001, *, timeout: float = 2.0) -> Connection:
        """Close the newest connection with a close frame (``code``, 1001 = going away), then
        end TCP once the client has closed its side (or after ``timeout``)."""
        conn = self.wait_connected()
        conn.send_frame(OP_CLOSE, struct.pack("!H", code) + b"going away")
        with contextlib.suppress(AssertionError):
            self._wait(lambda: not conn.open, timeout, "the client to close")
        conn.shut()
        return conn

    def cut(self) -> Connection:
        """End the newest connection's TCP stream with no close frame (a network drop)."""
        conn = self.wait_connected()
        conn.shut()
        return conn

    def stall(self) -> Connection:
        """Send nothing more on the newest connection (no pongs, no envelopes) but keep reading it
        and leave TCP open: what a client sees when a NAT or firewall forgets the connection."""
        conn = self.wait_connected()
        conn.stalled = True
        return conn

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(left)

    # -- the server ------------------------------------------------------------------------------

    def _handshake(self, rfile: Any, wfile: Any) -> str | None:
        """Read the client's upgrade request; answer 101 and return the ticket, or answer an
        HTTP error and return None."""
        request_line = rfile.readline(8192).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            line = rfile.readline(8192).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0]
        parts = urlsplit(target)
        ticket = (parse_qs(parts.query).get("ticket") or [""])[0]
        key = headers.get("sec-websocket-key", "")
        problem = None
        if method != "GET" or parts.path.rstrip("/") != "/link":
            problem = f"not a Socket Mode link: {request_line!r}"
        elif headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get(
            "connection", ""
        ).lower().replace(" ", "").split(","):
            problem = "no WebSocket upgrade headers"
        elif headers.get("sec-websocket-version") != "13":
            problem = "Sec-WebSocket-Version is not 13"
        else:
            try:
                ok_key = len(base64.b64decode(key, validate=True)) == 16
            except ValueError:
                ok_key = False
            if not ok_key:
                problem = "Sec-WebSocket-Key is not 16 bytes of base64"
        if problem is None and self.refuse:
            problem = "refused by the test"
        if problem is None:
            with self._cond:
                if self._tickets.get(ticket) is not False:
                    problem = "an unknown or used ticket"
                else:
                    self._tickets[ticket] = True
        if problem is not None:
            with self._cond:
                self.rejected.append(problem)
                self._cond.notify_all()
            status = (
                "403 Forbidden"
                if self.refuse
                else "401 Unauthorized"
                if "ticket" in problem
                else "400 Bad Request"
            )
            wfile.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            return None
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        return ticket

    def _serve(self, conn: Connection, rfile: Any) -> None:
        """Read frames until the connection ends: answer pings, record acks, honour close."""
        fragments: list[bytes] = []
        while True:
            fin, opcode, data = read_frame(rfile)
            if opcode == OP_PING:
                conn.pings += 1
                conn.send_frame(OP_PONG, data)
            elif opcode == OP_PONG:
                with self._cond:
                    conn.pongs.append(data)
                    self._cond.notify_all()
            elif opcode == OP_CLOSE:
                conn.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                with contextlib.suppress(OSError):  # echo it, as RFC 6455 section 5.5.1 asks
                    conn.send_frame(OP_CLOSE, data[:2])
                return
            elif opcode in (OP_TEXT, OP_BINARY) and fragments:
                raise ProtocolError("a new message inside a fragmented one")
            elif opcode in (OP_TEXT, OP_BINARY) or (opcode == OP_CONTINUATION and fragments):
                fragments.append(data)
                if sum(len(f) for f in fragments) > MAX_MESSAGE:
                    raise ProtocolError("a message over the size limit")
                if fin:
                    self._on_message(conn, b"".join(fragments))
                    fragments = []
            else:
                raise ProtocolError(f"unexpected opcode {opcode:#x}")

    def _on_message(self, conn: Connection, raw: bytes) -> None:
        now = time.monotonic()
        try:
            message = json.loads(raw)
        except ValueError:
            message = raw
        with self._cond:
            self.messages.append(message)
            if isinstance(message, dict) and message.get("envelope_id"):
                eid = str(message["envelope_id"])
                payload = message.get("payload")
                self.acks[eid] = Ack(
                    eid,
                    dict(payload) if isinstance(payload, Mapping) else None,
                    now - self._sent.get(eid, now),
                    conn.number,
                )
            self._cond.notify_all()

    def _handler_class(self) -> type[socketserver.StreamRequestHandler]:
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                ticket = fake._handshake(self.rfile, self.wfile)
                if ticket is None:
                    return
                with fake._cond:
                    conn = Connection(len(fake.connections) + 1, self.connection, ticket)
                    fake.connections.append(conn)
                    fake._cond.notify_all()
                try:
                    conn.send_json(
                        {
                            "type": "hello",
                            "num_connections": len(fake.open_connections()),
                            "debug_info": {"host": "fake-socket", "approximate_connection_time": 18060},
                            "connection_info": {"app_id": fake.app_id},
                        }
                    )
                    fake._serve(conn, self.rfile)
                except ProtocolError as exc:
                    with fake._cond:
                        fake.protocol_errors.append(str(exc))
                    with contextlib.suppress(OSError):
                        conn.send_frame(OP_CLOSE, struct.pack("!H", 1002))
                except (EOFError, OSError):
                    pass  # the client (or cut/stop) ended the connection
                finally:
                    with fake._cond:
                        conn.open = False
                        fake._cond.notify_all()

        return Handler


# -- Slack's requests as Socket Mode payloads (the same builders as over HTTP) --------------------


def command_payload(command: str, text: str = "", **kw: Any) -> dict[str, str]:
    """A slash command's ``payload`` (the HTTP form fields, as a JSON object)."""
    return dict(parse_qsl(command_body(command, text, **kw)))


def event_payload(event: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    """An ``events_api`` envelope's ``payload``: the ``event_callback`` body."""
    return dict(json.loads(event_body(event, **kw)))


def action_payload(action_id: str, value: str, **kw: Any) -> dict[str, Any]:
    """An ``interactive`` envelope's ``payload``: the ``block_actions`` JSON."""
    return dict(json.loads(parse_qs(action_body(action_id, value, **kw))["payload"][0]))


# -- the app over Socket Mode ------------------------------------------------------------------


def socket_env(slack: FakeSlack, **extra: str) -> dict[str, str]:
    """The environment of a bot in Socket Mode against ``slack`` (no signing secret needed)."""
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "FTBOT_FILE_HOSTS": slack.url,
        **extra,
    }


@contextlib.contextmanager
def serve_socket_mode(
    bot_settings: BotSettings, settings: Settings, *, ping_interval: float = TEST_PING_SECONDS
) -> Iterator[tuple[Engine, Any]]:
    """The `ftbot serve` Socket Mode code path (build_slack + connect_socket_mode), its engine
    started; yields the engine and the connected SocketModeHandler, and closes both afterwards."""
    from bot.commands.serve import build_slack, close_socket_mode, connect_socket_mode

    engine, app = build_slack(bot_settings, settings, mode="socket")
    try:
        handler = connect_socket_mode(app, bot_settings, ping_interval=ping_interval)
    except BaseException:
        engine.close()
        raise
    engine.start()
    try:
        yield engine, handler
    finally:
        close_socket_mode(handler)
        engine.close()
