"""Starting a consumer a window of records back from a point in each partition.

The continual trainer fills its training window from the newest events Kafka holds, and a
restarted learner refills the window its off-policy estimates are computed on from the
experience it had already learned. Both split one window over partitions that hold very
different amounts (user keys spread traffic unevenly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, TypeVar

from aiokafka import TopicPartition

T = TypeVar("T")  # a partition: aiokafka's TopicPartition, or any key in tests


class Seeker(Protocol):
    """What :func:`rewind` uses of an ``AIOKafkaConsumer``."""

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


def rewind_shares(held: Mapping[T, int], window: int) -> dict[T, int]:
    """How far back to start each partition, given the records each ``held``: all of them when
    they fit the window, else the window split in proportion to what each holds (user keys
    spread traffic unevenly, and an even split left most of a busy partition unread)."""
    total = sum(held.values())
    if total <= window:
        return dict(held)
    return {tp: min(n, math.ceil(window * n / total)) for tp, n in held.items()}


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
