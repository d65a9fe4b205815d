"""The event/item contract on good and bad input; the bad side is property-based."""

from __future__ import annotations

import json
import math
import random
import re
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import ContractError
from streamrec.stream import contract, contract_fields
from streamrec.stream.contract import (
    ERROR_CODES,
    EVENT_TYPES,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_ITEM_BYTES,
    DeadLetter,
    Event,
    Recommendation,
    SlateItem,
    dead_letter,
    encode,
    encode_recommendation,
    parse_event,
    parse_item,
    validate_event,
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


def test_a_version_written_as_a_whole_float_is_the_integer() -> None:
    # JSON Schema counts 1.0 as an integer and many JSON writers emit it
    assert parse_event(_raw({**GOOD, "v": 1.0})).v == 1


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
        ({**GOOD, "ts": True}, "wrong_type"),
        ({**GOOD, "ts": [NOW_MS]}, "wrong_type"),
        ({**GOOD, "ts": 1.7e12 + 0.5}, "bad_timestamp"),
        ({**GOOD, "user_id": 7}, "wrong_type"),
        ({**GOOD, "position": "3"}, "wrong_type"),
        ({**GOOD, "user_id": ""}, "bad_value"),
        ({**GOOD, "dwell_ms": -1}, "bad_value"),
        ({**GOOD, "context": {f"k{i}": i for i in range(40)}}, "bad_value"),
        ({**GOOD, "v": 2}, "unsupported_version"),
        ({**GOOD, "v": "1"}, "wrong_type"),
        ({**GOOD, "v": True}, "wrong_type"),
        ({**GOOD, "v": 0}, "bad_value"),
        ({**GOOD, "item_id": "x" * (MAX_EVENT_BYTES + 1)}, "too_large"),
    ],
)
def test_each_rejection_has_its_stable_code(obj_or_raw: Any, code: str) -> None:
    raw = obj_or_raw if isinstance(obj_or_raw, bytes) else _raw(obj_or_raw)
    assert _code(raw) == code


def test_a_context_value_of_another_type_is_named_and_a_null_one_is_absent() -> None:
    # The message named pydantic's union member (`context.basket.str`: should be a valid
    # string), and a null device refused the whole event.
    with pytest.raises(
        ContractError, match=r"`context.basket`: .* string, number or boolean; got an object"
    ):
        parse_event(_raw({**GOOD, "context": {"basket": {"a": 1}, "device": "ios"}}))
    event = parse_event(_raw({**GOOD, "context": {"device": None, "premium": True}}))
    assert event.context == {"premium": True}
    assert parse_event(_raw({**GOOD, "context": {"device": None}})).context is None


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


# -- hostile input: nothing but ContractError may come out ----------------------------------------

GOOD_TEXT = json.dumps(GOOD)[1:-1]  # the fields, to splice hostile ones next to


def _with(extra: str) -> bytes:
    """A good event's JSON text with ``extra`` (raw JSON text) spliced in as more fields."""
    return ("{" + GOOD_TEXT + ", " + extra + "}").encode()


def _nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_nested(5_000).encode(), id="arrays"),
        pytest.param(('{"a":' * 2_000 + "1" + "}" * 2_000).encode(), id="objects"),
        pytest.param(b"[" * 15_000, id="unclosed"),
        pytest.param(_with('"extra": ' + _nested(MAX_DEPTH)), id="inside-a-good-event"),
    ],
)
def test_deep_nesting_under_the_size_limit_is_rejected_before_parsing(raw: bytes) -> None:
    # Python's json module raises RecursionError on these, which used to crash the agent.
    assert len(raw) <= MAX_EVENT_BYTES
    assert _code(raw) == "too_deep"


def test_nesting_up_to_the_limit_is_accepted_and_brackets_in_strings_do_not_count() -> None:
    # The record itself is one level, so an unknown field may nest MAX_DEPTH - 1 more.
    assert parse_event(_with('"extra": ' + _nested(MAX_DEPTH - 1))).event_id == "e1"
    brackets = json.dumps("[{" * 500 + '"\\')
    assert parse_event(_with(f'"note": {brackets}')).event_id == "e1"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("field", ["value", "dwell_ms", "ts", "position", "context"])
