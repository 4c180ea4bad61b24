"""The limits and names of the dataset format (ARCHITECTURE.md): one place for every threshold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
