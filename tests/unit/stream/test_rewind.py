"""A window of records back from a point in each partition (the trainer's and the learner's)."""

from __future__ import annotations

import asyncio
import math

from aiokafka import TopicPartition

from streamrec.stream.rewind import rewind, rewind_shares


def test_the_rewind_fills_the_window_from_partitions_of_uneven_traffic() -> None:
    # 4,506 events, 47% on one partition, a window of 5,000: all of them (an even split read
    # 1,250 of each and left 868 of the busy partition's unread).
    held = {0: 800, 1: 800, 2: 788, 3: 2_118}
    assert rewind_shares(held, 5_000) == held
    shares = rewind_shares(held, 2_000)  # more than the window: in proportion
    assert 2_000 <= sum(shares.values()) < 2_000 + len(held)
    assert shares[3] == math.ceil(2_000 * 2_118 / 4_506) and shares[0] == shares[1]
    assert rewind_shares({0: 0, 1: 10}, 5) == {0: 0, 1: 5}


class Seeker:
    """A consumer whose partitions begin at the given offsets (retention deleted the rest)."""

    def __init__(self, beginnings: dict[TopicPartition, int]) -> None:
        self.beginnings = beginnings
        self.sought: dict[TopicPartition, int] = {}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: self.beginnings[tp] for tp in partitions}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.sought[partition] = offset


def test_the_rewind_goes_back_from_each_point_no_further_than_kafka_holds() -> None:
    a, b, c = (TopicPartition("t", p) for p in range(3))
    seeker = Seeker({a: 0, b: 90, c: 50})
    sought = asyncio.run(rewind(seeker, {a: 300, b: 100, c: 40}, 200))
    # held before each point: 300, 10 and none (the point lies before what is left)
    assert sought == seeker.sought
    assert sought[b] == 100 - math.ceil(200 * 10 / 310) and sought[c] == 40
    assert sought[a] == 300 - math.ceil(200 * 300 / 310)
    assert asyncio.run(rewind(seeker, {}, 200)) == {}
