"""The contract's field types: what an id, a timestamp and a schema version may be.

Timestamps are accepted as epoch milliseconds (int) or ISO-8601 strings with a zone (``Z`` or
``+01:00``) and stored as epoch milliseconds. Epoch *seconds* are rejected on purpose: a value
below 10^11 is ambiguous and is the commonest producer bug.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Literal[1] = 1
MAX_ID_CHARS = 128
# Earliest plausible event time (1990-01-01) and allowed producer clock skew into the future.
MIN_TS_MS = 631_152_000_000
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
# An id holds one character that is not whitespace. The class is spelled out so that Python's
# re (the worker), JavaScript regexes (JSON Schema validators) and Rust's regex agree on it:
# their \s differ on U+001C-U+001F, U+0085 and U+FEFF. Zero-width spaces and joiners count as
# blank too: an id of only those looks empty everywhere it is shown.
NOT_BLANK = r"[^\s\u001c-\u001f\u0085\ufeff\u200b-\u200d\u2060]"
_NOT_BLANK = re.compile(NOT_BLANK)
# No control characters (C0, DEL, C1) nor line or paragraph separators: a tab or a line break in
# an id breaks every tab- or line-separated file the id reaches (the trainer's training files,
# logs, CSV exports), and Python's splitlines() also breaks lines at U+0085, U+2028 and U+2029.
# In the JSON Schema as "not" this pattern: an anchored "^[^...]*$" would let a trailing newline
# through Python's re, whose $ also matches before a final newline.
CONTROL_CHAR = r"[\u0000-\u001f\u007f-\u009f\u2028\u2029]"
_CONTROL = re.compile(CONTROL_CHAR)
# What a missing value becomes when a client turns it into text: Java's String.valueOf(null)
# and JavaScript's String(null), SQL exports (NULL; MySQL's \N), JavaScript's String(undefined),
# Python's str(None), Go's "%v" of nil, NaN and nan from a float id column (JavaScript, pandas).
# As an id it would be one user (or item) that every broken record joins. Exact spellings only:
# "none" or "nil" may be someone's name.
NULL_TEXTS = ("null", "NULL", "\\N", "undefined", "None", "<nil>", "NaN", "nan")


def _parse_ts(value: Any) -> int:
    """Epoch ms from an int (ms) or an ISO-8601 string with a zone; range-checked."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError(  # a JSON true, null, list or object: not a time at all
            "wrong_type",
            "must be epoch milliseconds or ISO-8601, got {got}",
            {"got": repr(value)[:40]},
        )
    if isinstance(value, int):
        ts = value
    elif isinstance(value, float) and value.is_integer():
        ts = int(value)
    elif isinstance(value, str):
        ts = _parse_iso(value)
    else:
        raise PydanticCustomError(
            "bad_timestamp",
            "must be whole epoch milliseconds or ISO-8601, got {got}{hint}",
            {
                "got": repr(value)[:40],
                "hint": _unit_hint(value * 1000, "epoch seconds? multiply by 1000 and round"),
            },
        )
    # a float as parsed (1e+23), not the integer it rounds to (99999999999999991611392)
    shown = repr(value)[:40] if isinstance(value, float) else ts
    if ts < MIN_TS_MS and isinstance(value, str):  # a unit hint would be wrong for a date
        raise PydanticCustomError(
            "bad_timestamp",
            "{got} is before 1990-01-01 (a time never set, such as Go's zero time.Time?)",
            {"got": repr(value)[:40]},
        )
    if ts < MIN_TS_MS:
        raise PydanticCustomError(
            "bad_timestamp",
            "{ts} is before 1990-01-01 in epoch milliseconds (epoch seconds? multiply by 1000)",
            {"ts": shown},
        )
    if ts > int(time.time() * 1000) + MAX_FUTURE_SKEW_MS:
        hint = "" if isinstance(value, str) else _too_large_hint(ts)
        raise PydanticCustomError(
            "bad_timestamp",
            "{ts} is more than a day in the future{hint}",
            {"ts": shown, "hint": hint},
        )
    return ts


def _too_large_hint(ts: int) -> str:
    return _unit_hint(ts // 1000, "epoch microseconds? divide by 1000") or _unit_hint(
        ts // 1_000_000, "epoch nanoseconds? divide by 1000000"
    )


def _unit_hint(as_ms: float, advice: str) -> str:
    """`` (<advice>)`` when ``as_ms``, the value read in the unit the advice names, is a
    plausible time: Java's Instant written as seconds with a fraction, or microsecond and
    nanosecond clocks, the commonest producer bugs after epoch seconds."""
    plausible = MIN_TS_MS <= as_ms <= time.time() * 1000 + MAX_FUTURE_SKEW_MS
    return f" ({advice})" if plausible else ""


