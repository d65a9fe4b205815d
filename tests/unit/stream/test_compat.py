"""Every faust/aiokafka internal stream/compat.py touches exists on the installed versions: an
upgrade that renames one fails here, by name, instead of breaking at-least-once silently."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher, FetchResult
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamrec.stream.compat import (
    TOUCH_POINTS,
    fetch_only_active,
    fetch_round_robin,
    read_committed_only,
)


async def _build() -> dict[str, Any]:
    """The objects the worker reaches into, built as the worker builds them (nothing started;
    aiokafka wants a running loop even for that)."""
    app = faust.App("compat-check", broker="kafka://127.0.0.1:9", store="memory://")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    fetcher = Fetcher(consumer._client, SubscriptionState())
    await fetcher.close()  # built by the consumer's start; its task only waits for partitions
    return {
        "faust.streams": importlib.import_module("faust.streams"),
        "faust app": app,
        "faust consumer": app.consumer,
        "faust producer": app.producer,
        "faust producer buffer": app.producer.buffer,
        "faust producer buffer.pending": app.producer.buffer.pending,
        "faust consumer thread": AIOKafkaConsumerThread,
        "aiokafka consumer": consumer,
        "aiokafka client": AIOKafkaClient(bootstrap_servers="127.0.0.1:9"),
        "aiokafka fetcher": fetcher,
    }


@pytest.fixture(scope="module")
def holders() -> dict[str, Any]:
    return asyncio.run(_build())


@pytest.mark.parametrize(("holder", "attribute"), TOUCH_POINTS, ids=lambda v: str(v))
def test_each_private_touch_point_exists(
    holders: dict[str, Any], holder: str, attribute: str
) -> None:
    assert hasattr(holders[holder], attribute), (
        f"{holder} has no {attribute} any more: stream/compat.py must follow the upgrade"
    )


def test_the_workers_consumer_skips_aborted_transactions() -> None:
    async def isolation() -> str:
        app = faust.App("compat-isolation", broker="kafka://127.0.0.1:9", store="memory://")
        read_committed_only()
        installed = AIOKafkaConsumerThread._create_worker_consumer
        read_committed_only()
        assert AIOKafkaConsumerThread._create_worker_consumer is installed, "wrapped twice"
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        await consumer._client.close()
        return str(consumer._isolation_level)

    # faust's own choice without a transactional producer is read_uncommitted
    assert asyncio.run(isolation()) == "read_committed"


class _PartitionRecords:
    """aiokafka's PartitionRecords as its FetchResult reads them: records, next offset."""

    def __init__(self, first: int, n: int) -> None:
        self.next_fetch_offset = first
        self._offsets = iter(range(first, first + n))

    def __iter__(self) -> _PartitionRecords:
        return self

    def __next__(self) -> SimpleNamespace:
        offset = next(self._offsets)
        self.next_fetch_offset = offset + 1
        return SimpleNamespace(offset=offset)


class _Position:
    def __init__(self, offset: int) -> None:
        self.position, self.paused = offset, False

    def consumed_to(self, offset: int) -> None:
        self.position = offset


class _FaustConsumer:
    """faust's consumer as fetch_only_active sees it: ``_getmany`` runs aiokafka's own
    ``Fetcher.fetched_records`` over buffered records of one events partition."""

    def __init__(self, events: TP, position: _Position) -> None:
        assignment = SimpleNamespace(active=True, state_value=lambda tp: position)
        buffered = FetchResult(
            events, assignment=assignment, partition_records=_PartitionRecords(5054, 500), backoff=0
        )
        self.waiters: list[asyncio.Future[None]] = []
        self.fetcher = SimpleNamespace(
            _subscriptions=SimpleNamespace(
                reassignment_in_progress=False, is_assigned=lambda tp: True
            ),
            _records={events: buffered},
            _notify=lambda fut: None,
            _wait_consume_future=None,
            _create_fetch_waiter=self._waiter,
            _closed=False,
        )

    def _waiter(self) -> asyncio.Future[None]:
        self.waiters.append(asyncio.get_running_loop().create_future())
        return self.waiters[-1]

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        records: dict[TP, list[Any]] = await Fetcher.fetched_records(
            self.fetcher, active_partitions, timeout=timeout, max_records=500
        )
        return records


