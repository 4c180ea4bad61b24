"""Generic Block Kit: the :class:`Message` type, block builders (header, section, fields, context,
button), number and duration formats, escaping, and mrkdwn as plain terminal text. Pure: stdlib
only; no I/O. The messages themselves are in bot/slack/blocks.py.

Limits kept (Slack rejects bigger payloads): section text <= 3000 characters, <= 10 fields,
header <= 150, button text <= 75.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SECTION_LIMIT = 3000


@dataclass(frozen=True)
class Message:
    """One Slack message: ``text`` (the notification and screen-reader fallback) and ``blocks``."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        """Arguments for chat.postMessage / chat.update / chat.postEphemeral."""
        return {"text": self.text, "blocks": self.blocks}


def escape(text: Any) -> str:
    """Escape user-controlled text for mrkdwn (Slack's rule: &, <, > only)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_dict(obj: Any) -> dict[str, Any]:
    """A report object (``to_dict()``), dataclass or mapping as a plain dict; {} for None."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(getattr(obj, "__dict__", {}))


def header(text: str) -> dict[str, Any]:
    """A header block (plain text, cut to 150 characters)."""
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150), "emoji": True}}


def section(text: str, *, fields: Sequence[str] = (), block_id: str | None = None) -> dict[str, Any]:
    """A mrkdwn section (text cut to 3000 characters), with up to 10 fields of 2000."""
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}
    if fields:
        block["fields"] = [{"type": "mrkdwn", "text": clip(f, 2000)} for f in fields[:10]]
    if block_id:
        block["block_id"] = block_id
    return block


def fields_section(fields: Sequence[str]) -> dict[str, Any]:
    """A section of up to 10 mrkdwn fields (each cut to 2000 characters), no text."""
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, 2000)} for f in fields[:10]]}


def context(text: str) -> dict[str, Any]:
    """A context block (small grey text) of one mrkdwn element."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text)}]}


def button(
    text: str,
    action_id: str,
    value: str,
    *,
    style: str | None = None,
    confirm: tuple[str, str, str, str] | None = None,
) -> dict[str, Any]:
    """A button carrying ``action_id`` and ``value`` (text cut to 75 characters); ``confirm`` is
    (title, text, yes, no) for a confirmation dialog."""
    out: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": action_id,
        "value": value[:2000],
    }
    if style:
        out["style"] = style
    if confirm:
        title, body, yes, no = confirm
        out["confirm"] = {
            "title": {"type": "plain_text", "text": title[:100]},
            "text": {"type": "plain_text", "text": body[:300]},
            "confirm": {"type": "plain_text", "text": yes[:30]},
            "deny": {"type": "plain_text", "text": no[:30]},
        }
    return out


def fmt_number(value: Any, digits: int = 4) -> str:
    """A number for display: ints with thousands separators, floats to ``digits`` significant
    digits (tiny ones such as learning rates in short scientific form), "–" for None and NaN."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 1e6:
            return f"{value:.3e}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"  # learning rates: 0.0002, 1e-05
        return f"{value:.{digits}g}"
    return str(value)


def fmt_duration(seconds: Any) -> str:
    """A duration for display: ``42s``, ``3m 05s``, ``2h 07m``; "–" when unknown or negative."""
    if not isinstance(seconds, int | float) or seconds != seconds or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def progress_bar(done: int | None, total: int | None, width: int = 20) -> str:
    """``▓▓▓▓░░░░ 40%``; an empty bar when the total is unknown."""
    if not total or done is None:
        return "░" * width
    frac = max(0.0, min(1.0, done / total))
    filled = round(frac * width)
    return "▓" * filled + "░" * (width - filled) + f" {frac:.0%}"


_MRKDWN = [
    (re.compile(r"<@([^>|]+)(?:\|[^>]*)?>"), r"@\1"),
    (re.compile(r"<#([^>|]+)(?:\|[^>]*)?>"), r"#\1"),
    (re.compile(r"<(https?://[^|>]+)\|([^>]+)>"), r"\2 (\1)"),
    (
        re.compile(
            r":(white_check_mark|heavy_minus_sign|x|warning|hourglass|mag|straight_ruler|hammer_and_wrench"
            r"|bar_chart|no_entry_sign|clipboard|moneybag|gear|grey_question|label):"
        ),
        "",
    ),
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])"), r"\1"),
    (re.compile(r"```\n?"), ""),
    (re.compile(r"`([^`\n]*)`"), r"\1"),
]


def plain(text: str) -> str:
    """mrkdwn as terminal text: mentions as ``@U…``, links as ``text (url)``, our emoji codes and
    bold/italic/code marks dropped, Slack's escapes undone."""
    for pattern, repl in _MRKDWN:
        text = pattern.sub(repl, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
