"""Streaming validation of OpenAI chat-format JSONL datasets, the eval split, and leakage checks.

Pure: stdlib and other pure engine modules only (``engine.errors``; ``engine.evaluate`` for task
detection, imported lazily so the two modules may import each other later).

The format (DESIGN.md): one JSON object per line, ``{"messages": [{"role": ..., "content": ...},
...]}`` with roles ``system``, ``user``, ``assistant``, ``tool``; optional ``tools``,
``tool_calls``, ``tool_call_id``, ``name`` and ``weight`` (0 or 1). A UTF-8 BOM, CRLF line ends,
blank lines and a missing final newline are accepted.

Contracts:

- :func:`validate_file` reads the file once, as a stream. Memory stays bounded: a line is never
  held beyond :data:`MAX_LINE_BYTES` (longer lines are skipped in chunks), errors are kept for at
  most :data:`MAX_STORED_PER_CODE` lines per code (the rest are counted), and whole-file checks
  (duplicates, conflicting answers) keep about 20 bytes per example plus a fixed-size bit map.
- Every problem is reported at once, each with its 1-based line number (``None`` for problems of
  the whole file) and a message that says what is wrong, where, and how to fix it. A typo in a
  role or key gets a "did you mean" (``assistent`` -> ``assistant``, ``contnet`` -> ``content``);
  a trailing comma is named as such.
- Whole-file mistakes are one error, not hundreds of line errors: a file that is one JSON array
  (``json_array_file``), a CSV/TSV file (``csv_file``), the old prompt/completion format
  (``prompt_completion_format``) and pretty-printed objects spread over lines
  (``pretty_printed_json``) are recognised from the first :data:`MISTAKE_HEAD_BYTES` of the file;
  the message says how to convert the file. The line errors such a mistake explains are set aside
  (bounded, like all errors) and dropped once the rest of the file confirms it (at least as many
  lines explained as usable examples), or put back in line order when it does not (a stray first
  line in a good file).
- The same error on many lines (same code, same text but for the line number) is shown once by
  :meth:`ValidationReport.to_dict` (and so by ``to_text`` and the Slack reply): ``line`` is its
  first line and the message lists its first :data:`MAX_GROUPED_LINES` lines and how many more.
  ``ValidationReport.errors`` keeps one entry per stored line.
- Hostile input never raises: invalid UTF-8, binary files, 100 000-deep nesting (measured by an
  iterative bracket scan *before* parsing, so no parser ever recurses deeply), huge lines and
  numbers, NaN, lone surrogates.
- Speed: one core validates ~220 MiB/s of typical chat JSONL (bench/validate.py): the C scanner
  is called directly, plain messages take a fast path, and expensive checks run only on the lines
  that need them.
- :func:`read_examples` / :func:`load_examples` give the usable examples (lines without errors)
  for training and evaluation; :func:`split` and :func:`leakage` work on them.

Error codes (the file is not usable): ``empty_file``, ``binary_file``, ``not_utf8``, ``not_json``,
``not_object``, ``too_deep``, ``line_too_long``, ``missing_messages``, ``invalid_messages``,
``invalid_message``, ``missing_role``, ``unknown_role``, ``invalid_content``,
``invalid_tool_calls``, ``empty_answer``, ``no_assistant``, ``invalid_weight``,
``too_few_examples``; whole-file mistakes: ``json_array_file``, ``csv_file``,
``prompt_completion_format``, ``pretty_printed_json``.

Warning codes (usable, but the user should know): ``few_examples``, ``duplicates``,
``conflicting_answers``, ``last_not_assistant``, ``too_long``, ``inconsistent_system_prompts``,
``label_imbalance``, ``token_count_failed``.
"""

from __future__ import annotations

import array
import csv
import difflib
import hashlib
import io
import json
import json.decoder
import json.scanner
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, BinaryIO

__all__ = [
    "MAX_DEPTH",
    "MAX_GROUPED_LINES",
    "MAX_LINE_BYTES",
    "MIN_EXAMPLES",
    "MISTAKE_HEAD_BYTES",
    "RECOMMENDED_EXAMPLES",
    "Example",
    "Issue",
    "TokenCounter",
    "ValidationIssue",
    "ValidationReport",
    "ValidationWarning",
    "detect_task",
    "leakage",
    "load_examples",
    "read_examples",
    "split",
    "validate_bytes",
    "validate_file",
    "validate_stream",
]

#: A line longer than this (in bytes) is an error; it is skipped in chunks, never held whole.
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Deepest nesting of JSON arrays/objects accepted in one line. A chat example needs about 6; tool
#: schemas a few more. Deeper input is refused before parsing, so nothing downstream can recurse.
MAX_DEPTH = 64
#: Fewer usable examples than this: the file is not usable (OpenAI's own minimum).
MIN_EXAMPLES = 10
#: Fewer usable examples than this: a warning (fine-tuning rarely beats few-shot prompting there).
RECOMMENDED_EXAMPLES = 100
#: Training max length (tokens) used for the ``too_long`` warning when none is given.
DEFAULT_MAX_LENGTH = 4096
#: Errors keep their first this-many lines per code; further lines are only counted.
MAX_STORED_PER_CODE = 50
#: Warnings list at most this many lines.
MAX_WARNING_LINES = 50
#: One line reports at most this many errors (a line with 10 000 bad messages stays one entry each).
MAX_ERRORS_PER_LINE = 5
#: A repeated error (same code and text on many lines) lists this many of its lines, then a count.
MAX_GROUPED_LINES = 10
#: Distinct (code, text) errors tracked for that grouping; past this many, new ones are not grouped.
MAX_ERROR_GROUPS = 1000
#: Whole-file mistakes (a JSON array, a CSV file, ...) are recognised from this much of the file.
MISTAKE_HEAD_BYTES = 64 * 1024
#: Answers sampled (reservoir, fixed seed) for task detection; each kept up to this many chars.
TASK_SAMPLE = 2000
TASK_SAMPLE_CHARS = 8192
#: Distinct system prompts tracked (the count stops there: "over N").
MAX_SYSTEM_PROMPTS = 1000
#: A label answer this share of the time or more gets the ``label_imbalance`` warning.
LOPSIDED_SHARE = 0.8

ROLES = ("system", "user", "assistant", "tool")
_ROLES = frozenset(ROLES)
#: Keys an example or a message may have (the format above); used for "did you mean" only.
EXAMPLE_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "weight", "refusal", "function_call")
# Names other formats use for the same thing: a role or key like these gets "did you mean".
_ROLE_ALIASES = {
    "human": "user",
    "bot": "assistant",
    "ai": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
    "developer": "system",
    "function": "tool",
}
_KEY_ALIASES = {
    "from": "role",
    "speaker": "role",
    "author": "role",
    "value": "content",
    "text": "content",
    "conversations": "messages",
    "conversation": "messages",
    "dialog": "messages",
    "turns": "messages",
}
_CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_READ_CHUNK = 1 << 20
_HEAD_BYTES = 8192

#: Counts the tokens of one example (its messages, through the model's chat template).
TokenCounter = Callable[[list[dict[str, Any]]], int]

