"""Events as other Kafka clients publish them, through a real worker: compressed batches,
transactions (committed and aborted), and another partitioner than Kafka's default.

Each of these was found by publishing with confluent-kafka (librdkafka), kafka-python and the
Java client: the worker died on the first snappy/lz4/zstd batch; it applied, rewarded and
listed the records of aborted transactions; and events a librdkafka producer placed with its
default partitioner split users' states across partitions and dropped their rewards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamrec.broker import free_port
from streamrec.settings import KafkaSettings
from streamrec.stream.client import read_slates, response
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Event, Item, Recommendation, encode
from streamrec.stream.producer import kafka_producer, publish
from streamrec.stream.routing import home_partition
from streamrec.stream.testing import (
    WorkerProcess,
    group_caught_up,
    read_topic,
    through_a_worker,
    wait_until,
)
from streamrec.stream.topics import create_topics, worker_app_id

pytestmark = pytest.mark.slow
TS = 1_700_000_000_000


def _event(n: int, user: str, kind: str = "click") -> Event:
    return Event(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n % 37}", type=kind, ts=TS + n)


def _users_on_every_partition(kafka: KafkaSettings, prefix: str) -> list[str]:
    """One user id per events partition, each at home there under the default partitioner."""
    count = kafka.topics.partitions
    by_home: dict[int, str] = {}
    for n in range(1_000):
        by_home.setdefault(home_partition(f"{prefix}{n}".encode(), count), f"{prefix}{n}")
    return [by_home[p] for p in range(count)]


def test_events_compressed_with_every_codec_kafka_producers_use_are_applied(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # Java and librdkafka producers often compress (or the topic's compression.type does).
    codecs = ("gzip", "snappy", "lz4", "zstd")
    good = [_event(n, f"u{n % 20}") for n in range(40 * len(codecs))]
    events = kafka_settings.topics.name("events")

    async def send() -> None:
        for n, codec in enumerate(codecs):
            producer = AIOKafkaProducer(**aiokafka_kwargs(kafka_settings), compression_type=codec)
            await producer.start()
            try:
                batch = good[n :: len(codecs)]
                await asyncio.gather(
                    *[producer.send(events, encode(e), key=e.user_id.encode()) for e in batch]
                )
            finally:
                await producer.stop()

    stats = through_a_worker(kafka_settings, tmp_path / "w", send)
    assert stats["events_accepted"] == len(good) and stats["dead_lettered"] == 0, stats


def test_records_of_aborted_transactions_are_neither_applied_nor_listed(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    events, items = kafka_settings.topics.name("events"), kafka_settings.topics.name("items")
    kept = [_event(n, f"kept{n % 5}", "purchase") for n in range(20)]
    aborted = [_event(n, f"aborted{n % 5}", "purchase") for n in range(20)]
    # plain events last on every partition: the group can then commit each partition's end
    # (a transaction's closing marker is an offset no record is read at)
    plain = [_event(0, user) for user in _users_on_every_partition(kafka_settings, "plain")]

    async def send() -> None:
        producer = AIOKafkaProducer(
            **aiokafka_kwargs(kafka_settings), transactional_id=f"{tmp_path.name}-txn"
        )
        await producer.start()
        try:
            for records, item, commit in ((kept, "listed", True), (aborted, "never", False)):
                await producer.begin_transaction()
                record = Item(item_id=item, title=item)
                await producer.send(items, encode(record), key=item.encode())
                for e in records:
                    await producer.send(events, encode(e), key=e.user_id.encode())
                await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()
        async with kafka_producer(kafka_settings) as plain_producer:
            for e in plain:
                await plain_producer.send(events, encode(e), key=e.user_id.encode())

    stats = through_a_worker(kafka_settings, tmp_path / "w", send)
    assert stats["events_accepted"] == len(kept) + len(plain), stats
    assert stats["users_in_state"] == 5 + len(plain), stats
    assert stats["items_in_catalog"] == 1, "the aborted catalog record is not listed"


def test_events_and_responses_another_partitioner_placed_reach_their_users_partition(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    events = kafka_settings.topics.name("events")
    count = kafka_settings.topics.partitions
    users = [f"p{n}" for n in range(10)]
    views = [_event(n, user, "view") for n, user in enumerate(users)]
    sent_views = {encode(e) for e in views}
    # items to recommend: trending (its board is refreshed once per 200 item deltas)
    others = [_event(n, f"o{n % 7}") for n in range(400)]

    def away(user: str) -> int:  # where a CRC32 partitioner might put the key instead
        return (home_partition(user.encode(), count) + 1) % count

    # A catalog read before the worker is ready: a view answered before the trending board has
    # the others' deltas (they reach it through the item-updates topic) still gets items.
    asyncio.run(create_topics(kafka_settings))
    catalog = [Item(item_id=f"c{n}", title=f"c{n}") for n in range(20)]
    items = kafka_settings.topics.name("items")
    asyncio.run(publish(kafka_settings, catalog, items, progress=False))

    async def send() -> None:
        slates = read_slates(kafka_settings, f"{tmp_path.name}-frontend", from_beginning=True)
        async with kafka_producer(kafka_settings) as producer:
            for e in others:
                await producer.send(events, encode(e), key=e.user_id.encode())
            for e in views:  # misplaced: without forwarding, each user's state splits in two
                key, headers = e.user_id.encode(), [("trace-id", e.event_id.encode())]
                await producer.send(
                    events, encode(e), key=key, partition=away(e.user_id), headers=headers
                )
            latest: dict[str, Recommendation] = {}
            async with asyncio.timeout(90):
                while set(latest) != set(users):
                    slate = await anext(slates)
                    if slate.items and slate.user_id in users:
                        latest[slate.user_id] = slate
            await slates.aclose()
            for user, slate in latest.items():  # clicks from the frontend, misplaced too
                answer = encode(response(slate, 0, "click"))
                await producer.send(events, answer, key=user.encode(), partition=away(user))

    stats = through_a_worker(kafka_settings, tmp_path / "w", send)
    assert stats["events_forwarded"] == 2 * len(users), stats
    copies = asyncio.run(read_topic(kafka_settings, events, len(others) + 4 * len(users)))
    traced = [dict(r.headers).get("trace-id") for r in copies if r.value in sent_views]
    assert len(traced) == 2 * len(users) and all(traced), "forwarded with their headers"
    assert stats["users_in_state"] == len(users) + 7, "one state per user, not two"
    assert stats["feedback"]["rewards_joined"] == len(users), stats["feedback"]


def test_latency_is_measured_from_the_brokers_append_not_a_producers_old_timestamp(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # Backfills (and Kafka Streams apps) set a record's timestamp to the event's own time: a day
    # old here, which read as a p99 event-to-slate latency of 86,400 s.
    events = kafka_settings.topics.name("events")
    day_ago_ms = int(time.time() * 1000) - 86_400_000
    backfill = [_event(n, f"b{n % 6}") for n in range(30)]

    async def send() -> None:
        async with kafka_producer(kafka_settings) as producer:
            for e in backfill:
                key = e.user_id.encode()
                await producer.send(events, encode(e), key=key, timestamp_ms=day_ago_ms)

    stats = through_a_worker(kafka_settings, tmp_path / "w", send)
    assert stats["events_accepted"] == len(backfill)
    assert 0 < stats["latency"]["p99_ms"] < 60_000, stats["latency"]


def test_every_worker_of_the_group_forwards_not_only_its_leader(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # The partition count came from faust's consumer, which knows it on the group's leader
    # only: the other workers applied misplaced events where they landed.
    events = kafka_settings.topics.name("events")
    count = kafka_settings.topics.partitions
    asyncio.run(create_topics(kafka_settings))
    workers = [
        WorkerProcess(kafka_settings, tmp_path / f"w{n}", free_port()).start() for n in (0, 1)
    ]
    try:
        for w in workers:  # both own partitions: the rebalance is over
            wait_until(lambda w=w: bool((w.stats() or {}).get("partitions")), 120, "assignment")
        misplaced = [_event(n, f"m{n % 16}") for n in range(48)]

        async def send() -> None:
            async with kafka_producer(kafka_settings) as producer:
                for e in misplaced:
                    away = (home_partition(e.user_id.encode(), count) + 1) % count
                    await producer.send(events, encode(e), key=e.user_id.encode(), partition=away)

        asyncio.run(send())
        group = worker_app_id(kafka_settings)
        wait_until(lambda: asyncio.run(group_caught_up(kafka_settings, group, events)), 180,
                   "both workers to commit every record", interval_s=2.0)  # fmt: skip
        stats = [w.stats() or {} for w in workers]
    finally:
        for w in workers:
            w.stop()
    figures = [
        {k: s.get(k) for k in ("events_forwarded", "events_accepted", "partitions")} for s in stats
    ]
    assert all(s["events_forwarded"] > 0 for s in stats), figures
    assert sum(s["events_forwarded"] for s in stats) == len(misplaced), figures
    assert sum(s["events_accepted"] for s in stats) == len(misplaced), figures
    assert sum(s["users_in_state"] for s in stats) == 16, "one state per user, not two"