def camel_aliases(fields: Iterable[str]) -> dict[str, str]:
    """Other spellings -> field, for the ``fields`` whose snake_case names have a ``_``: what
    clients' serialisers write by default. camelCase (a Java bean, JavaScript: ``recId``), with
    the id in capitals (``recID``), PascalCase (C#, Go: ``RecId``, ``RecID``), all capitals
    (``REC_ID``), kebab-case (``rec-id``) and run together (``recid``: an unquoted SQL column
    name, which the database folds to lower case). A finite list, so the JSON Schema can say
    the same."""
    aliases: dict[str, str] = {}
    for field in (f for f in fields if "_" in f):
        words = field.split("_")
        camel = words[0] + "".join(w.capitalize() for w in words[1:])
        pascal = camel[0].upper() + camel[1:]
        spellings = {camel, pascal, field.upper(), field.replace("_", "-"), "".join(words)}
        if words[-1] == "id":
            spellings |= {camel[:-2] + "ID", pascal[:-2] + "ID"}
        aliases.update(dict.fromkeys(spellings, field))
    return aliases


def reject_camel_case(data: Any, aliases: Mapping[str, str]) -> Any:
    """``data`` unless it spells a field in camelCase (``recId``) and lacks its snake_case name.
    Unknown fields are ignored, so a Java or JavaScript client's default spelling of an
    optional field was taken as absent and dropped without a trace (a new-user pass lost every
    click's ``recId``, and with it the reward); a required one was reported missing without
    saying why. A record with both spellings (one object spread into another) is good."""
    if isinstance(data, dict) and not aliases.keys().isdisjoint(data):
        for key in data:
            if key in aliases and aliases[key] not in data:
                raise PydanticCustomError(
                    "misnamed_field",
                    "field `{got}` is `{field}` in the contract, whose names are snake_case",
                    {"got": key, "field": aliases[key]},
                )
    return data


def forbid_camel_case(schema: dict[str, Any], aliases: Mapping[str, str]) -> None:
    """The JSON Schema half of ``reject_camel_case``: validators of other languages agree."""
    schema["not"] = {
        "anyOf": [
            {"required": [alias], "not": {"required": [aliases[alias]]}}
            for alias in sorted(aliases)
        ]
    }


def _parse_iso(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PydanticCustomError(
            "bad_timestamp",
            "must be epoch milliseconds or ISO-8601, got {got}{hint}",
            {"got": repr(value[:40]), "hint": _digits_hint(value)},
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "bad_timestamp", "ISO-8601 time {got} has no zone", {"got": value[:40]}
        )
    return int(parsed.timestamp() * 1000)


def _check_version(value: Any) -> Any:
    value = _whole(value)  # 1.0 is the integer 1 in JSON Schema, and many writers emit it
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError(
            "wrong_type",
            "must be the JSON integer {s}, got {got}",
            {"s": SCHEMA_VERSION, "got": repr(value)[:40]},
        )
    if value > SCHEMA_VERSION:
        raise PydanticCustomError(
            "unsupported_version",
            "schema version {v} is newer than the supported {s}",
            {"v": value, "s": SCHEMA_VERSION},
        )
    return value


def _check_id(value: str) -> str:
    if _NOT_BLANK.search(value) is None:
        raise PydanticCustomError("bad_value", "is blank (only whitespace)")
    control = _CONTROL.search(value)
    if control is not None:
        raise PydanticCustomError(
            "bad_value", "contains the control character {c}", {"c": repr(control.group())}
        )
    return value


def _check_input_id(value: str) -> str:
    if value in NULL_TEXTS:
        raise PydanticCustomError(
            "bad_value",
            "is '{got}': a missing id written as text (String.valueOf(null), str(None)); "
            "send the record once it has its id",
            {"got": value},
        )
    return _check_id(value)


def _whole(value: Any) -> Any:
    """A float with no fraction as the int it is: JSON Schema's ``integer`` takes 5300.0 (and
    many producers' JSON writers emit it), so the worker must too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _digits_hint(value: str) -> str:
    digits = value.isascii() and value.isdigit()
    return " (send epoch milliseconds as a JSON number, not a string)" if digits else ""


WholeNumber = BeforeValidator(_whole)
# ge= only puts the floor into the JSON Schema: _parse_ts has checked it, with a clearer message.
TimestampMs = Annotated[int, Field(ge=MIN_TS_MS), BeforeValidator(_parse_ts)]
_ID_RULES: list[dict[str, Any]] = [{"pattern": NOT_BLANK}, {"not": {"pattern": CONTROL_CHAR}}]
# An id of the worker's own records (slates): checked as the records it reads are, except for
# NULL_TEXTS, which an item accepted before that rule may still carry in the statistics.
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS, json_schema_extra={"allOf": _ID_RULES}),
    AfterValidator(_check_id),
]
# An id of a record producers send (events, catalog items).
InputId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        json_schema_extra={"allOf": [*_ID_RULES, {"not": {"enum": list(NULL_TEXTS)}}]},
    ),
    AfterValidator(_check_input_id),
]
Version = Annotated[Literal[1], BeforeValidator(_check_version)]
