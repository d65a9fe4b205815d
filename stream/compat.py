"""Every touch of faust-streaming's and aiokafka's private internals, in one place (with
stream/rebootstrap.py, whose touches ``TOUCH_POINTS`` lists as well).

faust-streaming 0.15 and aiokafka 0.14 (pinned to those minor versions in pyproject.toml) leave
a few things the worker needs without a public API. Each function below names what it touches
and why; ``TOUCH_POINTS`` lists them for tests/unit/stream/test_compat.py, which checks every
one on the real classes, so an upgrade that renames one fails a named test instead of silently
breaking the at-least-once guarantee.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Set
from contextlib import contextmanager, suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata

# faust routes table writes to the partition of the event in this context variable and has no
# public setter for it (write-behind flushes write outside the agent's own event).
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, EventT

READ_COMMITTED = "read_committed"  # aiokafka's value for ``isolation_level``

# (object the worker holds, private attribute): checked by tests/unit/stream/test_compat.py.
TOUCH_POINTS: tuple[tuple[str, str], ...] = (
    ("faust.streams", "_current_event"),
    ("faust consumer", "_commit_offsets"),
    ("faust consumer", "_filter_committable_offsets"),
    ("faust consumer", "_acked"),
    ("faust consumer", "_acked_index"),
    ("faust consumer", "_gap"),
    ("faust consumer", "_getmany"),
    ("faust consumer", "_read_offset"),
    ("faust consumer", "_committed_offset"),
    ("faust consumer", "_get_active_partitions"),
    ("faust consumer", "_buffered_partitions"),
    # stream/resume_hold.py: public names, but their order within a rebalance is the contract
    ("faust consumer", "resume_partitions"),
    ("faust app", "rebalancing"),
    ("faust app", "on_rebalance_end"),
    ("faust app", "rebalancing_count"),
    ("faust producer", "_producer"),
    ("faust producer buffer", "put"),
    ("faust producer buffer.pending", "_queue"),
    ("aiokafka consumer", "_client"),
    ("aiokafka client", "_metadata_update"),
    ("faust app", "_on_agent_error"),
    ("faust consumer thread", "_create_worker_consumer"),
    ("aiokafka consumer", "_isolation_level"),
    # fetch_round_robin: faust's one call of aiokafka's fetcher, and the fetcher's buffer
    ("faust consumer thread", "_fetch_records"),
    ("aiokafka consumer", "_fetcher"),
    ("aiokafka fetcher", "_records"),
    # rebootstrap_on_outage: connect to a bootstrap host as the client connects to its brokers
    ("aiokafka client", "_client_id"),
    ("aiokafka client", "_request_timeout_ms"),
    ("aiokafka client", "_ssl_context"),
    ("aiokafka client", "_security_protocol"),
    ("aiokafka client", "_connections_max_idle_ms"),
    ("aiokafka client", "_sasl_mechanism"),
    ("aiokafka client", "_sasl_plain_username"),
    ("aiokafka client", "_sasl_plain_password"),
    ("aiokafka client", "_sasl_kerberos_service_name"),
    ("aiokafka client", "_sasl_kerberos_domain_name"),
    ("aiokafka client", "_sasl_oauth_token_provider"),
)

log = logging.getLogger(__name__)


@contextmanager
def event_context(event: EventT[Any]) -> Iterator[None]:
    """Run the body as if faust were processing ``event`` (tables write to its partition)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def track_sends(producer: Any) -> None:
    """Make faust's producer buffer keep every send it is given (``buffer.put``: table writes
    go through ``send_soon``) until the broker acknowledges it or it fails. Once.

    Its queue (``buffer.pending``) alone does not show them all: the buffer's sender task takes
    a send off the queue, then awaits aiokafka, which holds it outside any batch while the
    partition's batch is full (until the request before it is answered). That send is then
    in neither the queue nor aiokafka's batches, and a drain that looked only there missed it.
    """
    buffer = producer.buffer
    put = buffer.put
    if getattr(put, "unacked", None) is not None:
        return
    unacked: dict[asyncio.Future[Any], None] = {}  # insertion-ordered: oldest first

    def tracked(fut: asyncio.Future[Any]) -> None:
        unacked[fut] = None
        fut.add_done_callback(_forget(unacked))
        put(fut)

    tracked.unacked = unacked  # type: ignore[attr-defined]  # marks an installed wrapper
    buffer.put = tracked


