"""Chat messages: what a message's text is, and when two prompts are the same.

Pure: stdlib only. The one definition of each, shared by dataset validation (duplicates,
conflicts, the split and leakage), evaluation (references) and few-shot prompts (keeping eval
prompts out of the shots).

Contracts:

- :func:`message_text`: a content that is a string is its text; a list of content parts gives the
  joined ``text`` of its text parts (parts that are not objects, or have no string ``text``, add
  nothing); anything else (None, a number, an object) has no text, ``""``.
- :func:`content_key`: what identifies a message's content: the stripped text of a string
  content; canonical JSON (sorted keys, compact, not ASCII-escaped) of content parts; for a
  message without content (an assistant tool call), ``"tool_calls:"`` and canonical JSON of its
  calls.
- :func:`prompt_key`: "same prompt" means the same roles and the same :func:`content_key`, in
  order (so surrounding spaces never tell prompts apart); the key is a 32-character hex digest.
  ``system=False`` leaves system messages out (few-shot prompts, which bring their own).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["answer_text", "canonical", "content_key", "message_text", "prompt_key"]


def message_text(content: Any) -> str:
    """The text of a message content: the string, or the joined text of its text parts."""
    if type(content) is str:
        return content
    if type(content) is list:
        return "".join(p["text"] for p in content if type(p) is dict and type(p.get("text")) is str)
    return ""


def canonical(value: Any) -> str:
    """Canonical JSON of ``value``: sorted keys, no spaces, non-ASCII kept as is."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_key(message: Mapping[str, Any]) -> str:
    """A string identifying a message's content (for prompt and answer identity): the stripped
    text, or canonical JSON of content parts, or of the tool calls when there is no content."""
    content = message.get("content")
    if type(content) is str:
        return content.strip()
    if content is None or content == []:
        return "tool_calls:" + canonical(message.get("tool_calls"))
    return canonical(content)


def answer_text(message: Mapping[str, Any]) -> str:
    """An assistant message's answer as text: its content, the text of its content parts, or
    (a tool call without content) the calls as canonical JSON."""
    content = message.get("content")
    if type(content) is str:
        return content
    if content is None or content == []:
        return canonical(message.get("tool_calls") or [])
    text = message_text(content)
    return text if text else canonical(content)


def prompt_key(messages: Sequence[Mapping[str, Any]], *, system: bool = True) -> str:
    """The key of "same prompt": a digest of each message's role and :func:`content_key`, in
    order; ``system=False`` skips system messages."""
    canon = json.dumps(
        [[m.get("role"), content_key(m)] for m in messages if system or m.get("role") != "system"],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
