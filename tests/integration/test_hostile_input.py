"""Hostile records through a real worker: dead-lettered with their code, the agent never crashes.

Ten records of a few KB of nested brackets used to make the JSON parser raise RecursionError in
the ingest agent; faust logged ``Crashed reason=...``, restarted the agent about 5 s later
(``Restarting dead ...``) and the record was neither applied nor dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from streamrec.settings import KafkaSettings
from streamrec.stream.contract import MAX_EVENT_BYTES, Event, encode
from streamrec.stream.producer import kafka_producer
from streamrec.stream.testing import read_topic, through_a_worker

pytestmark = pytest.mark.slow


def _deep(n: int) -> bytes:
    """Nested arrays or objects, 1,200-2,100 levels (Python's parser gives up near 1,000):
    2-13 KB, under the size limit."""
    depth = 1_200 + 100 * n
    if n % 2:
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    return b"[" * depth + b"]" * depth


def _good(n: int) -> Event:
    return Event(
        event_id=f"good-{n}",
        user_id=f"u{n % 20}",
        item_id=f"i{n % 37}",
        type="click",
        ts=1_700_000_000_000 + n * 1000,
    )


def _non_finite(literal: str) -> bytes:
    body = json.dumps({"event_id": f"nf-{literal}", "user_id": "u1", "item_id": "i1"})[1:-1]
    return (
        "{" + body + f', "type": "rating", "ts": 1700000000000, "value": {literal}' + "}"
    ).encode()


def test_deeply_nested_records_are_dead_lettered_and_the_agent_never_restarts(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    good = [_good(n) for n in range(300)]
    deep = [_deep(n) for n in range(10)]
    non_finite = [_non_finite(x) for x in ("NaN", "Infinity", "-Infinity")]
    assert all(len(raw) <= MAX_EVENT_BYTES for raw in deep)
    # Hostile records spread among the good ones, on the keys of users with good events.
    stream: list[tuple[bytes, bytes]] = [(e.user_id.encode(), encode(e)) for e in good]
    for n, raw in enumerate(deep):
        stream.insert(20 + n * 21, (f"u{n % 20}".encode(), raw))
    for n, raw in enumerate(non_finite):  # keyed as they should be, so only the value is wrong
        stream.insert(30 + n * 50, (b"u1", raw))
    stats = _through_a_worker(kafka_settings, tmp_path, stream)
    assert stats["events_accepted"] == len(good), stats
    assert stats["dead_lettered"] == len(deep) + len(non_finite), stats

    letters = asyncio.run(
        read_topic(kafka_settings, kafka_settings.topics.name("deadletter"), 13, timeout_s=30)
    )
    code_of = {
        base64.b64decode(body["original_b64"]): body["error_code"]
        for body in (json.loads(r.value) for r in letters)
    }
    assert {code_of.get(raw) for raw in deep} == {"too_deep"}
    assert {code_of.get(raw) for raw in non_finite} == {"invalid_json"}


def test_records_near_the_brokers_size_limit_are_dead_lettered_and_the_agent_never_restarts(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # The broker takes records up to about 1 MiB, as does the worker's producer: a dead letter
    # carrying such a record whole (base64, its key quoted in the message) failed to send and
    # crashed the agent, the record neither applied nor dead-lettered.
    good = [_good(n) for n in range(40)]
    huge_value = b"x" * 1_000_000
    long_key = b"K" * 600_000
    stream: list[tuple[bytes, bytes]] = [(e.user_id.encode(), encode(e)) for e in good]
    stream.insert(10, (b"u1", huge_value))
    stream.insert(20, (long_key, encode(_good(999))))
    stats = _through_a_worker(kafka_settings, tmp_path, stream)
    assert stats["events_accepted"] == len(good) and stats["dead_lettered"] == 2, stats
    letters = asyncio.run(
        read_topic(kafka_settings, kafka_settings.topics.name("deadletter"), 2, timeout_s=30)
    )
    bodies = sorted((json.loads(r.value) for r in letters), key=lambda b: b["error_code"])
    assert [(b["error_code"], b["original_size"]) for b in bodies] == [
        ("bad_key", len(encode(_good(999)))),
        ("too_large", len(huge_value)),
    ]


def _corpus() -> list[tuple[str, bytes, str]]:
    """(kind, record, the code it must be dead-lettered with): 48 kinds of hostile or broken
    events, from bytes that are not text to well-formed JSON with one field out of contract."""
    now = int(time.time() * 1000)
    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": now - 1000}
    fields = json.dumps(good)[1:-1]

    def with_(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    def without(name: str) -> bytes:
        return json.dumps({k: v for k, v in good.items() if k != name}).encode()

    def spliced(extra: str) -> bytes:  # a field only a lenient parser would take
        return ("{" + fields + ", " + extra + "}").encode()

    whole = json.dumps(good).encode()
    return [
        ("not utf-8", b"\xff\xfe\x00", "not_utf8"),
        ("truncated", b'{"event_id": ', "invalid_json"),
        ("empty", b"", "invalid_json"),
        ("blank", b"   ", "invalid_json"),
        ("trailing garbage", whole + b" xyz", "invalid_json"),
        ("single quotes", b"{'event_id': 'e1'}", "invalid_json"),
        ("byte order mark", b"\xef\xbb\xbf" + whole, "invalid_json"),
        ("NUL between tokens", whole[:-1] + b"\x00}", "invalid_json"),
        (
            "lone surrogate",
            ("{" + fields.replace('"u1"', '"\\ud800"') + "}").encode(),
            "invalid_json",
        ),
        ("NaN", spliced('"value": NaN'), "invalid_json"),
        ("Infinity", spliced('"value": Infinity'), "invalid_json"),
        ("-Infinity", spliced('"value": -Infinity'), "invalid_json"),
        ("a string", b'"just a string"', "not_an_object"),
        ("an array", b"[1, 2]", "not_an_object"),
        ("a number", b"42", "not_an_object"),
        ("null", b"null", "not_an_object"),
        ("true", b"true", "not_an_object"),
        ("nested arrays", b"[" * 1_500 + b"]" * 1_500, "too_deep"),
        ("nested objects", ('{"a":' * 1_500 + "1" + "}" * 1_500).encode(), "too_deep"),
        ("over the size limit", with_(item_id="x" * (MAX_EVENT_BYTES + 1)), "too_large"),
        *((f"no {name}", without(name), "missing_field") for name in good),
        ("unknown type", with_(type="teleport"), "unknown_event_type"),
        ("type a number", with_(type=3), "unknown_event_type"),
        ("ts in words", with_(ts="yesterday"), "bad_timestamp"),
        ("ts without zone", with_(ts="2023-11-14T22:13:20"), "bad_timestamp"),
        ("ts in seconds", with_(ts=881_250_949), "bad_timestamp"),
        ("ts days ahead", with_(ts=now + 3 * 86_400_000), "bad_timestamp"),
        ("ts a boolean", with_(ts=True), "wrong_type"),
        ("ts negative", with_(ts=-5), "bad_timestamp"),
        ("ts of 31 digits", with_(ts=10**30), "bad_timestamp"),
        ("ts with a fraction", with_(ts=now - 999.5), "bad_timestamp"),
        ("user id a number", with_(user_id=7), "wrong_type"),
        ("event id a list", with_(event_id=["a"]), "wrong_type"),
        ("item id an object", with_(item_id={"a": 1}), "wrong_type"),
        ("position a string", with_(position="3"), "wrong_type"),
        ("value a string", with_(value="5"), "wrong_type"),
        ("context nested", with_(context={"a": {"b": 1}}), "wrong_type"),
        ("user id empty", with_(user_id=""), "bad_value"),
        ("user id 300 chars", with_(user_id="u" * 300), "bad_value"),
        ("dwell negative", with_(dwell_ms=-1), "bad_value"),
        ("dwell over a day", with_(dwell_ms=86_400_001), "bad_value"),
        ("position over 1000", with_(position=1_001), "bad_value"),
        ("40 context keys", with_(context={f"k{i}": i for i in range(40)}), "bad_value"),
        ("schema version 2", with_(v=2), "unsupported_version"),
    ]


def test_a_corpus_of_48_hostile_kinds_is_dead_lettered_by_code_and_nothing_good_is_lost(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    corpus = _corpus()
    assert len(corpus) == 48 and len({kind for kind, _, _ in corpus}) == 48
    good = [_good(n) for n in range(200)]
    stream: list[tuple[bytes, bytes]] = [(e.user_id.encode(), encode(e)) for e in good]
    for n, (_, raw, _) in enumerate(corpus):
        stream.insert(3 + n * 4, (b"u1", raw))
    stats = _through_a_worker(kafka_settings, tmp_path, stream)
    assert stats["events_accepted"] == len(good) and stats["dead_lettered"] == len(corpus), stats
    letters = asyncio.run(read_topic(kafka_settings, kafka_settings.topics.name("deadletter"),
                                     len(corpus), timeout_s=30))  # fmt: skip
    code_of = {
        base64.b64decode(body["original_b64"]): body["error_code"]
        for body in (json.loads(r.value) for r in letters)
    }
    wrong = {kind: code_of.get(raw) for kind, raw, code in corpus if code_of.get(raw) != code}
    assert wrong == {}, wrong


def _through_a_worker(
    kafka_settings: KafkaSettings, tmp_path: Path, stream: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    async def send() -> None:
        async with kafka_producer(kafka_settings) as producer:
            for key, value in stream:
                await producer.send(kafka_settings.topics.name("events"), value, key=key)

    return through_a_worker(kafka_settings, tmp_path / "w", send)
