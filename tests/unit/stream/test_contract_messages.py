"""What a producer reads when a record is refused, and the lenient readings of JSON numbers."""

from __future__ import annotations

import json

import pytest

from streamrec.errors import ContractError
from streamrec.stream.contract import parse_event

GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "click",
    "ts": 1_700_000_000_000,
}


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"null", "expected a JSON object, got null"),
        (b"[1]", "expected a JSON object, got an array"),
        (b"", "the record is empty"),
    ],
)
def test_rejections_speak_json_not_python(raw: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_event(raw)


def test_whole_floats_are_taken_as_integers_as_the_json_schema_takes_them() -> None:
    event = parse_event(_raw({**GOOD, "dwell_ms": 5300.0, "position": 2.0}))
    assert (event.dwell_ms, event.position) == (5300, 2)
    assert isinstance(event.dwell_ms, int)
    with pytest.raises(ContractError) as refused:
        parse_event(_raw({**GOOD, "dwell_ms": 5300.5}))
    assert refused.value.code == "wrong_type"


def test_a_timestamp_sent_as_a_string_of_digits_is_told_to_be_a_number() -> None:
    with pytest.raises(ContractError, match="as a JSON number, not a string"):
        parse_event(_raw({**GOOD, "ts": "1796130134000"}))
