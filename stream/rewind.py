"""Starting a consumer a window of records back from a point in each partition.

The continual trainer fills its training window from the newest events Kafka holds, and a
restarted learner refills the window its off-policy estimates are computed on from the
experience it had already learned (``reread``: all of it before it learns anything new, so
its first estimate sees the whole window; ``resume`` first puts each partition where the
learner stopped). Both split one window over partitions that hold
very different amounts (user keys spread traffic unevenly).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from aiokafka import TopicPartition

T = TypeVar("T")  # a partition: aiokafka's TopicPartition, or any key in tests
log = logging.getLogger(__name__)
READ_LIMIT_S = 120.0  # read_up_to's patience: a refill must not hold a learner back for good


class Seeker(Protocol):
    """What ``reread`` uses of an ``AIOKafkaConsumer``."""

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]: ...


def rewind_shares(held: Mapping[T, int], window: int) -> dict[T, int]:
    """How far back to start each partition, given the records each ``held``: all of them when
    they fit the window, else the window split in proportion to what each holds (user keys
    spread traffic unevenly, and an even split left most of a busy partition unread)."""
    total = sum(held.values())
    if total <= window:
        return dict(held)
    exact = {tp: window * n / total for tp, n in held.items()}
    shares = {tp: math.floor(share) for tp, share in exact.items()}
    # the largest remainders take what flooring left over, so the shares add up to the window
    by_remainder = sorted(exact, key=lambda tp: shares[tp] - exact[tp])
    for tp in by_remainder[: window - sum(shares.values())]:
        shares[tp] += 1
    return shares


async def rewind(
    consumer: Seeker, points: Mapping[TopicPartition, int], window: int
) -> dict[TopicPartition, int]:
    """Seek each partition back from its offset in ``points`` by its share of ``window``, no
    further than Kafka still holds; the offsets sought."""
    if not points:
        return {}
    starts = await consumer.beginning_offsets(list(points))
    held = {tp: max(offset - starts[tp], 0) for tp, offset in points.items()}
    sought = {tp: points[tp] - back for tp, back in rewind_shares(held, window).items()}
    for tp, offset in sought.items():
        consumer.seek(tp, offset)
    return sought


async def read_up_to(
    consumer: Seeker,
    ends: Mapping[TopicPartition, int],
    take: Callable[[int, int, bytes], None],
    limit_s: float = READ_LIMIT_S,
) -> None:
    """Hand ``take`` (partition, offset, value) every record of each partition before its
    offset in ``ends``, then leave the partition there: records from ``ends`` on are read
    afterwards, once every partition has been read up to its end. What is left unread after
    ``limit_s`` (a broker that stopped answering) is skipped, with a warning."""
    left = dict(ends)
    deadline = time.monotonic() + limit_s
    while left and time.monotonic() < deadline:
        batch = await consumer.getmany(*left, timeout_ms=500, max_records=500)
        for tp, records in batch.items():
            end = left[tp]
            for record in records:
                if record.offset < end:
                    take(tp.partition, record.offset, record.value or b"")
            if records and records[-1].offset + 1 >= end:
                consumer.seek(tp, end)  # what was fetched past it is read again later
                del left[tp]
    for tp, end in left.items():
        consumer.seek(tp, end)
    if left:
        log.warning("gave up reading again up to %s after %.0f s", dict(left), limit_s)


async def reread(
    consumer: Seeker,
    points: Mapping[TopicPartition, int],
    window: int,
    take: Callable[[int, int, bytes], None],
) -> dict[TopicPartition, int]:
    """Read again the ``window`` records before ``points`` (split by :func:`rewind_shares`),
    each handed to ``take``, and leave every partition at its point; the offsets read from."""
    starts = await rewind(consumer, points, window)
    await read_up_to(
        consumer, {tp: points[tp] for tp, at in starts.items() if at < points[tp]}, take
    )
    return starts


class Resumer(Seeker, Protocol):
    """What ``resume`` uses of an ``AIOKafkaConsumer``."""

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...


async def resume(
    consumer: Resumer,
    tps: list[TopicPartition],
    saved: dict[int, int],
    window: int,
    take: Callable[[int, int, bytes], None],
) -> dict[TopicPartition, int]:
    """Each partition from where a restarted reader stopped (``saved``: partition -> offset),
    once the ``window`` records before the saved positions are handed to ``take`` again (the
    learner's estimates, README: One learner for the group); the offsets read again from. A
    saved position past a partition's end (a re-created topic) is dropped from ``saved``."""
    ends = await consumer.end_offsets(tps)
    for tp in [tp for tp in tps if saved.get(tp.partition, 0) > ends[tp]]:
        log.warning("partition %d ends at %d, before the saved offset %d: read anew",
                    tp.partition, ends[tp], saved.pop(tp.partition))  # fmt: skip
    starts: dict[int, str] = {}
    for tp in tps:
        # What this reader saved is what it learned; the group's commit is only for one with no
        # state (it continues where its predecessor's commits stopped). Another reader's commits
        # can run ahead of this one's state, and skipping to them would lose the records between.
        start = saved[tp.partition] if tp.partition in saved else await consumer.committed(tp)
        if start:
            consumer.seek(tp, start)
        else:
            await consumer.seek_to_beginning(tp)
        origin = "saved" if tp.partition in saved else "group commit" if start else "beginning"
        starts[tp.partition] = f"{start or 0} ({origin})"
    log.info("experience read from offsets %s", starts)
    points = {tp: saved[tp.partition] for tp in tps if tp.partition in saved}
    return await reread(consumer, points, window, take)
