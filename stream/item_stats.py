"""The item statistics the worker keeps: trending scores and co-visitation neighbours.

Ingest calls ``ItemStats.update`` for every applied event; the refresher reads
``ItemStats.covisits`` and ``ItemStats.trending`` when it builds a slate. How each value is
computed lives in stream/stats.py; this module owns where the values are kept: two write-behind
cached tables keyed ``"<partition>|<item_id>"`` (stream/write_behind.py) and one in-memory
trending board per owned partition, rebuilt from the recovered table on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event
from streamrec.stream.stats import TrendingBoard, bump_covisit, bump_trending, stat_key
from streamrec.stream.write_behind import CachedTable

Neighbours = list[tuple[str, float]]


class ItemStats:
    """Trending and co-visitation per events partition (see module docstring)."""

    def __init__(
        self, settings: StateSettings, trending: CachedTable, covisit: CachedTable
    ) -> None:
        self.settings = settings
        self.trending_table = trending
        self.covisit_table = covisit
        self.boards: dict[int, TrendingBoard] = {}
        # Entries counted once per rebalance by the app, then kept up here on each new key.
        self.sizes: dict[str, int] = {"trending": 0, "covisit": 0}

    def update(self, event: Event, partition: int, previous: Sequence[str]) -> None:
        """Count ``event`` (already applied to its user) in trending, and as a co-visit of
        each of the user's ``previous`` items."""
        s = self.settings
        weight = s.event_type_weights.get(event.type, 1.0)
        key = stat_key(partition, event.item_id)
        old = self.trending_table.get(key, partition)
        self.sizes["trending"] += old is None
        value = bump_trending(old, event.ts, weight, s.trending_half_life_s)
        self.trending_table.set(key, value, partition)
        self.board(partition).update(event.item_id, value)
        for prev in set(previous) - {event.item_id}:
            prev_key = stat_key(partition, prev)
            neighbours = self.covisit_table.get(prev_key, partition)
            self.sizes["covisit"] += neighbours is None
            bumped = bump_covisit(neighbours, event.item_id, weight, s.covisit_top_k)
            self.covisit_table.set(prev_key, bumped, partition)

    def covisits(self, history: Sequence[str], partition: int) -> dict[str, Neighbours]:
        """Neighbours of the last ``covisit_window`` items of ``history``, strongest first."""
        s = self.settings
        found: dict[str, Neighbours] = {}
        for item in history[-s.covisit_window :]:
            neighbours = self.covisit_table.get(stat_key(partition, item), partition) or {}
            found[item] = sorted(neighbours.items(), key=lambda kv: -kv[1])[: s.covisit_top_k]
        return found

    def trending(self, partition: int) -> Neighbours:
        """The partition's trending items, best first."""
        return self.board(partition).top()

    def board(self, partition: int) -> TrendingBoard:
        """The partition's trending board, loaded from the table the first time."""
        board = self.boards.get(partition)
        if board is None:
            s = self.settings
            board = TrendingBoard(s.trending_half_life_s, s.trending_size)
            board.load(_entries_of(self.trending_table.table.items(), partition))
            self.boards[partition] = board
        return board

    def keep_boards(self, partitions: set[int]) -> None:
        """Drop the boards of partitions no longer owned (they are rebuilt if they return)."""
        self.boards = {p: b for p, b in self.boards.items() if p in partitions}


def _entries_of(
    items: Iterable[tuple[str, list[float]]], partition: int
) -> Iterable[tuple[str, list[float]]]:
    prefix = f"{partition}|"
    return ((k[len(prefix) :], v) for k, v in items if k.startswith(prefix))
