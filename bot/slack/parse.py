"""Parse slash-command text into typed requests. Pure: stdlib and the engine's errors and option table.

Grammar (slash command arguments are key=value words):

    /finetune [DATASET] [backend=local|openai] [base=MODEL] [epochs=N] [lr=X] [r=N]
              [target=MODULES] [metric=NAME] [eval=DATASET]
    /finetune status [JOB] | list | cancel JOB | help
    /finetune models | use MODEL_ID|base|auto
    /ask [model=ID] [temperature=X] [max_tokens=N] [compare] QUESTION
    /ask help

Anything else gives a :class:`ParseError` whose message says what was wrong and lists what is
accepted. Only the grammar is checked here; which keys exist and what values they take is the
engine's option table (``ConfigError`` lists every problem and the accepted keys at once), so the
two can never disagree. bot/dispatch.py routes each parsed request to its handler, the same way
for the Slack app and the console.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import unescape
from typing import TYPE_CHECKING, Any

from engine import UsageError, option_help

if TYPE_CHECKING:
    from engine import Engine

# `eval=` is read here, not by the engine: a dataset to evaluate on (FinetuneRequest.eval_dataset).
EVAL_KEY_HELP = "a dataset to evaluate on instead of a held-out split"
FINETUNE_SUBCOMMANDS = ("status", "list", "cancel", "help", "models", "use")
# What `/finetune use` accepts (Engine.use_model): a model id, or one of these words.
USE_CHOICES: dict[str, str] = {
    "MODEL_ID": "a model id from `/finetune models`: it answers /ask here until someone changes it",
    "base": "the base model alone, until someone changes it",
    "auto": "the promotion rule: the latest fine-tune of this channel that passed it (not worse than its "
    "baseline, and it learned something), replaced by each later one",
}
USE_USAGE = "`/finetune use MODEL_ID|base|auto`"
# The leading key=value words /ask reads (their ranges are the engine's: Engine.check_ask_options).
ASK_KEYS: dict[str, str] = {
    "model": "a model id from `/finetune models` or `ftbot models`, or `base` (default: the channel's current model)",
    "temperature": "a number from 0 to 2; 0, the default, answers greedily (the same answer every time)",
    "max_tokens": "the longest answer in tokens, a whole number from 1 to this bot's limit (the default)",
}

FINETUNE_USAGE = (
    "`/finetune [dataset] [backend=local|openai] [base=MODEL] [epochs=N] [lr=X] [r=N] "
    "[target=MODULES] [metric=NAME] [eval=DATASET]`, or `/finetune status [JOB]`, "
    "`/finetune list`, `/finetune cancel JOB`, `/finetune models`, `/finetune use MODEL_ID|base|auto`, "
    "`/finetune help`"
)
ASK_USAGE = "`/ask [model=ID] [temperature=X] [max_tokens=N] [compare] your question`"


class ParseError(UsageError):
    """Malformed command text. ``message`` lists what is accepted."""


@dataclass(frozen=True)
class FinetuneRequest:
    dataset: str | None = None  # None: the channel's latest usable upload
    options: dict[str, str] = field(default_factory=dict)  # backend, base, epochs, lr, r, target, metric
    eval_dataset: str | None = None


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
class ModelsRequest:
    """``/finetune models``: the workspace's models, the channel's current one marked."""


@dataclass(frozen=True)
class UseRequest:
    """``/finetune use MODEL_ID|base|auto``: change the channel's current model
    (``choice`` as typed; the engine checks it: Engine.use_model)."""

    choice: str


@dataclass(frozen=True)
class HelpRequest:
    topic: str = "finetune"


@dataclass(frozen=True)
class AskRequest:
    prompt: str
    model: str | None = None
    compare: bool = False
    temperature: float | None = None  # None: the engine's default (greedy)
    max_tokens: int | None = None  # None: the engine's default (the bot's limit)

    def check(self, engine: Engine) -> None:
        """Raise the engine's UsageError now when ``temperature`` or ``max_tokens`` is out of
        range (the Slack app calls this before it acknowledges the command)."""
        engine.check_ask_options(temperature=self.temperature, max_tokens=self.max_tokens)

    def ask(self, engine: Engine, *, team: str, channel: str, model: str | None = None) -> Any:
        """Ask ``engine`` this question; ``model`` (a job thread's model) overrides the request's.
        Returns what :meth:`Engine.ask` returns, so Slack and the console ask alike."""
        return engine.ask(
            self.prompt,
            model=model or self.model,
            team=team,
            channel=channel,
            compare=self.compare,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )


FinetuneCommand = (
    FinetuneRequest | StatusRequest | ListRequest | CancelRequest | HelpRequest | ModelsRequest | UseRequest
)


def _words(text: str) -> list[str]:
    # Slack escapes &, < and > in command text; phones turn quotes into curly ones.
    text = unescape(text or "").replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words rather than refusing
        return text.split()


def option_table() -> list[tuple[str, str]]:
    """``(key, what it takes)`` for help texts: the engine's option table (``option_help``) for
    both backends (an OpenAI-only key says so), then ``eval``, which is ours."""
    table: dict[str, str] = {}
    for backend in ("local", "openai"):
        for key, accepted in option_help(backend):
            table.setdefault(str(key), str(accepted) + ("" if backend == "local" else " (openai)"))
    table["eval"] = EVAL_KEY_HELP
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


def accepted_use_choices() -> str:
    """What `/finetune use` accepts, for help texts and errors."""
    return "; ".join(f"`{word}` ({what})" for word, what in USE_CHOICES.items()) + "."


def suggest(word: str, choices: Sequence[str], *, cutoff: float = 0.7) -> str | None:
    """The choice ``word`` was probably meant to be (a typo: ``stauts`` -> ``status``), or None.
    Compared in lower case by difflib; words over 40 characters are not compared."""
    if len(word) > 40:
        return None
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=cutoff)
    return close[0] if close else None


def _subcommand_typo(words: list[str]) -> ParseError | None:
    """The error for a first word that misspells a subcommand (``/finetune stauts``), or None.

    Only alphabetic words are compared: a dataset is named by its file name (``prices.jsonl``), a
    Slack file id or a hash prefix, none of which is a short word of letters near a subcommand.
    """
    first = words[0]
    if not first.isalpha() or first.lower() == "latest":
        return None
    guess = suggest(first, FINETUNE_SUBCOMMANDS)
    if guess is None:
        return None
    meant = " ".join([f"/finetune {guess}", *words[1:]])
    return ParseError(
        f"`{first}` is not a /finetune subcommand: did you mean `{meant}`?",
        hint=f"A dataset is named by its file name or hash. Usage: {FINETUNE_USAGE}.",
    )


def parse_finetune(text: str) -> FinetuneCommand:
    """Parse ``/finetune`` text.

    Raises:
        ParseError: listing every problem and the accepted keys; a misspelt subcommand gets
            "did you mean".
    """
    words = _words(text)
    if words and words[0].lower() not in FINETUNE_SUBCOMMANDS:
        typo = _subcommand_typo(words)
        if typo is not None:
            raise typo
    if words and words[0].lower() in FINETUNE_SUBCOMMANDS:
        sub, rest = words[0].lower(), words[1:]
        if sub == "help":
            return HelpRequest("finetune")
        if sub == "list":
            if rest:
                raise ParseError(f"`/finetune list` takes no arguments. Usage: {FINETUNE_USAGE}.")
            return ListRequest()
        if sub == "models":
            if rest:
                raise ParseError(f"`/finetune models` takes no arguments. Usage: {FINETUNE_USAGE}.")
            return ModelsRequest()
        if sub == "use":
            if len(rest) != 1:
                raise ParseError(
                    f"`/finetune use` needs exactly one of: {accepted_use_choices()}",
                    hint=f"Usage: {USE_USAGE}; `/finetune models` lists the models.",
                )
            return UseRequest(rest[0])
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


def _ask_number(found: dict[str, str], key: str, kind: type, what: str) -> Any:
    """``found[key]`` as ``kind`` (None when absent); a ParseError naming what ``key`` takes."""
    if key not in found:
        return None
    try:
        return kind(found[key])
    except ValueError:
        raise ParseError(
            f"`{key}={found[key]}` is not {what}; {key} takes {ASK_KEYS[key]}. Usage: {ASK_USAGE}."
        ) from None


def parse_ask(text: str) -> AskRequest | HelpRequest:
    """Parse ``/ask`` text: leading ``model=ID``, ``temperature=X``, ``max_tokens=N`` and
    ``compare`` words (any order), then the question.

    The question keeps the user's own spacing and quotes; only the leading words are parsed, and
    any other ``key=value`` word is part of the question (``x=3, what is x+1?``), as is everything
    after the first word that is not an option. Values are checked for their type here (a number,
    a whole number); their ranges are the engine's (:meth:`Engine.check_ask_options`).

    Raises:
        ParseError: options but no question, an option without a value or given twice, or a
            value that is not a number; the message says what is accepted.
    """
    rest = unescape(text or "").strip()
    found: dict[str, str] = {}
    compare = False
    while rest:
        parts = rest.split(None, 1)
        head, tail = parts[0], (parts[1] if len(parts) > 1 else "")
        key, sep, value = head.partition("=")
        key = key.lower().replace("-", "_")
        if head.lower() == "compare":
            compare = True
        elif sep and key in ASK_KEYS:
            if key in found:
                raise ParseError(f"`{key}=` is given twice. Usage: {ASK_USAGE}.")
            if not value:
                raise ParseError(f"`{key}=` needs a value: {ASK_KEYS[key]}. Usage: {ASK_USAGE}.")
            found[key] = value
        else:
            break
        rest = tail.strip()
    if not rest or (rest.lower() == "help" and not found and not compare):
        if not rest and (found or compare):
            raise ParseError(f"What is the question? Usage: {ASK_USAGE}.")
        return HelpRequest("ask")
    temperature = _ask_number(found, "temperature", float, "a number")
    max_tokens = _ask_number(found, "max_tokens", int, "a whole number")
    return AskRequest(
        prompt=rest,
        model=found.get("model"),
        compare=compare,
        temperature=temperature,
        max_tokens=max_tokens,
    )
