"""The ordered publisher against an in-memory broker that fails the way the real one does.

The double reproduces what the pinned Kafka did to an idempotent aiokafka producer across an
outage (measured, see stream/delivery.py): records sent while the broker is away wait; when it
returns, the oldest batches of a partition can expire (LeaderNotAvailableError) and that
producer's later records of the partition are then refused (OutOfOrderSequenceNumber), while
other partitions are written. The real-broker version is tests/integration/test_producer_outage.py.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)

from streamrec.errors import DeliveryError
from streamrec.stream.delivery import DeliveryReport, OrderedPublisher, Record

PARTITIONS = 4


def _partition(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


class Broker:
    """Partition logs, an up/down switch, and the failure modes of a returning broker."""

    def __init__(self) -> None:
        self.up = True
        self.hold = False  # records wait although the broker is up (the test settles them)
        self.log: dict[int, list[Record]] = defaultdict(list)
        self.producers: list[Producer] = []
        self.refuse_starts = 0  # start() attempts to refuse even while up
        self.full_buffer_at: set[int] = set()  # record indexes whose first send() raises
        self.fatal_at: int | None = None

    def factory(self) -> Producer:
        producer = Producer(self)
        self.producers.append(producer)
        return producer

    def come_back(self, expire: dict[int, int] | None = None) -> None:
        """Up again; the first ``expire[p]`` records waiting on partition p expire."""
        self.up = True
        for producer in self.producers:
            producer.deliver(expire or {})

    def written(self) -> list[int]:
        return sorted(r.index for records in self.log.values() for r in records)

    def by_key(self) -> dict[bytes, list[int]]:
        keys: dict[bytes, list[int]] = defaultdict(list)
        for records in self.log.values():
            for r in records:
                keys[r.key].append(r.index)
        return keys


class Producer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.waiting: dict[int, list[tuple[Record, asyncio.Future[Any]]]] = defaultdict(list)
        self.spent: set[int] = set()  # partitions where a batch failed: sequence gap
        self.stopped = False

    async def start(self) -> None:
        if not self.broker.up or self.broker.refuse_starts:
            self.broker.refuse_starts = max(0, self.broker.refuse_starts - 1)
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        index = int(value)
        if index in self.broker.full_buffer_at:
            self.broker.full_buffer_at.discard(index)
            raise KafkaTimeoutError()
        if index == self.broker.fatal_at:
            raise TopicAuthorizationFailedError()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[_partition(key)].append((Record(index, key, value), future))
        if self.broker.up and not self.broker.hold:
            asyncio.get_running_loop().call_soon(self.deliver, {})
        return future

    def deliver(self, expire: dict[int, int]) -> None:
        for partition, waiting in self.waiting.items():
            for n, (record, future) in enumerate(waiting):
                if n < expire.get(partition, 0):
                    future.set_exception(LeaderNotAvailableError())
                    self.spent.add(partition)
                elif partition in self.spent:
                    future.set_exception(OutOfOrderSequenceNumber())
                else:
                    self.broker.log[partition].append(record)
                    future.set_result(("metadata", partition))
            waiting.clear()

    async def stop(self) -> None:
        self.stopped = True


def _records(n: int, users: int = 7) -> list[Record]:
    return [Record(i, f"u{i % users}".encode(), str(i).encode()) for i in range(n)]


def _publisher(broker: Broker, max_outage_s: float = 30.0, window: int = 50) -> OrderedPublisher:
    return OrderedPublisher(
        broker.factory, "events", max_outage_s, max_in_flight=window, backoff_s=(0.001, 0.01)
    )


def _run(
    publisher: OrderedPublisher,
    records: list[Record],
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> DeliveryReport:
    async def main() -> DeliveryReport:
        task = asyncio.create_task(publisher.publish(records))
        if during is not None:
            await during()
        return await task

    return asyncio.run(main())


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.001)


def _in_order_once(broker: Broker, records: list[Record]) -> None:
    """Every record written exactly once, and each key's records in their original order."""
    assert broker.written() == [r.index for r in records]
    expected: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        expected[r.key].append(r.index)
    assert broker.by_key() == expected


