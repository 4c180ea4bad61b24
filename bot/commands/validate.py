"""``ftbot validate FILE [--base-model M] [--json]``: check a dataset before fine-tuning.

Exit codes (the README's command table): 0 the file is usable, 1 it is not, 2 a usage error (missing or unreadable
file, bad settings, a base model whose tokenizer cannot be loaded). Without ``--json`` the report
is for people: what is wrong, on which line, and how to fix it. With ``--json`` stdout holds
exactly one object: ``{"ok", "errors", "warnings", "stats"}``.

torch/transformers are loaded only with ``--base-model`` (exact token counts); otherwise token
counts are estimates and the report says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine import FtbotError, Settings, token_counter_for, validate_file


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--base-model",
    "base_model",
    default=None,
    metavar="M",
    help="Count tokens with this model's tokenizer and chat template (a local directory, a "
    "Hugging Face id, builtin:smollm2 or builtin:tiny). Without it, token counts are estimates.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a readable report.")
def validate(file: Path, base_model: str | None, as_json: bool) -> None:
    """Check a chat JSONL dataset (OpenAI format) and report every problem with its line number.

    Exit code 0: usable; 1: not usable (see the errors); 2: usage error.
    """
    if not file.exists():
        _usage_error(f"No such file: {file}. Give the path of a .jsonl dataset.")
    counter = None
    try:
        if base_model:
            settings = Settings.from_env()
            counter = token_counter_for(base_model, settings.builtin_dir)
        report = validate_file(file, token_counter=counter)
    except FtbotError as exc:
        _usage_error(str(exc))
    except OSError as exc:
        _usage_error(f"Cannot read {file}: {exc.strerror or exc}.")
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        click.echo(report.to_text(name=str(file)))
        if report.ok:
            click.echo("")
            click.echo(f"Next: ftbot run {file}")
    sys.exit(0 if report.ok else 1)


def _usage_error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)
