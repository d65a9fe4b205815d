"""Write-behind cache: reads once, writes coalesced, each in its partition's event context."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import faust

from streamrec.stream import write_behind
from streamrec.stream.compat import event_context
from streamrec.stream.write_behind import CachedTable, Codec, WriteBehind

RAW: Codec[Any] = Codec(lambda stored: stored, lambda value: value)


@dataclass
class FakeMessage:
    partition: int


class FakeEvent:
    def __init__(self, partition: int) -> None:
        self.message = FakeMessage(partition)


class FakeTable:
    """A faust table as the cache sees it; records the partition faust would write to."""

    def __init__(self, name: str, log: list[tuple[str, str, Any, int]]) -> None:
        self.name = name
        self.data: dict[str, Any] = {}
        self.reads = 0
        self.log = log

    def get(self, key: str) -> Any:
        self.reads += 1
        return self.data.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        event = faust.current_event()
        assert event is not None, "a table write outside an event context"
        self.log.append((self.name, key, value, event.message.partition))
        self.data[key] = value


def _setup(backlog: Any = lambda: 0) -> tuple[list[Any], FakeTable, FakeTable, WriteBehind]:
    log: list[tuple[str, str, Any, int]] = []
    stats, users = FakeTable("stats", log), FakeTable("users", log)
    behind = WriteBehind([CachedTable(stats, 100, RAW), CachedTable(users, 100, RAW)], 0.5, backlog)
    for partition in (0, 1):
        behind.remember(FakeEvent(partition))  # type: ignore[arg-type]
    return log, stats, users, behind


def test_get_reads_the_table_once_then_serves_from_memory() -> None:
    cached = CachedTable(FakeTable("t", []), 10, RAW)
    cached.table.data["a"] = {"x": 1}
    assert cached.get("a", 0) == {"x": 1} and cached.get("a", 0) == {"x": 1}
    assert cached.get("missing", 0) is None
    assert cached.table.reads == 2  # "a" once, the missing key once


def test_flush_writes_each_key_once_with_its_latest_value_in_its_partition() -> None:
    log, _, _, behind = _setup()
    stats, users = behind.tables
    stats.set("0|i1", 1, 0)
    stats.set("0|i1", 2, 0)
    users.set("u7", {"n": 1}, 1)
    stats.set("1|i1", 5, 1)
    assert stats.pending() == 2 and users.pending() == 1
    assert asyncio.run(behind.flush()) == 3
    # Tables in the given order (user_state last), one write per key, routed by partition.
    assert log == [("stats", "0|i1", 2, 0), ("stats", "1|i1", 5, 1), ("users", "u7", {"n": 1}, 1)]
    assert stats.pending() == 0 and asyncio.run(behind.flush()) == 0
    assert stats.get("0|i1", 0) == 2  # still cached after the flush


def test_flush_leaves_the_event_context_as_it_was() -> None:
    _, _, _, behind = _setup()
    behind.tables[0].set("k", 1, 0)
    outer = FakeEvent(1)
    with event_context(outer):  # type: ignore[arg-type]
        asyncio.run(behind.flush())  # asyncio.run copies the context; check the direct use too
        with event_context(FakeEvent(0)):  # type: ignore[arg-type]
            assert faust.current_event().message.partition == 0
        assert faust.current_event() is outer
    assert faust.current_event() is None


def test_flush_waits_for_the_producer_backlog_between_chunks() -> None:
    backlog = {"records": 10 * write_behind.MAX_BACKLOG}
    log, _, _, behind = _setup(lambda: backlog["records"])
    for n in range(3 * write_behind.FLUSH_CHUNK):
        behind.tables[0].set(f"0|i{n}", n, 0)

    async def scenario() -> list[int]:
        flush = asyncio.create_task(behind.flush())
        seen = []
        for _ in range(20):
            await asyncio.sleep(0.002)
            seen.append(len(log))
        backlog["records"] = 0  # the producer caught up
        await flush
        return seen

    stalled = asyncio.run(scenario())
    assert set(stalled) == {write_behind.FLUSH_CHUNK}  # one chunk, then it waited
    assert len(log) == 3 * write_behind.FLUSH_CHUNK


def test_a_value_set_during_a_flush_is_written_by_the_next_one() -> None:
    backlog = {"records": 10 * write_behind.MAX_BACKLOG}
    log, _, _, behind = _setup(lambda: backlog["records"])
    stats = behind.tables[0]
    for n in range(write_behind.FLUSH_CHUNK + 1):
        stats.set(f"0|i{n}", n, 0)

    async def scenario() -> None:
        flush = asyncio.create_task(behind.flush())
        await asyncio.sleep(0.005)  # the flush waits on the backlog after its first chunk
        stats.set("0|i0", "newer", 0)  # already written by this flush: dirty again
        backlog["records"] = 0
        await flush
        assert stats.pending() == 1
        await behind.flush()

    asyncio.run(scenario())
    assert log[-1] == ("stats", "0|i0", "newer", 0)


def test_evict_drops_clean_values_oldest_first_and_keeps_dirty_ones() -> None:
    cached = CachedTable(FakeTable("t", []), 2, RAW)
    for key in ("a", "b", "c"):
        cached.set(key, key, 0)
    cached.take_dirty()  # flushed: all clean now
    cached.set("a", "a2", 0)  # dirty again
    cached.set("d", "d", 0)
    cached.evict()
    assert cached.values[0] == {"a": "a2", "d": "d"}


def test_release_forgets_other_partitions_and_their_writes() -> None:
    log, _, _, behind = _setup()
    stats = behind.tables[0]
    stats.set("0|x", 1, 0)
    stats.set("1|x", 1, 1)
    asyncio.run(behind.release({0}))
    assert asyncio.run(behind.flush()) == 1
    assert log == [("stats", "0|x", 1, 0)]
    assert 1 not in stats.values and 1 not in behind.contexts


def test_every_chunk_of_a_flush_first_waits_for_what_must_be_in_kafka_before_it() -> None:
    log: list[Any] = []
    users = FakeTable("users", log)

    async def acked() -> None:
        log.append("acked")

    behind = WriteBehind([CachedTable(users, 100, RAW)], 0.5, lambda: 0, before_write=acked)
    behind.remember(FakeEvent(0))  # type: ignore[arg-type]
    for n in range(write_behind.FLUSH_CHUNK + 1):
        behind.tables[0].set(f"u{n}", n, 0)
    asyncio.run(behind.flush())
    marks = [n for n, entry in enumerate(log) if entry == "acked"]
    assert marks[0] == 0  # before the first write
    assert log[write_behind.FLUSH_CHUNK + 1] == "acked"  # again before the next chunk


class Counting:
    """A codec that counts its calls: stored form ``{"v": n}``, object ``[n]``."""

    def __init__(self) -> None:
        self.decoded = 0
        self.encoded = 0
        self.codec: Codec[list[int]] = Codec(self.decode, self.encode)

    def decode(self, stored: dict[str, int]) -> list[int]:
        self.decoded += 1
        return [stored["v"]]

    def encode(self, value: list[int]) -> dict[str, int]:
        self.encoded += 1
        return {"v": value[0]}


def test_values_are_decoded_once_when_loaded_and_encoded_once_per_flush() -> None:
    log: list[Any] = []
    table, counting = FakeTable("users", log), Counting()
    table.data["u1"] = {"v": 1}
    cached = CachedTable(table, 100, counting.codec)
    behind = WriteBehind([cached], 0.5, lambda: 0)
    behind.remember(FakeEvent(0))  # type: ignore[arg-type]
    for n in range(2, 6):  # four events of one user between two flushes
        value = cached.get("u1", 0)
        assert value is not None
        cached.set("u1", [value[0] + n], 0)
    asyncio.run(behind.flush())
    assert (counting.decoded, counting.encoded) == (1, 1)
    assert log == [("users", "u1", {"v": 15}, 0)]
    assert cached.get("u1", 0) == [15]  # the object, not its stored form