def test_non_finite_numbers_are_rejected_in_every_numeric_field(field: str, literal: str) -> None:
    fields = {k: v for k, v in GOOD.items() if k != field}
    number = f'{{"score": {literal}}}' if field == "context" else literal
    raw = ("{" + json.dumps(fields)[1:-1] + f', "{field}": {number}' + "}").encode()
    assert _code(raw) == "invalid_json"


@pytest.mark.parametrize("field", ["value", "ts", "context"])
@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_from_python_values_are_rejected(field: str, number: float) -> None:
    # The CSV path validates Python values, where float("nan") is one cell away.
    obj = {**GOOD, field: {"score": number} if field == "context" else number}
    with pytest.raises(ContractError) as info:
        validate_event(obj)
    assert info.value.code == ("bad_timestamp" if field == "ts" else "bad_value")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_with('"x": "\\ud800"'), id="lone-surrogate"),
        pytest.param(b"\xef\xbb\xbf" + _with('"x": 1'), id="byte-order-mark"),
        pytest.param(_with('"x": [1,]'), id="trailing-comma"),
        pytest.param(_with('"x": 1 // comment'), id="comment"),
        pytest.param(_with("'x': 1"), id="single-quotes"),
        pytest.param(b'{"event_id": "e1"} {"event_id": "e2"}', id="two-documents"),
    ],
)
def test_non_standard_json_is_rejected(raw: bytes) -> None:
    assert _code(raw) == "invalid_json"


def test_item_records_get_the_same_protection() -> None:
    deep = ('{"item_id": "m1", "title": "t", "x": ' + _nested(4_000) + "}").encode()
    assert len(deep) <= MAX_ITEM_BYTES
    for raw, code in [
        (deep, "too_deep"),
        (b'{"item_id": "m1", "title": "t", "created_at": NaN}', "invalid_json"),
        (b"[" * 20_000, "too_deep"),
    ]:
        with pytest.raises(ContractError) as info:
            parse_item(raw)
        assert info.value.code == code


def test_unexpected_exceptions_inside_parsing_or_validation_become_contract_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The defensive nets: whatever a parser or validator raises on content is bad data.
    for exc in (RecursionError("deep"), TypeError("odd"), ValueError("odd")):

        def raising(_: Any, exc: Exception = exc) -> Any:
            raise exc

        with monkeypatch.context() as patch:
            patch.setattr(contract.orjson, "loads", raising)
            assert _code(_raw(GOOD)) == "invalid_json"
        with monkeypatch.context() as patch:
            patch.setattr(Event, "model_validate", raising)
            assert _code(_raw(GOOD)) == "bad_value"


def _accepted_is_well_formed(event: Event) -> None:
    """An accepted event survives everything the worker does with it next."""
    assert parse_event(encode(event)) == event
    event.user_id.encode()  # the key check encodes it; a lone surrogate would raise here
    numbers = [event.value, *(event.context or {}).values()]
    assert all(math.isfinite(n) for n in numbers if isinstance(n, float))
    assert event.ts >= contract_fields.MIN_TS_MS


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_EVENT_BYTES + 64))
def test_arbitrary_bytes_up_to_the_limit_give_an_event_or_a_contract_error(raw: bytes) -> None:
    try:
        _accepted_is_well_formed(parse_event(raw))
    except ContractError as exc:
        assert exc.code in ERROR_CODES


# JSON-ish text: real JSON tokens, the non-standard ones, and unbalanced brackets, in any order.
_TOKENS = ["[", "]", "{", "}", ",", ":", '"a"', '"\\ud800"', '"\\', "1", "-0", "1e999", "NaN"]
_TOKENS += ["Infinity", "-Infinity", "null", "true", " ", GOOD_TEXT, '"context":', '"value":']
jsonish = st.lists(st.sampled_from(_TOKENS), max_size=200).map("".join)


@settings(max_examples=500, deadline=None)
@given(jsonish, st.integers(0, 4_000), st.sampled_from(["[]", "{}"]))
def test_arbitrary_nested_jsonish_text_gives_an_event_or_a_contract_error(
    body: str, depth: int, brackets: str
) -> None:
    opening = ('{"a":' if brackets == "{}" else "[") * depth
    for text in (body, "{" + body + "}", "{" + GOOD_TEXT + ', "x": ' + opening + body):
        raw = (text + "}" * depth if brackets == "{}" else text + "]" * depth).encode()
        try:
            _accepted_is_well_formed(parse_event(raw))
        except ContractError as exc:
            assert exc.code in ERROR_CODES


