"""Ingest: one record of the events topic in, the user's state and item statistics changed.

For each record, in partition order: validate (bad input goes to the dead-letter topic with its
reason, stream/deadletter.py), apply it to the user's state (stream/state.py: idempotent by
partition offset and event id), publish what it adds to the item statistics of all workers
(stream/item_updates.py), then hand it on: a response to a slate goes to the reward join, and
every applied event marks its user for a new slate. Nothing here awaits anything slow: state
writes are synchronous (write-behind cached) and the delta's send is buffered, so no event is
held open across model work (faust-streaming #312).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import faust

from streamrec.errors import ContractError
from streamrec.stream.catalog import RejectFn
from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event, parse_event
from streamrec.stream.item_stats import ItemDelta
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.routing import Router, check_key
from streamrec.stream.state import UserState, apply_event
from streamrec.stream.write_behind import CachedTable, Codec

# The user_state table stores a state's compact JSON (stream/state.py); the cache holds objects.
STATE_CODEC = Codec(UserState.from_json, UserState.to_json)
LOG_APPEND_TIME = 1  # a record's timestamp_type when its topic stamps the broker's append time
KEY_RULE = "events must be keyed by user_id so one user's events stay in order on one partition"


class Downstream(Protocol):
    """Where ingest hands an applied event: the reward join and the refresher."""

    def on_response(self, event: Event, partition: int, received: float | None) -> object: ...

    def on_skip(self, event: Event, partition: int, received: float | None) -> object: ...

    def tick(self, partition: int, received: float | None) -> None: ...


@dataclass
class IngestCounts:
    """Plain counts for /stats and the demo summary (Prometheus has the same)."""

    consumed: int = 0
    accepted: int = 0
    duplicates: int = 0
    users: int = 0  # entries of user_state: counted per rebalance by the app, then kept up here


# (event, partition, broker timestamp in seconds or None, the user's new state)
MarkFn = Callable[[Event, int, float | None, UserState], None]


class Ingest:
    """The events agent's body (see module docstring)."""

    def __init__(
        self,
        settings: StateSettings,
        user_state: CachedTable[UserState],
        publish: Callable[[ItemDelta], Awaitable[None]],
        owned: Callable[[], set[int]],
        remember: Callable[[Any], None],
        reject: RejectFn,
        feedback: Downstream,
        mark: MarkFn,
        metrics: WorkerMetrics,
        router: Router,
    ) -> None:
        self.settings = settings
        self.user_state = user_state
        self.publish = publish  # an applied event's item-statistics delta (DeltaPublisher)
        self.owned = owned  # the events partitions this worker owns now
        self.remember = remember  # keeps each partition's latest event as its write context
        self.reject = reject
        self.feedback = feedback
        self.mark = mark
        self.metrics = metrics
        self.router = router  # events on another partition than their key's go on to it
        self.counts = IngestCounts()

    async def run(self, stream: faust.StreamT[bytes]) -> None:
        """The agent: every record of the events topic, for the worker's lifetime."""
        async for event in stream.events():
            await self.handle(event)

    async def handle(self, event: Any) -> None:
        """One faust event (``.key``, ``.value``, ``.message`` with partition/offset/...)."""
        message = event.message
        if message.partition not in self.owned():
            # faust can still hand the agent buffered records of a partition revoked by a
            # rebalance; its table store is closed by then, so applying one would start from
            # an empty state and overwrite the user's changelog entry. The new owner re-reads
            # it from the committed offset.
            self.metrics.revoked_skipped.inc()
            return
        self.remember(event)
        self.counts.consumed += 1
        self.metrics.events_consumed.inc()
        started = time.perf_counter()
        raw = event.value if isinstance(event.value, bytes) else b""
        try:
            parsed = parse_event(raw)
            # Unkeyed, a record lands on any partition and splits the user's state.
            check_key(event.key, parsed.user_id, "record", KEY_RULE)
        except ContractError as exc:
            await self.reject(raw, event.key, exc, message.topic, message.partition, message.offset)
            return
        if await self.router.forward(event.key, raw, message.partition, message.headers):
            return
        received = append_time(message)
        parsed = not_after(parsed, received)
        applied = self.apply(parsed, message.partition, message.offset)
        if applied is not None:
            state, delta = applied
            # The delta goes out before the state is cached: a flush that writes the state
            # to RocksDB first waits for every delta sent so far (stream/item_updates.py).
            await self.publish(delta)
            self.user_state.set(parsed.user_id, state, message.partition)
            if parsed.rec_id is not None and self.settings.is_skip(parsed):
                self.feedback.on_skip(parsed, message.partition, received)
            elif parsed.rec_id is not None:
                self.feedback.on_response(parsed, message.partition, received)
            self.mark(parsed, message.partition, message.timestamp, state)
        self.feedback.tick(message.partition, received)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def apply(
        self, event: Event, partition: int, offset: int
    ) -> tuple[UserState, ItemDelta] | None:
        """The user's new state (not yet stored) and what the event adds to the item
        statistics, or None when the event changed nothing (a duplicate)."""
        cached = self.user_state.get(event.user_id, partition)
        self.counts.users += cached is None  # a new user cannot be a duplicate
        # A copy: the cached state may be in a slate still being built (stream/write_behind.py).
        state = cached.copy() if cached is not None else UserState()
        previous = state.covisit_previous(event.item_id, self.settings.covisit_window)
        if not apply_event(state, event, self.settings, (partition, offset)):
            self.counts.duplicates += 1
            self.metrics.duplicates.inc()
            # Written again although unchanged (or only the skipped id remembered): after a
            # crash the local store can be ahead of the changelog, because faust puts a value
            # in RocksDB before its changelog record is sent, and a restarted worker trusts its
            # RocksDB. The events it re-reads are what brings the changelog up to date.
            self.user_state.set(event.user_id, state, partition)
            return None
        weight = self.settings.weight_of(event)
        delta = ItemDelta(event.item_id, previous, event.ts, weight, (partition, offset))
        self.counts.accepted += 1
        self.metrics.events_accepted.inc()
        return state, delta


def append_time(message: Any) -> float | None:
    """When the broker appended the record (faust's ``timestamp``, seconds), if the topic
    stamps that (LogAppendTime, as ``topics create`` makes the events topic): a topic on
    producer time (CreateTime) carries whatever its producers set, an upstream pipeline's
    original event time, say, so it says nothing about when the event reached Kafka."""
    timestamp = message.timestamp
    if getattr(message, "timestamp_type", None) != LOG_APPEND_TIME or not timestamp:
        return None
    return float(timestamp)


def not_after(event: Event, received: float | None) -> Event:
    """``event``, its time no later than its record's append time (``received``, seconds).

    The contract takes times up to a day ahead of the worker's clock (producer clock skew), and
    trending ranks items by their newest event's time: one view stamped a day ahead put its item
    first in every fresh user's slate for a day (a new user's report), and stayed the user's
    newest event as long. No event truly happened after the broker appended it."""
    if received is None:
        return event
    limit = int(received * 1000)
    return event if event.ts <= limit else event.model_copy(update={"ts": limit})
