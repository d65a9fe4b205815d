"""The wire contract: behaviour events, catalog items, recommendations and dead-letter records.

All four are JSON objects carrying ``"v": 1`` (schema version). Unknown fields are ignored, so a
producer may add fields early (an event's contract field spelt in camelCase or another case is not
unknown but ``misnamed_field``: ``Event``); a ``v`` this code does not know is
``unsupported_version``.

Validation never raises anything but ``ContractError``; its ``code`` is one of ``ERROR_CODES``,
stable across releases, and is what the dead-letter topic and the rejection metrics carry. Records
come from anyone who can write to a topic, so the parser is hostile-input safe: only standard
JSON is accepted (orjson: no ``NaN``/``Infinity``, no lone surrogates, no trailing commas), nesting
deeper than ``MAX_DEPTH`` is rejected *before* parsing (deep nesting is what made Python's
parser raise ``RecursionError`` and crash the ingest agent), and any other exception from parsing
or validation is turned into a ``ContractError`` rather than left to reach faust.

What an id, a timestamp and the schema version may be: stream/contract_fields.py; bytes to a
JSON object within these bounds: stream/json_object.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streamrec.errors import ContractError
from streamrec.stream.contract_fields import (
    SCHEMA_VERSION,
    Identifier,
    InputId,
    TimestampMs,
    Version,
    WholeNumber,
    camel_aliases,
    forbid_camel_case,
    reject_camel_case,
)
from streamrec.stream.json_object import MAX_DEPTH, decode_object

MAX_EVENT_BYTES = 16 * 1024
MAX_ITEM_BYTES = 64 * 1024
MAX_CONTEXT_KEYS = 32
# What a dead letter keeps of a rejected record. Its value goes out base64 (4/3 larger) with the
# key, so these keep it far below the producer's 1 MiB request limit, which a record the broker
# accepted (its own limit is also about 1 MiB) would otherwise exceed and crash the agent with.
DEAD_LETTER_ORIGINAL_BYTES = MAX_ITEM_BYTES  # every record under a size limit is kept whole
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_MESSAGE_CHARS = 2000

EventType = Literal["view", "click", "add_to_cart", "purchase", "dwell", "rating"]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]  # Literal args

ERROR_CODES: dict[str, str] = {
    "not_utf8": "the record is not UTF-8 text",
    "invalid_json": "the record is not valid, standard JSON (NaN and Infinity are not JSON)",
    "too_deep": f"arrays/objects are nested deeper than {MAX_DEPTH} levels",
    "not_an_object": "the record is JSON but not an object",
    "too_large": "the record exceeds the size limit",
    "unsupported_version": "the schema version is newer than this worker understands",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type",
    "unknown_event_type": "`type` is not one of the known event types",
    "bad_timestamp": "a timestamp is not epoch ms or ISO-8601 with a zone, or is out of range",
    "bad_value": "a field's value is out of its allowed range or length",
    "bad_key": "the record key differs from the user_id (events) or item_id (items) it must equal",
    "misnamed_field": "a field is spelt in camelCase or another case (recId, RecID, REC_ID): the "
    "contract's names are snake_case",
}


ContextValue = str | int | float | bool


class _Record(BaseModel):
    # allow_inf_nan=False: records built from Python values (CSV cells, ``float("nan")``) must
    # not carry what the JSON path cannot; NaN would also poison every sum it reaches.
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, allow_inf_nan=False)


_R = TypeVar("_R", bound=_Record)


def _event_schema(schema: dict[str, Any]) -> None:
    forbid_camel_case(schema, _EVENT_ALIASES)
    schema["properties"]["rec_id"]["anyOf"].append({"const": ""})  # as absent: Event._no_slate


def _item_schema(schema: dict[str, Any]) -> None:
    forbid_camel_case(schema, _ITEM_ALIASES)


class Event(_Record):
    """A behaviour event. Key on the topic: ``user_id``. A field spelt in camelCase (``recId``)
    or another client's case (``contract_fields.camel_aliases``) without its snake_case twin is
    refused (``misnamed_field``)."""

    # Every field for events; for catalog records only the required ``item_id`` (Item): they
    # are re-read whole from a compacted topic at every start, and an item once accepted with
    # ``createdAt`` must not vanish after an upgrade.
    model_config = ConfigDict(json_schema_extra=_event_schema)

    v: Version = SCHEMA_VERSION
    event_id: InputId
    user_id: InputId
    item_id: InputId
    type: EventType
    ts: TimestampMs = Field(description="Event time, epoch milliseconds.")
    dwell_ms: Annotated[int, Field(ge=0, le=86_400_000), WholeNumber] | None = None
    value: float | None = Field(None, description="Rating or other numeric payload.")
    rec_id: InputId | None = Field(None, description="Set when responding to a slate.")
    position: Annotated[int, Field(ge=0, le=1000), WholeNumber] | None = None
    # A null value is in the schema (and dropped here): it says the producer does not know it,
    # and refusing the whole event for it lost a good event.
    context: dict[str, ContextValue | None] | None = None

    @field_validator("context")
    @classmethod
    def _bounded_context(
        cls, value: dict[str, ContextValue | None] | None
    ) -> dict[str, ContextValue | None] | None:
        if value is not None and len(value) > MAX_CONTEXT_KEYS:
            raise PydanticCustomError(
                "bad_value",
                "has {n} keys; at most {m} allowed",
                {"n": len(value), "m": MAX_CONTEXT_KEYS},
            )
        known: dict[str, ContextValue | None] = {
            k: v for k, v in (value or {}).items() if v is not None
        }
        return known or None

    @field_validator("rec_id", mode="before")
    @classmethod
    def _no_slate(cls, value: Any) -> Any:
        # An empty rec_id is what a Go struct field without omitempty sends for an event that
        # answers no slate: refusing it lost every ordinary event of such a producer.
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _snake_case_names(cls, data: Any) -> Any:
        return reject_camel_case(data, _EVENT_ALIASES)


_EVENT_ALIASES = camel_aliases(Event.model_fields)


class Item(_Record):
    """A catalog record. Key on the compacted ``items`` topic: ``item_id``, which spelt
    ``itemId`` (or another client's case) is ``misnamed_field``, not ``missing_field``."""

    model_config = ConfigDict(json_schema_extra=_item_schema)

    v: Version = SCHEMA_VERSION
    item_id: InputId
    title: Annotated[str, Field(min_length=1, max_length=512)]
    text: Annotated[str, Field(max_length=8192)] = ""
    categories: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=32)] = []
    created_at: TimestampMs | None = None
    active: bool = True

    @model_validator(mode="before")
    @classmethod
    def _snake_case_id(cls, data: Any) -> Any:
        return reject_camel_case(data, _ITEM_ALIASES)


