"""Streaming validation of OpenAI chat-format JSONL datasets, the eval split, and leakage checks.

Pure: stdlib and other pure engine modules only (``engine.errors``, ``engine.messages``;
``engine.evaluate`` for task detection).

The package: :mod:`~engine.dataset.validate` (the driver), :mod:`~engine.dataset.checks` (one
accumulator per whole-file check), :mod:`~engine.dataset.check_example` (one line),
:mod:`~engine.dataset.syntax` (JSON), :mod:`~engine.dataset.lines` (reading the stream),
:mod:`~engine.dataset.mistakes` (whole-file mistakes), :mod:`~engine.dataset.report` (results),
:mod:`~engine.dataset.rules` (limits and names), :mod:`~engine.dataset.examples` (usable examples,
split, leakage).

The format (ARCHITECTURE.md): one JSON object per line, ``{"messages": [{"role": ..., "content": ...},
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

from engine.dataset.examples import leakage, load_examples, read_examples, split
from engine.dataset.report import Example, Issue, ValidationIssue, ValidationReport, ValidationWarning
from engine.dataset.rules import (
    MAX_DEPTH,
    MAX_GROUPED_LINES,
    MAX_LINE_BYTES,
    MIN_EXAMPLES,
    MISTAKE_HEAD_BYTES,
    RECOMMENDED_EXAMPLES,
    TokenCounter,
)
from engine.dataset.rules import (
    MAX_ERRORS_PER_LINE as MAX_ERRORS_PER_LINE,
)
from engine.dataset.rules import (
    MAX_STORED_PER_CODE as MAX_STORED_PER_CODE,
)
from engine.dataset.validate import validate_bytes, validate_file, validate_stream
from engine.evaluate import detect_task  # the one definition; dataset stats and evaluation agree

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
