"""How the two item statistics behind candidate sources are computed: trending (decayed counts)
and co-visitation (where they are kept: stream/item_stats.py).

Decay runs on event time, not wall time, so a replay of old data trends like it did live and
the result does not depend on processing speed.
"""

from __future__ import annotations

import heapq
import math
import sys
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
    the catalog on every event, and it scores only a pool of the items that can be in the top:
    rescoring the whole catalog (50,000 items) took 30 ms per refresh, 150 us per event
    (README, bench pipeline). Why the pool holds the top: ranking items by their scores decayed
    to one common time ranks them by ``log2(score) + last_ts / half_life``, a key that does not
    change as time passes and only grows when an item is bumped. So an item whose key is below
    the ``size``-th best key of some moment stays below the ``size`` items that had it, and the
    pool is every item whose key reached that level (less ``POOL_MARGIN`` for rounding), rebuilt
    from the whole catalog when it outgrows ``POOL_LIMIT`` times ``size``. Within the pool the
    ranking is the exact one it always was.
    """

    POOL_LIMIT = 4
    # In log2 units, 1e6 times the keys' rounding error: an item left out scores below the
    # ``size``-th best by a factor of at least 1 - 7e-7, so the exact scores cannot reorder them.
    POOL_MARGIN = 1e-6

    def __init__(self, half_life_s: float, size: int, refresh_every: int = 200) -> None:
        self.half_life_s = half_life_s
        self.size = size
        self.refresh_every = refresh_every
        self.scores: dict[str, tuple[float, int]] = {}
        self.newest_ts = 0
        self._top: Ranked = Ranked()
        self._stale = 0
        self._origin: int | None = None  # keys count time from here, so they stay small
        self._pool: dict[str, None] = {}
        self._floor = -math.inf  # the key an item needs to enter the pool
        self._pool_valid = True

    def load(self, entries: Iterable[tuple[str, list[float]]]) -> None:
        """Fill from table entries ``(item_id, [score, last_ts])`` (after recovery)."""
        for item, (score, last) in entries:
            self.update(item, [score, last])

    def update(self, item_id: str, value: list[float]) -> None:
        score, last = value[0], int(value[1])
        before = self.scores.get(item_id)
        self.scores[item_id] = (score, last)
        self.newest_ts = max(self.newest_ts, last)
        self._stale += 1
        key = self._key(score, last)
        if item_id in self._pool:
            # A key that fell (a negative weight, a snapshot loaded over the board) breaks the
            # reasoning above; what rounding alone moves it by is far below this tolerance.
            if before is not None and key < self._key(*before) - self.POOL_MARGIN / 1000:
                self._pool_valid = False
        elif key >= self._floor:
            self._pool[item_id] = None
            if len(self._pool) > self.POOL_LIMIT * self.size:
                self._pool_valid = False

    def top(self) -> Ranked:
        """``(item_id, score at the newest event time)``, best first (ties by item id), at
        most ``size``."""
        if self._stale >= self.refresh_every or (self._stale and not self._top):
            if not self._pool_valid:
                self._rebuild_pool()
            top = self._ranked(self._pool)
            if len(top) == self.size and top[-1][1] < sys.float_info.min:
                # Scores decayed to (near) zero tie by item id, which the keys cannot foresee.
                top = self._ranked(self.scores)
            # In fusion's order, once per refresh: fusion then takes the list as it is.
            self._top = top
            self._stale = 0
        return self._top

    def _ranked(self, items: Iterable[str]) -> Ranked:
        now, scores = self.newest_ts, self.scores
        scored = (
            (item, decay(score, last, now, self.half_life_s))
            for item, (score, last) in ((item, scores[item]) for item in items)
        )
        return ranked(heapq.nlargest(self.size, scored, key=lambda kv: (kv[1], kv[0])))

    def _key(self, score: float, last: int) -> float:
        if self._origin is None:
            self._origin = last
        if score <= 0:
            return -math.inf
        return math.log2(score) + (last - self._origin) / 1000.0 / self.half_life_s

    def _rebuild_pool(self) -> None:
        keys = {item: self._key(score, last) for item, (score, last) in self.scores.items()}
        best = heapq.nlargest(self.size, keys.values())
        self._floor = best[-1] - self.POOL_MARGIN if len(best) == self.size else -math.inf
        self._pool = {item: None for item, key in keys.items() if key >= self._floor}
        self._pool_valid = True
