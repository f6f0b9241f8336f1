"""Saved job payloads, streamed: JSON Lines, a JSON array (as List jobs returns) or one object.

Memory stays flat: objects are decoded one at a time. A record that is not valid
JSON is yielded as an InvalidPayload naming its position, and reading goes on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any

from archiver.errors import InvalidPayload
from archiver.jsonio import STRICT_DECODER, strict_json

CHUNK = 1 << 20
_decoder = STRICT_DECODER


def read_payloads(stream: IO[bytes] | IO[str]) -> Iterator[Any]:
    if not isinstance(stream, io.TextIOBase):  # decode incrementally: a character may span chunks
        stream = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    text = stream.read(CHUNK)
    if text.lstrip()[:1] == "[":
        yield from _array_items(stream, text)
    else:
        yield from _lines(stream, text)


def _bad(where: str, reason: str) -> InvalidPayload:
    return InvalidPayload(None, where, reason, kind="bad_json")


def _more(stream: IO[str]) -> str:
    return stream.read(CHUNK)


def _lines(stream: IO[bytes], text: str) -> Iterator[Any]:
    """JSON Lines: whole lines are split off each chunk at once (a line may span chunks)."""
    number, rest = 0, text
    while True:
        chunk = _more(stream)
        lines = (rest + chunk).split("\n") if chunk else rest.split("\n")
        rest = lines.pop() if chunk else ""
        for line in lines:
            number += 1
            yield from _one_line(line, number)
        if not chunk:
            return


def _one_line(line: str, number: int) -> Iterator[Any]:
    line = line.strip()
    if not line:
        return
    try:
        yield strict_json(line)
    except (ValueError, RecursionError):
        yield _bad(f"<line {number}>", "not valid JSON")


def _array_items(stream: IO[bytes], text: str) -> Iterator[Any]:
    buffer = text.lstrip()[1:]
    index, eof = 0, False
    while True:
        buffer = buffer.lstrip().lstrip(",").lstrip()
        if buffer.startswith("]"):
            return
        try:
            item, end = _decoder.raw_decode(buffer)
        except (ValueError, RecursionError):
            if eof:
                yield _bad(f"<item {index}>", "not valid JSON (or the array is cut short)")
                return
            chunk = _more(stream)
            eof = not chunk
            buffer += chunk
            continue
        yield item
        index += 1
        buffer = buffer[end:]
        if not buffer.strip() and not eof:
            chunk = _more(stream)
            eof = not chunk
            buffer += chunk
        if eof and not buffer.strip():
            yield _bad(f"<item {index}>", "the array is not closed")
            return
