"""Reading the stream: its head (binary, UTF-16, BOM), its lines (bounded), UTF-8 decoding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from engine.dataset.report import Issue
from engine.dataset.rules import _HEAD_BYTES, _READ_CHUNK


def _describe_binary(head: bytes) -> str | None:
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive (or an Office document such as .xlsx/.docx)"),
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"BZh", "a bzip2-compressed file"),
        (b"\xfd7zXZ\x00", "an xz-compressed file"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"(\xb5/\xfd", "a zstd-compressed file"),
        (b"PAR1", "a Parquet file"),
        (b"SQLite format 3\x00", "an SQLite database"),
        (b"\x7fELF", "a program (ELF binary)"),
    )
    for magic, what in signatures:
        if head.startswith(magic):
            return what
    if b"\x00" in head:
        return "binary data (it contains NUL bytes)"
    return None


def _iter_raw_lines(stream: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line_no, line, size)`` for every line, newline stripped. ``line`` is None when the
    line is longer than ``max_line`` bytes: it is then read through in bounded chunks, never held."""
    readline = stream.readline
    line_no = 0
    limit = max_line + 1
    while True:
        raw = readline(limit)
        if not raw:
            return
        line_no += 1
        if raw[-1:] == b"\n":
            yield line_no, raw[:-1], len(raw) - 1
            continue
        if len(raw) < limit:  # the last line, without a final newline
            yield line_no, raw, len(raw)
            return
        size = len(raw)
        del raw
        while True:
            part = readline(_READ_CHUNK)
            if not part:
                break
            if part[-1:] == b"\n":
                size += len(part) - 1
                break
            size += len(part)
        yield line_no, None, size


def _decode(raw: bytes, line: int) -> tuple[str | None, tuple[str, str] | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        return None, (
            "not_utf8",
            f"Line {line}: not valid UTF-8 (byte 0x{bad} at byte {exc.start + 1} of the line). "
            "Save the file as UTF-8 (in Excel: 'CSV UTF-8'; in Python: encoding='utf-8').",
        )


def _open_stream(stream: BinaryIO) -> tuple[bytes, Issue | None]:
    """Read the head of the stream, check for binary/UTF-16, skip a BOM. Returns (head, issue)."""
    head = stream.read(_HEAD_BYTES)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head, Issue(
            None,
            "not_utf8",
            "The file is UTF-16, not UTF-8. Save it as UTF-8 (in Excel: 'CSV UTF-8'; in an editor: "
            "'Save with encoding UTF-8') and upload it again.",
        )
    what = _describe_binary(head)
    if what is not None:
        return head, Issue(
            None,
            "binary_file",
            f"This is not a text file: it looks like {what}. Upload a .jsonl text file with one JSON "
            "example per line.",
        )
    stream.seek(3 if head.startswith(b"\xef\xbb\xbf") else 0)
    return head, None
