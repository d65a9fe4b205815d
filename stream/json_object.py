"""Bytes of one record -> the JSON object it holds, or a ``ContractError`` saying why not.

Records come from anyone who can write to a topic: only standard JSON is accepted (orjson: no
``NaN``/``Infinity``, no lone surrogates, no trailing commas), and nesting deeper than
``MAX_DEPTH`` is rejected *before* parsing (deep nesting is what made Python's parser raise
``RecursionError`` and crash the ingest agent).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from streamrec.errors import ContractError

# Deepest nesting of arrays/objects in a record. An event needs 2 (the record, its context);
# the headroom is for unknown fields a newer producer may add. Far below the ~1,000 levels at
# which recursive code (Python's parser, repr, pydantic) runs out of stack.
MAX_DEPTH = 32
# Confluent's serializers frame a value as a 0 byte, a 4-byte schema id, then the payload.
SCHEMA_REGISTRY_HINT = (
    "the record starts with Confluent Schema Registry framing (a 0 byte and a 4-byte schema id "
    "before the JSON): streamrec reads plain JSON values, so publish with a plain JSON or "
    "string serializer"
)


# A JSON string (escapes included), unrolled so it matches in linear time; and any bracket.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def _nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting of ``raw`` outside strings; no recursion, one pass."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_object(raw: bytes, limit: int) -> dict[str, Any]:
    """The JSON object ``raw`` holds; ContractError (``too_large``, ``too_deep``, ``invalid_json``,
    ``not_utf8``, ``not_an_object``) when it holds none within ``limit`` bytes and ``MAX_DEPTH``."""
    if len(raw) > limit:
        raise ContractError("too_large", f"record is {len(raw)} bytes; the limit is {limit}")
    # Counting brackets is a C-speed scan; only a record with more of them than MAX_DEPTH (almost
    # never a real one) pays for measuring the depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        depth = _nesting_depth(raw)
        if depth > MAX_DEPTH:
            raise ContractError(
                "too_deep", f"arrays/objects nested {depth} levels deep; at most {MAX_DEPTH}"
            )
    if not raw:
        raise ContractError("invalid_json", "the record is empty (no value, or a tombstone)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if raw[:1] == b"\x00" and len(raw) > 5 and raw[5:6] in (b"{", b"["):
            raise ContractError("invalid_json", SCHEMA_REGISTRY_HINT) from None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise ContractError("not_utf8", f"byte {bad.start} is not valid UTF-8") from None
        raise ContractError(
            "invalid_json", f"invalid JSON (standard JSON only: no NaN or Infinity): {exc}"[:300]
        ) from None
    except (RecursionError, ValueError, TypeError) as exc:
        # Not expected from orjson, whose depth is bounded; kept so the promise holds anyway.
        raise ContractError("invalid_json", f"cannot parse: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        got = _JSON_KINDS.get(type(obj), type(obj).__name__)
        raise ContractError("not_an_object", f"expected a JSON object, got {got}")
    return obj


_JSON_KINDS = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}
