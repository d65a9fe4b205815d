"""aiokafka clients re-bootstrap when no broker of their view answers (stream/rebootstrap.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v1, MetadataResponse_v1

from streamrec.stream import rebootstrap
from streamrec.stream.rebootstrap import rebootstrap_on_outage

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

    monkeypatch.setattr(rebootstrap, "create_conn", create_conn)
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

    monkeypatch.setattr(rebootstrap, "create_conn", create_conn)
    monkeypatch.setattr(rebootstrap, "REBOOTSTRAP_ASK_S", 0.2)
    rebootstrap_on_outage()

    async def scenario() -> bool:  # without the bound it waits for pytest's timeout
        client = _stale_client()
        try:
            updated: bool = await client._metadata_update(client.cluster, {"events"})
        finally:
            await client.close()
        return updated

    assert asyncio.run(scenario()) is False, "no answer: the failed update stands"
