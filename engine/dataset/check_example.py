"""Checking one example line: parse it, check its messages, name its errors with a fix."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from itertools import islice
from typing import Any

from engine.dataset.rules import (
    _CONTENT_PART_TYPES,
    _KEY_ALIASES,
    _MISSING,
    _ROLE_ALIASES,
    _ROLES,
    EXAMPLE_KEYS,
    MAX_DEPTH,
    MAX_ERRORS_PER_LINE,
    MESSAGE_KEYS,
    ROLES,
)
from engine.dataset.syntax import _SCAN, _SURROGATE_ESCAPE, _TOO_DEEP, _Explained, _max_depth, _parse
from engine.messages import answer_text, content_key, message_text

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
        problem = _message_problem(m, where, i + 1)
        if problem is not None:
            errors.append(problem)
        elif m["role"] == "assistant":
            # Identity and size of a non-plain message are computed by _parse_example once the
            # depth is known to be safe (they serialise nested values).
            last_assistant = i
    return errors, last_assistant, plain, answer_bytes


Problem = tuple[str, str]  # (code, message)


def _message_problem(m: Any, where: str, n: int) -> Problem | None:
    """The first problem of message ``n`` (1-based) of a line (``where``: "Line N"), or None."""
    if type(m) is not dict:
        return (
            "invalid_message",
            f"{where}: message {n} is {_kind(m)}, not an object. Write each message as "
            '{"role": "user", "content": "..."}.',
        )
    role = m.get("role", _MISSING)
    if role is _MISSING or role is None:
        return (
            "missing_role",
            f'{where}: message {n} has no "role"{_typo_note(m, "role", MESSAGE_KEYS)}. '
            f'Add "role": one of {", ".join(ROLES)}.',
        )
    if type(role) is not str or role not in _ROLES:
        shown = _short(role)
        guess = _nearest(role, ROLES, _ROLE_ALIASES) if type(role) is str else None
        fix = f'Did you mean "{guess}"?' if guess else "Use one of those (lower case)."
        return (
            "unknown_role",
            f"{where}: message {n} has the role {shown}, which is not one of {', '.join(ROLES)}. {fix}",
        )
    tool_calls = m.get("tool_calls", _MISSING)
    has_calls = tool_calls is not _MISSING and tool_calls is not None
    if has_calls:
        problem = _tool_calls_problem(tool_calls, role, where, n)
        if problem is not None:
            return problem
    problem = _content_problem(m, role, has_calls, where, n)
    if problem is not None:
        return problem
    if "weight" in m:
        w = m["weight"]
        if type(w) not in (int, float) or w not in (0, 1):
            return (
                "invalid_weight",
                f'{where}: message {n} has "weight": {_short(w)}; it must be 0 (do not train on '
                "this answer) or 1 (train on it), or be left out.",
            )
    return None


def _tool_calls_problem(tool_calls: Any, role: str, where: str, n: int) -> Problem | None:
    """What is wrong with a message's (present, non-null) ``tool_calls``, or None."""
    if role != "assistant":
        return (
            "invalid_tool_calls",
            f'{where}: message {n} ({role}) has "tool_calls"; only assistant messages may. '
            "Move the calls to an assistant message.",
        )
    if type(tool_calls) is not list or not tool_calls or any(type(c) is not dict for c in tool_calls):
        return (
            "invalid_tool_calls",
            f'{where}: message {n} has "tool_calls" that are not a non-empty list of objects. '
            'Write [{"id": "...", "type": "function", "function": {"name": ..., "arguments": "..."}}].',
        )
    return None


def _content_problem(m: dict[Any, Any], role: str, has_calls: bool, where: str, n: int) -> Problem | None:
    """What is wrong with a message's content (an assistant answer must not be empty), or None."""
    content = m.get("content", _MISSING)
    if type(content) is str:
        if role == "assistant" and not has_calls and (not content or content.isspace()):
            return _empty_answer(where, n)
        return None
    if type(content) is list:
        bad = _bad_parts(content)
        if bad:
            return ("invalid_content", f"{where}: message {n} ({role}): {bad}")
        if (
            role == "assistant"
            and not has_calls
            and not message_text(content).strip()
            and not any(p.get("type") != "text" for p in content)
        ):
            return _empty_answer(where, n)
        return None
    if content is _MISSING or content is None:
        if has_calls:
            return None  # an assistant tool call may omit its content
        typo = _typo_note(m, "content", MESSAGE_KEYS)
        if role == "assistant":
            return _empty_answer(where, n, missing=True, typo=typo)
        return (
            "invalid_content",
            f'{where}: message {n} ({role}) has no "content"{typo}. Add "content": "..." '
            "(a string, or a list of content parts).",
        )
    return (
        "invalid_content",
        f"{where}: message {n} ({role}) has content that is {_kind(content)}; it must be a "
        'string or a list of content parts like [{"type": "text", "text": "..."}].',
    )


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
            parts.append(content_key(m))
            if m["role"] == "assistant":
                answer_bytes += len(answer_text(m).encode("utf-8", "surrogatepass"))
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
