"""Write-behind caching of the worker's hot table, user_state.

Why: every faust table write costs a JSON encode, a RocksDB put, a changelog record and, when
that record is acknowledged, a second RocksDB put (the persisted offset). Most users are
written again within a second (their next event), so writing each one once per flush does
the same work for less: replaying MovieLens at 1,000 events/s, a 0.5 s flush writes 2.5 times
fewer records. (When trending and co-visitation were tables too, caching them as well took the
worker from 972 to 3,300-4,000 events/s, ``streamrec bench pipeline``.)

How:
    reads     ``CachedTable.get`` serves decoded values (objects, through the table's ``Codec``)
              from memory, loading and decoding a missing one from the faust table once; clean
              values beyond ``state.cache_entries`` per table are dropped oldest first after
              each flush. A value handed out may be read long after (a slate being built from
              it), so callers never change one: they ``set`` a new one.
    writes    ``CachedTable.set`` replaces the cached value and marks the key dirty
    flush     ``WriteBehind.flush`` encodes every dirty value and writes it to its faust table,
              each in the
              context of its partition's latest event: faust routes a table write (RocksDB
              partition and changelog partition) by the current event. It runs every
              ``state.flush_interval_ms``, before every offset commit and before partitions
              are handed over. It paces itself to the producer: faust stops handing events to
              agents while more than 100 changelog records wait to be sent
              (``ProducerBuffer.wait_until_ebb``), so a flush that queued all its writes at
              once would stall the event path for as long as they take to send (seen as
              100-200 ms latency spikes at every flush).

Guarantee: an offset is committed only after every write of the events before it has been
flushed and acknowledged (stream/durability.py), so a crash loses nothing: the events after
the last commit are re-read and re-applied, and a user's state skips what it already holds
(stream/state.py) but is written again, so the changelog catches up with a local RocksDB that
a flush had brought ahead of it just before the crash (stream/ingest.py). A flush first waits
until the item-statistics deltas of the events it writes are acknowledged (``before_write``,
stream/item_updates.py), so a state that reached RocksDB never hides a delta that did not
reach Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faust.types import EventT

from streamrec.stream.compat import event_context

FLUSH_CHUNK = 16  # writes queued before the flush checks the producer backlog
MAX_BACKLOG = 50  # changelog records the flush leaves waiting (faust stalls events past 100)
BACKLOG_POLL_S = 0.001


V = TypeVar("V")


@dataclass(frozen=True)
class Codec(Generic[V]):
    """How a table's stored form (what faust serialises) becomes the object the worker uses:
    decoded once when a key is loaded, encoded once per flush, not on every event."""

    decode: Callable[[Any], V]
    encode: Callable[[V], Any]


class CachedTable(Generic[V]):
    """Decoded values of one faust table, per partition, written back on flush."""

    def __init__(self, table: Any, capacity: int, codec: Codec[V]) -> None:
        self.table = table
        self.capacity = capacity
        self.codec = codec
        self.values: dict[int, dict[str, V]] = {}
        self.dirty: dict[int, dict[str, None]] = {}  # ordered sets: keys to write back

    def get(self, key: str, partition: int) -> V | None:
        """The value of ``key`` (a key of ``partition``), or None when there is none."""
        values = self.values.setdefault(partition, {})
        if key in values:
            return values[key]
        stored = self.table.get(key)
        if stored is None:
            return None
        value = values[key] = self.codec.decode(stored)
        return value

    def stored(self, partition: int, key: str) -> Any | None:
        """What a flush writes for ``key``: its value encoded, None when none is held."""
        value = self.values.get(partition, {}).get(key)
        return None if value is None else self.codec.encode(value)

    def set(self, key: str, value: V, partition: int) -> None:
        """Make ``value`` the value of ``key``; it reaches the table on the next flush."""
        self.values.setdefault(partition, {})[key] = value
        self.dirty.setdefault(partition, {})[key] = None

    def pending(self) -> int:
        """How many keys wait to be written."""
        return sum(len(keys) for keys in self.dirty.values())

    def size(self) -> int:
        """How many values are held in memory."""
        return sum(len(values) for values in self.values.values())

    def take_dirty(self) -> list[tuple[int, str]]:
        """The keys to write as (partition, key), forgetting that they are dirty."""
        taken = [(p, key) for p, keys in self.dirty.items() for key in keys]
        self.dirty = {}
        return taken

    def evict(self) -> None:
        """Drop clean values, oldest loaded first, until at most ``capacity`` remain."""
        excess = self.size() - self.capacity
        for partition, values in self.values.items():
            if excess <= 0:
                return
            dirty = self.dirty.get(partition, {})
            clean = [key for key in values if key not in dirty][:excess]
            for key in clean:
                del values[key]
            excess -= len(clean)

    def release(self, partitions: AbstractSet[int]) -> None:
        """Forget everything held for ``partitions`` (no longer this worker's)."""
        for partition in partitions:
            self.values.pop(partition, None)
            self.dirty.pop(partition, None)


class WriteBehind:
    """Flushes a set of cached tables (see the module docstring)."""

    def __init__(
        self,
        tables: Sequence[CachedTable[Any]],
        interval_s: float,
        backlog: Callable[[], int],
        on_flush: Callable[[int, float], None] | None = None,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tables = list(tables)  # flushed in this order
        # Awaited before anything is written: what must be in Kafka before the state that
        # follows from it reaches RocksDB (stream/item_updates.py).
        self.before_write = before_write
        self.interval_s = interval_s
        self.backlog = backlog  # changelog records waiting in the producer
        self.on_flush = on_flush  # called with (values written, seconds taken)
        self.contexts: dict[int, EventT[Any]] = {}
        self._lock = asyncio.Lock()

    def remember(self, event: EventT[Any]) -> None:
        """Keep ``event`` as the write context of its partition (call for every event)."""
        self.contexts[event.message.partition] = event

    def context_of(self, partition: int) -> EventT[Any] | None:
        """The latest event of ``partition``, None when the partition is not this worker's."""
        return self.contexts.get(partition)

    async def run(self) -> None:
        """Flush every ``interval_s`` for the worker's lifetime."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> int:
        """Write every dirty value to its faust table; returns how many were written."""
        async with self._lock:
            started = time.perf_counter()
            if self.before_write is not None:
                await self.before_write()
            written = 0
            for cached in self.tables:
                for n, (partition, key) in enumerate(cached.take_dirty()):
                    written += self._write(cached, partition, key)
                    if n % FLUSH_CHUNK == FLUSH_CHUNK - 1:
                        await self._ebb()
            for cached in self.tables:
                cached.evict()
            if self.on_flush is not None and written:
                self.on_flush(written, time.perf_counter() - started)
            return written

    async def _ebb(self) -> None:
        """Give the event loop a turn, then wait until the producer has caught up and, since
        events applied meanwhile may be in the values still to write, ``before_write`` again."""
        await asyncio.sleep(0)
        while self.backlog() > MAX_BACKLOG:
            await asyncio.sleep(BACKLOG_POLL_S)
        if self.before_write is not None:
            await self.before_write()

    def _write(self, cached: CachedTable[Any], partition: int, key: str) -> int:
        event = self.contexts.get(partition)
        value = cached.stored(partition, key)
        if event is None or value is None:
            # Released mid-flush: the partition's next owner re-applies its uncommitted events.
            return 0
        with event_context(event):
            cached.table[key] = value
        return 1

    async def release(self, keep: set[int]) -> None:
        """Forget every partition not in ``keep``, after any flush in progress."""
        async with self._lock:
            gone = set(self.contexts) - keep
            for cached in self.tables:
                gone |= (set(cached.values) | set(cached.dirty)) - keep
            for cached in self.tables:
                cached.release(gone)
            for partition in gone:
                self.contexts.pop(partition, None)