def _forget(unacked: dict[asyncio.Future[Any], None]) -> Callable[[asyncio.Future[Any]], None]:
    def forget(fut: asyncio.Future[Any]) -> None:
        unacked.pop(fut, None)

    return forget


def pending_sends(producer: Any) -> list[Awaitable[Any]]:
    """Futures of the sends given to faust's producer buffer and not yet acknowledged, oldest
    first (each is resolved on the broker's ack): every one since ``track_sends``, else only
    those still in its queue (``buffer.pending``, an asyncio.Queue with no public view)."""
    unacked = getattr(producer.buffer.put, "unacked", None)
    queued = list(producer.buffer.pending._queue)
    if unacked is None:
        return queued
    sends = list(unacked)
    known = set(sends)
    return sends + [fut for fut in queued if fut not in known]


async def flush_client(producer: Any) -> None:
    """Wait for the sends already handed to aiokafka (faust keeps its client in ``_producer``)."""
    if producer._producer is not None:
        await producer._producer.flush()


def wrap_commit(
    consumer: Any, wrapper: Callable[[Callable[..., Awaitable[bool]]], Callable[..., Any]]
) -> None:
    """Replace faust's ``_commit_offsets`` (every offset commit goes through it) by
    ``wrapper(original)``, once: a wrapper marks itself with ``flushes_first``."""
    commit = consumer._commit_offsets
    if getattr(commit, "flushes_first", False):
        return
    wrapped = wrapper(commit)
    wrapped.flushes_first = True  # type: ignore[attr-defined]  # marks an installed wrapper
    consumer._commit_offsets = wrapped


def commit_only(consumer: Any, keep: Callable[[TP], bool]) -> None:
    """Make faust leave out of every commit the partitions ``keep`` rejects, before it takes
    their acked offsets (``_filter_committable_offsets``): ``_new_offset`` removes the offsets
    it returns from its acked list, so dropping them later, in the commit itself, would leave
    a gap at the head of that list that no later commit passes. Once."""
    choose = consumer._filter_committable_offsets
    if getattr(choose, "keeps", False):
        return

    def committable(tps: Iterable[TP]) -> dict[TP, int]:
        chosen: dict[TP, int] = choose([tp for tp in tps if keep(tp)])
        return chosen

    committable.keeps = True  # type: ignore[attr-defined]  # marks an installed filter
    consumer._filter_committable_offsets = committable


def forget_acks(consumer: Any, assigned: Iterable[TP]) -> None:
    """Drop faust's acked-offset bookkeeping (``_acked``, ``_acked_index``, ``_gap``) of
    partitions owned before (stream/durability.py says why)."""
    for tp in assigned:
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)
        consumer._gap.pop(tp, None)


class _Fetching(Set[TP]):
    """faust's live set of partitions to fetch, never falsy: aiokafka's
    ``Fetcher.fetched_records(partitions)`` takes an empty set for "every partition"."""

    def __init__(self, live: Set[TP]) -> None:
        self.live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self.live

    def __iter__(self) -> Iterator[TP]:
        return iter(set(self.live))  # a copy: faust changes the set while aiokafka's thread reads

    def __len__(self) -> int:
        return len(self.live)

    def __bool__(self) -> bool:
        return True


def fetch_only_active(consumer: Any) -> None:
    """Make every fetch take records only of the partitions faust fetches at that moment, also
    when it fetches none (``_getmany``; stream/durability.py says why). Once.

    faust hands aiokafka its live set of active partitions, and a fetch waits up to a second
    for records. If the set empties meanwhile (recovery pausing the changelogs before it
    resumes the events partitions), aiokafka returns every partition's buffered records and
    moves past them; faust drops those of partitions it no longer fetches, unread.
    """
    getmany = consumer._getmany
    if getattr(getmany, "active_only", False):
        return

    async def active_only(active_partitions: Set[TP] | None, timeout: float) -> Any:
        active = None if active_partitions is None else _Fetching(active_partitions)
        return await getmany(active_partitions=active, timeout=timeout)

    active_only.active_only = True  # type: ignore[attr-defined]  # marks an installed wrapper
    consumer._getmany = active_only


