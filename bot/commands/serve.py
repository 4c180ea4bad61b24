"""``ftbot serve`` (the Slack app) and ``ftbot chat`` (the local console).

``serve`` picks its mode from the environment (bot/settings.py): Socket Mode when
SLACK_APP_TOKEN is set, HTTP on ``--host/--port`` at ``/slack/events`` otherwise (or with
``--http``), and, with no Slack variable at all, the local console on the default base model
(builtin:smollm2), which is what ``make run`` shows a newcomer. Missing or malformed tokens stop it
at once with a message that names the variable, never a traceback later.

The pieces are functions (:func:`build_slack`, :func:`make_http_server`,
:func:`connect_socket_mode`) so the end-to-end tests run exactly this code path against a fake
Slack (Web API, and a Socket Mode WebSocket server) on port 0.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

import click

from bot.settings import BotSettings
from engine import Engine, FtbotError, Settings, UsageError

log = logging.getLogger("ftbot.serve")

EVENTS_PATH = "/slack/events"
# How often the Socket Mode client pings Slack (slack_bolt's default), and the share of it a pong may
# take before the connection counts as dead and is replaced (below 1: each ping restarts the wait).
SOCKET_PING_SECONDS = 10.0
PONG_DEADLINE_FRACTION = 0.5
# The longest the WebSocket may take to open (TCP, TLS and handshake) before `ftbot serve` gives up.
SOCKET_OPEN_SECONDS = 10.0
# The longest a rotated connection's reader waits for the client to replace it (the client itself
# waits 5 s at most for its connection lock).
ROTATION_WAIT_SECONDS = 5.0


# ---------------------------------------------------------------------------------------------
# The HTTP intake. Bolt's WSGI adapter reads a request's whole body (any size) before it checks
# the signature, and wsgiref's sockets have no timeout: four unsigned 250 MB POSTs took the bot
# from 120 to 1,331 MiB, and 800 idle connections held 800 threads. So the server below reads and
# checks every request itself, within fixed bounds, and hands Bolt only what Slack signed.


@dataclass(frozen=True)
class IntakeLimits:
    """The bounds of ``ftbot serve --http`` (the defaults are what ``serve`` uses).

    - ``max_body_bytes``: a request body may be this big (its Content-Length is checked before a
      byte of it is read). Slack's requests are kilobytes: a slash command about 1 KB, an event
      a few KB, a button click carries its message (at most 50 blocks of 3,000 characters, about
      150 KB). 1 MiB leaves room for the biggest and bounds what a request can cost.
    - ``max_header_bytes``: the request line and headers together (http.client alone would take
      100 lines of 64 KiB each, 6.4 MB, per connection).
    - ``read_seconds``: the whole request (line, headers, body) must arrive within this, counted
      from the connection; a client that sends nothing or trickles is cut then. Slack sends its
      request at once and gives up on the answer after 3 s.
    - ``write_seconds``: a send that makes no progress for this long ends the connection.
    - ``max_connections``: connections handled at once, each on its own thread. One more is
      answered ``503`` (``Retry-After: 1``) at once and closed, never queued: an attacker's idle
      connections can delay Slack's requests by at most ``read_seconds`` each, and threads stay
      bounded. Slack retries an event it could not deliver.
    """

    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 64 << 10
    read_seconds: float = 5.0
    write_seconds: float = 10.0
    max_connections: int = 64


# Slack's rule: a request whose timestamp is more than five minutes from now is refused (a replay).
SIGNATURE_MAX_AGE_SECONDS = 300
# After refusing a request whose body is still arriving, read (and drop) at most this much, for at
# most this long, before closing: a client still sending then gets our answer, not a reset.
LINGER_BYTES = 256 << 10
LINGER_SECONDS = 1.0
# Refused requests are logged at most once per this many seconds (a flood must not flood the log).
REFUSAL_LOG_SECONDS = 60.0


def slack_signature_problem(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float
) -> str | None:
    """Why a request is not Slack's (None when it is): Slack's v0 signature, the HMAC-SHA256 of
    ``v0:{timestamp}:{body}`` with the signing secret, over the body's exact bytes, and a
    timestamp (whole seconds, ASCII digits) within :data:`SIGNATURE_MAX_AGE_SECONDS` of ``now``.
    Never raises, whatever the headers hold."""
    if not timestamp or not signature:
        return "no X-Slack-Request-Timestamp or X-Slack-Signature header"
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        return "X-Slack-Request-Timestamp is not a number of seconds"
    if abs(now - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
        return "X-Slack-Request-Timestamp is more than five minutes from now"
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    if not hmac.compare_digest(f"v0={digest.hexdigest()}".encode(), signature.encode(errors="replace")):
        return "the signature does not match SLACK_SIGNING_SECRET"
    return None


def _body_problem(body: bytes, content_type: str | None) -> str | None:
    """Why Bolt could not parse a (signed) body, None when it can: Bolt raises (a 500 and a
    traceback) on a body that is not UTF-8, not JSON where JSON is expected, or not an object."""
    from slack_bolt.request.internals import parse_body

    try:
        parsed = parse_body(body.decode("utf-8"), (content_type or "").split(";")[0] or None)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError included
        return "the body cannot be parsed"
    return None if isinstance(parsed, dict) else "the body is not an object"


class _RefusalLog:
    """Counts refused requests by reason and logs the counts, without a traceback, at most once
    per ``every`` seconds: the first refusal at once (a wrong SLACK_SIGNING_SECRET shows at the
    first request), a flood as one line a minute."""

    def __init__(
        self, every: float = REFUSAL_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every, self._clock = every, clock
        self._counts: dict[str, int] = {}
        self._last: float | None = None
        self._lock = threading.Lock()

    def note(self, status: int, reason: str) -> None:
        now = self._clock()
        with self._lock:
            key = f"{status} ({reason})"
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._last is not None and now - self._last < self._every:
                return
            counts, self._counts, self._last = self._counts, {}, now
        hint = " (if Slack's own requests get 401, check SLACK_SIGNING_SECRET)" if status == 401 else ""
        log.warning(
            "Refused HTTP request(s)%s: %s", hint, "; ".join(f"{n} x {key}" for key, n in counts.items())
        )


class _RequestTooBig(Exception):
    """The request line and headers went past ``IntakeLimits.max_header_bytes``."""


class _BoundedReader(io.RawIOBase):
    """The reading side of one connection: every read ends by ``deadline`` (``time.monotonic()``;
    TimeoutError after it) and no more than ``budget`` bytes are read in all (_RequestTooBig past
    it; :meth:`allow` raises the budget for a body of known size). Between reads the socket keeps
    the ``idle`` timeout, which bounds each send of the answer."""

    def __init__(self, sock: socket.socket, *, deadline: float, budget: int, idle: float) -> None:
        self._sock, self.deadline, self.budget, self._idle = sock, deadline, budget, idle

    def readable(self) -> bool:
        return True

    def allow(self, extra: int) -> None:
        self.budget += extra

    def readinto(self, buffer: Any) -> int:
        if self.budget <= 0:
            raise _RequestTooBig
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            n = self._sock.recv_into(memoryview(buffer)[: self.budget])
        finally:
            self._sock.settimeout(self._idle)
        self.budget -= n
        return n


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per connection, so a slow request never delays another's ack; at most
    ``limits.max_connections`` at once (one more gets 503 at once, see :class:`IntakeLimits`).
    Its handler (:class:`_QuietHandler`) reads ``limits``, ``signing_secret``, ``clock`` (what
    request timestamps are compared with) and ``refusals`` (the refusal log) from it."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of Slack requests (retries, many users at
    # once) would be refused at the socket before any thread sees it.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[WSGIRequestHandler],
        *,
        limits: IntakeLimits,
        signing_secret: str,
        clock: Callable[[], float],
    ) -> None:
        self.limits, self.signing_secret, self.clock = limits, signing_secret, clock
        self.refusals = _RefusalLog()
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, handler_class)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refusals.note(503, f"more than {self.limits.max_connections} connections at once")
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a connection that failed is not news, a bug is.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.error("HTTP request from %s failed", client_address, exc_info=exc)


def _plain_response(status: int, text: str, *headers: str) -> bytes:
    """A whole HTTP response that closes the connection: ``status``, ``headers`` and ``text``."""
    phrase = HTTPStatus(status).phrase
    body = f"{text}\n".encode()
    head = [
        f"HTTP/1.1 {status} {phrase}",
        *headers,
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_BUSY = _plain_response(503, "Too many connections at once; try again.", "Retry-After: 1")


def _answer_busy(request: socket.socket) -> None:
    """503 on the accepting thread, which must never wait: a non-blocking send of a few bytes to
    a fresh connection (its send buffer is empty), then a non-blocking read of what the request
    already delivered (up to 64 KiB), so that closing sends the client an end, not a reset that
    could overtake our answer. A client that is gone is simply closed."""
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(_BUSY)
        sink = bytearray(16384)
        for _ in range(4):  # BlockingIOError (an OSError) ends it as soon as nothing is waiting
            if not request.recv_into(sink):
                break


class _QuietHandler(WSGIRequestHandler):
    """One connection, one request: read the request line and headers, refuse what is not a POST
    to ``/slack/events`` with a Content-Length within bounds, read the body, refuse what Slack did
    not sign (401) or Bolt could not parse (400), and only then run the app on the body. Refusals
    are answered without reading (more of) the body and logged by :class:`_RefusalLog`, never
    with a traceback; a client too slow or too talkative is cut (408, 431)."""

    server: _ThreadingWSGIServer

    def log_message(self, format: str, *args: Any) -> None:  # requests are logged by Bolt at debug
        log.debug("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        limits = self.server.limits
        self.timeout = limits.write_seconds  # StreamRequestHandler sets it on the socket
        super().setup()
        self.reader = _BoundedReader(
            self.connection,
            deadline=time.monotonic() + limits.read_seconds,
            budget=limits.max_header_bytes,
            idle=limits.write_seconds,
        )
        self.rfile = io.BufferedReader(self.reader)
        self.linger = False  # set by a refusal while the client may still be sending

    def handle(self) -> None:
        try:
            self._handle()
        except TimeoutError:
            seconds = self.server.limits.read_seconds
            self._refuse(408, f"the request did not arrive within {seconds:g} s", quiet=True, linger=False)
        except _RequestTooBig:
            self._refuse(431, "request headers too large")
        except OSError as exc:  # the client went away
            log.debug("connection from %s ended: %s", self.client_address, exc)

    def finish(self) -> None:
        if self.linger:
            self._linger()
        super().finish()

    def _handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            return  # connected and closed without a word
        if len(self.raw_requestline) > 65536 or not self.parse_request():
            self.linger = True  # parse_request answered (400, 414, ...) itself
            return
        if self.path.split("?", 1)[0] != EVENTS_PATH:
            self._refuse(404, f"not found: only POST {EVENTS_PATH} is served", quiet=True)
            return
        if self.command != "POST":
            self._refuse(405, f"{EVENTS_PATH} takes POST only", quiet=True)
            return
        length = self._content_length()
        if length is None:
            return
        self.reader.allow(length)
        body = self.rfile.read(length)
        if len(body) < length:
            self._refuse(400, "the body is shorter than its Content-Length", quiet=True)
            return
        if self._refused_unsigned(body):
            return
        self._run_app(body)

    def _content_length(self) -> int | None:
        """The body's length from the headers, or None after refusing the request: 411 without a
        Content-Length (or with a Transfer-Encoding: chunked bodies are not taken), 400 for one
        that is not a number, 413 above ``max_body_bytes``; all before reading the body."""
        values = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") or not values:
            self._refuse(411, "a Content-Length is required")
            return None
        if len(set(values)) != 1 or not re.fullmatch(r"[0-9]{1,15}", values[0].strip()):
            self._refuse(400, "the Content-Length is not a number")
            return None
        length = int(values[0])
        if length > self.server.limits.max_body_bytes:
            self._refuse(413, f"the body is over {self.server.limits.max_body_bytes} bytes")
            return None
        return length

    def _refused_unsigned(self, body: bytes) -> bool:
        """Refuse (and say True) a body Slack did not sign (401) or Bolt could not parse (400)."""
        problem = slack_signature_problem(
            self.server.signing_secret,
            self.headers.get("X-Slack-Request-Timestamp"),
            self.headers.get("X-Slack-Signature"),
            body,
            now=self.server.clock(),
        )
        if problem:
            self._refuse(401, problem, linger=False)  # the body was read: nothing more to come
            return True
        problem = _body_problem(body, self.headers.get("Content-Type"))
        if problem:
            self._refuse(400, problem, linger=False)
            return True
        return False

    def _run_app(self, body: bytes) -> None:
        """Run the WSGI app (Bolt) on the request, its body already read and checked."""
        environ = self.get_environ()
        environ["CONTENT_LENGTH"] = str(len(body))
        handler = ServerHandler(io.BytesIO(body), self.wfile, self.get_stderr(), environ, multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]  # what wsgiref's handle() sets
        handler.run(self.server.get_app())

    def _refuse(self, status: int, reason: str, *, quiet: bool = False, linger: bool = True) -> None:
        """Answer ``status`` with a short plain text and close; note it in the refusal log
        (``quiet``: at debug only, for what is no sign of a problem or an attack). ``linger``:
        the client may still be sending (its body was not read), see :meth:`_linger`."""
        if quiet:
            log.debug("refused %s from %s: %s", status, self.client_address[0], reason)
        else:
            self.server.refusals.note(status, reason)
        self.linger = linger
        with contextlib.suppress(OSError):
            self.wfile.write(_plain_response(status, HTTPStatus(status).phrase))

    def _linger(self) -> None:
        """After a refusal, stop sending and drop what the client still sends, for at most
        LINGER_SECONDS and LINGER_BYTES, so a client in the middle of its body reads our answer
        instead of a reset; memory stays one small buffer."""
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            deadline, left, sink = time.monotonic() + LINGER_SECONDS, LINGER_BYTES, bytearray(16384)
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                sock.settimeout(wait)
                n = sock.recv_into(sink)
                if n == 0:
                    break
                left -= n


def make_http_server(
    app: Any,
    host: str,
    port: int,
    *,
    signing_secret: str | None = None,
    limits: IntakeLimits | None = None,
    clock: Callable[[], float] = time.time,
) -> WSGIServer:
    """A threaded WSGI server for ``app`` at ``/slack/events`` (commands, events, interactivity),
    bound and listening on return. ``port=0`` picks a free port (``server.server_port``).

    Only requests signed with ``signing_secret`` (default: the one the Bolt app was made with)
    reach the app, and only within ``limits`` (see :class:`IntakeLimits` and :class:`_QuietHandler`):
    an oversized body is refused (413) before it is read, an unsigned, badly signed or stale one
    with 401 before Bolt parses it, a slow client is cut, and connections are bounded. ``clock``
    (seconds since the epoch) is what request timestamps are checked against.

    Raises:
        UsageError: no signing secret; the port is taken by another program, or ``host:port``
            cannot be listened on (an address this machine does not have, a port below 1024
            without the right).
    """
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    secret = signing_secret if signing_secret is not None else getattr(app, "_signing_secret", "")
    if not secret:
        raise UsageError("SLACK_SIGNING_SECRET is needed to serve Slack over HTTP.")
    server_class = functools.partial(
        _ThreadingWSGIServer, limits=limits or IntakeLimits(), signing_secret=secret, clock=clock
    )
    try:
        return make_server(
            host,
            port,
            SlackRequestHandler(app, path=EVENTS_PATH),
            server_class=server_class,  # type: ignore[arg-type]
            handler_class=_QuietHandler,
        )
    except OSError as exc:  # socket.gaierror (an unknown host name) included
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"Port {port} on {host} is in use: stop the other program or choose --port."
            ) from None
        raise UsageError(
            f"Cannot listen on {host} port {port} ({exc.strerror or exc}).",
            hint="Choose an address of this machine with --host (127.0.0.1, or 0.0.0.0 for all) "
            "and a port you may use with --port (1024 or above without root).",
        ) from None


def build_slack(
    bot_settings: BotSettings,
    engine_settings: Settings,
    *,
    mode: str,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The engine and the Bolt app, wired together (the engine reports jobs on Slack cards).

    Raises:
        FtbotError: a missing token, or Slack refused the bot token (``auth.test``).
    """
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError

    # lazy: keeps Slack's SDK out of every other `ftbot` command (bot/cli.py imports this module)
    from bot.slack.app import create_app, make_client
    from bot.slack.progress import DEFAULT_MIN_INTERVAL, JobCards

    bot_settings.require(mode)  # type: ignore[arg-type]
    client = make_client(bot_settings)
    engine = Engine(engine_settings, **dict(engine_kwargs or {}))
    # Job cards talk to Slack on their own thread, never on the job queue's (see JobCards).
    cards = JobCards(client, engine, sender=ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftbot-cards"))
    # The relay throttles step events for the cards and catches them up when the engine starts.
    engine.subscribe(cards.sink_for, min_interval=DEFAULT_MIN_INTERVAL)
    engine.add_stop_hook(cards.drain)
    try:
        app = create_app(engine, bot_settings, client=client, cards=cards)  # calls auth.test
    except (BoltError, SlackApiError) as exc:
        engine.close()
        reason = exc.response.get("error") if isinstance(exc, SlackApiError) else ""
        raise UsageError(
            f"Slack did not accept SLACK_BOT_TOKEN{f' ({reason})' if reason else ''}.",
            hint="Copy the Bot User OAuth Token (xoxb-...) again from 'OAuth & Permissions', "
            "and reinstall the app if you changed its scopes.",
        ) from None
    except OSError:  # URLError included: no network, a wrong SLACK_API_URL
        engine.close()
        raise UsageError(
            f"Cannot reach Slack at {bot_settings.api_url}.",
            hint="Check the network (and SLACK_API_URL, if you set it).",
        ) from None
    return engine, app


def connect_socket_mode(
    app: Any, bot_settings: BotSettings, *, ping_interval: float = SOCKET_PING_SECONDS
) -> Any:
    """Connect ``app`` to Slack over Socket Mode: ``apps.connections.open`` with SLACK_APP_TOKEN
    (at SLACK_API_URL, through the app's own client), then the WebSocket, and wait until it is
    open. Returns the connected slack_bolt ``SocketModeHandler`` (the websocket-client one); its
    threads receive envelopes, run the app and ack, and reconnect when Slack rotates, closes or
    loses the connection, until :func:`close_socket_mode`.

    Why websocket-client rather than slack_sdk's builtin client (measured against
    tests/fakes/slack_socket.py, slack_sdk 3.48): after Slack's ``disconnect`` message the builtin
    client reads the new connection only ~3 s later (envelopes acked past Slack's 3 s), finds a
    connection closed with a close frame only on its next ping tick (10 s) and one whose TCP
    stream ended only after five failed pings (~60 s, spinning a CPU core meanwhile). This one
    reconnects in ~0.5 s in all three cases. Two gaps in the SDK's use of it are closed here (see
    :func:`_harden`): no pong deadline (a connection that died silently was never replaced) and a
    rotation that could leave the old reader waiting 10 s.

    Raises:
        UsageError: Slack refused the app token, cannot be reached, or the WebSocket did not open.
    """
    import websocket
    from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler
    from slack_sdk.errors import SlackApiError

    # websocket-client's sockets have no timeout unless one is set process-wide: a handshake to a
    # host that never answers would block its thread (and close_socket_mode, which joins it).
    if websocket.getdefaulttimeout() is None:
        websocket.setdefaulttimeout(SOCKET_OPEN_SECONDS)
    handler = SocketModeHandler(app, app_token=bot_settings.app_token, ping_interval=ping_interval)
    first = _harden(handler.client, ping_interval)
    try:
        handler.connect()  # apps.connections.open; the client's runner thread opens the WebSocket
    except SlackApiError as exc:
        close_socket_mode(handler)
        reason = exc.response.get("error") or ""
        raise UsageError(
            f"Slack did not accept SLACK_APP_TOKEN{f' ({reason})' if reason else ''}.",
            hint="Create an app-level token (xapp-...) with the connections:write scope under 'Basic "
            "Information' > 'App-Level Tokens', and make sure Socket Mode is on ('Socket Mode' page; "
            "manifest.yml sets socket_mode_enabled: true). Or serve over HTTP with `ftbot serve --http`.",
        ) from None
    except OSError:  # URLError included
        close_socket_mode(handler)
        raise UsageError(
            f"Cannot reach Slack at {bot_settings.api_url} to open the Socket Mode connection.",
            hint="Check the network (and SLACK_API_URL, if you set it).",
        ) from None
    # Wait for the first attempt's outcome: after a failure the client would retry with a new URL
    # every half second, forever.
    if not first.done.wait(SOCKET_OPEN_SECONDS + 1.0) or not first.opened:
        close_socket_mode(handler)
        raise UsageError(
            "Slack gave a Socket Mode address, but the WebSocket connection to it failed (see the log above).",
            hint="Check that this host may open outgoing wss:// connections to Slack (a firewall; "
            "HTTPS_PROXY is used when set), or serve over HTTP with `ftbot serve --http`.",
        )
    return handler


@dataclass
class _FirstAttempt:
    """How the client's first WebSocket went: ``done`` is set once it opened or failed."""

    done: threading.Event = field(default_factory=threading.Event)
    opened: bool = False


def _harden(client: Any, ping_interval: float) -> _FirstAttempt:
    """Fit slack_sdk's websocket-client ``SocketModeClient`` with what its use of
    ``WebSocketApp`` leaves out, through the listener hooks it offers and one watcher thread.
    Returns how its first WebSocket goes (``is_connected()`` is no answer: it is briefly true
    while a refused handshake is being torn down).

    - A pong deadline. The client pings every ``ping_interval`` but gives websocket-client no
      ``ping_timeout``, so a connection that died without a FIN (a NAT or firewall timeout, a host
      asleep) was never replaced: the bot stayed deaf. The watcher ends a connection whose last
      ping has had no pong for ``PONG_DEADLINE_FRACTION`` of the interval; the client then opens a
      new one, as after any drop.
    - A prompt end of a rotated connection. On Slack's ``disconnect`` message the client opens a
      new connection only once the old reader returns, and closes the old one from another thread,
      which can leave that reader up to 10 s in a wait on a closed socket. The old reader, as it
      hands over the message, waits until the client has replaced its session and then stops.
    """
    first = _FirstAttempt()

    def on_open(ws: Any) -> None:
        if not first.done.is_set():
            first.opened = True
            first.done.set()

    def on_error(ws: Any, error: BaseException) -> None:
        first.done.set()

    def on_message(ws: Any, message: str) -> None:
        if '"disconnect"' not in message:  # a cheap test first: every envelope passes here
            return
        try:
            parsed = json.loads(message)
        except ValueError:
            return
        if isinstance(parsed, dict) and parsed.get("type") == "disconnect":
            # The client's message thread replaces this session (it was queued the message before
            # this listener ran). Wait for that, so this reader's own end cannot replace a newer
            # session that already runs; then stop reading before looking at the socket again.
            deadline = time.monotonic() + ROTATION_WAIT_SECONDS
            while client.current_session is ws and not client.closed and time.monotonic() < deadline:
                time.sleep(0.01)
            ws.keep_running = False

    client.on_open_listeners.append(on_open)
    client.on_error_listeners.append(on_error)
    client.on_message_listeners.append(on_message)
    threading.Thread(
        target=_watch_pongs,
        args=(client, ping_interval * PONG_DEADLINE_FRACTION),
        name="ftbot-socket-pongs",
        daemon=True,
    ).start()
    return first


def _watch_pongs(client: Any, deadline: float) -> None:
    """Until ``client.closed``: shut down the current connection's socket once its last ping has
    waited ``deadline`` seconds for a pong (its reader then sees the end of the stream, and the
    client reconnects). Reads ``WebSocketApp``'s own ping and pong times (``time.time()``)."""
    tick = min(1.0, deadline / 2)
    ended = None
    while not client.closed:
        time.sleep(tick)
        session = client.current_session
        ws = getattr(session, "sock", None)
        raw = getattr(ws, "sock", None)
        if raw is None or session is ended:
            continue
        ping_at = getattr(session, "last_ping_tm", 0.0)
        pong_at = getattr(session, "last_pong_tm", 0.0)
        if ping_at and pong_at < ping_at and time.time() - ping_at > deadline:
            log.warning(
                "Slack has not answered a ping for %.0f s: opening a new Socket Mode connection.", deadline
            )
            ended = session
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)


