"""The one JSON module: the strict decoder (client, ingest), the canonical text (payload
hashes) and the serializer the database engines use.

At the bottom of the layers: it imports nothing of the archiver.
"""

from __future__ import annotations

import json
from typing import Any


def reject_json_constant(name: str) -> None:
    """For json's parse_constant: NaN and Infinity are not JSON."""
    raise ValueError(f"non-standard JSON constant {name}")


STRICT_DECODER = json.JSONDecoder(parse_constant=reject_json_constant)


def strict_json(text: str) -> Any:
    """JSON as the API promises it: no NaN or Infinity; a number too long raises ValueError."""
    return STRICT_DECODER.decode(text)


def decode_body(body: bytes) -> Any:
    """A response body as strict JSON: valid UTF-8, no NaN/Infinity; huge numbers raise ValueError."""
    return strict_json(body.decode("utf-8"))


def canonical_json(payload: Any) -> str:
    """The text a payload is stored and hashed as: keys sorted, no spaces, Unicode kept."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RawJSON(str):
    """JSON text already serialized (the canonical payload); written as it is."""


def serialize_json(value: Any) -> str:
    """The engines' json_serializer: RawJSON passes through, anything else is compact JSON."""
    if isinstance(value, RawJSON):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
