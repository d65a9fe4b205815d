"""An offset commit during a broker outage waits for its writes as long as the worker waits for
the broker (``kafka.outage_limit_s``), not the 30 s a hand-over may take (stream/durability.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streamrec.errors import BrokerError
from streamrec.stream.durability import flush_before_commit


class Producer:
    """faust's producer as durability.py sees it: a FIFO of send futures, an aiokafka client."""

    def __init__(self) -> None:
        queue: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self.buffer = SimpleNamespace(pending=queue, put=queue.put_nowait)
        self._producer = SimpleNamespace(flush=lambda: asyncio.sleep(0))

    def write(self, acked_after_s: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(acked_after_s, future.set_result, None)
        self.buffer.put(future)


class Consumer:
    def __init__(self) -> None:
        self.app = SimpleNamespace(consumer_generation_id=1)
        self.committed: list[int] = []

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        return {}

    async def _commit_offsets(self, offsets: dict[TP, int], *args: Any) -> bool:
        self.committed.extend(offsets.values())
        return True


def _commit(acked_after_s: float, timeout_s: float) -> list[int]:
    async def scenario() -> list[int]:
        producer, consumer = Producer(), Consumer()
        flush_before_commit(consumer, producer, timeout_s=timeout_s)
        producer.write(acked_after_s)  # the broker is away until then
        await consumer._commit_offsets({TP("events", 0): 42})
        return consumer.committed

    return asyncio.run(scenario())


def test_a_commit_waits_out_an_outage_shorter_than_its_limit() -> None:
    assert _commit(acked_after_s=0.3, timeout_s=2.0) == [42]


def test_a_commit_past_its_limit_raises_instead_of_committing() -> None:
    with pytest.raises(BrokerError, match="unacknowledged after"):
        _commit(acked_after_s=5.0, timeout_s=0.2)