_MISSING: Any = object()


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One error: ``line`` is 1-based (``None`` for the whole file); ``code`` is stable, for programs;
    ``message`` is for people (what, where, how to fix)."""

    line: int | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


#: The exported name (``engine.ValidationIssue``); ``Issue`` inside this module.
ValidationIssue = Issue


@dataclass(frozen=True)
class ValidationWarning:
    """One warning about the whole file; ``lines`` are example lines (at most MAX_WARNING_LINES)."""

    code: str
    message: str
    lines: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "lines": list(self.lines)}


@dataclass
class ValidationReport:
    """The result of :func:`validate_file`.

    ``ok`` is True when the file can be used for training: no errors at all. ``errors`` holds the
    stored errors (at most MAX_STORED_PER_CODE per code, one per line); ``error_counts`` the true
    count per code. ``error_repeats`` maps ``(code, message without its "Line N: ")`` to ``(lines
    with it, its first MAX_GROUPED_LINES lines)`` for errors seen on more than one line (at most
    MAX_ERROR_GROUPS of them), which :meth:`to_dict` shows once. ``stats`` always has ``examples``
    (usable examples) and ``task``; see :func:`validate_stream`.
    """

    ok: bool
    errors: list[Issue] = field(default_factory=list)
    warnings: list[ValidationWarning] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    error_counts: dict[str, int] = field(default_factory=dict)
    error_repeats: dict[tuple[str, str], tuple[int, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def examples(self) -> int:
        return int(self.stats.get("examples", 0))

    def to_dict(self) -> dict[str, Any]:
        """DESIGN.md's ``ftbot validate --json`` object: ``{"ok", "errors": [{"line", "code",
        "message"}], "warnings": [{"code", "message", "lines"}], "stats": {"examples", ...}}``.

        The same error on many lines (same code, same text but for the line number) is one entry:
        ``line`` is its first line, and the message starts "Lines 3, 4, 5, ... and N more (M lines):"
        before the shared text. When more lines have a code than the entries account for, one
        extra error with ``line: null`` says how many more there are, so the counts stay honest
        while the object stays small.
        """
        return {
            "ok": self.ok,
            "errors": self._shown_errors(),
            "warnings": [w.to_dict() for w in self.warnings],
            "stats": dict(self.stats),
        }

    def _shown_errors(self) -> list[dict[str, Any]]:
        """The errors as ``to_dict`` shows them: repeats grouped, then a count of the unlisted."""
        shown: list[dict[str, Any]] = []
        grouped: set[tuple[str, str]] = set()
        covered: dict[str, int] = {}  # code -> lines the shown entries account for
        for e in self.errors:
            key = (e.code, _without_line(e.message, e.line))
            repeat = self.error_repeats.get(key) if e.line is not None else None
            if repeat is None or repeat[0] < 2:
                shown.append(e.to_dict())
                covered[e.code] = covered.get(e.code, 0) + 1
            elif key not in grouped:
                grouped.add(key)
                total, lines = repeat
                shown.append(
                    {"line": e.line, "code": e.code, "message": _grouped_message(key[1], total, lines)}
                )
                covered[e.code] = covered.get(e.code, 0) + total
        for code, total in self.error_counts.items():
            more = total - covered.get(code, 0)
            if more > 0:
                shown.append(
                    {
                        "line": None,
                        "code": code,
                        "message": f"... and {more} more line(s) with {code} errors, not listed here.",
                    }
                )
        return shown

    def to_text(self, *, name: str = "dataset") -> str:
        """A readable report: verdict, the main figures, every stored error, then warnings."""
        s = self.stats
        out: list[str] = []
        if self.ok:
            out.append(
                f"{name}: usable - {s.get('examples', 0)} examples, task looks like '{s.get('task')}'."
            )
        else:
            total = sum(self.error_counts.values()) or len(self.errors)
            out.append(
                f"{name}: NOT usable - {total} error(s); {s.get('examples', 0)} example(s) passed. "
                "Fix the errors below and validate again."
            )
        tok = s.get("tokens_per_example")
        if tok:
            est = (
                " (estimated, no tokenizer)"
                if s.get("tokens_estimated") is True
                else f" (counted with the {s.get('tokenizer')} tokenizer)"
            )
            out.append(
                f"Tokens per example{est}: min {tok['min']}, median {tok['median']}, p90 {tok['p90']}, "
                f"max {tok['max']}; total {s.get('total_tokens', 0)}."
            )
        msgs = s.get("messages_per_example")
        if msgs:
            out.append(
                f"Messages per example: min {msgs['min']}, median {msgs['median']}, max {msgs['max']}."
            )
        shown = self.to_dict()
        if shown["errors"]:
            out.append("")
            out.append("Errors:")
            out.extend(f"  - {e['message']}" for e in shown["errors"])
        if self.warnings:
            out.append("")
            out.append("Warnings:")
            out.extend(f"  - {w.message}" for w in self.warnings)
        return "\n".join(out)


@dataclass(frozen=True)
class Example:
    """One usable example.

    ``line`` is its 1-based line; ``messages`` the parsed messages; ``answer_index`` the index of
    the last assistant message and ``answer`` its text (the reference answer for evaluation; for a
    tool call without content, the calls as compact JSON); ``prompt_key`` a stable digest of every
    message before it (roles and stripped contents; the answer itself when nothing comes before
    it), used for duplicates, leakage and the split.
    """

    line: int
    messages: list[dict[str, Any]]
    answer_index: int
    answer: str
    prompt_key: str

    @property
    def prompt(self) -> list[dict[str, Any]]:
        """The messages before the answer (what a model is asked)."""
        return self.messages[: self.answer_index]

    @property
    def system(self) -> str | None:
        """The system prompt's text, when the first message is a system message."""
        first = self.messages[0]
        return _content_text(first.get("content")) if first.get("role") == "system" else None


def _without_line(message: str, line: int | None) -> str:
    """``message`` without its leading "Line N: " (what repeats of one error have in common)."""
    prefix = f"Line {line}: "
    return message[len(prefix) :] if line is not None and message.startswith(prefix) else message


def _grouped_message(text: str, total: int, lines: Sequence[int]) -> str:
    """One message for an error on ``total`` lines, of which ``lines`` are the first."""
    listed = ", ".join(map(str, lines))
    more = total - len(lines)
    return f"Lines {listed}{f' and {more} more ({total} lines)' if more > 0 else ''}: {text}"


def detect_task(answers: Sequence[str]) -> str:
    """The task type of reference answers: ``"numeric"``, ``"json"``, ``"label"`` or ``"text"``.

    The one definition lives in :func:`engine.evaluate.detect_task` (H-eval owns it); dataset stats
    and evaluation therefore always agree. Re-exported here for callers of this module.
    """
    from engine.evaluate import detect_task as _detect

    return _detect(answers)


# ---------------------------------------------------------------------------------------------
# Line reading and parsing
# ---------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (write a number or a string)")


# The C scanner directly: json.loads adds a Python-level wrapper per call that costs about a
# microsecond a line. NaN/Infinity are refused (they are not JSON and other parsers reject them).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN = json.scanner.make_scanner(_DECODER)
_WS = " \t\r\n"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_TOO_DEEP = "nested too deeply"  # a sentinel problem: _parse hit the scanner's recursion guard


# A JSON string (escapes included) or one bracket. Strings are skipped whole, so brackets inside
# them do not count; the unrolled pattern cannot backtrack, so the scan is linear.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _max_depth(text: str, limit: int) -> int:
    """Deepest bracket nesting outside strings, by an iterative scan that stops once past ``limit``
    (a 100 000-deep array costs ``limit`` steps, no stack)."""
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(text):
        c = match.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif c == "]" or c == "}":
            depth -= 1
    return deepest


class _Explained(str):
    """A parse problem whose message already says how to fix it (no generic hint is added)."""


def _parse(text: str) -> tuple[Any, str | None]:
    """Parse one line: ``(value, None)`` or ``(None, message)``. Never raises."""
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    try:
        value, end = _SCAN(text, i)
    except StopIteration as stop:  # the C scanner's "expecting a value" (at any depth)
        return None, _trailing_comma(
            text, stop.value
        ) or f"not valid JSON: expected a value (column {stop.value + 1})"
    except json.JSONDecodeError as exc:
        return None, _trailing_comma(text, exc.pos) or f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, _TOO_DEEP
    except (ValueError, OverflowError) as exc:  # huge integers, NaN/Infinity
        return None, f"not valid JSON: {exc}"
    while end < n and text[end] in _WS:
        end += 1
    if end != n:
        if text[end:].strip() == ",":
            return None, _Explained(
                f"not valid JSON: a comma after the example at column {end + 1}. A line holds one JSON "
                "object and nothing after it (lines copied out of a JSON array keep their commas); "
                "remove the comma."
            )
        return None, (
            f"not valid JSON: extra text after the JSON value (column {end + 1}; two examples on one "
            "line, or a stray character?)"
        )
    return value, None


def _trailing_comma(text: str, pos: int) -> _Explained | None:
    """The message for a trailing comma (``[1, 2,]``, ``{"a": 1,}``) when the parser stopped at the
    bracket after one (``pos``), else None. JSON forbids them; JavaScript and Python allow them."""
    n = len(text)
    j = pos
    while j < n and text[j] in _WS:
        j += 1
    if j >= n or text[j] not in "}]":
        return None
    k = min(pos, n) - 1
    while k >= 0 and text[k] in _WS:
        k -= 1
    if k < 0 or text[k] != ",":
        return None
    return _Explained(
        f"not valid JSON: a trailing comma before '{text[j]}' at column {k + 1}: JSON does not allow "
        "it; remove the comma."
    )


def _content_text(content: Any) -> str:
    """The text of a message content: the string, or the joined text of its text parts."""
    if type(content) is str:
        return content
    if type(content) is list:
        return "".join(p["text"] for p in content if type(p) is dict and type(p.get("text")) is str)
    return ""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _message_key(message: dict[str, Any]) -> str:
    """A string identifying a message's content (for prompt and answer identity): the stripped
    text, or canonical JSON of content parts, or of the tool calls when there is no content."""
    content = message.get("content")
    if type(content) is str:
        return content.strip()
    if content is None or content == []:
        return "tool_calls:" + _canonical(message.get("tool_calls"))
    return _canonical(content)


