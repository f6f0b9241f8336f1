"""Saved job payloads, streamed: JSON Lines, a JSON array (as List jobs returns) or one object.

Memory stays flat: objects are decoded one at a time. A record that is not valid
JSON is yielded as an InvalidPayload naming its position, and reading goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from archiver.errors import InvalidPayload

CHUNK = 1 << 20
_decoder = json.JSONDecoder(parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def read_payloads(stream: IO[bytes]) -> Iterator[Any]:
    head = stream.read(CHUNK)
    text = head.decode("utf-8", errors="strict") if isinstance(head, bytes) else head
    first = text.lstrip()[:1]
    if first == "[":
        yield from _array_items(stream, text)
    else:
        yield from _lines(stream, text)


def _bad(where: str, reason: str) -> InvalidPayload:
    return InvalidPayload(None, where, reason, kind="bad_json")


def _more(stream: IO[bytes]) -> str:
    chunk = stream.read(CHUNK)
    return chunk.decode("utf-8") if isinstance(chunk, bytes) else chunk


def _lines(stream: IO[bytes], text: str) -> Iterator[Any]:
    buffer, number = text, 0
    while True:
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            number += 1
            yield from _one_line(line, number)
        chunk = _more(stream)
        if not chunk:
            break
        buffer += chunk
    if buffer.strip():
        yield from _one_line(buffer, number + 1)


def _one_line(line: str, number: int) -> Iterator[Any]:
    line = line.strip()
    if not line:
        return
    try:
        yield _decoder.decode(line)
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
