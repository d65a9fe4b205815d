"""Hostile records through a real worker: dead-lettered with their code, the agent never crashes.

Ten records of a few KB of nested brackets used to make the JSON parser raise RecursionError in
the ingest agent; faust logged ``Crashed reason=...``, restarted the agent about 5 s later
(``Restarting dead ...``) and the record was neither applied nor dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from streamrec.broker import free_port
from streamrec.settings import KafkaSettings
from streamrec.stream.contract import MAX_EVENT_BYTES, Event, encode
from streamrec.stream.producer import kafka_producer
from streamrec.stream.testing import WorkerProcess, group_caught_up, read_topic, wait_until
from streamrec.stream.topics import create_topics

pytestmark = pytest.mark.slow

# What faust's supervisor writes when an agent dies and when it brings it back (mode 0.4).
CRASH_SIGNS = ("Crashed reason=", "Restarting dead")


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
    events = kafka_settings.topics.name("events")
    asyncio.run(create_topics(kafka_settings))

    async def send() -> None:
        async with kafka_producer(kafka_settings) as producer:
            for key, value in stream:
                await producer.send(events, value, key=key)

    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port()).start()
    try:
        wait_until(lambda: worker.stats() is not None, 90, "the worker web server")
        asyncio.run(send())

        def caught_up() -> bool:
            assert worker.alive(), f"worker died:\n{worker.log_tail()}"
            group = f"{kafka_settings.topics.prefix}worker"
            return bool(asyncio.run(group_caught_up(kafka_settings, group, events)))

        wait_until(caught_up, 180, "the worker to commit every event", interval_s=2.0)
        stats = worker.stats() or {}
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    crashes = [line for line in log.splitlines() if any(s in line for s in CRASH_SIGNS)]
    assert crashes == [], "the ingest agent crashed:\n" + "\n".join(crashes[:5])
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