def _describe_binary(head: bytes) -> str | None:
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive (or an Office document such as .xlsx/.docx)"),
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"BZh", "a bzip2-compressed file"),
        (b"\xfd7zXZ\x00", "an xz-compressed file"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"(\xb5/\xfd", "a zstd-compressed file"),
        (b"PAR1", "a Parquet file"),
        (b"SQLite format 3\x00", "an SQLite database"),
        (b"\x7fELF", "a program (ELF binary)"),
    )
    for magic, what in signatures:
        if head.startswith(magic):
            return what
    if b"\x00" in head:
        return "binary data (it contains NUL bytes)"
    return None


def _iter_raw_lines(stream: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line_no, line, size)`` for every line, newline stripped. ``line`` is None when the
    line is longer than ``max_line`` bytes: it is then read through in bounded chunks, never held."""
    readline = stream.readline
    line_no = 0
    limit = max_line + 1
    while True:
        raw = readline(limit)
        if not raw:
            return
        line_no += 1
        if raw[-1:] == b"\n":
            yield line_no, raw[:-1], len(raw) - 1
            continue
        if len(raw) < limit:  # the last line, without a final newline
            yield line_no, raw, len(raw)
            return
        size = len(raw)
        del raw
        while True:
            part = readline(_READ_CHUNK)
            if not part:
                break
            if part[-1:] == b"\n":
                size += len(part) - 1
                break
            size += len(part)
        yield line_no, None, size


# ---------------------------------------------------------------------------------------------
# Checking one example
# ---------------------------------------------------------------------------------------------


def _check_messages(
    messages: list[Any], line: int, parts: list[Any]
) -> tuple[list[tuple[str, str]], int, bool, int]:
    """Check the messages of one example.

    Appends ``role, identity`` for each plain message to ``parts`` (for prompt identity). Returns
    ``(errors, index of the last assistant message or -1, plain, answer_bytes)``: ``plain`` is True
    when every message is exactly ``{"role": str, "content": str}`` (else the caller computes
    ``parts`` and ``answer_bytes`` itself); ``answer_bytes`` is the UTF-8 size of the assistant
    contents (for token estimates).
    """
    errors: list[tuple[str, str]] = []
    last_assistant = -1
    plain = True
    answer_bytes = 0
    append = parts.append
    for i, m in enumerate(messages):
        # Fast path for the common message, {"role": ..., "content": "..."} and nothing else.
        if type(m) is dict and len(m) == 2:
            role = m.get("role")
            content = m.get("content")
            if type(content) is str and type(role) is str and role in _ROLES:
                if role != "assistant":
                    append(role)
                    append(content.strip())
                    continue
                if content and not content.isspace():
                    append(role)
                    append(content.strip())
                    answer_bytes += (
                        len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
                    )
                    last_assistant = i
                    continue
        plain = False
        where = f"Line {line}"
        if len(errors) >= MAX_ERRORS_PER_LINE:
            break
        n = i + 1
        if type(m) is not dict:
            errors.append(
                (
                    "invalid_message",
                    f"{where}: message {n} is {_kind(m)}, not an object. Write each message as "
                    '{"role": "user", "content": "..."}.',
                )
            )
            continue
        role = m.get("role", _MISSING)
        if role is _MISSING or role is None:
            errors.append(
                (
                    "missing_role",
                    f'{where}: message {n} has no "role"{_typo_note(m, "role", MESSAGE_KEYS)}. '
                    f'Add "role": one of {", ".join(ROLES)}.',
                )
            )
            continue
        if type(role) is not str or role not in _ROLES:
            shown = _short(role)
            guess = _nearest(role, ROLES, _ROLE_ALIASES) if type(role) is str else None
            fix = f'Did you mean "{guess}"?' if guess else "Use one of those (lower case)."
            errors.append(
                (
                    "unknown_role",
                    f"{where}: message {n} has the role {shown}, which is not one of "
                    f"{', '.join(ROLES)}. {fix}",
                )
            )
            continue
        content = m.get("content", _MISSING)
        tool_calls = m.get("tool_calls", _MISSING)
        if tool_calls is not _MISSING and tool_calls is not None:
            if role != "assistant":
                errors.append(
                    (
                        "invalid_tool_calls",
                        f'{where}: message {n} ({role}) has "tool_calls"; only assistant messages may. '
                        "Move the calls to an assistant message.",
                    )
                )
                continue
            if type(tool_calls) is not list or not tool_calls or any(type(c) is not dict for c in tool_calls):
                errors.append(
                    (
                        "invalid_tool_calls",
                        f'{where}: message {n} has "tool_calls" that are not a non-empty list of objects. '
                        'Write [{"id": "...", "type": "function", "function": {"name": ..., "arguments": "..."}}].',
                    )
                )
                continue
            has_calls = True
        else:
            has_calls = False
        if type(content) is str:
            if role == "assistant" and not has_calls and (not content or content.isspace()):
                errors.append(_empty_answer(where, n))
                continue
        elif type(content) is list:
            bad = _bad_parts(content)
            if bad:
                errors.append(("invalid_content", f"{where}: message {n} ({role}): {bad}"))
                continue
            if (
                role == "assistant"
                and not has_calls
                and not _content_text(content).strip()
                and not any(p.get("type") != "text" for p in content)
            ):
                errors.append(_empty_answer(where, n))
                continue
        elif (content is _MISSING or content is None) and has_calls:
            pass  # an assistant tool call may omit its content
        elif content is _MISSING or content is None:
            typo = _typo_note(m, "content", MESSAGE_KEYS)
            if role == "assistant":
                errors.append(_empty_answer(where, n, missing=True, typo=typo))
            else:
                errors.append(
                    (
                        "invalid_content",
                        f'{where}: message {n} ({role}) has no "content"{typo}. Add "content": "..." '
                        "(a string, or a list of content parts).",
                    )
                )
            continue
        else:
            errors.append(
                (
                    "invalid_content",
                    f"{where}: message {n} ({role}) has content that is {_kind(content)}; it must be a "
                    'string or a list of content parts like [{"type": "text", "text": "..."}].',
                )
            )
            continue
        if "weight" in m:
            w = m["weight"]
            if type(w) not in (int, float) or w not in (0, 1):
                errors.append(
                    (
                        "invalid_weight",
                        f'{where}: message {n} has "weight": {_short(w)}; it must be 0 (do not train on '
                        "this answer) or 1 (train on it), or be left out.",
                    )
                )
                continue
        # Identity and size of a non-plain message are computed by _parse_example once the depth
        # is known to be safe (they serialise nested values).
        if role == "assistant":
            last_assistant = i
    return errors, last_assistant, plain, answer_bytes


def _empty_answer(where: str, n: int, *, missing: bool = False, typo: str = "") -> tuple[str, str]:
    what = f'has no "content"{typo}' if missing else "is empty"
    return (
        "empty_answer",
        f"{where}: the assistant answer in message {n} {what}. Write the answer the model should "
        "learn, or remove the example.",
    )


def _bad_parts(parts: list[Any]) -> str | None:
    for j, p in enumerate(parts, 1):
        if type(p) is not dict:
            return f'content part {j} is {_kind(p)}, not an object like {{"type": "text", "text": "..."}}.'
        ptype = p.get("type")
        if type(ptype) is not str or ptype not in _CONTENT_PART_TYPES:
            return (
                f"content part {j} has the type {_short(ptype)}; use one of "
                f"{', '.join(sorted(_CONTENT_PART_TYPES))}."
            )
        if ptype == "text" and type(p.get("text")) is not str:
            return f'content part {j} is a text part without a "text" string. Add "text": "...".'
    return None


def _nearest(word: str, choices: Sequence[str], aliases: dict[str, str]) -> str | None:
    """The choice ``word`` was probably meant to be: itself in other case or spacing, a name other
    formats use (``aliases``), or the closest spelling (difflib); None when nothing is close.
    Long words are not compared (difflib's cost grows with their length)."""
    if len(word) > 40:
        return None
    w = word.strip().lower()
    if w in choices:
        return w
    if w in aliases:
        return aliases[w]
    close = difflib.get_close_matches(w, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _typo_note(obj: dict[Any, Any], wanted: str, known: Sequence[str]) -> str:
    """' (it has "contnet": did you mean "content"?)' when a key of ``obj`` looks like a misspelling
    (or another format's name) of the missing key ``wanted``; "" otherwise. Reads at most 50 keys."""
    for key in islice(obj, 50):
        if type(key) is not str or key in known:
            continue
        if _nearest(key, (wanted,), _KEY_ALIASES) == wanted:
            return f" (it has {_short(key)}: did you mean {json.dumps(wanted)}?)"
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array" if value else "an empty array"
    return "an object"


def _short(value: Any, limit: int = 40) -> str:
    """A short JSON rendering of a scalar; containers are described, never serialised (no recursion)."""
    if value is None or type(value) in (str, int, float, bool):
        try:
            text = json.dumps(value, ensure_ascii=True)
        except (TypeError, ValueError):
            text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return _kind(value)


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _parse_example(text: str, line: int, parts: list[Any]) -> tuple[Any, list[tuple[str, str]], int, int]:
    """Parse and check one non-blank, decoded line; used by both passes.

    Returns ``(object, errors, index of the answer message, answer_bytes)``; ``parts`` receives
    the prompt identity (see :func:`_check_messages`).

    Depth is checked before parsing, so the parser never sees deep input: a line with more than
    MAX_DEPTH brackets (two C-speed counts, ~0.8 us a line) gets an exact, iterative scan.
    """
    if text.count("[") + text.count("{") > MAX_DEPTH and _max_depth(text, MAX_DEPTH) > MAX_DEPTH:
        return None, [_too_deep(line)], -1, 0
    problem = None
    if text[:1] == "{" and text[-1:] == "}":  # the usual line: the scanner, without _parse's wrapper
        try:
            obj, end = _SCAN(text, 0)
        except (StopIteration, ValueError, RecursionError, OverflowError):
            end = -1
        if end != len(text):
            obj, problem = _parse(text)  # the detailed message (or a value followed by spaces)
    else:
        obj, problem = _parse(text)
    if problem is not None:
        if problem is _TOO_DEEP:
            return None, [_too_deep(line)], -1, 0
        if isinstance(problem, _Explained):
            return None, [("not_json", f"Line {line}: {problem}")], -1, 0
        hint = (
            " Each line must be one complete JSON object; check for a missing comma, an unescaped "
            "quote or newline inside a string, or single quotes instead of double quotes."
        )
        return None, [("not_json", f"Line {line}: {problem}.{hint}")], -1, 0
    if type(obj) is not dict:
        return (
            None,
            [
                (
                    "not_object",
                    f'Line {line}: the line is {_kind(obj)}, not a JSON object. Write {{"messages": [...]}}.',
                )
            ],
            -1,
            0,
        )
    messages = obj.get("messages", _MISSING)
    if messages is _MISSING:
        return None, [_missing_messages(obj, line)], -1, 0
    if type(messages) is not list or not messages:
        return (
            None,
            [
                (
                    "invalid_messages",
                    f'Line {line}: "messages" is {_kind(messages)}; it must be a non-empty list of messages '
                    '({"role": ..., "content": ...}).',
                )
            ],
            -1,
            0,
        )
    errors, last, plain, answer_bytes = _check_messages(messages, line, parts)
    if not plain and not errors:
        parts.clear()
        answer_bytes = 0
        for m in messages:
            parts.append(m["role"])
            parts.append(_message_key(m))
            if m["role"] == "assistant":
                answer_bytes += len(_answer_of(m).encode("utf-8", "surrogatepass"))
    # A \uD800-\uDFFF escape may leave a lone surrogate (not encodable as UTF-8). Substring
    # search for it costs ~2 us a line; a one-character memchr first skips most lines.
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        return (
            None,
            [
                (
                    "not_utf8",
                    f"Line {line}: a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is "
                    "not valid Unicode. Re-export the text as UTF-8.",
                )
            ],
            -1,
            0,
        )
    if not errors and last < 0:
        errors.append(
            (
                "no_assistant",
                f"Line {line}: no assistant message, so there is nothing to learn. Add the answer as "
                '{"role": "assistant", "content": "..."}.',
            )
        )
    return obj, errors, last, answer_bytes


def _is_prompt_completion(obj: Any) -> bool:
    """An example in OpenAI's old completion format: ``{"prompt": ..., "completion": ...}``."""
    return type(obj) is dict and "messages" not in obj and ("prompt" in obj or "completion" in obj)


def _missing_messages(obj: dict[Any, Any], line: int) -> tuple[str, str]:
    if _is_prompt_completion(obj):
        return (
            "missing_messages",
            f'Line {line}: this example is in the old prompt/completion format ({{"prompt": ..., '
            '"completion": ...}), not the chat format. Write it as {"messages": [{"role": "user", '
            '"content": PROMPT}, {"role": "assistant", "content": COMPLETION}]}.',
        )
    return (
        "missing_messages",
        f'Line {line}: no "messages" key{_typo_note(obj, "messages", EXAMPLE_KEYS)}. Each line must look '
        'like {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}.',
    )


def _too_deep(line: int) -> tuple[str, str]:
    return (
        "too_deep",
        f"Line {line}: JSON nested more than {MAX_DEPTH} levels deep. A chat example needs a handful "
        "of levels; flatten the data, or put deep structures in a string.",
    )


def _answer_of(message: dict[str, Any]) -> str:
    """An assistant message's answer as text: its content, the text of its content parts, or
    (a tool call without content) the calls as canonical JSON."""
    content = message.get("content")
    if type(content) is str:
        return content
    if content is None or content == []:
        return _canonical(message.get("tool_calls") or [])
    text = _content_text(content)
    return text if text else _canonical(content)


# ---------------------------------------------------------------------------------------------
# Whole-file mistakes
# ---------------------------------------------------------------------------------------------

#: Mistakes in the file's structure: every line error is theirs. (Prompt/completion lines are
#: recognised one by one, so other errors in such a file are still listed.)
_STRUCTURAL = frozenset({"json_array_file", "pretty_printed_json", "csv_file"})
_COLUMN = re.compile(r"[^\W\d][\w .\-]{0,39}")
_INPUT_COLUMNS = ("prompt", "question", "input", "instruction", "query", "user", "text", "message")
_OUTPUT_COLUMNS = ("completion", "answer", "output", "response", "assistant", "label", "target", "reply")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_WRAPPER_KEY = re.compile(r'\{\s*"([A-Za-z_][A-Za-z0-9_]{0,39})"\s*:\s*\[')
_PC_TO_CHAT = '{messages: [{role: "user", content: .prompt}, {role: "assistant", content: .completion}]}'
_ARRAY_TO_JSONL_PY = (
    'python -c "import json,sys; [print(json.dumps(x, ensure_ascii=False)) for x in '
    "json.load(open(sys.argv[1], encoding='utf-8'))]\" data.json > data.jsonl"
)


@dataclass(frozen=True)
class _Mistake:
    """A whole-file mistake recognised from the start of the file (:func:`_detect_mistake`).

    ``line`` is the first non-blank line, where it shows; ``text`` is the message, whose
    ``{span}`` becomes where the mistake reaches once the whole file has been read.
    """

    code: str
    line: int
    text: str

    def explains(self, problems: Sequence[tuple[str, str]], text: str | None) -> bool:
        """Whether a line's errors (``(code, message)`` pairs; ``text`` the line when it decoded)
        are this mistake's doing: set aside, not listed one by one."""
        if self.code in _STRUCTURAL:
            return True
        return (
            text is not None
            and all(code == "missing_messages" for code, _ in problems)
            and _is_prompt_completion(_parse(text)[0])
        )

    def message(self, explained: int, nonblank: int, last_line: int) -> str:
        """The error's message: ``explained`` lines of ``nonblank`` are its doing; ``last_line``
        is the file's last line."""
        if self.code == "prompt_completion_format":
            span = (
                f"all {explained} lines" if explained >= nonblank else f"{explained} of the {nonblank} lines"
            )
        else:
            span = f"lines {self.line}-{last_line}" if last_line > self.line else f"line {self.line}"
        return self.text.replace("{span}", span)


def _sniff_mistake(stream: BinaryIO) -> _Mistake | None:
    """:func:`_detect_mistake` on the next MISTAKE_HEAD_BYTES of ``stream``, which is then put back
    where it was."""
    start = stream.tell()
    head = stream.read(MISTAKE_HEAD_BYTES)
    stream.seek(start)
    return _detect_mistake(head, complete=len(head) < MISTAKE_HEAD_BYTES)


def _detect_mistake(head: bytes, *, complete: bool) -> _Mistake | None:
    """Recognise a whole-file mistake from the first bytes of a file (``complete``: all of it).

    Only the first two non-blank lines decide, and only shapes that a JSON Lines file never has:
    a first line that opens a JSON array, or opens an object without closing it (JSON spread over
    lines), or that is a CSV header row; or lines in the prompt/completion format. The caller
    still confirms the guess against the whole file (a good file with one stray first line).
    """
    text = head.decode("utf-8", "replace")
    lines = text.split("\n")
    found: list[tuple[int, int, str, bool]] = []  # (line, offset, stripped text, whole in the head)
    offset = 0
    for i, raw in enumerate(lines):
        stripped = raw.strip()
        if stripped:
            found.append((i + 1, offset, stripped, complete or i < len(lines) - 1))
            if len(found) == 2:
                break
        offset += len(raw) + 1
    if not found:
        return None
    line, start, first, whole = found[0]
    after = found[1] if len(found) > 1 else None
    only_line = complete and after is None
    if first[0] == "[":
        return _array_mistake(line, first, whole, only_line, text)
    if first[0] == "{":
        if not whole:
            return None  # one long first example: nothing to tell from its start
        state, value = _json_state(first)
        if state == "complete":
            if _is_prompt_completion(value):
                return _prompt_completion_mistake(line)
            return _wrapper_mistake(line, value) if only_line else None
        if state != "prefix" or (
            after is not None and (not after[3] or _json_state(after[2])[0] == "complete")
        ):
            return None  # a broken first line followed by whole JSON lines: ordinary line errors
        return _pretty_mistake(line, start, text)
    return _csv_mistake(line, first) if whole else None


def _json_state(text: str) -> tuple[str, Any]:
    """``("complete", value)`` when ``text`` is exactly one JSON value; ``("prefix", None)`` when it
    is the start of one that ends too early (a value spread over lines); else ``("invalid", None)``."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _max_depth(text, MAX_DEPTH) > MAX_DEPTH:
        return "invalid", None
    try:
        value, end = _SCAN(text, 0)
    except StopIteration as stop:  # a value expected at stop.value: the end of text, or a bad token
        return ("prefix" if stop.value >= len(text) else "invalid"), None
    except json.JSONDecodeError as exc:
        return ("prefix" if exc.pos >= len(text) else "invalid"), None
    except (ValueError, RecursionError, OverflowError):
        return "invalid", None
    return ("complete", value) if end == len(text) else ("invalid", None)


def _array_mistake(line: int, first: str, whole: bool, only_line: bool, head: str) -> _Mistake | None:
    if whole:
        state, value = _json_state(first)
        if state == "complete":
            # An array on one line is a whole-file mistake only when it is the file's only line
            # and holds objects; otherwise it is one bad line among good ones.
            if not (only_line and type(value) is list and any(type(v) is dict for v in value[:100])):
                return None
        elif state != "prefix":
            return None
    elif not re.match(r"\[\s*\{", first):
        return None
    text = (
        "The file is one JSON array of examples ({span}), not JSON Lines: each example must be one "
        "JSON object on a line of its own, with no [ ] around the file and no commas between "
        f"examples. Convert it with jq: jq -c '.[]' data.json > data.jsonl, or with Python: "
        f"{_ARRAY_TO_JSONL_PY}."
    )
    if '"prompt"' in head and '"completion"' in head and '"messages"' not in head:
        text += (
            " The examples also use the old prompt/completion format; jq converts both at once: "
            f"jq -c '.[] | {_PC_TO_CHAT}' data.json > data.jsonl."
        )
    return _Mistake("json_array_file", line, text)


def _wrapper_mistake(line: int, value: Any) -> _Mistake | None:
    """One object on the file's only line that holds the examples in a list under a key."""
    if type(value) is not dict:
        return None
    for key, inner in islice(value.items(), 20):
        if (
            type(inner) is list
            and any(type(v) is dict for v in inner[:100])
            and _IDENTIFIER.fullmatch(key)
            and key not in EXAMPLE_KEYS
        ):
            return _Mistake("json_array_file", line, _wrapper_text(key))
    return None


def _wrapper_text(key: str) -> str:
    return (
        f'The file is one JSON object that holds the examples in a list under "{key}" ({{span}}), not '
        f"JSON Lines (one example object per line). Convert it with jq: jq -c '.{key}[]' data.json > "
        "data.jsonl."
    )


def _pretty_mistake(line: int, start: int, head: str) -> _Mistake:
    wrapper = _WRAPPER_KEY.match(head, start)
    if wrapper is not None and wrapper.group(1) not in EXAMPLE_KEYS:
        return _Mistake("json_array_file", line, _wrapper_text(wrapper.group(1)))
    extent = ""
    if _max_depth(head, MAX_DEPTH) <= MAX_DEPTH:
        try:
            _, end = _SCAN(head, start)
        except (StopIteration, ValueError, RecursionError, OverflowError):
            pass  # the first object goes on past the part read
        else:
            last = line + head.count("\n", start, end)
            extent = f" (the first one from line {line} to line {last})"
    return _Mistake(
        "pretty_printed_json",
        line,
        "The examples are pretty-printed ({span}): each JSON object is spread over several lines"
        f"{extent}, but JSON Lines needs each example as one object on a single line. Convert the "
        "file with jq: jq -c . data.json > data.jsonl (in Python, write each example with "
        "json.dumps(example), without indent=).",
    )


def _prompt_completion_mistake(line: int) -> _Mistake:
    return _Mistake(
        "prompt_completion_format",
        line,
        'The file uses the old OpenAI prompt/completion format ({"prompt": ..., "completion": ...} on '
        "{span}), not the chat format this bot trains on. Convert it with jq: "
        f"jq -c '{_PC_TO_CHAT}' data.jsonl > chat.jsonl (add a system message if you have one).",
    )


def _csv_mistake(line: int, first: str) -> _Mistake | None:
    """A CSV or TSV header row: two or more delimited fields that look like column names."""
    delimiter = "\t" if "\t" in first else "," if "," in first else ";" if ";" in first else None
    if delimiter is None or _json_state(first)[0] == "complete":
        return None
    try:
        names = [name.strip() for name in next(csv.reader([first], delimiter=delimiter))]
    except (csv.Error, StopIteration):
        return None
    if not 2 <= len(names) <= 50 or not all(_COLUMN.fullmatch(name) for name in names):
        return None
    user = next((n for n in names if n.lower() in _INPUT_COLUMNS), names[0])
    others = [n for n in names if n != user] or names
    answer = next((n for n in others if n.lower() in _OUTPUT_COLUMNS), others[0])
    kind = "TSV (tab-separated)" if delimiter == "\t" else "CSV"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    option = {"\t": ", delimiter='\\t'", ";": ", delimiter=';'"}.get(delimiter, "")
    return _Mistake(
        "csv_file",
        line,
        f"This is a {kind} file ({{span}}; line {line} is a header row: {shown}), not JSON "
        'Lines of chat examples. Convert each row to an example, e.g. with Python: python -c "import '
        "csv,json,sys; [print(json.dumps({'messages': [{'role': 'user', 'content': "
        f"r['{user}']}}, {{'role': 'assistant', 'content': r['{answer}']}}]}}, ensure_ascii=False)) "
        f"for r in csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'){option})]\" "
        "data.csv > data.jsonl (with the columns that hold the question and the answer).",
    )


# ---------------------------------------------------------------------------------------------
# The streaming pass
# ---------------------------------------------------------------------------------------------


def _decode(raw: bytes, line: int) -> tuple[str | None, tuple[str, str] | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        return None, (
            "not_utf8",
            f"Line {line}: not valid UTF-8 (byte 0x{bad} at byte {exc.start + 1} of the line). "
            "Save the file as UTF-8 (in Excel: 'CSV UTF-8'; in Python: encoding='utf-8').",
        )


def _open_stream(stream: BinaryIO) -> tuple[bytes, Issue | None]:
    """Read the head of the stream, check for binary/UTF-16, skip a BOM. Returns (head, issue)."""
    head = stream.read(_HEAD_BYTES)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head, Issue(
            None,
            "not_utf8",
            "The file is UTF-16, not UTF-8. Save it as UTF-8 (in Excel: 'CSV UTF-8'; in an editor: "
            "'Save with encoding UTF-8') and upload it again.",
        )
    what = _describe_binary(head)
    if what is not None:
        return head, Issue(
            None,
            "binary_file",
            f"This is not a text file: it looks like {what}. Upload a .jsonl text file with one JSON "
            "example per line.",
        )
    stream.seek(3 if head.startswith(b"\xef\xbb\xbf") else 0)
    return head, None


class _Errors:
    """Errors, bounded: the first MAX_STORED_PER_CODE per code are kept; all are counted; repeats
    of one error on many lines are tallied (MAX_ERROR_GROUPS of them, MAX_GROUPED_LINES lines each)
    so the report can show them once."""

    def __init__(self) -> None:
        self.items: list[Issue] = []
        self.counts: dict[str, int] = {}
        self.bad_lines = 0
        self.repeats: dict[tuple[str, str], list[int]] = {}  # (code, text) -> [count, first lines...]

    def add(self, line: int | None, code: str, message: str) -> None:
        count = self.counts.get(code, 0) + 1
        self.counts[code] = count
        if count <= MAX_STORED_PER_CODE:
            self.items.append(Issue(line, code, message))
        if line is not None:
            prefix = f"Line {line}: "  # what differs between repeats of one error (_without_line)
            key = (code, message[len(prefix) :] if message.startswith(prefix) else message)
            entry = self.repeats.get(key)
            if entry is not None:
                entry[0] += 1
                if len(entry) <= MAX_GROUPED_LINES:
                    entry.append(line)
            elif len(self.repeats) < MAX_ERROR_GROUPS:
                self.repeats[key] = [1, line]

    def add_first(self, issue: Issue) -> None:
        """A whole-file error that explains the file: listed before the line errors."""
        self.items.insert(0, issue)
        self.counts[issue.code] = self.counts.get(issue.code, 0) + 1

    def absorb(self, other: _Errors) -> None:
        """Take ``other``'s errors (set aside while a whole-file mistake was suspected) back in line
        order, under the same bounds. ``bad_lines`` is not added: the caller counted those lines."""
        merged = sorted(self.items + other.items, key=lambda e: (e.line is None, e.line or 0))
        kept: dict[str, int] = {}
        self.items = []
        for e in merged:
            kept[e.code] = kept.get(e.code, 0) + 1
            if kept[e.code] <= MAX_STORED_PER_CODE:
                self.items.append(e)
        for code, n in other.counts.items():
            self.counts[code] = self.counts.get(code, 0) + n
        for key, (n, *lines) in other.repeats.items():
            entry = self.repeats.get(key)
            if entry is not None:
                entry[1:] = sorted(entry[1:] + lines)[:MAX_GROUPED_LINES]
                entry[0] += n
            elif len(self.repeats) < MAX_ERROR_GROUPS:
                self.repeats[key] = [n, *lines]

    def grouped(self) -> dict[tuple[str, str], tuple[int, tuple[int, ...]]]:
        """The errors seen on more than one line, for :attr:`ValidationReport.error_repeats`."""
        return {key: (e[0], tuple(e[1:])) for key, e in self.repeats.items() if e[0] > 1}


class _Histogram:
    """Exact min/median/p90/max of non-negative ints in memory bounded by the distinct values."""

    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0

    def summary(self) -> dict[str, int] | None:
        if not self.n:
            return None
        keys = sorted(self.counts)

        def rank(num: int, den: int) -> int:  # nearest rank: smallest value with >= num/den of the data
            need = max(1, -(-num * self.n // den))
            seen = 0
            for k in keys:
                seen += self.counts[k]
                if seen >= need:
                    return k
            return keys[-1]

        return {"min": keys[0], "median": rank(1, 2), "p90": rank(9, 10), "max": keys[-1]}


def validate_file(
    path: str | os.PathLike[str],
    *,
    max_length: int | None = None,
    token_counter: TokenCounter | None = None,
) -> ValidationReport:
    """Validate a chat JSONL file in one streaming pass. Never raises for bad content.

    ``token_counter`` (see :data:`TokenCounter`) counts an example's tokens with the base model's
    tokenizer and chat template; it may also have ``count_text(str) -> int`` (used for assistant
    answers) and ``max_length``, ``name`` and ``description`` (how messages name it) attributes. Without it, tokens are estimated from text
    size and the stats say so (``tokens_estimated``). ``max_length`` (tokens) is the training max
    length for the ``too_long`` warning: default the counter's ``max_length``, else
    :data:`DEFAULT_MAX_LENGTH`.

    Raises:
        OSError: the file cannot be opened or read (a missing file is the caller's usage error).
    """
    with open(path, "rb", buffering=_READ_CHUNK) as stream:
        return validate_stream(stream, max_length=max_length, token_counter=token_counter)


def validate_bytes(
    data: bytes, *, max_length: int | None = None, token_counter: TokenCounter | None = None
) -> ValidationReport:
    """:func:`validate_file` for bytes already in memory (an upload)."""
    return validate_stream(io.BytesIO(data), max_length=max_length, token_counter=token_counter)


def validate_stream(
    stream: BinaryIO, *, max_length: int | None = None, token_counter: TokenCounter | None = None
) -> ValidationReport:
    """:func:`validate_file` on a seekable binary stream, read from its current start.

    Stats: ``examples`` (usable), ``lines`` (non-blank lines), ``invalid_lines``, ``bytes``,
    ``messages_per_example``, ``tokens_per_example`` and ``assistant_tokens_per_example``
    (each ``{"min", "median", "p90", "max"}`` or None; assistant tokens are those of every
    assistant message in the example, i.e. what training learns), ``total_tokens`` (all usable
    examples), ``training_tokens`` (per epoch, each example cut at ``max_length``),
    ``tokens_estimated``, ``tokenizer``, ``max_length``, ``over_max_length``, ``duplicates``,
    ``conflicting_prompts``, ``system_prompts`` (distinct system prompts, "none" counted as one),
    ``task`` (``numeric``/``json``/``label``/``text``, from the assistant answers) and ``labels``
    (label -> count, for label tasks).
    """
    if max_length is None:
        max_length = int(getattr(token_counter, "max_length", 0) or DEFAULT_MAX_LENGTH)
    errors = _Errors()
    head, head_issue = _open_stream(stream)
    if head_issue is not None:
        errors.add(head_issue.line, head_issue.code, head_issue.message)
        return _finish_unreadable(errors, head, max_length, token_counter)
    # A suspected whole-file mistake: the line errors it explains are set aside in `held` (bounded
    # like all errors) until the end of the file confirms it or not.
    mistake = _sniff_mistake(stream)
    held = _Errors()

    count_text = getattr(token_counter, "count_text", None) if token_counter is not None else None
    h_messages, h_tokens, h_answer = _Histogram(), _Histogram(), _Histogram()
    mc, tc, ac = h_messages.counts, h_tokens.counts, h_answer.counts
    # Whole-file checks keep ~20 bytes per example: prompt hash, answer hash, line.
    prompt_hashes, answer_hashes, example_lines = array.array("q"), array.array("q"), array.array("L")
    seen_bits = bytearray(_bitmap_bytes(stream))
    bit_mask = len(seen_bits) * 8 - 1
    repeated: set[int] = set()  # prompt hashes that (probably) occur more than once
    systems: dict[int, list[Any]] = {}  # hash of system text -> [count, first lines...]
    systems_overflow = 0  # examples whose system prompt was not tracked (past MAX_SYSTEM_PROMPTS)
    label_counts: dict[str, int] | None = {}
    sample: list[str] = []
    rand = random.Random(0).random
    last_not_assistant: list[int] = []
    last_not_assistant_n = 0
    too_long: list[int] = []
    too_long_n = 0
    token_failures: list[int] = []
    token_failures_n = 0
    total_tokens = training_tokens = 0
    examples = nonblank = 0
    line = 0  # after the loop: the file's last line (whole-file messages say where they reach)

    from engine.evaluate import LABEL_MAX_DISTINCT, LABEL_MAX_WORDS, label_key

    explains_all = mistake is not None and mistake.code in _STRUCTURAL

    def line_errors(at: int, problems: list[tuple[str, str]], text: str | None) -> None:
        """Record a bad line's errors, or set them aside when the suspected mistake explains them."""
        errors.bad_lines += 1
        sink = errors
        if explains_all or (mistake is not None and mistake.explains(problems, text)):
            sink = held
            held.bad_lines += 1
        for code, message in problems:
            sink.add(at, code, message)

    for line, raw, size in _iter_raw_lines(stream, MAX_LINE_BYTES):
        if raw is None:
            nonblank += 1
            message = (
                f"Line {line}: {size / 2**20:.1f} MiB long; the limit is {MAX_LINE_BYTES // 2**20} MiB "
                "per example. Shorten the example or split it into several."
            )
            line_errors(line, [("line_too_long", message)], None)
            continue
        if not raw or raw.isspace():
            continue
        nonblank += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _, problem = _decode(raw, line)
            line_errors(line, [problem], None)  # type: ignore[list-item]
            continue
        key_parts: list[Any] = []
        obj, problems, answer_index, answer_bytes = _parse_example(text, line, key_parts)
        if problems:
            line_errors(line, problems, text)
            continue
        messages = obj["messages"]
        examples += 1

        # Token sizes without a tokenizer: about 4 bytes a token. The whole line's size stands for
        # the example: its JSON syntax (~30 bytes a message) approximates the chat template's
        # per-message tokens, and \uXXXX escapes the higher token cost of non-Latin scripts.
        est_total = (size + 3) // 4
        est_answer = (answer_bytes + 3) // 4
        n_messages = len(messages)
        mc[n_messages] = mc.get(n_messages, 0) + 1
        answer_message = messages[answer_index]
        answer = answer_message.get("content")
        if type(answer) is not str:
            answer = _answer_of(answer_message)
        # An example without a prompt (the answer comes first) is identified by its answer, so
        # such examples neither "conflict" with each other nor collapse into one split group.
        ph = hash(tuple(key_parts[: 2 * answer_index] or key_parts[:2]))
        ah = hash(answer.strip())

        if token_counter is not None:
            try:
                est_total = int(token_counter(messages))
                if count_text is not None:
                    est_answer = sum(
                        int(count_text(_answer_of(m))) for m in messages if m["role"] == "assistant"
                    )
            except Exception:
                # A tokenizer or chat template that chokes on one example must not stop the rest;
                # that example keeps its estimate and the report says so.
                token_failures_n += 1
                if len(token_failures) < MAX_WARNING_LINES:
                    token_failures.append(line)
        tc[est_total] = tc.get(est_total, 0) + 1
        ac[est_answer] = ac.get(est_answer, 0) + 1
        total_tokens += est_total
        if est_total > max_length:
            training_tokens += max_length
            too_long_n += 1
            if len(too_long) < MAX_WARNING_LINES:
                too_long.append(line)
        else:
            training_tokens += est_total

        if answer_index != n_messages - 1:
            last_not_assistant_n += 1
            if len(last_not_assistant) < MAX_WARNING_LINES:
                last_not_assistant.append(line)

        # Duplicates and conflicts: hashes in compact arrays, plus a bit map that flags prompt
        # hashes seen before; only those are grouped at the end.
        prompt_hashes.append(ph)
        answer_hashes.append(ah)
        example_lines.append(line)
        bit = ph & bit_mask
        byte = seen_bits[bit >> 3]
        flag = 1 << (bit & 7)
        if byte & flag:
            repeated.add(ph)
        else:
            seen_bits[bit >> 3] = byte | flag

        first = messages[0]
        sh = hash(key_parts[1]) if first["role"] == "system" else 0
        entry = systems.get(sh)
        if entry is not None:
            entry[0] += 1
            if len(entry) <= 10:
                entry.append(line)
        elif len(systems) < MAX_SYSTEM_PROMPTS:
            systems[sh] = [1, line]
        else:
            systems_overflow += 1

        # Task detection: a fixed-seed reservoir sample of answers; label counts while label-like.
        if len(sample) < TASK_SAMPLE:
            sample.append(answer[:TASK_SAMPLE_CHARS])
        else:
            j = int(rand() * examples)
            if j < TASK_SAMPLE:
                sample[j] = answer[:TASK_SAMPLE_CHARS]
        if label_counts is not None:
            if len(answer) > 80 or len(answer.split()) > LABEL_MAX_WORDS:
                label_counts = None
            else:
                lk = label_key(answer)
                label_counts[lk] = label_counts.get(lk, 0) + 1
                if len(label_counts) > LABEL_MAX_DISTINCT:
                    label_counts = None

    for h in (h_messages, h_tokens, h_answer):
        h.n = examples
    del seen_bits

    warnings: list[ValidationWarning] = []
    dup_lines, dup_pairs, conflict_groups = _group_repeats(
        repeated, prompt_hashes, answer_hashes, example_lines
    )
    del prompt_hashes, answer_hashes, example_lines, repeated
    task = detect_task(sample)
    stats: dict[str, Any] = {
        "examples": examples,
        "lines": nonblank,
        "invalid_lines": errors.bad_lines,
        "bytes": stream.tell(),
        "messages_per_example": h_messages.summary(),
        "tokens_per_example": h_tokens.summary(),
        "assistant_tokens_per_example": h_answer.summary(),
        "total_tokens": total_tokens,
        "training_tokens": training_tokens,
        "tokens_estimated": token_counter is None,
        "tokenizer": getattr(token_counter, "name", "custom") if token_counter is not None else None,
        "max_length": max_length,
        "over_max_length": too_long_n,
        "duplicates": len(dup_lines),
        "conflicting_prompts": len(conflict_groups),
        "system_prompts": len(systems) + (1 if systems_overflow else 0),
        "task": task,
        "labels": dict(sorted(label_counts.items(), key=lambda kv: -kv[1]))
        if task == "label" and label_counts
        else None,
    }
    if token_counter is not None and token_failures_n:
        stats["tokens_estimated"] = "partly"

    # Whole-file errors. A suspected mistake stands when it explains at least as many lines as
    # there are usable examples; otherwise its lines' errors are listed like any others.
    confirmed = mistake is not None and 0 < held.bad_lines >= examples
    if mistake is not None and confirmed:
        errors.add_first(Issue(mistake.line, mistake.code, mistake.message(held.bad_lines, nonblank, line)))
    else:
        errors.absorb(held)
    if nonblank == 0:
        errors.add(
            None,
            "empty_file",
            "The file is empty (no examples). Add one JSON example per line: "
            '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}.',
        )
    elif examples < MIN_EXAMPLES and not confirmed:
        errors.add(
            None,
            "too_few_examples",
            f"Only {examples} usable example(s); at least {MIN_EXAMPLES} are needed to fine-tune "
            f"(and {RECOMMENDED_EXAMPLES}+ to expect an improvement). "
            + (
                "Fix the errors listed above, or add more examples."
                if errors.bad_lines
                else "Add more examples."
            ),
        )

    # Warnings.
    if MIN_EXAMPLES <= examples < RECOMMENDED_EXAMPLES:
        warnings.append(
            ValidationWarning(
                "few_examples",
                f"Only {examples} examples. Fine-tuning rarely beats a few examples in the prompt with "
                f"fewer than {RECOMMENDED_EXAMPLES}; aim for several hundred good examples.",
            )
        )
    if dup_lines:
        shown = ", ".join(f"line {a} = line {b}" for a, b in dup_pairs[:5])
        warnings.append(
            ValidationWarning(
                "duplicates",
                f"{len(dup_lines)} example(s) are exact copies of an earlier one ({shown}"
                f"{', ...' if len(dup_pairs) > 5 else ''}). Remove the copies: they weigh those examples "
                "more and can leak into the eval split.",
                tuple(dup_lines[:MAX_WARNING_LINES]),
            )
        )
    if conflict_groups:
        shown = "; ".join(
            "lines " + ", ".join(map(str, g[:4])) + (", ..." if len(g) > 4 else "")
            for g in conflict_groups[:3]
        )
        lines = sorted({ln for g in conflict_groups for ln in g})
        warnings.append(
            ValidationWarning(
                "conflicting_answers",
                f"{len(conflict_groups)} prompt(s) appear with different answers ({shown}). Noisy labels "
                "teach the model to guess; keep one correct answer per prompt.",
                tuple(lines[:MAX_WARNING_LINES]),
            )
        )
    if last_not_assistant_n:
        warnings.append(
            ValidationWarning(
                "last_not_assistant",
                f"{last_not_assistant_n} example(s) do not end with an assistant message (e.g. line "
                f"{last_not_assistant[0]}). Messages after the last answer are not learned; end each "
                "example with the answer.",
                tuple(last_not_assistant),
            )
        )
    if too_long_n:
        how = (
            f"counted with {getattr(token_counter, 'description', None) or 'the ' + str(stats['tokenizer']) + ' tokenizer'}"
            if token_counter is not None
            else "estimated from text length, no tokenizer given (pass --base-model for exact counts)"
        )
        warnings.append(
            ValidationWarning(
                "too_long",
                f"{too_long_n} example(s) are longer than the training max length of {max_length} tokens "
                f"({how}; e.g. line {too_long[0]}). They will be cut; shorten them or raise max_length.",
                tuple(too_long),
            )
        )
    if token_failures_n:
        warnings.append(
            ValidationWarning(
                "token_count_failed",
                f"The tokenizer could not count {token_failures_n} example(s) (e.g. line {token_failures[0]}); "
                "their sizes are estimates. The chat template may not support them.",
                tuple(token_failures),
            )
        )
    distinct_systems = len(systems) + (1 if systems_overflow else 0)
    if examples and distinct_systems > 1:
        common_hash, common = max(systems.items(), key=lambda kv: kv[1][0])
        others = sorted(ln for h, e in systems.items() if h != common_hash for ln in e[1:])
        without = systems.get(0)
        if common_hash == 0:
            detail = f"{common[0]} of {examples} examples have none"
        else:
            detail = f"the most common is in {common[0]} of {examples} examples"
            if without is not None:
                detail += f"; {without[0]} have none"
        warnings.append(
            ValidationWarning(
                "inconsistent_system_prompts",
                f"{'Over ' if systems_overflow else ''}{len(systems)} different system prompts, counting "
                f"none as one ({detail}). The tuned model is asked with one system prompt; use the "
                "same one everywhere unless the variation is intended.",
                tuple(others[:MAX_WARNING_LINES]),
            )
        )
    if task == "label" and label_counts and examples >= MIN_EXAMPLES:
        top_label, top = max(label_counts.items(), key=lambda kv: kv[1])
        if len(label_counts) == 1 or top / examples >= LOPSIDED_SHARE:
            warnings.append(
                ValidationWarning(
                    "label_imbalance",
                    f"{top / examples:.0%} of the answers are {top_label!r} ({len(label_counts)} distinct "
                    f"label(s)). A model that always answers {top_label!r} scores {top / examples:.0%}; add "
                    "examples of the other labels.",
                )
            )
    return ValidationReport(
        ok=not errors.counts,
        errors=errors.items,
        warnings=warnings,
        stats=stats,
        error_counts=dict(errors.counts),
        error_repeats=errors.grouped(),
    )


def _bitmap_bytes(stream: BinaryIO) -> int:
    """Size of the 'prompt seen' bit map: ~64 bits per expected example, from 8 KiB to 16 MiB."""
    try:
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
    except (OSError, ValueError):
        return 1 << 24
    expected = max(1, end // 200)
    size = 1 << 13
    while size * 8 < 64 * expected and size < 1 << 24:
        size <<= 1
    return size


def _group_repeats(
    repeated: set[int], prompts: Any, answers: Any, lines: Any
) -> tuple[list[int], list[tuple[int, int]], list[list[int]]]:
    """Duplicates (later copies, with (copy, original) pairs) and conflicting prompts (their lines)."""
    if not repeated:
        return [], [], []
    groups: dict[int, list[tuple[int, int]]] = {}
    for ph, ah, ln in zip(prompts, answers, lines, strict=True):
        if ph in repeated:
            groups.setdefault(ph, []).append((ah, ln))
    dup_lines: list[int] = []
    pairs: list[tuple[int, int]] = []
    conflicts: list[list[int]] = []
    for members in groups.values():
        first_of: dict[int, int] = {}
        for ah, ln in members:
            if ah in first_of:
                dup_lines.append(ln)
                pairs.append((ln, first_of[ah]))
            else:
                first_of[ah] = ln
        if len(first_of) > 1:
            conflicts.append(sorted(first_of.values()))
    dup_lines.sort()
    pairs.sort()
    conflicts.sort()
    return dup_lines, pairs, conflicts


def _finish_unreadable(
    errors: _Errors, head: bytes, max_length: int, token_counter: TokenCounter | None
) -> ValidationReport:
    stats: dict[str, Any] = {
        "examples": 0,
        "lines": 0,
        "invalid_lines": 0,
        "bytes": None,
        "messages_per_example": None,
        "tokens_per_example": None,
        "assistant_tokens_per_example": None,
        "total_tokens": 0,
        "training_tokens": 0,
        "tokens_estimated": token_counter is None,
        "tokenizer": getattr(token_counter, "name", "custom") if token_counter is not None else None,
        "max_length": max_length,
        "over_max_length": 0,
        "duplicates": 0,
        "conflicting_prompts": 0,
        "system_prompts": 0,
        "task": "text",
        "labels": None,
    }
    return ValidationReport(
        ok=False,
        errors=errors.items,
        stats=stats,
        error_counts=dict(errors.counts),
        error_repeats=errors.grouped(),
    )


# ---------------------------------------------------------------------------------------------
# Usable examples, split, leakage
# ---------------------------------------------------------------------------------------------


def _prompt_key(messages: list[dict[str, Any]]) -> str:
    canon = json.dumps(
        [[m["role"], _message_key(m)] for m in messages], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def read_examples(path: str | os.PathLike[str] | BinaryIO) -> Iterator[Example]:
    """Yield the usable examples of a file (or seekable binary stream), in file order.

    Lines with errors are skipped silently, so validate first (:func:`validate_file`) and refuse a
    file whose report is not ``ok``. Streaming: one example in memory at a time.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb", buffering=_READ_CHUNK) as stream:
            yield from read_examples(stream)
        return
    stream = path
    _, issue = _open_stream(stream)
    if issue is not None:
        return
    for line, raw, _size in _iter_raw_lines(stream, MAX_LINE_BYTES):
        if raw is None or not raw or raw.isspace():
            continue
        text, problem = _decode(raw, line)
        if problem is not None:
            continue
        obj, problems, index, _ = _parse_example(text, line, [])
        if problems:
            continue
        messages = obj["messages"]
        yield Example(
            line=line,
            messages=messages,
            answer_index=index,
            answer=_answer_of(messages[index]),
            prompt_key=_prompt_key(messages[:index] or messages[:1]),
        )


def load_examples(path: str | os.PathLike[str] | BinaryIO) -> list[Example]:
    """All usable examples of a file as a list (see :func:`read_examples`)."""
    return list(read_examples(path))


def split(
    examples: Sequence[Example], eval_fraction: float = 0.1, seed: int = 0, min_eval: int = 10
) -> tuple[list[Example], list[Example]]:
    """Deterministic train/eval split: ``(train, eval)``, each in the original order.

    Each distinct prompt goes wholly to one side, chosen by a hash of ``seed`` and the prompt, so
    the same data (in any order) always splits the same way and no prompt leaks across. The eval
    side gets ``max(min_eval, round(eval_fraction * n))`` examples, but at most half of them (with
    fewer than ``2 * min_eval`` examples it gets ``n // 2``). A repeated prompt may make it a little
    larger or smaller; it never takes more than half, and with only one distinct prompt it is empty.

    Raises:
        UsageError: ``eval_fraction`` is not between 0 and 1, or ``min_eval`` is negative.
    """
    from engine.errors import UsageError

    if not 0.0 <= eval_fraction < 1.0:
        raise UsageError(f"eval_fraction must be at least 0 and below 1, not {eval_fraction}.")
    if min_eval < 0:
        raise UsageError(f"min_eval must not be negative, not {min_eval}.")
    n = len(examples)
    if n < 2:
        return list(examples), []
    want = min(max(min_eval, round(eval_fraction * n)), n // 2)
    if want <= 0:
        return list(examples), []
    by_prompt: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_prompt.setdefault(ex.prompt_key, []).append(i)

    def rank(key: str) -> bytes:
        return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=16).digest()

    chosen: set[int] = set()
    skipped: list[str] = []
    for key in sorted(by_prompt, key=rank):
        if len(chosen) >= want:
            break
        members = by_prompt[key]
        # A prompt repeated many times would overshoot: try smaller groups first.
        if len(chosen) + len(members) > want and len(members) > 1:
            skipped.append(key)
            continue
        chosen.update(members)
    for key in skipped:  # still short: accept an overshoot while training keeps half the data
        if len(chosen) >= want:
            break
        if len(chosen) + len(by_prompt[key]) <= n - n // 2:
            chosen.update(by_prompt[key])
    train = [ex for i, ex in enumerate(examples) if i not in chosen]
    held = [ex for i, ex in enumerate(examples) if i in chosen]
    return train, held


def leakage(train: Iterable[Example], eval_examples: Iterable[Example]) -> list[tuple[int, int]]:
    """Pairs ``(train_line, eval_line)`` whose prompts are identical (roles and stripped contents,
    system prompt included), sorted by eval line then train line. Empty means no leakage."""
    by_key: dict[str, list[int]] = {}
    for ex in train:
        by_key.setdefault(ex.prompt_key, []).append(ex.line)
    pairs = [(t, ev.line) for ev in eval_examples for t in by_key.get(ev.prompt_key, ())]
    pairs.sort(key=lambda p: (p[1], p[0]))
    return pairs