_ITEM_ALIASES = camel_aliases(["item_id"])  # the one field whose absence refuses a record


class SlateItem(_Record):
    item_id: Identifier
    score: float
    propensity: Annotated[float, Field(gt=0.0, le=1.0)]
    reason: str


class Recommendation(_Record):
    """A published slate. Key on the ``recommendations`` topic: ``user_id``."""

    v: Version = SCHEMA_VERSION
    rec_id: Identifier
    user_id: Identifier
    items: list[SlateItem]
    model_version: str
    policy_version: str
    trigger_event_ids: Annotated[list[str], Field(min_length=1)]
    created_at: int = Field(description="Publication time, epoch milliseconds.")
    timing_ms: dict[str, float] = Field(description="Stage name to milliseconds spent.")


class DeadLetter(_Record):
    """A rejected record with its coordinates. Key: the original key."""

    v: Version = SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    error_code: str
    error_message: str
    original_b64: str = Field(
        description=f"The original value bytes, base64: the first {DEAD_LETTER_ORIGINAL_BYTES} "
        "when it was longer (see original_size)."
    )
    original_size: int | None = Field(
        default=None,
        description="Length of the original value in bytes; absent in records of older workers.",
    )
    failed_at: int = Field(description="Epoch milliseconds.")

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)


class ModelAnnouncement(_Record):
    """On the ``control`` topic: every worker switches to this checkpoint (hot swap)."""

    v: Version = SCHEMA_VERSION
    type: Literal["model"] = "model"
    model_version: str
    checkpoint: str = Field(description="Checkpoint folder readable by every worker.")
    announced_at: int = Field(description="Epoch milliseconds.")


_JSON_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
_PYDANTIC_CODES = {
    "missing": "missing_field",
    "literal_error": "bad_value",
    "extra_forbidden": "bad_value",
}


