"""The event/item contract on good and bad input; the bad side is property-based."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import ContractError
from streamrec.stream.contract import (
    ERROR_CODES,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    DeadLetter,
    Event,
    dead_letter,
    encode,
    parse_event,
    parse_item,
)

NOW_MS = int(time.time() * 1000)
GOOD: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "click",
    "ts": 1_700_000_000_000,
}


def _raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _code(raw: bytes) -> str:
    with pytest.raises(ContractError) as info:
        parse_event(raw)
    assert info.value.code in ERROR_CODES
    assert info.value.message
    return info.value.code


def test_good_event_round_trips() -> None:
    full = {
        **GOOD,
        "dwell_ms": 1200,
        "rec_id": "r9",
        "position": 3,
        "value": 4.5,
        "context": {"device": "ios", "premium": True, "age": 31},
    }
    event = parse_event(_raw(full))
    assert parse_event(encode(event)) == event
    assert event.ts == GOOD["ts"] and event.context == full["context"]


def test_iso_timestamps_with_zone_become_epoch_ms() -> None:
    assert parse_event(_raw({**GOOD, "ts": "2023-11-14T22:13:20Z"})).ts == 1_700_000_000_000
    assert parse_event(_raw({**GOOD, "ts": "2023-11-14T23:13:20+01:00"})).ts == 1_700_000_000_000


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert parse_event(_raw({**GOOD, "new_field": [1, 2]})).event_id == "e1"


@pytest.mark.parametrize(
    ("obj_or_raw", "code"),
    [
        (b"\xff\xfe\x00", "not_utf8"),
        (b'{"event_id": ', "invalid_json"),
        (b'"just a string"', "not_an_object"),
        ({**GOOD, "type": "teleport"}, "unknown_event_type"),
        ({k: v for k, v in GOOD.items() if k != "item_id"}, "missing_field"),
        ({**GOOD, "ts": "yesterday"}, "bad_timestamp"),
        ({**GOOD, "ts": "2023-11-14T22:13:20"}, "bad_timestamp"),
        ({**GOOD, "ts": 881_250_949}, "bad_timestamp"),
        ({**GOOD, "ts": NOW_MS + 3 * 86_400_000}, "bad_timestamp"),
        ({**GOOD, "ts": True}, "bad_timestamp"),
        ({**GOOD, "user_id": 7}, "wrong_type"),
        ({**GOOD, "position": "3"}, "wrong_type"),
        ({**GOOD, "user_id": ""}, "bad_value"),
        ({**GOOD, "dwell_ms": -1}, "bad_value"),
        ({**GOOD, "context": {f"k{i}": i for i in range(40)}}, "bad_value"),
        ({**GOOD, "v": 2}, "unsupported_version"),
        ({**GOOD, "item_id": "x" * (MAX_EVENT_BYTES + 1)}, "too_large"),
    ],
)
def test_each_rejection_has_its_stable_code(obj_or_raw: Any, code: str) -> None:
    raw = obj_or_raw if isinstance(obj_or_raw, bytes) else _raw(obj_or_raw)
    assert _code(raw) == code


def test_missing_field_message_names_the_field() -> None:
    with pytest.raises(ContractError, match="`user_id` is required"):
        parse_event(_raw({k: v for k, v in GOOD.items() if k != "user_id"}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_another_exception(raw: bytes) -> None:
    try:
        parse_event(raw)
    except ContractError as exc:
        assert exc.code in ERROR_CODES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(GOOD)), value=json_values)
def test_corrupting_any_required_field_is_rejected_or_still_valid(field: str, value: Any) -> None:
    obj = {**GOOD, field: value}
    try:
        event = parse_event(_raw(obj))
    except ContractError as exc:
        assert exc.code in ERROR_CODES
        return
    # Accepted only when the corruption happens to be a valid value of the right type.
    assert getattr(event, field) == value or field == "ts"
    if field == "type":
        assert value in EVENT_TYPES


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_random_objects_missing_required_fields_are_rejected(obj: dict[str, Any]) -> None:
    if {"event_id", "user_id", "item_id", "type", "ts"} <= obj.keys():
        return
    assert _code(_raw(obj)) in ERROR_CODES


def test_item_contract() -> None:
    item = parse_item(_raw({"item_id": "m1", "title": "Toy Story", "categories": ["Animation"]}))
    assert item.active and item.categories == ["Animation"]
    with pytest.raises(ContractError) as info:
        parse_item(_raw({"item_id": "m1"}))
    assert info.value.code == "missing_field"


def test_dead_letter_keeps_original_bytes_and_coordinates() -> None:
    raw = b"\x00garbage\xff"
    with pytest.raises(ContractError) as info:
        parse_event(raw)
    record = dead_letter(raw, info.value, "events", 3, 991)
    again = DeadLetter.model_validate_json(encode(record))
    assert again.original() == raw
    assert (again.partition, again.offset, again.error_code) == (3, 991, "not_utf8")


def test_event_model_is_frozen() -> None:
    event = Event.model_validate(GOOD)
    with pytest.raises(Exception, match="frozen"):
        event.user_id = "other"  # type: ignore[misc]  # testing that assignment fails
