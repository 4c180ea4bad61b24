"""The whole-file checks of validation, one small accumulator per check.

Each check sees every usable example once (``observe(example)``, in file order) and then gives
its part of the report: ``stats()`` (its keys of ``ValidationReport.stats``, in the report's
order), ``warnings()`` and, for :class:`ExampleCount`, ``errors()``. Each rule (its threshold and
its message) is written once, here. Memory stays bounded as :mod:`engine.dataset` promises:
``Repeats`` keeps about 20 bytes per example plus a fixed-size bit map, every list of lines stops
at :data:`~engine.dataset.rules.MAX_WARNING_LINES`.
"""

from __future__ import annotations

import array
import io
import random
from typing import Any, BinaryIO

from engine.dataset.report import ValidationWarning
from engine.dataset.rules import (
    LOPSIDED_SHARE,
    MAX_SYSTEM_PROMPTS,
    MAX_WARNING_LINES,
    MIN_EXAMPLES,
    RECOMMENDED_EXAMPLES,
    TASK_SAMPLE,
    TASK_SAMPLE_CHARS,
    TokenCounter,
)
from engine.evaluate import LABEL_MAX_DISTINCT, LABEL_MAX_WORDS, detect_task, label_key
from engine.messages import answer_text


class Observed:
    """One usable example as the checks see it.

    ``line`` (1-based), ``size`` (bytes of the line), ``messages``, ``answer_index`` (the last
    assistant message), ``answer_bytes`` (UTF-8 size of the assistant contents), ``key_parts``
    (role and identity of each message, see ``_check_messages``) and ``answer`` (the answer's text).
    """

    __slots__ = ("answer", "answer_bytes", "answer_index", "key_parts", "line", "messages", "size")

    def __init__(
        self,
        line: int,
        size: int,
        messages: list[dict[str, Any]],
        answer_index: int,
        answer_bytes: int,
        key_parts: list[Any],
    ) -> None:
        self.line = line
        self.size = size
        self.messages = messages
        self.answer_index = answer_index
        self.answer_bytes = answer_bytes
        self.key_parts = key_parts
        answer = messages[answer_index].get("content")
        self.answer: str = answer if type(answer) is str else answer_text(messages[answer_index])


