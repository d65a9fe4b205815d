"""A window of records back from a point in each partition (the trainer's and the learner's)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streamrec.stream.rewind import read_up_to, reread, rewind, rewind_shares


def test_the_rewind_fills_the_window_from_partitions_of_uneven_traffic() -> None:
    # 4,506 events, 47% on one partition, a window of 5,000: all of them (an even split read
    # 1,250 of each and left 868 of the busy partition's unread).
    held = {0: 800, 1: 800, 2: 788, 3: 2_118}
    assert rewind_shares(held, 5_000) == held
    shares = rewind_shares(held, 2_000)  # more than the window: in proportion, exactly it
    assert shares == {0: 355, 1: 355, 2: 350, 3: 940}  # 355.08, 355.08, 349.76, 940.08
    assert rewind_shares({0: 0, 1: 10}, 5) == {0: 0, 1: 5}
    assert sum(rewind_shares({p: 7 for p in range(3)}, 10).values()) == 10


class Seeker:
    """A consumer whose partitions begin at the given offsets (retention deleted the rest) and
    hold ``ends[tp]`` records; ``getmany`` hands out up to 3 records of each asked partition
    from its position."""

    def __init__(
        self, beginnings: dict[TopicPartition, int], ends: dict[TopicPartition, int] | None = None
    ) -> None:
        self.beginnings, self.ends = beginnings, ends or {}
        self.sought: dict[TopicPartition, int] = {}
        self.position = dict(beginnings)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        out = {}
        for tp in partitions:
            at = self.position[tp]
            offsets = range(at, min(at + 3, self.ends.get(tp, 0)))
            if offsets:
                out[tp] = [
                    SimpleNamespace(offset=o, value=f"{tp.partition}:{o}".encode()) for o in offsets
                ]
                self.position[tp] = offsets[-1] + 1
        return out

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: self.beginnings[tp] for tp in partitions}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.sought[partition] = self.position[partition] = offset


def test_the_rewind_goes_back_from_each_point_no_further_than_kafka_holds() -> None:
    a, b, c = (TopicPartition("t", p) for p in range(3))
    seeker = Seeker({a: 0, b: 90, c: 50})
    sought = asyncio.run(rewind(seeker, {a: 300, b: 100, c: 40}, 200))
    # held before each point: 300, 10 and none (the point lies before what is left)
    assert sought == seeker.sought
    assert sought[c] == 40 and (300 - sought[a]) + (100 - sought[b]) == 200
    assert 300 - sought[a] == math.ceil(200 * 300 / 310)  # 193.5 and 6.5: a takes the odd one
    assert asyncio.run(rewind(seeker, {}, 200)) == {}


def test_the_window_is_read_again_up_to_each_point_before_anything_after_it() -> None:
    a, b, idle = (TopicPartition("t", p) for p in range(3))
    seeker = Seeker({a: 0, b: 0, idle: 0}, ends={a: 20, b: 9, idle: 0})
    taken: list[tuple[int, int]] = []
    starts = asyncio.run(
        reread(seeker, {a: 10, b: 5, idle: 0}, 6, lambda p, o, raw: taken.append((p, o)))
    )
    assert starts == {a: 6, b: 3, idle: 0}  # 10 and 5 held before the points: 4 and 2 of 6
    assert sorted(taken) == [(0, 6), (0, 7), (0, 8), (0, 9), (1, 3), (1, 4)]
    # each left at its point, records fetched past it (b's 5) to be read again later
    assert seeker.position == {a: 10, b: 5, idle: 0}


def test_a_partition_that_never_answers_is_given_up_after_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silent = TopicPartition("t", 0)
    seeker = Seeker({silent: 0}, ends={})  # holds what Kafka says but hands out nothing
    asyncio.run(read_up_to(seeker, {silent: 4}, lambda p, o, raw: None, limit_s=0.0))
    assert seeker.position[silent] == 4 and "gave up reading again" in caplog.text
