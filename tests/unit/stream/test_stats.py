"""Trending decay and bounded co-visitation."""

from __future__ import annotations

import heapq
import random

import pytest

from streamrec.index.candidates import ranked
from streamrec.stream.stats import TrendingBoard, bump_covisit, bump_trending, decay

HOUR_MS = 3_600_000


def test_decay_halves_per_half_life_and_never_grows_backwards() -> None:
    assert decay(8.0, 0, 2 * HOUR_MS, 3600.0) == 2.0
    assert decay(8.0, HOUR_MS, 0, 3600.0) == 8.0


def test_trending_is_order_independent_for_in_and_out_of_order_events() -> None:
    in_order = bump_trending(bump_trending(None, 0, 1.0, 3600.0), HOUR_MS, 1.0, 3600.0)
    late = bump_trending(bump_trending(None, HOUR_MS, 1.0, 3600.0), 0, 1.0, 3600.0)
    assert in_order == late == [1.5, float(HOUR_MS)]


def test_covisit_accumulates_and_cuts_back_to_the_heaviest_k() -> None:
    value: dict[str, float] | None = None
    for neighbour, weight in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("a", 0.5), ("d", 5.0)]:
        value = bump_covisit(value, neighbour, weight, top_k=2)
    assert value == {"a": 1.5, "b": 3.0, "c": 2.0, "d": 5.0}  # up to 2 * top_k kept
    value = bump_covisit(value, "e", 0.1, top_k=2)
    assert value == {"d": 5.0, "b": 3.0}


def test_board_ranks_by_score_at_newest_time() -> None:
    board = TrendingBoard(half_life_s=3600.0, size=2, refresh_every=1)
    board.update("old_hit", [8.0, 0.0])
    board.update("fresh", [3.0, float(2 * HOUR_MS)])
    board.update("tiny", [0.1, float(2 * HOUR_MS)])
    assert board.top() == [("fresh", 3.0), ("old_hit", 2.0)]


def _full_scan(board: TrendingBoard) -> list[tuple[str, float]]:
    """The board's top as it was computed before the pool: every item rescored."""
    scored = [
        (item, decay(score, last, board.newest_ts, board.half_life_s))
        for item, (score, last) in board.scores.items()
    ]
    return ranked(heapq.nlargest(board.size, scored, key=lambda kv: (kv[1], kv[0])))


@pytest.mark.parametrize("weights", [(1.0, 2.0, 8.0), (1.0, 0.0, -0.5)])
def test_board_top_equals_a_full_rescoring_of_every_item(weights: tuple[float, ...]) -> None:
    rng = random.Random(7)
    board = TrendingBoard(half_life_s=60.0, size=5, refresh_every=1)
    values: dict[str, list[float]] = {}
    for n in range(20_000):
        item = f"i{min(int(rng.paretovariate(1.1)), 400)}"  # a popular head and a long tail
        ts = n * 50 - rng.randrange(2_000)  # some events late
        values[item] = bump_trending(values.get(item), ts, rng.choice(weights), 60.0)
        board.update(item, values[item])
        if n % 7 == 0:
            assert board.top() == _full_scan(board), n
    assert len(board.scores) > 4 * board.size  # the pool was rebuilt along the way