class _Histogram:
    """Exact min/median/p90/max of non-negative ints in memory bounded by the distinct values.

    ``counts`` (value -> how often) is filled by the caller directly: no call per value."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def summary(self) -> dict[str, int] | None:
        if not self.counts:
            return None
        keys = sorted(self.counts)
        n = sum(self.counts.values())

        def rank(num: int, den: int) -> int:  # nearest rank: smallest value with >= num/den of the data
            need = max(1, -(-num * n // den))
            seen = 0
            for k in keys:
                seen += self.counts[k]
                if seen >= need:
                    return k
            return keys[-1]

        return {"min": keys[0], "median": rank(1, 2), "p90": rank(9, 10), "max": keys[-1]}


class _Lines:
    """A count of examples and their first MAX_WARNING_LINES lines."""

    __slots__ = ("lines", "n")

    def __init__(self) -> None:
        self.n = 0
        self.lines: list[int] = []

    def add(self, line: int) -> None:
        self.n += 1
        if len(self.lines) < MAX_WARNING_LINES:
            self.lines.append(line)


class ExampleCount:
    """How many usable examples: ``too_few_examples`` (an error), ``few_examples`` (a warning).

    The driver counts (``n += 1`` per usable example: the one check too small to be worth a call)."""

    def __init__(self) -> None:
        self.n = 0

    def errors(self, *, nonblank: int, explained: bool, bad_lines: int) -> list[tuple[str, str]]:
        """``(code, message)`` of the file's errors: ``empty_file`` when it has no non-blank line,
        ``too_few_examples`` under MIN_EXAMPLES (unless a whole-file mistake ``explained`` it)."""
        if nonblank == 0:
            return [
                (
                    "empty_file",
                    "The file is empty (no examples). Add one JSON example per line: "
                    '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}.',
                )
            ]
        if self.n < MIN_EXAMPLES and not explained:
            return [
                (
                    "too_few_examples",
                    f"Only {self.n} usable example(s); at least {MIN_EXAMPLES} are needed to fine-tune "
                    f"(and {RECOMMENDED_EXAMPLES}+ to expect an improvement). "
                    + (
                        "Fix the errors listed above, or add more examples."
                        if bad_lines
                        else "Add more examples."
                    ),
                )
            ]
        return []

    def warnings(self) -> list[ValidationWarning]:
        if not MIN_EXAMPLES <= self.n < RECOMMENDED_EXAMPLES:
            return []
        return [
            ValidationWarning(
                "few_examples",
                f"Only {self.n} examples. Fine-tuning rarely beats a few examples in the prompt with "
                f"fewer than {RECOMMENDED_EXAMPLES}; aim for several hundred good examples.",
            )
        ]


class Sizes:
    """Messages and tokens per example: histograms, totals, ``too_long`` and ``token_count_failed``.

    Without a ``token_counter``, tokens are estimated at about 4 bytes a token. The whole line's
    size stands for the example: its JSON syntax (~30 bytes a message) approximates the chat
    template's per-message tokens, and \\uXXXX escapes the higher token cost of non-Latin scripts.
    """

    def __init__(self, max_length: int, token_counter: TokenCounter | None) -> None:
        self.max_length = max_length
        self.token_counter = token_counter
        self.count_text = getattr(token_counter, "count_text", None) if token_counter is not None else None
        self.messages, self.tokens, self.answer_tokens = _Histogram(), _Histogram(), _Histogram()
        self.total_tokens = self.training_tokens = 0
        self.too_long = _Lines()
        self.failures = _Lines()

    def observe(self, example: Observed) -> None:
        total = (example.size + 3) // 4
        answer = (example.answer_bytes + 3) // 4
        messages = self.messages.counts
        n_messages = len(example.messages)
        messages[n_messages] = messages.get(n_messages, 0) + 1
        if self.token_counter is not None:
            try:
                total = int(self.token_counter(example.messages))
                if self.count_text is not None:
                    answer = sum(
                        int(self.count_text(answer_text(m)))
                        for m in example.messages
                        if m["role"] == "assistant"
                    )
            except Exception:
                # A tokenizer or chat template that chokes on one example must not stop the rest;
                # that example keeps its estimate and the report says so.
                self.failures.add(example.line)
        tokens, answer_tokens = self.tokens.counts, self.answer_tokens.counts
        tokens[total] = tokens.get(total, 0) + 1
        answer_tokens[answer] = answer_tokens.get(answer, 0) + 1
        self.total_tokens += total
        if total > self.max_length:
            self.training_tokens += self.max_length
            self.too_long.add(example.line)
        else:
            self.training_tokens += total

    def tokenizer(self) -> str | None:
        counter = self.token_counter
        return getattr(counter, "name", "custom") if counter is not None else None

    def stats(self) -> dict[str, Any]:
        estimated: bool | str = self.token_counter is None
        if self.token_counter is not None and self.failures.n:
            estimated = "partly"
        return {
            "messages_per_example": self.messages.summary(),
            "tokens_per_example": self.tokens.summary(),
            "assistant_tokens_per_example": self.answer_tokens.summary(),
            "total_tokens": self.total_tokens,
            "training_tokens": self.training_tokens,
            "tokens_estimated": estimated,
            "tokenizer": self.tokenizer(),
            "max_length": self.max_length,
            "over_max_length": self.too_long.n,
        }

    def warnings(self) -> list[ValidationWarning]:
        found: list[ValidationWarning] = []
        if self.too_long.n:
            counter = self.token_counter
            how = (
                f"counted with {getattr(counter, 'description', None) or 'the ' + str(self.tokenizer()) + ' tokenizer'}"
                if counter is not None
                else "estimated from text length, no tokenizer given (pass --base-model for exact counts)"
            )
            found.append(
                ValidationWarning(
                    "too_long",
                    f"{self.too_long.n} example(s) are longer than the training max length of "
                    f"{self.max_length} tokens ({how}; e.g. line {self.too_long.lines[0]}). They will be "
                    "cut; shorten them or raise max_length.",
                    tuple(self.too_long.lines),
                )
            )
        if self.failures.n:
            found.append(
                ValidationWarning(
                    "token_count_failed",
                    f"The tokenizer could not count {self.failures.n} example(s) (e.g. line "
                    f"{self.failures.lines[0]}); their sizes are estimates. The chat template may not "
                    "support them.",
                    tuple(self.failures.lines),
                )
            )
        return found


class LastNotAssistant:
    """``last_not_assistant``: examples with messages after the answer (those are not learned)."""

    def __init__(self) -> None:
        self.found = _Lines()

    def observe(self, example: Observed) -> None:
        if example.answer_index != len(example.messages) - 1:
            self.found.add(example.line)

    def warnings(self) -> list[ValidationWarning]:
        if not self.found.n:
            return []
        return [
            ValidationWarning(
                "last_not_assistant",
                f"{self.found.n} example(s) do not end with an assistant message (e.g. line "
                f"{self.found.lines[0]}). Messages after the last answer are not learned; end each "
                "example with the answer.",
                tuple(self.found.lines),
            )
        ]


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


class Repeats:
    """``duplicates`` (exact copies of an earlier example) and ``conflicting_answers`` (one prompt,
    different answers).

    Hashes go in compact arrays (prompt, answer, line: ~20 bytes an example) plus a bit map that
    flags prompt hashes seen before; only those are grouped at the end. An example without a
    prompt (the answer comes first) is identified by its answer, so such examples neither
    "conflict" with each other nor collapse into one split group.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.prompts, self.answers, self.lines = array.array("q"), array.array("q"), array.array("L")
        self.seen = bytearray(_bitmap_bytes(stream))
        self.mask = len(self.seen) * 8 - 1
        self.repeated: set[int] = set()  # prompt hashes that (probably) occur more than once
        self.dup_lines: list[int] = []
        self.dup_pairs: list[tuple[int, int]] = []
        self.conflicts: list[list[int]] = []

    def observe(self, example: Observed) -> None:
        parts = example.key_parts
        ph = hash(tuple(parts[: 2 * example.answer_index] or parts[:2]))
        self.prompts.append(ph)
        self.answers.append(hash(example.answer.strip()))
        self.lines.append(example.line)
        bit = ph & self.mask
        byte = self.seen[bit >> 3]
        flag = 1 << (bit & 7)
        if byte & flag:
            self.repeated.add(ph)
        else:
            self.seen[bit >> 3] = byte | flag

    def finish(self) -> None:
        """Group the repeated prompts (after the last example); frees the per-example arrays."""
        self.dup_lines, self.dup_pairs, self.conflicts = _group_repeats(
            self.repeated, self.prompts, self.answers, self.lines
        )
        del self.seen, self.prompts, self.answers, self.lines, self.repeated

    def stats(self) -> dict[str, Any]:
        return {"duplicates": len(self.dup_lines), "conflicting_prompts": len(self.conflicts)}

    def warnings(self) -> list[ValidationWarning]:
        found: list[ValidationWarning] = []
        if self.dup_lines:
            pairs = self.dup_pairs
            shown = ", ".join(f"line {a} = line {b}" for a, b in pairs[:5])
            found.append(
                ValidationWarning(
                    "duplicates",
                    f"{len(self.dup_lines)} example(s) are exact copies of an earlier one ({shown}"
                    f"{', ...' if len(pairs) > 5 else ''}). Remove the copies: they weigh those examples "
                    "more and can leak into the eval split.",
                    tuple(self.dup_lines[:MAX_WARNING_LINES]),
                )
            )
        if self.conflicts:
            groups = self.conflicts
            shown = "; ".join(
                "lines " + ", ".join(map(str, g[:4])) + (", ..." if len(g) > 4 else "") for g in groups[:3]
            )
            lines = sorted({ln for g in groups for ln in g})
            found.append(
                ValidationWarning(
                    "conflicting_answers",
                    f"{len(groups)} prompt(s) appear with different answers ({shown}). Noisy labels "
                    "teach the model to guess; keep one correct answer per prompt.",
                    tuple(lines[:MAX_WARNING_LINES]),
                )
            )
        return found


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


