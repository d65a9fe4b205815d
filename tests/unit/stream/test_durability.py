"""Write-before-commit ordering: drain, flush_before_commit, forget_acks (faust stand-ins)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streamrec.errors import BrokerError
from streamrec.stream.compat import forget_acks, pending_sends
from streamrec.stream.durability import drain, flush_before_commit


class FakeKafkaProducer:
    def __init__(self) -> None:
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1


class FakeBuffer:
    def __init__(self) -> None:
        self.pending: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    def put(self, fut: asyncio.Future[None]) -> None:
        self.pending.put_nowait(fut)


class FakeProducer:
    """faust's Producer as durability.py sees it: a FIFO buffer of futures, an aiokafka one."""

    def __init__(self) -> None:
        self.buffer = FakeBuffer()
        self._producer = FakeKafkaProducer()

    def send_soon(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer.put(fut)
        return fut

    def sender_takes(self) -> asyncio.Future[None]:
        """faust's sender task takes the oldest send off the queue and awaits aiokafka, which
        holds it outside any batch while the partition's batch is full."""
        return self.buffer.pending.get_nowait()


def test_drain_waits_for_every_buffered_write_then_flushes_kafka() -> None:
    async def scenario() -> list[str]:
        producer, order = FakeProducer(), []
        writes = [producer.send_soon() for _ in range(3)]

        async def broker_acks() -> None:
            for n, fut in enumerate(writes):
                await asyncio.sleep(0.01)
                order.append(f"ack{n}")
                fut.set_result(None)

        acks = asyncio.create_task(broker_acks())
        await drain(producer)
        order.append(f"drained, kafka flushes={producer._producer.flushes}")
        await acks
        return order

    assert asyncio.run(scenario()) == ["ack0", "ack1", "ack2", "drained, kafka flushes=1"]


def test_drain_does_not_wait_for_writes_queued_after_it_started() -> None:
    async def scenario() -> bool:
        producer = FakeProducer()
        first = producer.send_soon()
        waiting = asyncio.create_task(drain(producer))
        await asyncio.sleep(0)
        later = producer.send_soon()  # steady load: the buffer never empties
        first.set_result(None)
        await asyncio.wait_for(waiting, 1.0)
        return later.done()

    assert asyncio.run(scenario()) is False


def test_drain_gives_up_with_a_clear_error() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        producer.send_soon()  # never acknowledged
        await drain(producer, timeout_s=0.05)

    with pytest.raises(BrokerError, match="unacknowledged"):
        asyncio.run(scenario())


def test_drain_raises_when_a_write_failed() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        producer.send_soon().set_exception(OSError("broker gone"))
        await drain(producer)

    with pytest.raises(OSError, match="broker gone"):
        asyncio.run(scenario())


class FakeConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.app = SimpleNamespace(consumer_generation_id=1)
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: defaultdict[TP, Any] = defaultdict(list)
        self.ready: dict[TP, int] = {}  # offsets faust would commit; taking one consumes it

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        return {tp: self.ready.pop(tp) for tp in list(tps) if tp in self.ready}

    async def _commit_offsets(self, offsets: dict[TP, int], *args: Any) -> bool:
        self.log.append(f"commit {sorted(offsets.values())}")
        return True


def test_commit_waits_for_the_writes_made_before_it() -> None:
    async def scenario() -> list[str]:
        log: list[str] = []
        producer, consumer = FakeProducer(), FakeConsumer(log)
        flush_before_commit(consumer, producer)
        flush_before_commit(consumer, producer)  # wrapping twice must not flush twice
        write = producer.send_soon()
        write.add_done_callback(lambda _: log.append("write acked"))
        commit = asyncio.create_task(consumer._commit_offsets({TP("events", 0): 10}))
        await asyncio.sleep(0.01)
        log.append("before ack")
        write.set_result(None)
        assert await commit
        log.append(f"kafka flushes={producer._producer.flushes}")
        return log

    expected = ["before ack", "write acked", "commit [10]", "kafka flushes=1"]
    assert asyncio.run(scenario()) == expected


def test_commit_waits_for_a_write_fausts_sender_took_off_its_queue() -> None:
    """The write is in neither faust's queue nor aiokafka's batches: committing now would
    leave a crash free to lose it while its event counts as done."""

    async def scenario() -> list[str]:
        log: list[str] = []
        producer, consumer = FakeProducer(), FakeConsumer(log)
        flush_before_commit(consumer, producer)
        write = producer.send_soon()
        write.add_done_callback(lambda _: log.append("write acked"))
        assert producer.sender_takes() is write
        commit = asyncio.create_task(consumer._commit_offsets({TP("events", 0): 5}))
        await asyncio.sleep(0.01)
        log.append("before ack")
        write.set_result(None)
        assert await commit
        return log

    assert asyncio.run(scenario()) == ["before ack", "write acked", "commit [5]"]


def test_a_hand_over_drain_waits_for_a_write_fausts_sender_took_off_its_queue() -> None:
    async def scenario() -> tuple[bool, list[Any]]:
        producer = FakeProducer()
        flush_before_commit(FakeConsumer([]), producer)  # every assignment installs it first
        write = producer.send_soon()
        producer.sender_takes()
        waiting = asyncio.create_task(drain(producer))
        await asyncio.sleep(0.01)
        drained_early = waiting.done()
        write.set_result(None)
        await asyncio.wait_for(waiting, 1.0)
        return drained_early, pending_sends(producer)

    drained_early, left = asyncio.run(scenario())
    assert not drained_early
    assert left == []  # an acknowledged send is forgotten


def test_a_failed_send_taken_off_the_queue_fails_the_drain() -> None:
    async def scenario() -> None:
        producer = FakeProducer()
        flush_before_commit(FakeConsumer([]), producer)
        write = producer.send_soon()
        producer.sender_takes()
        write.set_exception(RuntimeError("MessageSizeTooLarge"))
        await drain(producer)

    with pytest.raises(RuntimeError, match="MessageSizeTooLarge"):
        asyncio.run(scenario())


def test_commit_drains_the_writes_its_before_hook_queues() -> None:
    async def scenario() -> list[str]:
        log: list[str] = []
        producer, consumer = FakeProducer(), FakeConsumer(log)
        queued: list[asyncio.Future[None]] = []

        async def flush_buffered() -> None:  # the write-behind flush: queues a table write
            log.append("before")
            queued.append(producer.send_soon())
            queued[0].add_done_callback(lambda _: log.append("write acked"))
            asyncio.get_running_loop().call_later(0.01, queued[0].set_result, None)

        flush_before_commit(consumer, producer, flush_buffered)
        assert await consumer._commit_offsets({TP("events", 0): 3})
        return log

    assert asyncio.run(scenario()) == ["before", "write acked", "commit [3]"]


def test_a_commit_outlasted_by_a_rebalance_is_dropped() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        log: list[str] = []
        producer, consumer = FakeProducer(), FakeConsumer(log)

        async def flush_during_rebalance() -> None:
            consumer.app.consumer_generation_id = 2  # partitions reassigned meanwhile

        flush_before_commit(consumer, producer, flush_during_rebalance)
        return await consumer._commit_offsets({TP("events", 0): 7}), log

    committed, log = asyncio.run(scenario())
    assert not committed and log == []


def test_partitions_not_owned_now_are_left_out_before_faust_takes_their_offsets() -> None:
    consumer = FakeConsumer([])
    owned = {0}
    flush_before_commit(consumer, FakeProducer(), owned=lambda tp: tp.partition in owned)
    mine, revoked = TP("events", 0), TP("events", 1)
    consumer.ready = {mine: 4, revoked: 9}
    assert consumer._filter_committable_offsets([mine, revoked]) == {mine: 4}
    # The left-out partition's offsets are still faust's to commit once it is owned again:
    # taking them and dropping them would wedge its commits for good.
    assert consumer.ready == {revoked: 9}
    owned.add(1)
    assert consumer._filter_committable_offsets([revoked]) == {revoked: 9}


def test_forget_acks_drops_only_the_assigned_partitions() -> None:
    consumer = FakeConsumer([])
    mine, other = TP("events", 0), TP("events", 1)
    for tp in (mine, other):
        consumer._acked[tp].extend([5, 6])
        consumer._acked_index[tp].update({5, 6})
        consumer._gap[tp].append((7, 9))
    forget_acks(consumer, {mine})
    assert mine not in consumer._acked and mine not in consumer._acked_index
    assert mine not in consumer._gap
    assert consumer._acked[other] == [5, 6] and consumer._gap[other] == [(7, 9)]
