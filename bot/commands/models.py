"""``ftbot ask`` (answer with a model) and ``ftbot models`` (list the model registry).

Both work in the local workspace (``LOCAL_TEAM`` / ``LOCAL_CHANNEL``: where ``ftbot run`` and
the ``ftbot chat`` console register their models), so ``ftbot run FILE`` (or ``/finetune`` in the
console) followed by ``ftbot ask "..."`` asks the model just trained when it was promoted (not
worse than its baseline) or chosen, and ``--model ID`` asks any listed model. An answer of the
base model alone says why on stderr (no fine-tune yet, none promoted, or chosen).

``ftbot models --use MODEL_ID|base|auto`` changes the local workspace's current model, as
``/finetune use`` does in a Slack channel (see ``Engine.use_model``): a user's choice stands until
changed, and new fine-tunes do not replace it; ``auto`` goes back to the promotion rule.

Exit codes (the README's command table): ``ask`` 0, or 1 with a clear message on stderr; ``models`` 0, or 1 when
the registry cannot be read or ``--use`` names no model of this workspace.
"""

from __future__ import annotations

import dataclasses
import getpass
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


def base_answer_note(answer: dict[str, Any]) -> str | None:
    """Why the base model alone answered (the answer's ``base_reason``, see ``Engine.ask``), in the
    CLI's words; None for any other answer and for ``--model base`` (asked for on purpose).
    ``ftbot ask`` prints it on stderr, so stdout (the answer, or the JSON) stays clean."""
    reason, base = answer.get("base_reason"), answer.get("base_model")
    if reason == "no_finetune":
        return (
            f"No fine-tuned model here yet: this answer comes from the base model {base}. Make one "
            "with `ftbot run FILE` (or /upload and /finetune in `ftbot chat`)."
        )
    if reason == "none_promoted":
        return (
            "None of the fine-tunes here is the current model (one becomes current only when it is not "
            f"worse than its baseline): this answer comes from the base model {base}. `ftbot models` "
            "lists them; `ftbot models --use ID` makes one current, `ftbot ask --model ID` asks it once."
        )
    if reason == "chosen":
        return (
            f"The base model {base} answers by choice (`ftbot models --use base`); "
            "`ftbot models --use auto` goes back to the latest good fine-tune."
        )
    return None


def _number(option: str, raw: str | None, kind: type[float] | type[int], accepted: str) -> Any:
    """``raw`` as a ``kind`` (None stays None: the engine's default), or end the command saying
    what the option takes. The range is the engine's to check (``Engine.check_ask_options``)."""
    if raw is None:
        return None
    try:
        return kind(raw.strip())
    except ValueError:
        fail(f"{option} takes {accepted}; got {raw!r}.")


@click.command("ask")
@click.option(
    "--model",
    "model_id",
    default=None,
    metavar="ID",
    help="A model id from `ftbot models` (default: the current model, else the base model).",
)
@click.option("--compare", is_flag=True, help="Also answer with the base model, side by side.")
# Read as text and converted here: a bad value ends with exit code 1 and a clear message
# (the README's contract for `ask`), where click's own FLOAT/INT would exit 2.
@click.option(
    "--temperature",
    default=None,
    metavar="FLOAT",
    help="0 to 2; 0 (the default) answers greedily, the same answer every time.",
)
@click.option(
    "--max-tokens",
    "max_tokens",
    default=None,
    metavar="N",
    help="The longest answer in tokens, 1 to FTBOT_ASK_MAX_NEW_TOKENS (the default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer(s) as one JSON object.")
