"""A broker stopped for 20 s under a paced replay, on a private broker (the session one is shared).

What it shows: the publisher waits the outage out (a spent producer is replaced, what it had not
delivered is re-sent in order), every event reaches the topic with each user's events in their
original order, the worker applies each exactly once without crashing, and the worker's log stays
bounded: each repeated warning at most once per ``logs.repeat_interval_s``.

Scaled down to fit a test: the producers' request timeout is 5 s instead of 40 s, so a 20 s
outage outlasts it as the reported 57-72 s ones outlasted the default. Measured on this set-up
with a plain idempotent aiokafka producer (the previous replay tool): 16,019 of 18,045 records
failed (LeaderNotAvailable, then OutOfOrderSequenceNumber). And without the log filter
(interval 0) the worker wrote 63,526 lines in the 26 s from stop to restart.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.settings import KafkaSettings, TopicSettings, default_cache_dir
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Event, encode
from streamrec.stream.delivery import DeliveryReport, OrderedPublisher, Record
from streamrec.stream.testing import CRASH_SIGNS, WorkerProcess, wait_until
from streamrec.stream.topics import create_topics

pytestmark = [pytest.mark.slow, pytest.mark.integration]

OUTAGE_S = 20.0
REPEAT_INTERVAL_S = 5.0
# Enough users that a re-sent duplicate is still among its user's remembered event ids.
EVENTS, USERS = 6_000, 300
_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] \[(\w+)\] (.*)$")
_SUPPRESSED = re.compile(r" \[suppressed \d+ similar in the last \d+ s\]")


def _events() -> list[Event]:
    return [
        Event(
            event_id=f"o-{n}",
            user_id=f"u{n % USERS}",
            item_id=f"i{n % 101}",
            type="click",
            ts=1_700_000_000_000 + n,
        )
        for n in range(EVENTS)
    ]


async def _topic_records(kafka: KafkaSettings, topic: str) -> list[tuple[int, bytes, bytes]]:
    """Every record of ``topic`` as (partition, key, value), each partition in offset order."""
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        got: list[tuple[int, bytes, bytes]] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
        return got
    finally:
        await consumer.stop()


def _warnings_by_template(lines: list[str]) -> Counter[str]:
    """WARNING and worse records, keyed by their message with numbers and the count cut out."""
    counts: Counter[str] = Counter()
    for line in lines:
        match = _RECORD.match(line)
        if match and match.group(1) in ("WARNING", "ERROR", "CRITICAL"):
            counts[re.sub(r"\d+", "N", _SUPPRESSED.sub("", match.group(2)))[:120]] += 1
    return counts


def test_a_broker_outage_under_a_replay_loses_nothing_and_keeps_the_log_bounded(
    tmp_path: Path,
) -> None:
    broker = EmbeddedKafka(None, default_cache_dir(), tmp_path / "broker", port=0)
    broker.start()
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        topics=TopicSettings(prefix="outage.", partitions=4),
    )
    topic = kafka.topics.name("events")
    asyncio.run(create_topics(kafka))
    env = {"STREAMREC_LOGS__REPEAT_INTERVAL_S": str(REPEAT_INTERVAL_S)}
    worker = WorkerProcess(kafka, tmp_path / "w", free_port(), env).start()
    events = _events()
    records = [Record(n, e.user_id.encode(), encode(e)) for n, e in enumerate(events)]
    outcome: list[DeliveryReport | BaseException] = []

    def producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **aiokafka_kwargs(kafka),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=5_000,
        )

    def replay() -> None:
        publisher = OrderedPublisher(producer, topic, max_outage_s=120)
        try:
            outcome.append(asyncio.run(publisher.publish(records, rate=300)))
        except BaseException as exc:  # handed to the test thread, which fails with it
            outcome.append(exc)

    try:
        wait_until(lambda: (worker.stats() or {}).get("partitions"), 120, "worker partitions")
        pid = worker.proc.pid if worker.proc else None
        publisher = threading.Thread(target=replay, daemon=True)
        publisher.start()
        wait_until(
            lambda: (worker.stats() or {}).get("events_accepted", 0) >= 1_000, 60, "first events"
        )
        lines_before = len(worker.log_path.read_text(errors="replace").splitlines())
        broker.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_S)  # the outage itself, not a wait for something to happen
        broker.start()
        outage_s = time.monotonic() - stopped
        outage_lines = worker.log_path.read_text(errors="replace").splitlines()[lines_before:]
        publisher.join(timeout=180)
        assert outcome and isinstance(outcome[0], DeliveryReport), outcome
        report = outcome[0]
        # The outage was felt (a fresh producer took over) and nothing came back out of order.
        assert report.restarts >= 1 and report.late == 0, report
        wait_until(
            lambda: (worker.stats() or {}).get("events_accepted", 0) >= EVENTS,
            180,
            "the worker to apply every event",
            interval_s=2.0,
        )
        stats = worker.stats() or {}
        assert worker.alive() and worker.proc is not None and worker.proc.pid == pid
    finally:
        worker.stop()
        broker_log = asyncio.run(_topic_records(kafka, topic)) if broker.info() else []
        broker.stop()

    crashes = [
        line
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if any(sign in line for sign in CRASH_SIGNS)
    ]
    assert crashes == [], "\n".join(crashes[:5])
    assert stats["events_accepted"] == EVENTS, stats
    # Every event in the topic, each user's first copies in the original order.
    by_user: dict[bytes, list[int]] = defaultdict(list)
    for _, key, value in broker_log:
        by_user[key].append(int(json.loads(value)["event_id"].removeprefix("o-")))
    assert sorted({n for ns in by_user.values() for n in ns}) == list(range(EVENTS))
    for user, ns in by_user.items():
        first = list(dict.fromkeys(ns))
        assert first == sorted(first), f"user {user!r} out of order"
    # The log: each repeated warning at most once per interval (plus the first) during the outage.
    # Rounded up: the test's clock starts the window a moment after the worker's first line, so
    # a window measured at 24.9 s can hold the six lines of 25 s (seen in CI: 6 over a bound of 5).
    bound = math.ceil(outage_s / REPEAT_INTERVAL_S) + 1
    counts = _warnings_by_template(outage_lines)
    over = {template: n for template, n in counts.items() if n > bound}
    assert not over, f"{len(outage_lines)} lines in {outage_s:.0f} s; over {bound}: {over}"
