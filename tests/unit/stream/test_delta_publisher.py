"""The item-updates publisher: deltas gathered per events partition, sent in offset order, and
nothing acknowledged before it is sent; the follower reads batched and single-delta records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from streamrec.settings import Settings
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.item_updates import DeltaFollower, DeltaPublisher


class Topic:
    """Records as sent, each acknowledged when the test says so."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, list[Any]]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        await asyncio.sleep(0)  # a real send yields to the loop: other publishes interleave
        self.records.append((key, json.loads(value)))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    def offsets(self, partition: int) -> list[int]:
        key = str(partition).encode()
        return [row[5] for k, rows in self.records if k == key for row in rows]


def _delta(partition: int, offset: int) -> ItemDelta:
    return ItemDelta(
        f"i{offset % 7}", (f"i{offset % 5}",), 1_000 + offset, 1.0, (partition, offset)
    )


def test_deltas_of_a_partition_leave_as_one_record_after_the_linger() -> None:
    async def run() -> Topic:
        topic = Topic()
        publisher = DeltaPublisher(topic.send, linger_s=0.01, batch=100)
        for offset in range(5):
            await publisher.publish(_delta(0, offset))
            await publisher.publish(_delta(1, offset))
        assert topic.records == []  # still lingering
        while len(topic.records) < 2:
            await asyncio.sleep(0.005)
        return topic

    topic = asyncio.run(run())
    assert sorted(k for k, _ in topic.records) == [b"0", b"1"]
    assert topic.offsets(0) == topic.offsets(1) == [0, 1, 2, 3, 4]


def test_a_full_batch_is_sent_at_once_and_records_keep_offset_order() -> None:
    async def run() -> Topic:
        topic = Topic()
        publisher = DeltaPublisher(topic.send, linger_s=0.001, batch=3)
        for offset in range(20):
            await publisher.publish(_delta(2, offset))
            if offset % 4 == 0:
                await asyncio.sleep(0.002)  # let lingering flushes race the full batches
        await publisher.flush()
        return topic

    topic = asyncio.run(run())
    assert topic.offsets(2) == list(range(20))
    assert max(len(rows) for _, rows in topic.records) <= 3


def test_acked_sends_what_is_gathered_and_waits_for_every_acknowledgement() -> None:
    async def run() -> tuple[Topic, bool]:
        topic = Topic()
        publisher = DeltaPublisher(topic.send, linger_s=60.0, batch=100)
        await publisher.publish(_delta(0, 0))
        waiting = asyncio.ensure_future(publisher.acked())
        while not topic.acks:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        early = waiting.done()
        for ack in topic.acks:
            ack.set_result(None)
        await waiting
        return topic, early

    topic, early = asyncio.run(run())
    assert topic.offsets(0) == [0]  # sent without waiting for the 60 s linger
    assert not early  # and acked() waited for the broker's acknowledgement


def test_the_follower_applies_batched_and_single_delta_records_once(tmp_path: Path) -> None:
    settings = Settings()
    stats = ItemStats(settings.state)
    follower = DeltaFollower(settings.kafka, stats, tmp_path / "s.json", 60.0)
    deltas = [_delta(0, offset) for offset in range(4)]
    follower._apply(json.dumps(deltas[0].to_json()).encode())  # written before batching
    follower._apply(json.dumps([d.to_json() for d in deltas[:3]]).encode())  # one redelivered
    follower._apply(json.dumps([deltas[3].to_json()]).encode())
    follower._apply(b'{"not": "a delta"}')  # logged and ignored
    reference = ItemStats(settings.state)
    for delta in deltas:
        reference.apply(delta)
    assert stats.deltas == 4
    assert stats.covisit == reference.covisit and stats.applied == reference.applied


def test_a_failed_send_keeps_its_deltas_for_the_next_flush_in_order() -> None:
    class Flaky(Topic):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 1

        async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("broker unreachable")
            return await super().send(key, value)

    async def run() -> Flaky:
        topic = Flaky()
        publisher = DeltaPublisher(topic.send, linger_s=0.001, batch=100)
        for offset in range(3):
            await publisher.publish(_delta(0, offset))
        await asyncio.sleep(0.01)  # the lingering flush fails: nothing may be lost
        for offset in range(3, 5):
            await publisher.publish(_delta(0, offset))
        waiting = asyncio.ensure_future(publisher.acked())
        while not waiting.done():
            for ack in topic.acks:
                if not ack.done():
                    ack.set_result(None)
            await asyncio.sleep(0.001)
        await waiting
        return topic

    topic = asyncio.run(run())
    assert topic.offsets(0) == [0, 1, 2, 3, 4]
