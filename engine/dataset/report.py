"""What validation returns: errors, warnings, the report and its renderings, usable examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.dataset.rules import MAX_ERROR_GROUPS, MAX_GROUPED_LINES, MAX_STORED_PER_CODE
from engine.messages import message_text

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
        """ARCHITECTURE.md's ``ftbot validate --json`` object: ``{"ok", "errors": [{"line", "code",
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
        return message_text(first.get("content")) if first.get("role") == "system" else None


def _without_line(message: str, line: int | None) -> str:
    """``message`` without its leading "Line N: " (what repeats of one error have in common)."""
    prefix = f"Line {line}: "
    return message[len(prefix) :] if line is not None and message.startswith(prefix) else message


def _grouped_message(text: str, total: int, lines: Sequence[int]) -> str:
    """One message for an error on ``total`` lines, of which ``lines`` are the first."""
    listed = ", ".join(map(str, lines))
    more = total - len(lines)
    return f"Lines {listed}{f' and {more} more ({total} lines)' if more > 0 else ''}: {text}"


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
