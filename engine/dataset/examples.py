"""The usable examples of a file, the deterministic train/eval split, leakage between them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from engine.dataset.check_example import _parse_example
from engine.dataset.lines import _decode, _iter_raw_lines, _open_stream
from engine.dataset.report import Example
from engine.dataset.rules import _READ_CHUNK, MAX_LINE_BYTES
from engine.errors import UsageError
from engine.messages import answer_text, prompt_key

# ---------------------------------------------------------------------------------------------
# Usable examples, split, leakage
# ---------------------------------------------------------------------------------------------


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
            answer=answer_text(messages[index]),
            prompt_key=prompt_key(messages[:index] or messages[:1]),
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