def _code_and_message(exc: ValidationError) -> tuple[str, str]:
    """First error of a pydantic failure as (stable code, message naming the field)."""
    errors = exc.errors(include_url=False)
    # A non-finite number in a union field (context values) fails every member; the string
    # member's complaint would hide the real reason.
    err = next((e for e in errors if e["type"] == "finite_number"), errors[0])
    field = ".".join(str(p) for p in err["loc"]) or "record"
    kind = err["type"]
    if err["loc"][:1] == ("context",) and len(err["loc"]) == 3 and kind != "finite_number":
        # the value failed each member of the union: name the union, not its string member
        got = _JSON_TYPES.get(type(err["input"]), type(err["input"]).__name__)
        key = f"context.{err['loc'][1]}"
        return (
            "wrong_type",
            f"field `{key}`: a context value is a string, number or boolean; got {got}",
        )
    if kind in ERROR_CODES:
        code = kind
    elif field == "type" and kind == "literal_error":
        code = "unknown_event_type"
    elif kind in _PYDANTIC_CODES:
        code = _PYDANTIC_CODES[kind]
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        code = "wrong_type"
    else:
        code = "bad_value"
    if code == "missing_field":  # every one at once: a client fixing them one by one is slow
        missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
        if len(missing) > 1:
            return code, f"fields {', '.join(f'`{m}`' for m in missing)} are required"
        return code, f"field `{field}` is required"
    if code == "misnamed_field":
        return code, err["msg"]
    if code == "unknown_event_type":
        return code, f"field `type` must be one of {', '.join(EVENT_TYPES)}; got {err['input']!r}"[
            :300
        ]
    return code, f"field `{field}`: {err['msg']}"[:300]


def _validate(model: type[_R], obj: dict[str, Any]) -> _R:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ContractError(*_code_and_message(exc)) from None
    except (RecursionError, ValueError, TypeError, ArithmeticError) as exc:
        # A validator that raised something pydantic does not convert (an OverflowError from a
        # date, say); the record is still bad data, not a reason to crash the agent.
        raise ContractError(
            "bad_value", f"record rejected: {type(exc).__name__}: {exc}"[:300]
        ) from None


def validate_event(obj: dict[str, Any]) -> Event:
    """Validate a decoded event object; raises ContractError with a stable code."""
    return _validate(Event, obj)


def parse_event(raw: bytes) -> Event:
    """Bytes of one ``events`` record -> Event; raises ContractError with a stable code."""
    return validate_event(decode_object(raw, MAX_EVENT_BYTES))


def validate_item(obj: dict[str, Any]) -> Item:
    """Validate a decoded catalog object; raises ContractError with a stable code."""
    return _validate(Item, obj)


def parse_item(raw: bytes) -> Item:
    """Bytes of one ``items`` record -> Item; raises ContractError with a stable code."""
    return validate_item(decode_object(raw, MAX_ITEM_BYTES))


def encode(record: BaseModel) -> bytes:
    """Compact JSON bytes of any contract record (``None`` fields left out)."""
    return record.model_dump_json(exclude_none=True).encode()


def encode_recommendation(
    rec_id: str,
    user_id: str,
    items: Sequence[SlateItem],
    model_version: str,
    policy_version: str,
    trigger_event_ids: list[str],
    created_at: int,
    timing_ms: dict[str, float],
) -> bytes:
    """``encode(Recommendation(...))`` of these fields, byte for byte (a test fuzzes them), in
    1.7 us instead of 20: the fields are the worker's own builders', so none is validated."""
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "rec_id": rec_id,
            "user_id": user_id,
            "items": [
                {
                    "item_id": i.item_id,
                    "score": i.score,
                    "propensity": i.propensity,
                    "reason": i.reason,
                }
                for i in items
            ],
            "model_version": model_version,
            "policy_version": policy_version,
            "trigger_event_ids": trigger_event_ids,
            "created_at": created_at,
            "timing_ms": timing_ms,
        }
    )


def dead_letter(
    raw: bytes, error: ContractError, topic: str, partition: int, offset: int
) -> DeadLetter:
    """The dead-letter record for ``raw`` rejected with ``error`` at topic/partition/offset."""
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        error_code=error.code,
        error_message=error.message[:DEAD_LETTER_MESSAGE_CHARS],
        original_b64=base64.b64encode(raw[:DEAD_LETTER_ORIGINAL_BYTES]).decode(),
        original_size=len(raw),
        failed_at=int(time.time() * 1000),
    )
