"""Every faust/aiokafka internal stream/compat.py touches exists on the installed versions: an
upgrade that renames one fails here, by name, instead of breaking at-least-once silently."""

from __future__ import annotations

import asyncio
import importlib
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.consumer.fetcher import Fetcher, FetchResult
from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v1, MetadataResponse_v1
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamrec.stream import compat
from streamrec.stream.compat import (
    TOUCH_POINTS,
    fetch_only_active,
    read_committed_only,
    rebootstrap_on_outage,
)


async def _build() -> dict[str, Any]:
    """The objects the worker reaches into, built as the worker builds them (nothing started;
    aiokafka wants a running loop even for that)."""
    app = faust.App("compat-check", broker="kafka://127.0.0.1:9", store="memory://")
    return {
        "faust.streams": importlib.import_module("faust.streams"),
        "faust app": app,
        "faust consumer": app.consumer,
        "faust producer": app.producer,
        "faust producer buffer": app.producer.buffer,
        "faust producer buffer.pending": app.producer.buffer.pending,
        "faust consumer thread": AIOKafkaConsumerThread,
        "aiokafka consumer": AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9"),
        "aiokafka client": AIOKafkaClient(bootstrap_servers="127.0.0.1:9"),
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


# Nothing listens on the discard port: a connection to it is refused at once.
_DEAD = ("127.0.0.1", 9)
_ALIVE = ("alive-bootstrap.test", 29502)  # answered by _BootstrapConn, never by the network


def _answer(brokers: list[tuple[int, str, int]], topic: str) -> MetadataResponse_v1:
    """A broker's metadata answer: ``brokers`` (id, host, port), ``topic``'s one partition
    led by the first of them (none: -1)."""
    leader = brokers[0][0] if brokers else -1
    partitions = [(0, 0, leader, [b[0] for b in brokers], [b[0] for b in brokers])]
    return MetadataResponse_v1(
        [(node, host, port, None) for node, host, port in brokers],
        leader,
        [(0, topic, False, partitions)],
    )


class _BootstrapConn:
    """A fresh connection to the live bootstrap host: records the requests it answers."""

    def __init__(self, answer: MetadataResponse_v1, asked: list[list[str] | None]) -> None:
        self.answer, self.asked, self.closed = answer, asked, False

    async def send(self, request: MetadataRequest) -> MetadataResponse_v1:
        self.asked.append(request.build(MetadataRequest_v1).topics)
        return self.answer

    def close(self) -> None:
        self.closed = True


def _bootstrap_double(
    monkeypatch: pytest.MonkeyPatch, answer: MetadataResponse_v1
) -> tuple[list[tuple[str, int]], list[list[str] | None], list[_BootstrapConn]]:
    """Replace the connections compat opens to bootstrap hosts: the live host answers with
    ``answer``, any other is refused. Returns the hosts dialled, the topics asked, the conns."""
    dialled: list[tuple[str, int]] = []
    asked: list[list[str] | None] = []
    conns: list[_BootstrapConn] = []

    async def create_conn(host: str, port: int, **settings: Any) -> _BootstrapConn:
        dialled.append((host, port))
        if (host, port) != _ALIVE:
            raise ConnectionRefusedError(f"{host}:{port}")
        conns.append(_BootstrapConn(answer, asked))
        return conns[-1]

    monkeypatch.setattr(compat, "create_conn", create_conn)
    return dialled, asked, conns


def _stale_client() -> AIOKafkaClient:
    """A client whose view lists only broker 1, which is dead; its bootstrap list names broker
    1 and the live host. Build inside a running loop."""
    bootstrap = ",".join(f"{host}:{port}" for host, port in (_DEAD, _ALIVE))
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    client.cluster.update_metadata(_answer([(1, *_DEAD)], "events"))
    return client


def test_a_client_whose_known_brokers_are_all_gone_asks_its_bootstrap_list_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 3-broker stall: brokers 2 and 3 lead every partition, the client's view lists only
    broker 1, which died. aiokafka asked broker 1 alone, for as long as it was down."""
    live = _answer([(2, *_ALIVE), (3, "other.test", 29503)], "events")
    dialled, asked, conns = _bootstrap_double(monkeypatch, live)

    async def scenario() -> tuple[bool, set[int], int | None]:
        client = _stale_client()
        rebootstrap_on_outage()
        installed = AIOKafkaClient._metadata_update
        rebootstrap_on_outage()
        assert AIOKafkaClient._metadata_update is installed, "wrapped twice"
        try:
            updated = await client._metadata_update(client.cluster, {"events"})
        finally:
            await client.close()
        leader = client.cluster.leader_for_partition(TopicPartition("events", 0))
        return updated, {b.nodeId for b in client.cluster.brokers()}, leader

    assert asyncio.run(scenario()) == (True, {2, 3}, 2)
    assert dialled == [_ALIVE], "broker 1 was just asked through the view; ask the others"
    assert asked == [["events"]], "the same topics: another list reads as topics deleted"
    assert all(conn.closed for conn in conns)


def test_a_throwaway_view_answered_by_a_bootstrap_host_refreshes_the_clients_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The health probe asks for one topic into a throwaway view: the client's own view, as
    stale, is refreshed by its own metadata task (for its own topics)."""
    _bootstrap_double(monkeypatch, _answer([(2, *_ALIVE)], "events"))
    rebootstrap_on_outage()

    async def scenario() -> tuple[bool, bool, set[int]]:
        client = _stale_client()
        try:
            view = ClusterMetadata()
            updated = await client._metadata_update(view, ["events"])
            refresh_asked = client._md_update_waiter.done()
        finally:
            await client.close()
        return updated, refresh_asked, {b.nodeId for b in view.brokers()}

    assert asyncio.run(scenario()) == (True, True, {2})


def test_a_bootstrap_answer_without_brokers_is_a_failed_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dialled, _, _ = _bootstrap_double(monkeypatch, _answer([], "events"))
    rebootstrap_on_outage()

    async def scenario() -> tuple[bool, set[int]]:
        client = _stale_client()
        try:
            updated = await client._metadata_update(client.cluster, {"events"})
        finally:
            await client.close()
        return updated, {b.nodeId for b in client.cluster.brokers()}

    # the live host answers with no brokers (a topic being created): the view is kept
    assert asyncio.run(scenario()) == (False, {1})
    assert dialled == [_ALIVE]


def test_a_client_asks_its_bootstrap_list_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka retries a failed update many times a second; during a full outage each retry
    would dial the bootstrap hosts again."""
    dialled, _, _ = _bootstrap_double(monkeypatch, _answer([], "events"))
    rebootstrap_on_outage()

    async def scenario() -> list[bool]:
        client = _stale_client()
        try:
            return [await client._metadata_update(client.cluster, {"events"}) for _ in range(5)]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == [False] * 5
    assert dialled == [_ALIVE], "one attempt for five failed updates within a second"


def test_a_bootstrap_host_that_never_answers_holds_the_update_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An address that drops packets held the client's metadata task for its request timeout
    (20 minutes for faust's producer), and every refresh with it after the broker was back."""

    async def create_conn(host: str, port: int, **settings: Any) -> Any:
        await asyncio.Event().wait()  # a connect that never completes

    monkeypatch.setattr(compat, "create_conn", create_conn)
    monkeypatch.setattr(compat, "REBOOTSTRAP_ASK_S", 0.2)
    rebootstrap_on_outage()

    async def scenario() -> bool:  # without the bound it waits for pytest's timeout
        client = _stale_client()
        try:
            updated: bool = await client._metadata_update(client.cluster, {"events"})
        finally:
            await client.close()
        return updated

    assert asyncio.run(scenario()) is False, "no answer: the failed update stands"