nested_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "value", "context", "x"]), nested_values))
def test_arbitrary_nested_structures_in_any_field_give_an_event_or_a_contract_error(
    fields: dict[str, Any],
) -> None:
    obj = {**GOOD, **fields}
    for via_json in (False, True):
        try:
            _accepted_is_well_formed(parse_event(_raw(obj)) if via_json else validate_event(obj))
        except ContractError as exc:
            assert exc.code in ERROR_CODES


def test_a_recommendation_encoded_from_its_fields_has_the_records_bytes() -> None:
    """The worker's publishing shortcut against the pydantic record, on fuzzed ids (any
    unicode, quotes, control characters) and floats (any bit pattern, rounded scores)."""
    rng = random.Random(3)

    def text() -> str:
        pools = [(0, 0x7F), (0x80, 0x2FFF), (0x10000, 0x10FFFF), (0x2028, 0x2029), (0, 0x1F)]
        return "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(rng.randint(1, 20)))

    def ident() -> str:  # ids refuse control characters and blanks; other text may hold them
        kept = "".join(c for c in text() if not re.search(contract_fields.CONTROL_CHAR, c))
        return kept if re.search(contract_fields.NOT_BLANK, kept) else kept + "x"

    def number() -> float:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if not math.isfinite(value):
            value = 0.0
        return rng.choice([value, round(rng.random() / 30, 6), 1.0, 1e16, 1e-7, -0.0])

    for _ in range(3_000):
        items = [
            SlateItem(
                item_id=ident(), score=number(), propensity=rng.random() or 1.0, reason=text()
            )
            for _ in range(rng.randint(0, 12))
        ]
        fields: dict[str, Any] = {
            "rec_id": ident(),
            "user_id": ident(),
            "items": items,
            "model_version": text(),
            "policy_version": text(),
            "trigger_event_ids": [ident() for _ in range(rng.randint(1, 3))],
            "created_at": rng.randint(0, 2**62),
            "timing_ms": {text(): number() for _ in range(rng.randint(0, 7))},
        }
        assert encode_recommendation(**fields) == encode(Recommendation(**fields))


def test_schema_registry_framing_is_named_in_the_rejection() -> None:
    # A 0 byte and a 4-byte schema id before the JSON: what Confluent's JSON serializer sends.
    plain = b'{"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": 1}'
    with pytest.raises(ContractError) as framed:
        parse_event(b"\x00\x00\x00\x00\x07" + plain)
    assert framed.value.code == "invalid_json" and "Schema Registry" in framed.value.message
    with pytest.raises(ContractError) as other:
        parse_event(b"\x00garbage")
    assert other.value.code != "invalid_json" or "Schema Registry" not in other.value.message


@pytest.mark.parametrize(
    ("ts", "hint"),
    [
        (NOW_MS * 1000, r"epoch microseconds\? divide by 1000\)"),
        (NOW_MS * 1_000_000, r"epoch nanoseconds\? divide by 1000000\)"),
        (NOW_MS / 1000 + 0.123, r"epoch seconds\? multiply by 1000 and round\)"),  # Java Instant
        (1e23, r"^.*1e\+23 is more than a day in the future$"),  # not 99999999999999991611392
        (NOW_MS + 3 * 86_400_000, r"in the future$"),  # a wrong clock, not a wrong unit
    ],
)
def test_a_timestamp_in_another_unit_says_which(ts: float, hint: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_event(_raw({**GOOD, "ts": ts}))
    assert info.value.code == "bad_timestamp"
    assert re.search(hint, str(info.value).splitlines()[0].split(": ", 1)[-1])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"recId": "r1", "dwellMs": 5}, "`recId` is `rec_id`"),  # optional: was taken as absent
        ({"rec_id": "r1", "dwellMs": 5}, "`dwellMs` is `dwell_ms`"),
        ({"eventId": "e9"}, "`eventId` is `event_id`"),  # required: said missing, not why
        ({"RecId": "r1"}, "`RecId` is `rec_id`"),  # C#, Go
        ({"recID": "r1"}, "`recID` is `rec_id`"),
        ({"RecID": "r1"}, "`RecID` is `rec_id`"),
        ({"REC_ID": "r1"}, "`REC_ID` is `rec_id`"),
        ({"rec-id": "r1"}, "`rec-id` is `rec_id`"),
        ({"recid": "r1"}, "`recid` is `rec_id`"),  # an unquoted SQL column, folded to lower case
        ({"DwellMs": 5}, "`DwellMs` is `dwell_ms`"),
    ],
)
def test_a_field_spelt_in_camel_case_is_rejected_with_its_contract_name(
    change: dict[str, Any], named: str
) -> None:
    obj = {**GOOD, **change}
    if "eventId" in change:
        del obj["event_id"]
    with pytest.raises(ContractError) as info:
        parse_event(_raw(obj))
    assert info.value.code == "misnamed_field"
    assert named in str(info.value) and "snake_case" in str(info.value)


