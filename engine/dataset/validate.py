"""The validation driver: read the stream once, check each line, feed the whole-file checks.

It reads top to bottom: open the stream (binary? UTF-16?), guess a whole-file mistake from its
head, then for each line either record its errors (set aside while the guessed mistake explains
them) or hand the usable example to every check in :mod:`engine.dataset.checks`; at the end,
confirm or drop the guessed mistake, add the file's own errors, and gather stats and warnings
from the checks in the report's order.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from engine.dataset.check_example import _parse_example
from engine.dataset.checks import (
    ExampleCount,
    LastNotAssistant,
    Observed,
    Repeats,
    Sizes,
    SystemPrompts,
    Task,
)
from engine.dataset.lines import _decode, _iter_raw_lines, _open_stream
from engine.dataset.mistakes import _STRUCTURAL, _Mistake, _sniff_mistake
from engine.dataset.report import Issue, ValidationReport, ValidationWarning, _Errors
from engine.dataset.rules import _READ_CHUNK, DEFAULT_MAX_LENGTH, MAX_LINE_BYTES, TokenCounter


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


class _LineErrors:
    """Where a bad line's errors go: the report's errors, or set aside (``held``, bounded like all
    errors) while the suspected whole-file ``mistake`` explains them, until the end of the file
    confirms it or not."""

    def __init__(self, errors: _Errors, mistake: _Mistake | None) -> None:
        self.errors = errors
        self.mistake = mistake
        self.held = _Errors()
        self.explains_all = mistake is not None and mistake.code in _STRUCTURAL

    def add(self, line: int, problems: list[tuple[str, str]], text: str | None) -> None:
        """Record a bad line's errors, or set them aside when the suspected mistake explains them."""
        self.errors.bad_lines += 1
        sink = self.errors
        if self.explains_all or (self.mistake is not None and self.mistake.explains(problems, text)):
            sink = self.held
            self.held.bad_lines += 1
        for code, message in problems:
            sink.add(line, code, message)

    def settle(self, examples: int, nonblank: int, last_line: int) -> bool:
        """Whether the suspected mistake stands: it explains at least as many lines as there are
        usable examples. Then it is the first error; otherwise the held errors go back in line order."""
        mistake, held = self.mistake, self.held
        confirmed = mistake is not None and 0 < held.bad_lines >= examples
        if mistake is not None and confirmed:
            message = mistake.message(held.bad_lines, nonblank, last_line)
            self.errors.add_first(Issue(mistake.line, mistake.code, message))
        else:
            self.errors.absorb(held)
        return confirmed


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
    _, head_issue = _open_stream(stream)
    if head_issue is not None:
        errors.add(head_issue.line, head_issue.code, head_issue.message)
        return _finish_unreadable(errors, max_length, token_counter)
    bad = _LineErrors(errors, _sniff_mistake(stream))
    count, sizes, repeats = ExampleCount(), Sizes(max_length, token_counter), Repeats(stream)
    last_not_assistant, systems, task = LastNotAssistant(), SystemPrompts(), Task()
    observers = [c.observe for c in (sizes, last_not_assistant, repeats, systems, task)]
    nonblank = 0
    line = 0  # after the loop: the file's last line (whole-file messages say where they reach)
    for line, raw, size in _iter_raw_lines(stream, MAX_LINE_BYTES):
        if raw is None:
            nonblank += 1
            message = (
                f"Line {line}: {size / 2**20:.1f} MiB long; the limit is {MAX_LINE_BYTES // 2**20} MiB "
                "per example. Shorten the example or split it into several."
            )
            bad.add(line, [("line_too_long", message)], None)
            continue
        if not raw or raw.isspace():
            continue
        nonblank += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _, problem = _decode(raw, line)
            bad.add(line, [problem], None)  # type: ignore[list-item]
            continue
        key_parts: list[Any] = []
        obj, problems, answer_index, answer_bytes = _parse_example(text, line, key_parts)
        if problems:
            bad.add(line, problems, text)
            continue
        count.n += 1
        example = Observed(line, size, obj["messages"], answer_index, answer_bytes, key_parts)
        for observe in observers:
            observe(example)

    repeats.finish()
    task.finish()
    stats: dict[str, Any] = {
        "examples": count.n,
        "lines": nonblank,
        "invalid_lines": errors.bad_lines,
        "bytes": stream.tell(),
        **sizes.stats(),
        **repeats.stats(),
        **systems.stats(),
        **task.stats(),
    }
    confirmed = bad.settle(count.n, nonblank, line)
    for code, message in count.errors(nonblank=nonblank, explained=confirmed, bad_lines=errors.bad_lines):
        errors.add(None, code, message)
    warnings: list[ValidationWarning] = [
        *count.warnings(),
        *repeats.warnings(),
        *last_not_assistant.warnings(),
        *sizes.warnings(),
        *systems.warnings(),
        *task.warnings(),
    ]
    return ValidationReport(
        ok=not errors.counts,
        errors=errors.items,
        warnings=warnings,
        stats=stats,
        error_counts=dict(errors.counts),
        error_repeats=errors.grouped(),
    )


def _finish_unreadable(
    errors: _Errors, max_length: int, token_counter: TokenCounter | None
) -> ValidationReport:
    """The report of a file that cannot be read as text at all: its one error, empty stats."""
    stats: dict[str, Any] = {
        "examples": 0,
        "lines": 0,
        "invalid_lines": 0,
        "bytes": None,
        **Sizes(max_length, token_counter).stats(),
        "duplicates": 0,
        "conflicting_prompts": 0,
        "system_prompts": 0,
        **Task().stats(),
    }
    return ValidationReport(
        ok=False,
        errors=errors.items,
        stats=stats,
        error_counts=dict(errors.counts),
        error_repeats=errors.grouped(),
    )