class SystemPrompts:
    """``inconsistent_system_prompts``: more than one system prompt ("none" counts as one).

    Tracks MAX_SYSTEM_PROMPTS distinct prompts (hash of the text -> [count, first 10 lines]);
    past that the count says "over N".
    """

    def __init__(self) -> None:
        self.n = 0
        self.systems: dict[int, list[Any]] = {}
        self.overflow = 0  # examples whose system prompt was not tracked

    def observe(self, example: Observed) -> None:
        self.n += 1
        sh = hash(example.key_parts[1]) if example.messages[0]["role"] == "system" else 0
        entry = self.systems.get(sh)
        if entry is not None:
            entry[0] += 1
            if len(entry) <= 10:
                entry.append(example.line)
        elif len(self.systems) < MAX_SYSTEM_PROMPTS:
            self.systems[sh] = [1, example.line]
        else:
            self.overflow += 1

    def stats(self) -> dict[str, Any]:
        return {"system_prompts": len(self.systems) + (1 if self.overflow else 0)}

    def warnings(self) -> list[ValidationWarning]:
        systems, examples = self.systems, self.n
        if not examples or len(systems) + (1 if self.overflow else 0) <= 1:
            return []
        common_hash, common = max(systems.items(), key=lambda kv: kv[1][0])
        others = sorted(ln for h, e in systems.items() if h != common_hash for ln in e[1:])
        without = systems.get(0)
        if common_hash == 0:
            detail = f"{common[0]} of {examples} examples have none"
        else:
            detail = f"the most common is in {common[0]} of {examples} examples"
            if without is not None:
                detail += f"; {without[0]} have none"
        return [
            ValidationWarning(
                "inconsistent_system_prompts",
                f"{'Over ' if self.overflow else ''}{len(systems)} different system prompts, counting "
                f"none as one ({detail}). The tuned model is asked with one system prompt; use the "
                "same one everywhere unless the variation is intended.",
                tuple(others[:MAX_WARNING_LINES]),
            )
        ]


