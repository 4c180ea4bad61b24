"""What the local CLI commands (``run``, ``jobs``, ``ask``, ``models``) share: the local
workspace, the Engine opened on the environment's settings, and how an error ends a command.

Errors end a command the same way everywhere (DESIGN.md): ``Error: ...`` on stderr and exit code
1, plus one JSON object on stdout when the command was asked for ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from engine import Engine, FtbotError, Settings

# Jobs and models made from the command line belong to this workspace (team "" and channel ""),
# which is also where `ftbot ask` and `ftbot models` look.
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
