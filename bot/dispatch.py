"""The command table shared by the Slack app and the ``ftbot chat`` console: a command name ->
its parser (:data:`PARSERS`), and a parsed request -> the handler method that answers it
(:data:`ROUTES`). The Slack listeners (bot/slack/listeners/) and the console each implement
:class:`Handler` in their own way (ack and post, or print); :func:`dispatch` is the one place that
decides which method a command line reaches. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bot.slack.parse import (
    AskRequest,
    CancelRequest,
    FinetuneRequest,
    HelpRequest,
    ListRequest,
    ModelsRequest,
    StatusRequest,
    UseRequest,
    parse_ask,
    parse_finetune,
)

Request = (
    FinetuneRequest
    | StatusRequest
    | ListRequest
    | CancelRequest
    | ModelsRequest
    | UseRequest
    | HelpRequest
    | AskRequest
)

#: The slash commands, Slack's and the console's alike: name -> parser (raises ParseError).
PARSERS: dict[str, Callable[[str], Any]] = {"/finetune": parse_finetune, "/ask": parse_ask}

#: A parsed request's type -> the :class:`Handler` method that answers it.
ROUTES: dict[type, str] = {
    HelpRequest: "on_help",
    FinetuneRequest: "on_start",
    StatusRequest: "on_status",
    ListRequest: "on_list",
    CancelRequest: "on_cancel",
    ModelsRequest: "on_models",
    UseRequest: "on_use",
    AskRequest: "on_ask",
}


class Handler(Protocol):
    """What answers the commands: one method per request type (:data:`ROUTES`)."""

    def on_help(self, request: HelpRequest) -> None: ...
    def on_start(self, request: FinetuneRequest) -> None: ...
    def on_status(self, request: StatusRequest) -> None: ...
    def on_list(self, request: ListRequest) -> None: ...
    def on_cancel(self, request: CancelRequest) -> None: ...
    def on_models(self, request: ModelsRequest) -> None: ...
    def on_use(self, request: UseRequest) -> None: ...
    def on_ask(self, request: AskRequest) -> None: ...


def route(request: Request, handler: Handler) -> None:
    """Call the method of ``handler`` that answers ``request`` (:data:`ROUTES`)."""
    getattr(handler, ROUTES[type(request)])(request)


def dispatch(command: str, text: str, handler: Handler) -> None:
    """Parse ``text`` as ``command`` (a key of :data:`PARSERS`) and route the request to
    ``handler``.

    Raises:
        ParseError: the text is malformed (the message says what is accepted).
    """
    route(PARSERS[command](text), handler)