def test_unknown_fields_that_are_not_a_contract_name_are_still_ignored() -> None:
    event = parse_event(_raw({**GOOD, "sessionId": "s1", "Rec_Id": "x", "rEcId": "y"}))
    assert event.rec_id is None
    # both spellings (one object spread into another): the snake_case one is read
    assert parse_event(_raw({**GOOD, "rec_id": "r1", "recId": "r2"})).rec_id == "r1"
    # catalog records are re-read whole at every start: one accepted before stays accepted
    item = parse_item(json.dumps({"item_id": "i1", "title": "t", "createdAt": 5}).encode())
    assert item.created_at is None


@pytest.mark.parametrize("text", ["null", "NULL", "\\N", "undefined", "None", "<nil>", "NaN"])
@pytest.mark.parametrize("field", ["user_id", "item_id", "event_id", "rec_id"])
def test_an_id_that_is_a_missing_value_written_as_text_is_rejected(field: str, text: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_event(_raw({**GOOD, field: text}))
    assert info.value.code == "bad_value"
    assert f"field `{field}`: is '{text}': a missing id written as text" in str(info.value)


def test_an_item_whose_id_is_a_missing_value_written_as_text_is_rejected() -> None:
    with pytest.raises(ContractError, match="field `item_id`: is 'null': a missing id"):
        parse_item(json.dumps({"item_id": "null", "title": "t"}).encode())


def test_ids_that_only_contain_a_null_word_or_are_names_are_good() -> None:
    event = parse_event(_raw({**GOOD, "user_id": "nullable", "item_id": "None of the above"}))
    assert (event.user_id, event.item_id) == ("nullable", "None of the above")
    assert parse_event(_raw({**GOOD, "user_id": "nil", "item_id": "none"})).user_id == "nil"


def test_the_workers_own_slates_may_carry_an_item_accepted_before_the_null_rule() -> None:
    """Statistics and models keep such an item until it ages out: a slate holding it must
    still be a valid record, or a model-mode batch fails whole and is retried."""
    item = SlateItem(item_id="null", score=1.0, propensity=1.0, reason="source:trending")
    assert item.item_id == "null"


def test_an_empty_rec_id_is_an_event_that_answers_no_slate() -> None:
    """Go's zero string: a struct field tagged without omitempty sends "" on every event."""
    assert parse_event(_raw({**GOOD, "rec_id": "", "position": 0})).rec_id is None


def test_a_catalog_item_id_spelt_in_another_case_says_so() -> None:
    for spelling in ("itemId", "ItemID"):
        with pytest.raises(ContractError, match=f"`{spelling}` is `item_id`") as info:
            parse_item(json.dumps({spelling: "i1", "title": "t"}).encode())
        assert info.value.code == "misnamed_field"
    # with item_id present the other spelling is an unknown field, as before
    assert parse_item(json.dumps({"item_id": "i1", "itemId": "x", "title": "t"}).encode())


@pytest.mark.parametrize(
    ("ts", "says"),
    [
        ("0001-01-01T00:00:00Z", "is before 1990-01-01 (a time never set, such as Go's zero"),
        ("9999-01-01T00:00:00Z", "is more than a day in the future"),  # no unit hint for a date
    ],
)
def test_a_date_out_of_range_gets_no_unit_hint(ts: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_event(_raw({**GOOD, "ts": ts}))
    assert info.value.code == "bad_timestamp"
    assert says in str(info.value) and "epoch" not in str(info.value)


def test_every_missing_required_field_is_named_at_once() -> None:
    obj = {k: v for k, v in GOOD.items() if k not in ("user_id", "ts")}
    with pytest.raises(ContractError, match=r"fields `user_id`, `ts` are required") as info:
        parse_event(_raw(obj))
    assert info.value.code == "missing_field"
