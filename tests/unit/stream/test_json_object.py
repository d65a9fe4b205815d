"""Bytes of one record to its JSON object (stream/json_object.py): the bounds, each refusal."""

from __future__ import annotations

import pytest

from streamrec.errors import ContractError
from streamrec.stream.json_object import MAX_DEPTH, SCHEMA_REGISTRY_HINT, decode_object


def test_an_object_within_the_bounds_is_decoded() -> None:
    raw = b'{"a": [1, {"b": "[[[{"}], "c": null}'  # brackets in strings do not nest
    assert decode_object(raw, 100) == {"a": [1, {"b": "[[[{"}], "c": None}


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (b"x" * 101, "too_large", "101 bytes; the limit is 100"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep", f"at most {MAX_DEPTH}"),
        (b"", "invalid_json", "empty"),
        (b'{"a": NaN}', "invalid_json", "no NaN"),
        (b'{"a": "\xff"}', "not_utf8", "byte 7"),
        (b"\x00\x00\x00\x00\x01{}", "invalid_json", SCHEMA_REGISTRY_HINT[:40]),
        (b"[1, 2]", "not_an_object", "got an array"),
        (b"null", "not_an_object", "got null"),
    ],
)
def test_each_refusal_has_its_code_and_says_why(raw: bytes, code: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_object(raw, 100 if code == "too_large" else 10_000)
    assert info.value.code == code and says in str(info.value)