@click.argument("prompt", nargs=-1)
def ask(
    model_id: str | None,
    compare: bool,
    temperature: str | None,
    max_tokens: str | None,
    as_json: bool,
    prompt: tuple[str, ...],
) -> None:
    """Answer PROMPT with a model: the current fine-tune unless --model names another.
    A cut answer (token or time limit) says so after it.

    Examples:

        ftbot ask "What does a refurbished 13 inch laptop cost?"

        ftbot ask --compare --model job-1a2b "Route: my invoice is wrong"

        ftbot ask --temperature 0.7 --max-tokens 64 "Describe a used bike"
    """
    text = " ".join(prompt).strip()
    if not text:
        fail('The question is empty. Write it after the command, e.g. ftbot ask "What is ...?"')
    temp = _number("--temperature", temperature, float, "a number from 0 to 2 (0 = greedy, the default)")
    limit = _number("--max-tokens", max_tokens, int, "a whole number of tokens, such as 64")
    with local_engine() as engine:
        result = engine.ask(
            text,
            model=model_id,
            team=LOCAL_TEAM,
            channel=LOCAL_CHANNEL,
            compare=compare,
            temperature=temp,
            max_tokens=limit,
        )
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
    why = base_answer_note(answer)
    if as_json:
        click.echo(json.dumps(answer))
        if why:
            click.echo(why, err=True)
        return
    click.echo(answer.get("text") or "(empty answer)")
    click.echo(_footer(answer), err=True)
    if why:
        click.echo(why, err=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "cli"


def _when(at: datetime | None) -> str:
    return f" on {at:%Y-%m-%d %H:%M} UTC" if at else ""


def describe_choice(choice: Any, base_model: str) -> str:
    """The local workspace's current model and who chose it, in one sentence."""
    if choice.mode == "base":
        return (
            f"the base model ({base_model}) alone, chosen by {choice.chooser or 'someone'}{_when(choice.set_at)}; "
            "new fine-tunes do not replace it (`ftbot models --use auto` goes back to the promotion rule)."
        )
    if choice.mode == "model" and choice.model is not None:
        return (
            f"{choice.model.id}, chosen by {choice.chooser or 'someone'}{_when(choice.set_at)}; new fine-tunes "
            "do not replace it (`ftbot models --use auto` goes back to the promotion rule)."
        )
    if choice.model is None:
        return f"none yet: `ftbot ask` uses the base model ({base_model}) until a fine-tune is promoted."
    text = (
        f"{choice.model.id}, chosen by the promotion rule (the latest fine-tune that was not worse than "
        "its baseline and learned something; later ones replace it)"
    )
    if choice.chooser:
        text += f"; {choice.chooser} switched back to it{_when(choice.set_at)}"
    return text + "."


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON list.")
@click.option(
    "--use",
    "use",
    default=None,
    metavar="MODEL_ID|base|auto",
    help="Make MODEL_ID the current model (what `ftbot ask` uses) until changed; `base`: the base "
    "model alone; `auto`: the latest promoted fine-tune, replaced by later ones (the default).",
)
def models(as_json: bool, use: str | None) -> None:
    """List the fine-tuned models, newest first; * marks the current one (what `ftbot ask` uses)
    and the last line says who chose it: the promotion rule (the latest fine-tune that was not
    worse than its baseline) or a user (`--use`). While a user's choice stands, new fine-tunes
    do not replace it.

    Examples:

        ftbot models --json

        ftbot models --use ft-1a2b3c4d      (or --use base, --use auto)
    """
    if use is not None:
        with local_engine(as_json=as_json) as engine:
            base_model = engine.settings.base_model
            choice = engine.use_model(LOCAL_TEAM, LOCAL_CHANNEL, use, user=_user())
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "status": "ok",
                        "mode": choice.mode,
                        "model_id": choice.model_id,
                        "set_by": choice.set_by,
                        "set_at": _plain(choice.set_at),
                    }
                )
            )
            return
        click.echo(f"Current model: {describe_choice(choice, base_model)}")
        return
    with local_engine() as engine:
        base_model = engine.settings.base_model
        records = engine.models(LOCAL_TEAM)
        choice = engine.model_choice(LOCAL_TEAM, LOCAL_CHANNEL)
    current_id = choice.model_id
    chosen_by = "promotion rule" if choice.mode == "auto" else choice.chooser or ""
    rows = [
        {
            **_plain(r),
            "current": r.id == current_id,
            "chosen_by": chosen_by if r.id == current_id else None,
            "chosen_at": _plain(choice.set_at) if r.id == current_id else None,
        }
        for r in records
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(
            f"No models yet: `ftbot run FILE` fine-tunes one. `ftbot ask` meanwhile uses the base "
            f"model ({base_model})."
        )
        if choice.mode == "base":
            click.echo(f"Current model: {describe_choice(choice, base_model)}")
        return
    click.echo(f"  {'model':<16} {'kind':<14} {'verdict':<26} {'created':<17} base")
    for row in rows:
        mark = "*" if row["current"] else " "
        created = str(row.get("created_at") or "")[:16].replace("T", " ")
        click.echo(
            f"{mark} {row['id']:<16} {row['kind']:<14} {row.get('verdict') or '-':<26} {created:<17} "
            f"{row.get('base_model')}"
        )
    click.echo(f"\nCurrent model: {describe_choice(choice, base_model)}")
    click.echo(
        "Change it with `ftbot models --use MODEL_ID|base|auto`; `ftbot ask --model ID` asks any model once."
    )
