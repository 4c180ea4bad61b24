"""``ftbot ask`` (answer with a model) and ``ftbot models`` (list the model registry).

Both work in the local workspace (the team and channel that ``ftbot run`` registers its models
under), so ``ftbot run FILE`` followed by ``ftbot ask "..."`` asks the model just trained when it
was promoted (not worse than its baseline), and ``--model ID`` asks any listed model.

Exit codes (DESIGN.md): ``ask`` 0, or 1 with a clear message on stderr; ``models`` 0, or 1 when
the registry cannot be read.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from bot.commands.common import LOCAL_CHANNEL, LOCAL_TEAM, fail, local_engine
from engine import BUILTIN_TINY

BUILTIN_NOTE = (
    f"{BUILTIN_TINY} is a tiny random model for trying the workflow: its answers are not meaningful."
)


def _plain(value: Any) -> Any:
    """JSON-ready copy of an engine record or answer (dataclasses, paths, datetimes)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def _answer_dict(answer: Any) -> dict[str, Any]:
    plain = _plain(answer)
    return plain if isinstance(plain, dict) else {"text": str(answer)}


def _footer(answer: dict[str, Any]) -> str:
    parts = [f"Answered by {answer.get('model') or 'the base model'}"]
    base = answer.get("base_model")
    if base and base not in str(answer.get("model") or ""):
        parts[0] += f" (base {base})"
    if answer.get("note"):
        parts.append(str(answer["note"]))
    if base == BUILTIN_TINY:
        parts.append(BUILTIN_NOTE)
    return " · ".join(parts)


@click.command("ask")
@click.option(
    "--model",
    "model_id",
    default=None,
    metavar="ID",
    help="A model id from `ftbot models` (default: the current model, else the base model).",
)
@click.option("--compare", is_flag=True, help="Also answer with the base model, side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer(s) as one JSON object.")
@click.argument("prompt", nargs=-1)
def ask(model_id: str | None, compare: bool, as_json: bool, prompt: tuple[str, ...]) -> None:
    """Answer PROMPT with a model: the current fine-tune unless --model names another.

    Examples:

        ftbot ask "What does a refurbished 13 inch laptop cost?"

        ftbot ask --compare --model job-1a2b "Route: my invoice is wrong"
    """
    text = " ".join(prompt).strip()
    if not text:
        fail('The question is empty. Write it after the command, e.g. ftbot ask "What is ...?"')
    with local_engine() as engine:
        result = engine.ask(text, model=model_id, team=LOCAL_TEAM, channel=LOCAL_CHANNEL, compare=compare)
    if compare:
        base, tuned = (_answer_dict(a) for a in result)
        if as_json:
            click.echo(json.dumps({"base": base, "finetuned": tuned}))
            return
        click.echo(f"== base model ({base.get('base_model') or base.get('model')}) ==")
        click.echo(base.get("text") or "(empty answer)")
        click.echo(f"\n== {tuned.get('model')} ==")
        click.echo(tuned.get("text") or "(empty answer)")
        for answer in (base, tuned):
            if answer.get("note"):
                click.echo(f"{answer.get('model')}: {answer['note']}", err=True)
        if tuned.get("base_model") == BUILTIN_TINY:
            click.echo(BUILTIN_NOTE, err=True)
        return
    answer = _answer_dict(result)
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(answer.get("text") or "(empty answer)")
    click.echo(_footer(answer), err=True)


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON list.")
def models(as_json: bool) -> None:
    """List the fine-tuned models, newest first; * marks the current one (what `ftbot ask` uses).

    Example:

        ftbot models --json
    """
    with local_engine() as engine:
        base_model = engine.settings.base_model
        records = engine.models(LOCAL_TEAM)
        current = engine.current_model(LOCAL_TEAM, LOCAL_CHANNEL)
    current_id = current.id if current is not None else None
    rows = [{**_plain(r), "current": r.id == current_id} for r in records]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(
            f"No models yet: `ftbot run FILE` fine-tunes one. `ftbot ask` meanwhile uses the base "
            f"model ({base_model})."
        )
        return
    click.echo(f"  {'model':<16} {'kind':<14} {'verdict':<26} {'created':<17} base")
    for row in rows:
        mark = "*" if row["current"] else " "
        created = str(row.get("created_at") or "")[:16].replace("T", " ")
        click.echo(
            f"{mark} {row['id']:<16} {row['kind']:<14} {row.get('verdict') or '-':<26} {created:<17} "
            f"{row.get('base_model')}"
        )
    if current_id is None:
        click.echo(
            f"\nNo current model: `ftbot ask` uses the base model ({base_model}) unless --model names one."
        )
