"""What the local CLI commands (``run``, ``jobs``, ``ask``, ``models``) and the console share: the
local workspace (:data:`LOCAL_TEAM`, :data:`LOCAL_CHANNEL`), the Engine opened on the
environment's settings, and how an error ends a command.

Errors end a command the same way everywhere (the README's table of commands and exit codes):
``Error: ...`` on stderr and exit code 1, plus one JSON object on stdout when the command was
asked for ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from engine import Engine, FtbotError, Settings

# The local workspace: everything done on this machine without Slack (the CLI commands and the
# `ftbot chat` console, bot/console.py) happens in this one team and channel, so a fine-tune made
# in the console is what `ftbot ask` answers with, `ftbot run`'s upload is what the console's
# `/finetune` uses, and a choice made with `ftbot models --use` or `/finetune use` holds for both.
# Slack team ids are never empty, so no Slack workspace shares it. Earlier versions ran the console
# in team "local", channel "console"; the store's migration 0006_local_workspace moved those rows
# here (engine/store.py), so the value must stay "" / "" unless a new migration moves them again.
LOCAL_TEAM = ""
LOCAL_CHANNEL = ""


def fail(message: str, *, as_json: bool = False, status: str = "error", **extra: Any) -> NoReturn:
    """End the command with ``message`` (exit code 1)."""
    if as_json:
        click.echo(json.dumps({"status": status, "error": message, **extra}))
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@contextmanager
def local_engine(*, as_json: bool = False) -> Iterator[Engine]:
    """The Engine on the environment's settings (FTBOT_HOME, ...), closed afterwards. An
    FtbotError from the settings, the engine or the ``with`` body ends the command via :func:`fail`
    (after the engine is closed)."""
    try:
        with Engine(Settings.from_env()) as engine:
            yield engine
    except FtbotError as exc:
        fail(str(exc), as_json=as_json)
