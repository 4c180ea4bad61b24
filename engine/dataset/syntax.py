"""Parsing one line of JSON: the C scanner directly, depth measured first, trailing commas named."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from typing import Any

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
