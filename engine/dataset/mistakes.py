"""Whole-file mistakes (a JSON array, CSV, prompt/completion, pretty-printed JSON), from the head."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, BinaryIO

from engine.dataset.check_example import _is_prompt_completion
from engine.dataset.rules import EXAMPLE_KEYS, MAX_DEPTH, MISTAKE_HEAD_BYTES
from engine.dataset.syntax import _SCAN, _max_depth, _parse

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