def read_offset(consumer: Any, tp: TP) -> int | None:
    """The newest offset faust has read of ``tp`` (``_read_offset``; no public accessor)."""
    offset: int | None = consumer._read_offset.get(tp)
    return offset


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset of ``tp`` faust last committed or found committed (``_committed_offset``)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


async def fetch_topic_metadata(client: AIOKafkaClient, topic: str) -> bool:
    """Ask the brokers for ``topic``'s metadata alone, into a throwaway cluster view; False
    when no broker answered. aiokafka's public ``fetch_all_metadata`` asks for every topic of
    the cluster (``_metadata_update`` takes the topic list)."""
    updated: bool = await client._metadata_update(ClusterMetadata(), [topic])
    return updated


def is_fetching(consumer: Any, tp: TP) -> bool:
    """Whether faust's flow control currently fetches ``tp`` (``_get_active_partitions``)."""
    return tp in consumer._get_active_partitions()


def resume(consumer: Any, tp: TP) -> None:
    """Resume ``tp`` and clear faust's note that its stream buffer was full
    (``_buffered_partitions``), which would pause it again."""
    consumer._buffered_partitions.discard(tp)
    consumer.resume_partitions({tp})


async def assign_all(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic``, waiting for its metadata (aiokafka has no public
    wait: ``_client.force_metadata_update``)."""
    parts: set[int] | None = None
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            break
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    partitions = [TopicPartition(topic, p) for p in sorted(parts or ())]
    consumer.assign(partitions)
    return partitions


AgentErrorHook = Callable[[Any, BaseException], Awaitable[None]]


def on_agent_error(app: Any, hook: AgentErrorHook) -> None:
    """Call ``hook(agent, exc)`` whenever an agent of ``app`` registered after this call raises,
    then faust's own handling. ``app.agent`` hands every agent the app's private
    ``_on_agent_error`` as its ``on_error`` (passing another one is a TypeError), so the hook
    wraps that attribute on this app instance."""
    original = app._on_agent_error

    async def on_error(agent: Any, exc: BaseException) -> None:
        await hook(agent, exc)
        await original(agent, exc)

    app._on_agent_error = on_error


def read_committed_only() -> None:
    """Make faust's worker consumers read committed records only (``isolation_level``). Once.

    faust creates its aiokafka consumer in ``_create_worker_consumer`` with
    ``read_uncommitted`` unless its own producer is transactional, and has no setting for it;
    aiokafka reads the attribute when the consumer starts, after creation.
    """
    thread = AIOKafkaConsumerThread
    create = thread._create_worker_consumer
    if getattr(create, "read_committed", False):
        return

    def committed(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = create(self, transport)
        consumer._isolation_level = READ_COMMITTED
        return consumer

    committed.read_committed = True  # type: ignore[attr-defined]  # marks an installed wrapper
    thread._create_worker_consumer = committed  # type: ignore[method-assign]


def fetch_round_robin() -> None:
    """Make every poll of faust's worker consumers start at the partition served longest ago
    (``_fetch_records``, faust's one call of aiokafka's ``Fetcher.fetched_records``). Once.

    aiokafka buffers one fetch result per partition (up to 1 MiB, thousands of events) in
    ``Fetcher._records``, in arrival order, and fetches no partition that still has one. A
    poll takes up to ``max_records`` (500) in that order, so while the first result holds 500
    more, every poll drains it alone and the partitions behind it get nothing until it is
    used up: after a rebalance under load, a partition waited 30 s and more with 6,000 events
    of lag, its records buffered all along (tests/unit/stream/test_compat.py). Moving each
    partition a poll took records of to the back of the buffer serves them in turn.
    """
    thread = AIOKafkaConsumerThread
    fetch = thread._fetch_records
    if getattr(fetch, "round_robin", False):
        return

    async def round_robin(self: Any, consumer: AIOKafkaConsumer, *args: Any, **kw: Any) -> Any:
        records = await fetch(self, consumer, *args, **kw)
        buffered = consumer._fetcher._records  # an OrderedDict, of this (the consumer's) thread
        for tp in records:
            # KeyError: used up, or dropped meanwhile by a seek from faust's own thread
            with suppress(KeyError):
                buffered.move_to_end(tp)  # not used up: its next turn comes after the others
        return records

    round_robin.round_robin = True  # type: ignore[attr-defined]  # marks an installed wrapper
    thread._fetch_records = round_robin  # type: ignore[method-assign]
