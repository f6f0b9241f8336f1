"""The one JSON module: the strict decoder (client, ingest), the canonical text (payload
hashes) and the serializer the database engines use.

Two implementations give the same results: the standard library's `json` (the reference)
and orjson (a compiled library, when installed: about 3x faster at decoding and 6x at the
canonical text). orjson is used only where its result is known to be the reference's:
a text with a run of 19 or more digits (an integer orjson would turn into a float) is
decoded by `json`; a canonical text in which a float could be written in another form
(Python writes 1e-05, orjson 0.00001) is made by `json`; and anything orjson refuses (a lone
surrogate, an integer over 64 bits, NaN, too deep a nesting) goes to `json`, which then
decides exactly as it always did. So the canonical text, and the payload hash stored from
it, never depends on which library made it (tests/test_jsonio.py checks both on every
sample payload and on generated ones).

At the bottom of the layers: it imports nothing of the archiver.
"""

from __future__ import annotations

import json
from typing import Any

try:  # optional at run time: every function below works without it, only slower
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a broken install working
    orjson = None


def reject_json_constant(name: str) -> None:
    """For json's parse_constant: NaN and Infinity are not JSON."""
    raise ValueError(f"non-standard JSON constant {name}")


STRICT_DECODER = json.JSONDecoder(parse_constant=reject_json_constant)

# Checks by bytes.translate and `in` (a regular expression is ten times slower here):
# 19 digits in a row: maybe an integer outside orjson's 64-bit range (which it decodes as a float).
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))    # digits -> "0", the rest " "
_NINETEEN = b"0" * 19
# In orjson's output, a float whose form may differ from Python's repr: an exponent (1e-7 vs
# 1e-07) or a fixed form below 1e-4 (0.00001 vs 1e-05). A string that merely looks like one
# only sends the payload down the reference path.
_EXPONENT = bytes(100 if 48 <= i <= 57 else 101 if i in (69, 101) else 32 for i in range(256))  # d, e, " "


def _long_digits(data: bytes) -> bool:
    return _NINETEEN in data.translate(_DIGITS)


def _other_float_form(data: bytes) -> bool:
    return b"0.0000" in data or b"de" in data.translate(_EXPONENT)


def strict_json(text: str) -> Any:
    """JSON as the API promises it: no NaN or Infinity; a number too long raises ValueError."""
    if orjson is not None:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the text itself: the reference decides
            data = None
        if data is not None and not _long_digits(data):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # the reference decoder decides (and names the error) as it always did
    return STRICT_DECODER.decode(text)


def decode_body(body: bytes) -> Any:
    """A response body as strict JSON: valid UTF-8, no NaN/Infinity; huge numbers raise ValueError."""
    if orjson is not None and not _long_digits(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return STRICT_DECODER.decode(body.decode("utf-8"))


def _reference_canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fast_canonical(payload: Any) -> bytes | None:
    """orjson's canonical bytes where they are json's byte for byte, else None."""
    if orjson is None:
        return None
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return None if _other_float_form(data) else data


def canonical_bytes(payload: Any) -> bytes:
    """The canonical text (see canonical_json) as UTF-8, what the payload hash is taken of.
    A lone surrogate (valid JSON escape, not encodable) raises UnicodeEncodeError, as ever."""
    data = _fast_canonical(payload)
    return data if data is not None else _reference_canonical(payload).encode("utf-8")


def canonical_json(payload: Any) -> str:
    """The text a payload is stored and hashed as: keys sorted, no spaces, Unicode kept."""
    data = _fast_canonical(payload)
    return data.decode("utf-8") if data is not None else _reference_canonical(payload)


class RawJSON(str):
    """JSON text already serialized (the canonical payload); written as it is."""


def serialize_json(value: Any) -> str:
    """The engines' json_serializer: RawJSON passes through, anything else is compact JSON."""
    if isinstance(value, RawJSON):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