def test_a_fetch_whose_partition_set_empties_takes_no_records_faust_did_not_ask_for() -> None:
    """The kill -9 wedge: the events partition is paused while the changelogs recover; the
    recovery pauses those before it resumes the events partition. aiokafka took the emptied set
    for "every partition" and moved the events partition past 500 records faust then dropped
    unread; its acks started 500 offsets above the committed one, and no commit passed them."""
    events, changelog = TP("events", 3), TP("user_state-changelog", 3)
    position = _Position(5054)

    async def scenario() -> dict[TP, list[Any]]:
        consumer = _FaustConsumer(events, position)
        fetch_only_active(consumer)
        fetch_only_active(consumer)  # installed once however often it is called
        active = {changelog}  # faust's live set: changelogs only, events paused
        # faust passes both by keyword
        fetch = asyncio.create_task(consumer._getmany(active_partitions=active, timeout=0.05))
        await asyncio.sleep(0)  # the fetch waits for changelog records
        active.clear()  # recovery done: changelogs paused, events not resumed yet
        consumer.waiters[0].set_result(None)  # more records arrive
        return await fetch

    assert asyncio.run(scenario()) == {}
    assert position.position == 5054, "the events partition moved past records nobody read"


def test_aiokafka_buffers_fetch_results_in_arrival_order(holders: dict[str, Any]) -> None:
    # fetch_round_robin reorders this buffer with OrderedDict.move_to_end
    assert isinstance(holders["aiokafka fetcher"]._records, OrderedDict)


def _buffer(first: dict[TP, tuple[int, int]]) -> SimpleNamespace:
    """aiokafka's fetcher holding one fetch result per partition: (first offset, count), in
    this order."""
    positions = {tp: _Position(offset) for tp, (offset, _) in first.items()}
    assignment = SimpleNamespace(active=True, state_value=positions.__getitem__)
    fetcher = SimpleNamespace(
        _subscriptions=SimpleNamespace(
            reassignment_in_progress=False,
            is_assigned=lambda tp: True,
            fetch_context=contextlib.nullcontext,
        ),
        _records=OrderedDict(
            (
                tp,
                FetchResult(
                    tp,
                    assignment=assignment,
                    partition_records=_PartitionRecords(offset, n),
                    backoff=0,
                ),
            )
            for tp, (offset, n) in first.items()
        ),
        _notify=lambda fut: None,
        _wait_consume_future=None,
        _closed=False,
    )
    fetcher.fetched_records = functools.partial(Fetcher.fetched_records, fetcher)
    return fetcher


def test_a_partition_buffered_behind_a_large_fetch_result_gets_the_next_poll() -> None:
    """The stall after a rebalance under load: one fetch brought 6,000 events of partition 2
    and 500 of partition 1, in that order. Each 500-record poll drained partition 2 alone, and
    aiokafka fetches no partition with a buffered result, so partition 1 waited (30 s and more)
    until partition 2's result was used up."""
    big, behind = TP("events", 2), TP("events", 1)
    fetcher = _buffer({big: (3029, 6000), behind: (384, 500)})
    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    consumer = SimpleNamespace(_fetcher=fetcher, _closed=False)
    fetch_round_robin()
    installed = AIOKafkaConsumerThread._fetch_records
    fetch_round_robin()
    assert AIOKafkaConsumerThread._fetch_records is installed, "wrapped twice"

    async def polls(n: int) -> list[dict[TP, int]]:
        taken = []
        for _ in range(n):
            records = await AIOKafkaConsumerThread._fetch_records(
                thread,  # type: ignore[arg-type]  # the attributes it reads
                consumer,
                {big, behind},
                timeout=0,
                max_records=500,
            )
            taken.append({tp: len(batch) for tp, batch in records.items()})
        return taken

    assert asyncio.run(polls(3)) == [{big: 500}, {behind: 500}, {big: 500}]