def close_socket_mode(handler: Any) -> None:
    """Disconnect ``handler`` and stop its threads (no reconnect after this).

    Closing the WebSocket from this thread could leave the client's reader in its 10 s wait on a
    closed socket, and its message thread waits on its queue for up to 1 s. Sending the close frame
    and shutting the socket down first (the reader wakes to end of stream at once), and waking the
    queue, makes it immediate."""
    client = handler.client
    client.auto_reconnect_enabled = False
    client.closed = True  # what close() sets first; the message thread checks it once woken
    session = client.current_session
    if session is not None:
        session.keep_running = False
        ws = session.sock
        raw = getattr(ws, "sock", None)
        if raw is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                ws.send_close()
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
    client.message_queue.put(None)
    handler.close()


@click.command()
@click.option(
    "--http", "use_http", is_flag=True, help="Serve HTTP at /slack/events even when SLACK_APP_TOKEN is set."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP mode: the address to listen on.")
@click.option(
    "--port", default=3000, show_default=True, type=click.IntRange(0, 65535), help="HTTP mode: the port."
)
def serve(use_http: bool, host: str, port: int) -> None:
    """Run the Slack app (Socket Mode with SLACK_APP_TOKEN, else HTTP on /slack/events).

    With no Slack variables set at all it starts the local console instead (`ftbot chat`).

    Example:

        SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... ftbot serve
    """
    try:
        bot_settings = BotSettings.from_env()
        engine_settings = Settings.from_env()
    except FtbotError as exc:
        raise click.ClickException(str(exc)) from None
    mode = "http" if use_http else bot_settings.mode
    if mode != "console":  # the console is a terminal for a person: no log lines in it
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # apscheduler logs every run of the dispatch tick (twice a second) at INFO: noise, not news.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if mode == "console":
        click.echo(
            "No Slack tokens are set (SLACK_BOT_TOKEN, SLACK_APP_TOKEN), so this is the local console, "
            f"on {engine_settings.base_model}. See the README to connect a Slack workspace.\n"
        )
        _run_console(engine_settings, bot_settings)
        return
    try:
        engine, app = build_slack(bot_settings, engine_settings, mode=mode)
    except FtbotError as exc:
        raise click.ClickException(str(exc)) from None
    handler = None
    server = None
    # Connect (or bind the port) before the scheduler starts: a refused app token or a taken port
    # ends here with a message, and no job starts for a bot that cannot run.
    try:
        if mode == "socket":
            handler = connect_socket_mode(app, bot_settings)
        else:
            server = make_http_server(app, host, port, signing_secret=bot_settings.signing_secret)
    except FtbotError as exc:
        engine.close()
        raise click.ClickException(str(exc)) from None
    engine.start()
    # builtin:smollm2 is converted once (about half a minute), in the background: the bot answers
    # meanwhile, and a job or /ask that needs the model waits for the same build (a file lock).
    threading.Thread(target=_prepare_base_model, args=(engine,), name="ftbot-prepare", daemon=True).start()
    try:
        if handler is not None:
            click.echo("ftbot is connected to Slack (Socket Mode). Ctrl-C stops it.")
            threading.Event().wait()  # the handler's threads do the work
        elif server is not None:
            click.echo(f"ftbot listens on http://{host}:{server.server_port}{EVENTS_PATH}. Ctrl-C stops it.")
            server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        if server is not None:
            server.server_close()
        if handler is not None:
            close_socket_mode(handler)
        engine.stop()


def _prepare_base_model(engine: Any) -> None:
    log = logging.getLogger("ftbot.serve")
    try:
        engine.prepare_base_model(progress=log.info)
    except FtbotError as exc:
        log.error(
            "The base model %s cannot be prepared: %s %s",
            engine.settings.base_model,
            exc.message,
            exc.hint or "",
        )


def _run_console(engine_settings: Settings, bot_settings: BotSettings) -> None:
    from bot.console import Console  # lazy: `ftbot serve` and the other commands need no console

    engine = Engine(engine_settings)
    try:
        # builtin:smollm2 is converted once (about half a minute): say so now, not at the first job.
        engine.prepare_base_model(progress=click.echo)
    except FtbotError as exc:  # the console still validates; jobs on this base model fail clearly
        click.echo(f"{exc.message}\n{exc.hint or ''}".rstrip(), err=True)
    with engine:
        console = Console(engine, max_upload_bytes=bot_settings.max_upload_bytes)
        console.run()


@click.command()
def chat() -> None:
    """The local console: the Slack workflow in a terminal, no Slack needed.

    Commands: /upload PATH, /finetune [options], /ask QUESTION, /jobs, /cancel JOB, /help, /quit.

    Example:

        ftbot chat
        > /upload examples/prices.jsonl
        > /finetune
        > /ask How much is a 2 kg bag of rice?
    """
    try:
        bot_settings = BotSettings.from_env()
        engine_settings = Settings.from_env()
    except FtbotError as exc:
        raise click.ClickException(str(exc)) from None
    _run_console(engine_settings, bot_settings)


def serve_in_thread(server: WSGIServer) -> threading.Thread:
    """Serve ``server`` on a daemon thread (the end-to-end test and the benchmark)."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ftbot-http", daemon=True
    )
    thread.start()
    return thread


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve())
