"""Item statistics from all of the traffic: trending scores and co-visitation neighbours.

Every worker keeps a full replica, built from the ``item-updates`` topic (the same idea as a
Kafka Streams GlobalKTable): ingest publishes one ``ItemDelta`` per applied event of its
partitions (stream/item_updates.py), and every worker reads every partition of that topic and
applies each delta here. So each co-visitation list and the trending board learn from the
events of all partitions and all workers, not from the share one partition sees.

Exactly once on the replica: a delta carries the events partition and offset it came from, and
one events partition's deltas all go to one item-updates partition (keyed by the events
partition), in offset order. A delta at or below the newest offset applied for its events
partition is a redelivery (a restarted or new owner re-reading events after the last commit)
and changes nothing. What a worker reads at slate time is every delta that reached it: the
replica trails the events by a publisher's linger, one produce and one fetch (at most
``DELTA_LINGER_S`` + ``ITEM_UPDATES_WAIT_MS``, 25 ms, plus the broker round trips).

How each value is computed lives in stream/stats.py; covisit lists keep at most ``2 *
covisit_top_k`` neighbours (readers take the heaviest ``covisit_top_k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from streamrec.stream.config import StateSettings
from streamrec.stream.stats import TrendingBoard, bump_covisit, bump_trending

Neighbours = list[tuple[str, float]]
# Ranked neighbour lists kept for reading (about 3 KiB each at covisit_top_k 50, 7 MiB in all):
# the items slates read most, not a second copy of a 50,000-item catalog's statistics.
RANKED_KEPT = 2_000


@dataclass(frozen=True)
class ItemDelta:
    """What one applied event adds: ``item`` at ``ts`` (ms) with ``weight``, co-visited with the
    user's ``previous`` items; ``source`` is the event's (partition, offset)."""

    item: str
    previous: tuple[str, ...]
    ts: int
    weight: float
    source: tuple[int, int]

    def to_json(self) -> list[Any]:
        return [self.item, list(self.previous), self.ts, self.weight, *self.source]

    @classmethod
    def from_json(cls, raw: list[Any]) -> ItemDelta:
        item, previous, ts, weight, partition, offset = raw
        return cls(
            str(item), tuple(map(str, previous)), int(ts), float(weight), (partition, offset)
        )


class ItemStats:
    """The replica (see module docstring): apply deltas, read neighbours and trending items."""

    def __init__(self, settings: StateSettings) -> None:
        self.settings = settings
        self.trending_scores: dict[str, list[float]] = {}  # item -> [decayed score, last ts]
        self.covisit: dict[str, dict[str, float]] = {}  # item -> {neighbour: weight}
        self.applied: dict[int, int] = {}  # events partition -> newest offset applied
        self.deltas = 0  # applied so far (redeliveries not counted)
        self.board = TrendingBoard(settings.trending_half_life_s, settings.trending_size)
        # item -> its heaviest ``covisit_top_k`` neighbours as ``covisits`` returns them, until a
        # delta changes the item's map: slates read an item's list far more often than deltas
        # change it, and sorting it on every read was most of gathering a slate's inputs.
        self._ranked: dict[str, Neighbours] = {}

    def apply(self, delta: ItemDelta) -> bool:
        """Count ``delta``; False when its source offset was applied already (a redelivery)."""
        partition, offset = delta.source
        if offset <= self.applied.get(partition, -1):
            return False
        self.applied[partition] = offset
        self.deltas += 1
        if delta.weight <= 0:  # a skip (or a type weighted 0): counted, but adds no neighbour
            return True
        s = self.settings
        value = bump_trending(
            self.trending_scores.get(delta.item), delta.ts, delta.weight, s.trending_half_life_s
        )
        self.trending_scores[delta.item] = value
        self.board.update(delta.item, value)
        for prev in set(delta.previous) - {delta.item}:
            self.covisit[prev] = bump_covisit(
                self.covisit.get(prev), delta.item, delta.weight, s.covisit_top_k
            )
            self._ranked.pop(prev, None)
        return True

    def covisits(self, items: Sequence[str], partition: int = 0) -> dict[str, Neighbours]:
        """Neighbours of each of ``items``, strongest first (``partition`` is not needed: the
        replica holds every partition's statistics). The lists are shared with later readers:
        do not change them."""
        found: dict[str, Neighbours] = {}
        for item in items:
            ranked = self._ranked.get(item)
            if ranked is None:
                if len(self._ranked) >= RANKED_KEPT:  # the oldest kept list goes first
                    del self._ranked[next(iter(self._ranked))]
                ranked = self._ranked[item] = self._rank(item)
            found[item] = ranked
        return found

    def _rank(self, item: str) -> Neighbours:
        # Heaviest first, ties by id: two C-level sorts (the second stable) instead of a Python
        # key per neighbour.
        neighbours = sorted(self.covisit.get(item, {}).items(), key=itemgetter(0))
        neighbours.sort(key=itemgetter(1), reverse=True)
        return neighbours[: self.settings.covisit_top_k]

    def trending(self, partition: int = 0) -> Neighbours:
        """The trending items of all traffic, best first."""
        return self.board.top()

    def sizes(self) -> dict[str, int]:
        return {"trending": len(self.trending_scores), "covisit": len(self.covisit)}

    def figures(self) -> dict[str, int]:
        """For /stats: deltas applied and items held."""
        return {"deltas_applied": self.deltas, **self.sizes()}

    def to_json(self) -> dict[str, Any]:
        """Everything, for a snapshot (stream/item_updates.py)."""
        return {
            "trending": self.trending_scores,
            "covisit": self.covisit,
            "applied": {str(p): o for p, o in self.applied.items()},
            "deltas": self.deltas,
        }

    def load_json(self, raw: dict[str, Any]) -> None:
        """Replace everything by a snapshot's content."""
        self.trending_scores = {k: [float(v[0]), float(v[1])] for k, v in raw["trending"].items()}
        self.covisit = {k: {n: float(w) for n, w in v.items()} for k, v in raw["covisit"].items()}
        self._ranked = {}
        self.applied = {int(p): int(o) for p, o in raw["applied"].items()}
        self.deltas = int(raw.get("deltas", 0))
        s = self.settings
        self.board = TrendingBoard(s.trending_half_life_s, s.trending_size)
        self.board.load(self.trending_scores.items())
