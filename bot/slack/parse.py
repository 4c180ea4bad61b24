"""Parse slash-command text into typed requests. Pure: stdlib and engine errors only.

Grammar (DESIGN.md, "Slash command arguments are key=value words"):

    /finetune [DATASET] [backend=local|openai] [base=MODEL] [epochs=N] [lr=X] [r=N]
              [target=MODULES] [metric=NAME] [eval=DATASET]
    /finetune status [JOB] | list | cancel JOB | help
    /ask [model=ID] [compare] QUESTION
    /ask help

Anything else gives a :class:`ParseError` whose message says what was wrong and lists what is
accepted. Only the grammar is checked here; which keys exist and what values they take is the
engine's option table (``ConfigError`` lists every problem and the accepted keys at once), so the
two can never disagree. :meth:`FinetuneRequest.submit` hands a parsed request to the engine it is
given, so the Slack app and the console submit alike.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from typing import TYPE_CHECKING

from engine import UsageError

if TYPE_CHECKING:
    from engine import Engine, Job

# key -> (what it takes, type check). The keys are passed to Engine.submit as options.
FINETUNE_KEYS: dict[str, str] = {
    "backend": "local or openai",
    "base": "base model: a Hugging Face id, a local path, builtin:tiny or an OpenAI model",
    "epochs": "number of passes over the data, a whole number such as 3",
    "lr": "learning rate, a number such as 2e-4",
    "r": "LoRA rank, a whole number such as 16",
    "target": "LoRA target modules, e.g. all-linear or q_proj,v_proj",
    "metric": "the metric to judge by: mae, field_accuracy, accuracy or token_f1",
    "eval": "a dataset to evaluate on instead of a held-out split",
}
FINETUNE_SUBCOMMANDS = ("status", "list", "cancel", "help")
ASK_KEYS: dict[str, str] = {"model": "a model id from `/finetune list` or `ftbot models`"}

FINETUNE_USAGE = (
    "`/finetune [dataset] [backend=local|openai] [base=MODEL] [epochs=N] [lr=X] [r=N] "
    "[target=MODULES] [metric=NAME] [eval=DATASET]`, or `/finetune status [JOB]`, "
    "`/finetune list`, `/finetune cancel JOB`, `/finetune help`"
)
ASK_USAGE = "`/ask [model=ID] [compare] your question`"


class ParseError(UsageError):
    """Malformed command text. ``message`` lists what is accepted."""


@dataclass(frozen=True)
class FinetuneRequest:
    dataset: str | None = None  # None: the channel's latest usable upload
    options: dict[str, str] = field(default_factory=dict)  # backend, base, epochs, lr, r, target, metric
    eval_dataset: str | None = None

    def submit(
        self, engine: Engine, resolve: Callable[[str | None], str], *, owner: str, team: str, channel: str
    ) -> Job:
        """Submit the job this request asks for. ``resolve`` turns a dataset reference (``None``:
        the channel's latest usable upload) into a dataset hash, or raises what to tell the user."""
        dataset_hash = resolve(self.dataset)
        eval_hash = resolve(self.eval_dataset) if self.eval_dataset else None
        return engine.submit(
            dataset_hash,
            options=dict(self.options),
            owner=owner,
            team=team,
            channel=channel,
            eval_dataset_hash=eval_hash,
        )


@dataclass(frozen=True)
class StatusRequest:
    job_id: str | None = None


@dataclass(frozen=True)
class ListRequest:
    pass


@dataclass(frozen=True)
class CancelRequest:
    job_id: str


@dataclass(frozen=True)
class HelpRequest:
    topic: str = "finetune"


@dataclass(frozen=True)
class AskRequest:
    prompt: str
    model: str | None = None
    compare: bool = False


FinetuneCommand = FinetuneRequest | StatusRequest | ListRequest | CancelRequest | HelpRequest


def _words(text: str) -> list[str]:
    # Slack escapes &, < and > in command text; phones turn quotes into curly ones.
    text = unescape(text or "").replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words rather than refusing
        return text.split()


def option_table() -> list[tuple[str, str]]:
    """``(key, what it takes)`` for help texts: the engine's option table when it publishes one
    (``engine.option_help``), else the keys documented in DESIGN.md; ``eval`` is ours."""
    import engine

    helper = getattr(engine, "option_help", None) if "option_help" in getattr(engine, "__all__", ()) else None
    if not callable(helper):
        return list(FINETUNE_KEYS.items())
    table: dict[str, str] = {}
    for backend in ("local", "openai"):
        for key, accepted in helper(backend):
            table.setdefault(str(key), str(accepted) + ("" if backend == "local" else " (openai)"))
    table["eval"] = FINETUNE_KEYS["eval"]
    return list(table.items())


def _check_value(key: str, value: str) -> str | None:
    """A problem with ``value`` for ``key``, or None. Keys, types and ranges are the engine's job
    (``ConfigError`` lists every problem and the accepted keys); here only what needs no table."""
    if not value:
        return f"`{key}=` needs a value (see `/finetune help`)"
    if key == "backend" and value.lower() not in ("local", "openai"):
        return f"`backend={value}` is not local or openai"
    return None


def accepted_finetune_keys() -> str:
    """The options, one per line, for `/finetune help` and error replies."""
    return "\n".join(f"• `{key}=` {what}" for key, what in option_table())


def parse_finetune(text: str) -> FinetuneCommand:
    """Parse ``/finetune`` text.

    Raises:
        ParseError: listing every problem and the accepted keys.
    """
    words = _words(text)
    if words and words[0].lower() in FINETUNE_SUBCOMMANDS:
        sub, rest = words[0].lower(), words[1:]
        if sub == "help":
            return HelpRequest("finetune")
        if sub == "list":
            if rest:
                raise ParseError(f"`/finetune list` takes no arguments. Usage: {FINETUNE_USAGE}.")
            return ListRequest()
        if sub == "status":
            if len(rest) > 1:
                raise ParseError(f"`/finetune status` takes at most one job id. Usage: {FINETUNE_USAGE}.")
            return StatusRequest(rest[0] if rest else None)
        if len(rest) != 1:
            raise ParseError(
                "`/finetune cancel` needs exactly one job id, such as `/finetune cancel ft-1a2b3c4d`.",
                hint="`/finetune list` shows the jobs in this channel.",
            )
        return CancelRequest(rest[0])

    problems: list[str] = []
    dataset: str | None = None
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            if dataset is None:
                dataset = word
            else:
                problems.append(
                    f"`{word}` is a second dataset name (I already have `{dataset}`); options are key=value"
                )
            continue
        key = key.strip().lower().replace("-", "_")
        if not key.isidentifier():
            problems.append(f"`{word}` is not a key=value option")
            continue
        if key in options:
            problems.append(f"`{key}` is given twice")
            continue
        problem = _check_value(key, value.strip())
        if problem:
            problems.append(problem)
        else:
            options[key] = value.strip()
    if problems:
        raise ParseError(
            "I could not read that: "
            + "; ".join(problems)
            + ".\nAccepted options:\n"
            + accepted_finetune_keys(),
            hint=f"Usage: {FINETUNE_USAGE}.",
        )
    eval_dataset = options.pop("eval", None)
    if dataset is not None and dataset.lower() == "latest":
        dataset = None
    return FinetuneRequest(dataset=dataset, options=options, eval_dataset=eval_dataset)


def parse_ask(text: str) -> AskRequest | HelpRequest:
    """Parse ``/ask`` text: leading ``model=ID`` and ``compare`` words, then the question.

    The question keeps the user's own spacing and quotes; only the leading words are parsed, and
    any other ``key=value`` word is part of the question (``x=3, what is x+1?``).

    Raises:
        ParseError: options but no question, or ``model=`` without a value.
    """
    rest = unescape(text or "").strip()
    model: str | None = None
    compare = False
    while rest:
        head, _, tail = rest.partition(" ")
        lowered = head.lower()
        if lowered == "compare":
            compare = True
        elif "=" in head and head.split("=", 1)[0].lower() in ASK_KEYS:
            value = head.split("=", 1)[1]
            if not value:
                raise ParseError(f"`model=` needs a model id. Usage: {ASK_USAGE}.")
            model = value
        else:
            break
        rest = tail.strip()
    if not rest or (rest.lower() == "help" and model is None and not compare):
        if not rest and (model or compare):
            raise ParseError(f"What is the question? Usage: {ASK_USAGE}.")
        return HelpRequest("ask")
    return AskRequest(prompt=rest, model=model, compare=compare)