def test_without_an_outage_everything_is_written_once_in_order() -> None:
    broker = Broker()
    records = _records(500)
    report = _run(_publisher(broker), records)
    _in_order_once(broker, records)
    assert (report.acknowledged, report.resent, report.restarts) == (500, 0, 0)


def test_an_outage_with_expired_batches_is_waited_out_and_nothing_is_lost_or_reordered() -> None:
    broker = Broker()
    records = _records(400)

    async def outage() -> None:
        await _until(lambda: broker.written() != [])
        broker.up = False  # what is sent now waits, as with a stopped broker
        await _until(lambda: sum(len(w) for w in broker.producers[0].waiting.values()) >= 50)
        broker.come_back(expire={0: 3, 2: 1})  # as measured: some expire, the rest is refused

    report = _run(_publisher(broker), records, outage)
    _in_order_once(broker, records)
    assert report.restarts == 1 and report.resent > 0 and report.late == 0
    assert report.acknowledged == len(records)
    assert broker.producers[0].stopped


def test_a_broker_still_away_is_retried_with_backoff_until_it_answers() -> None:
    broker = Broker()
    records = _records(300)

    async def outage() -> None:
        await _until(lambda: broker.written() != [])
        broker.up = False
        await _until(lambda: sum(len(w) for w in broker.producers[0].waiting.values()) >= 50)
        broker.refuse_starts = 5  # the first fresh producers cannot connect
        broker.come_back(expire={1: 50})

    report = _run(_publisher(broker), records, outage)
    _in_order_once(broker, records)
    assert report.restarts == 1  # counted once a fresh producer has started


def test_a_send_refused_for_a_full_buffer_is_sent_again_in_its_place() -> None:
    broker = Broker()
    broker.full_buffer_at = {120}
    records = _records(300)
    report = _run(_publisher(broker), records)
    _in_order_once(broker, records)
    assert report.restarts == 1 and report.resent >= 1


def test_past_the_deadline_it_names_the_first_record_not_acknowledged() -> None:
    broker = Broker()
    records = _records(1000)
    publisher = _publisher(broker, max_outage_s=0.3)

    async def outage() -> None:
        await _until(lambda: len(broker.written()) >= 100)
        broker.up = False  # and never back

    with pytest.raises(DeliveryError, match="no acknowledgement for") as info:
        _run(publisher, records, outage)
    resume = info.value.resume_from
    # Everything before the resume point is written; resuming from it completes the stream
    # with each key still in order (re-sent duplicates only come after their originals).
    assert set(range(resume)) <= set(broker.written()) and resume < len(records)
    broker.up = True
    _run(_publisher(broker), records[resume:])
    for key, indexes in broker.by_key().items():
        assert sorted(set(indexes)) == [r.index for r in records if r.key == key]
        first_seen = list(dict.fromkeys(indexes))
        assert first_seen == sorted(first_seen), f"key {key!r} out of order: {indexes}"


def test_an_error_a_fresh_producer_cannot_fix_stops_at_once() -> None:
    broker = Broker()
    broker.fatal_at = 42
    with pytest.raises(DeliveryError, match="TopicAuthorizationFailedError") as info:
        _run(_publisher(broker), _records(100))
    assert info.value.resume_from <= 42
    assert len(broker.producers) == 1  # no retry


def test_a_record_acknowledged_after_an_earlier_failure_of_its_key_is_reported_late() -> None:
    # The real broker never does this (sequence numbers forbid it); the check must still fire.
    broker = Broker()
    broker.hold = True
    records = [Record(0, b"k", b"0"), Record(1, b"k", b"1")]

    async def a_hole() -> None:
        await _until(lambda: bool(broker.producers) and any(broker.producers[0].waiting.values()))
        waiting = broker.producers[0].waiting[_partition(b"k")]
        await _until(lambda: len(waiting) == 2)
        (_, first), (second, acked) = waiting
        waiting.clear()
        first.set_exception(LeaderNotAvailableError())
        broker.log[_partition(b"k")].append(second)
        acked.set_result("ok")
        broker.hold = False

    report = _run(_publisher(broker), records, a_hole)
    assert report.late == 1
