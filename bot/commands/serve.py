"""``ftbot serve`` (the Slack app) and ``ftbot chat`` (the local console).

``serve`` picks its mode from the environment (bot/settings.py): Socket Mode when
SLACK_APP_TOKEN is set, HTTP on ``--host/--port`` at ``/slack/events`` otherwise (or with
``--http``), and, with no Slack variable at all, the local console on builtin:tiny, which is what
``make run`` shows a newcomer. Missing or malformed tokens stop it at once with a message that
names the variable, never a traceback later.

The pieces are functions (:func:`build_slack`, :func:`make_http_server`,
:func:`connect_socket_mode`) so the end-to-end tests run exactly this code path against a fake
Slack (Web API, and a Socket Mode WebSocket server) on port 0.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from bot.settings import BotSettings
from engine import FtbotError, Settings

log = logging.getLogger("ftbot.serve")

EVENTS_PATH = "/slack/events"
# How often the Socket Mode client pings Slack (slack_bolt's default); it also checks its connection
# on this tick and reconnects when it was closed or went quiet (no pong for four pings).
SOCKET_PING_SECONDS = 10.0


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow request never delays another's ack."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of Slack requests (retries, many users at
    # once) would be refused at the socket before any thread sees it.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # requests are logged by Bolt at debug
        log.debug("%s - %s", self.address_string(), format % args)


def make_http_server(app: Any, host: str, port: int) -> WSGIServer:
    """A threaded WSGI server for ``app`` at ``/slack/events`` (commands, events, interactivity).
    ``port=0`` picks a free port (``server.server_port``)."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    return make_server(
        host,
        port,
        SlackRequestHandler(app, path=EVENTS_PATH),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )


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

    from bot.slack.app import create_app, make_client
    from bot.slack.progress import JobCards
    from engine import Engine, UsageError

    bot_settings.require(mode)  # type: ignore[arg-type]
    client = make_client(bot_settings)
    # Job cards talk to Slack on their own thread, never on the job queue's (see JobCards).
    cards = JobCards(client, sender=ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftbot-cards"))
    engine = Engine(engine_settings, sink_for=cards.sink_for, **dict(engine_kwargs or {}))
    engine.add_stop_hook(cards.drain)
    # What a previous bot process was handed but never showed (it died first) goes out now.
    engine.add_start_hook(cards.catch_up)
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
    (at SLACK_API_URL, through the app's own client), then the WebSocket. Returns the connected
    slack_bolt ``SocketModeHandler``; its threads receive envelopes, run the app and ack, and
    reconnect when Slack rotates or drops the connection, until :func:`close_socket_mode`.

    Raises:
        UsageError: Slack refused the app token, cannot be reached, or the WebSocket did not open.
    """
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError

    from engine import UsageError

    handler = SocketModeHandler(app, app_token=bot_settings.app_token, ping_interval=ping_interval)
    try:
        handler.connect()
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
    if not handler.client.is_connected():  # the SDK logs why, and would only retry every ping
        close_socket_mode(handler)
        raise UsageError(
            "Slack gave a Socket Mode address, but the WebSocket connection to it failed (see the log above).",
            hint="Check that this host may open outgoing wss:// connections to Slack (a firewall; "
            "HTTPS_PROXY is used when set), or serve over HTTP with `ftbot serve --http`.",
        )
    return handler


def close_socket_mode(handler: Any) -> None:
    """Disconnect ``handler`` and stop its threads (no reconnect after this).

    slack_sdk's builtin client would take up to 3 s: its reader thread sits in a blocking receive
    (3 s timeout) holding the lock that closing needs, and its message thread in a 1 s queue wait.
    Shutting the socket down and waking the queue first makes it immediate."""
    client = handler.client
    client.auto_reconnect_enabled = False
    sock = getattr(client.current_session, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    client.closed = True  # what close() sets first; the message thread checks it once woken
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bot_settings = BotSettings.from_env()
        engine_settings = Settings.from_env()
    except FtbotError as exc:
        raise click.ClickException(str(exc)) from None
    mode = "http" if use_http else bot_settings.mode
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
    if mode == "socket":
        # Connect before the scheduler starts: a refused app token ends here with a message.
        try:
            handler = connect_socket_mode(app, bot_settings)
        except FtbotError as exc:
            engine.close()
            raise click.ClickException(str(exc)) from None
    engine.start()
    try:
        if handler is not None:
            click.echo("ftbot is connected to Slack (Socket Mode). Ctrl-C stops it.")
            threading.Event().wait()  # the handler's threads do the work
        else:
            server = make_http_server(app, host, port)
            click.echo(f"ftbot listens on http://{host}:{server.server_port}{EVENTS_PATH}. Ctrl-C stops it.")
            try:
                server.serve_forever()
            finally:
                server.server_close()
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        if handler is not None:
            close_socket_mode(handler)
        engine.stop()


def _run_console(engine_settings: Settings, bot_settings: BotSettings) -> None:
    from bot.console import Console
    from engine import Engine

    engine = Engine(engine_settings)
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
