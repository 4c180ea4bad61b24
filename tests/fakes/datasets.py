"""Example datasets written the way users upload them: chat JSONL, one conversation a line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def chat_example(question: str, answer: str, *, system: str) -> dict[str, Any]:
    """One training example: a system prompt, the user's question and the assistant's answer."""
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_examples(path: Path, pairs: Iterable[tuple[str, str]], *, system: str) -> Path:
    """Write ``(question, answer)`` pairs as chat JSONL (a newline after each line); return ``path``."""
    with open(path, "w") as f:
        for question, answer in pairs:
            f.write(json.dumps(chat_example(question, answer, system=system)) + "\n")
    return path


def write_price_dataset(path: Path, n: int = 40) -> Path:
    """A usable numeric dataset (prices of used items), ``n`` examples; returns ``path``."""
    items = ["laptop", "phone", "camera", "speaker", "watch", "monitor", "keyboard", "lamp"]
    return write_examples(
        path,
        (
            (f"used {items[i % len(items)]} number {i}", f"{(i % len(items) + 1) * 25 + i % 3}.00")
            for i in range(n)
        ),
        system="Estimate the price in USD. Answer with a number only.",
    )
