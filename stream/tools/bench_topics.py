"""Reading ``streamrec bench pipeline``'s topics back: the answers of a system under test (the
worker's slates, or the passthrough's copies) and the record times of the events it was sent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from streamrec.settings import KafkaSettings
from streamrec.stream.connection import topic_reader

Output = tuple[int, list[str], dict[str, float]]


async def collect_answers(
    kafka: KafkaSettings,
    topic: str,
    wanted: set[str],
    kind: str,
    timeout_s: float,
    on_first: Callable[[], object] = lambda: None,
) -> list[Output]:
    """(timestamp_ms, answered ids of ``wanted``, the slate's stage timings in ms) per output
    record, until all are answered; ``on_first`` is called when the first one is."""
    consumer = topic_reader(kafka, topic)
    await consumer.start()
    out: list[Output] = []
    answered = 0
    try:
        deadline = time.monotonic() + timeout_s
        while answered < len(wanted) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    body = json.loads(r.value)
                    ids = body["trigger_event_ids"] if kind == "pipeline" else [body["event_id"]]
                    ids = [i for i in ids if i in wanted]
                    if ids:
                        if not out:
                            on_first()
                        out.append((r.timestamp, ids, body.get("timing_ms", {})))
                        answered += len(ids)
        return out
    finally:
        await consumer.stop()


async def input_times(kafka: KafkaSettings, n: int) -> dict[str, int]:
    """event_id -> record timestamp (ms) of the published events."""
    consumer = topic_reader(kafka, kafka.topics.name("events"))
    await consumer.start()
    times: dict[str, int] = {}
    try:
        async with asyncio.timeout(120):
            while len(times) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        times[json.loads(r.value)["event_id"]] = r.timestamp
        return times
    finally:
        await consumer.stop()