class Task:
    """The task (``numeric``/``json``/``label``/``text``) from a fixed-seed reservoir sample of
    TASK_SAMPLE answers, label counts while every answer looks like a label, and
    ``label_imbalance`` when one label is LOPSIDED_SHARE of the answers or more."""

    def __init__(self) -> None:
        self.n = 0
        self.sample: list[str] = []
        self.rand = random.Random(0).random
        self.labels: dict[str, int] | None = {}
        self.task = "text"

    def observe(self, example: Observed) -> None:
        self.n += 1
        answer = example.answer
        if len(self.sample) < TASK_SAMPLE:
            self.sample.append(answer[:TASK_SAMPLE_CHARS])
        else:
            j = int(self.rand() * self.n)
            if j < TASK_SAMPLE:
                self.sample[j] = answer[:TASK_SAMPLE_CHARS]
        labels = self.labels
        if labels is not None:
            if len(answer) > 80 or len(answer.split()) > LABEL_MAX_WORDS:
                self.labels = None
            else:
                lk = label_key(answer)
                labels[lk] = labels.get(lk, 0) + 1
                if len(labels) > LABEL_MAX_DISTINCT:
                    self.labels = None

    def finish(self) -> None:
        """Detect the task from the sample (after the last example)."""
        self.task = detect_task(self.sample)

    def stats(self) -> dict[str, Any]:
        labels = self.labels
        return {
            "task": self.task,
            "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1]))
            if self.task == "label" and labels
            else None,
        }

    def warnings(self) -> list[ValidationWarning]:
        labels, examples = self.labels, self.n
        if self.task != "label" or not labels or examples < MIN_EXAMPLES:
            return []
        top_label, top = max(labels.items(), key=lambda kv: kv[1])
        if len(labels) != 1 and top / examples < LOPSIDED_SHARE:
            return []
        return [
            ValidationWarning(
                "label_imbalance",
                f"{top / examples:.0%} of the answers are {top_label!r} ({len(labels)} distinct "
                f"label(s)). A model that always answers {top_label!r} scores {top / examples:.0%}; add "
                "examples of the other labels.",
            )
        ]
