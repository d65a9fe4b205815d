"""How the two item statistics behind candidate sources are computed: trending (decayed counts)
and co-visitation (where they are kept: stream/item_stats.py).

Decay runs on event time, not wall time, so a replay of old data trends like it did live and
the result does not depend on processing speed.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from streamrec.index.candidates import Ranked, ranked


def decay(score: float, from_ms: int, to_ms: int, half_life_s: float) -> float:
    """``score`` observed at ``from_ms`` seen from ``to_ms`` (no growth when going back)."""
    dt = max(0, to_ms - from_ms) / 1000.0
    return score * math.pow(0.5, dt / half_life_s)


def bump_trending(
    value: list[float] | None, ts: int, weight: float, half_life_s: float
) -> list[float]:
    """New ``[score, last_ts]`` after an event of ``weight`` at ``ts`` (ms)."""
    if not value:
        return [weight, float(ts)]
    score, last = value[0], int(value[1])
    if ts >= last:
        return [decay(score, last, ts, half_life_s) + weight, float(ts)]
    # A late event counts as much as it still would at the newest time seen.
    return [score + decay(weight, ts, last, half_life_s), float(last)]


def bump_covisit(
    value: dict[str, float] | None, neighbour: str, weight: float, top_k: int
) -> dict[str, float]:
    """Add ``weight`` to ``neighbour`` (in place when ``value`` is given) and return the map.

    The map holds at most ``2 * top_k`` neighbours: past that it is cut back to the ``top_k``
    heaviest (ties: smaller id wins), so the cut's cost is amortised over ``top_k`` updates.
    Readers take the heaviest ``top_k`` themselves.
    """
    neighbours = value if value is not None else {}
    neighbours[neighbour] = neighbours.get(neighbour, 0.0) + weight
    if len(neighbours) > 2 * top_k:
        kept = heapq.nsmallest(top_k, neighbours.items(), key=lambda kv: (-kv[1], kv[0]))
        neighbours.clear()
        neighbours.update(kept)
    return neighbours


class TrendingBoard:
    """Trending scores kept for a fast top-k.

    ``top`` re-ranks at most once per ``refresh_every`` updates so a hot path does not sort
    the catalog on every event.
    """

    def __init__(self, half_life_s: float, size: int, refresh_every: int = 200) -> None:
        self.half_life_s = half_life_s
        self.size = size
        self.refresh_every = refresh_every
        self.scores: dict[str, tuple[float, int]] = {}
        self.newest_ts = 0
        self._top: Ranked = Ranked()
        self._stale = 0

    def load(self, entries: Iterable[tuple[str, list[float]]]) -> None:
        """Fill from table entries ``(item_id, [score, last_ts])`` (after recovery)."""
        for item, (score, last) in entries:
            self.update(item, [score, last])

    def update(self, item_id: str, value: list[float]) -> None:
        self.scores[item_id] = (value[0], int(value[1]))
        self.newest_ts = max(self.newest_ts, int(value[1]))
        self._stale += 1

    def top(self) -> Ranked:
        """``(item_id, score at the newest event time)``, best first (ties by item id), at
        most ``size``."""
        if self._stale >= self.refresh_every or (self._stale and not self._top):
            now = self.newest_ts
            scored = (
                (item, decay(score, last, now, self.half_life_s))
                for item, (score, last) in self.scores.items()
            )
            # In fusion's order, once per refresh: fusion then takes the list as it is.
            self._top = ranked(heapq.nlargest(self.size, scored, key=lambda kv: (kv[1], kv[0])))
            self._stale = 0
        return self._top
