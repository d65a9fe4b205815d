"""A synthetic shop: many users, Zipf-popular items, a mix of event types, and its catalog.

For benchmarks at a cardinality no bundled dataset has (MovieLens-100K has 943 users, so every
user's state stays in the worker's write-behind cache). What it models:

    users   drawn uniformly from ``users``: each appears about events/users times, spread over
            the whole stream, so most events come from a user who was not active recently
            (a shop with many light visitors; the worker has to load their state)
    items   drawn with Zipf popularity, P(rank k) ~ k ** -zipf: a few items get most of the
            traffic, the long tail gets some; item ``i0`` is the most popular
    types   views mostly, then clicks, dwells, add-to-carts and purchases (``TYPE_SHARES``)
    time    event time advances ``STEP_MS`` per event, in order

The same workload and seed give the same events and catalog, in the same order. Ids are short
(``u123``, ``i45``, ``s678``); no encoder is trained on them, so only the heuristic path can
serve them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamrec.stream.contract import Event, EventType, Item

TYPES: tuple[EventType, ...] = ("view", "click", "dwell", "add_to_cart", "purchase")
TYPE_SHARES = (0.6, 0.25, 0.1, 0.04, 0.01)
START_MS = 1_700_000_000_000
STEP_MS = 50  # 1,000,000 events span about 14 hours of event time
CATEGORIES = 20  # catalog categories, assigned round-robin by item rank


@dataclass(frozen=True)
class Workload:
    """``events`` events of ``users`` users on ``items`` items (Zipf exponent ``zipf``)."""

    users: int
    items: int
    events: int
    zipf: float = 1.1
    seed: int = 13

    def describe(self) -> dict[str, object]:
        """What a report says about the workload."""
        return {
            "workload": "synthetic",
            "users": self.users,
            "items": self.items,
            "events": self.events,
            "zipf": self.zipf,
            "seed": self.seed,
        }


def item_popularity(items: int, zipf: float) -> np.ndarray:
    """P(item of rank k), k = 1..items, proportional to k ** -zipf; sums to 1."""
    popularity = np.arange(1, items + 1, dtype=np.float64) ** -zipf
    normalised: np.ndarray = popularity / popularity.sum()
    return normalised


def synthetic_events(workload: Workload, chunk: int = 10_000) -> Iterator[Event]:
    """The workload's events in time order, their random draws made ``chunk`` at a time."""
    rng = np.random.default_rng(workload.seed)
    popularity = item_popularity(workload.items, workload.zipf)
    for start in range(0, workload.events, chunk):
        n = min(chunk, workload.events - start)
        users = rng.integers(0, workload.users, n)
        items = rng.choice(workload.items, n, p=popularity)
        types = rng.choice(len(TYPES), n, p=TYPE_SHARES)
        for k in range(n):
            index = start + k
            yield Event(
                event_id=f"s{index}",
                user_id=f"u{users[k]}",
                item_id=f"i{items[k]}",
                type=TYPES[types[k]],
                ts=START_MS + index * STEP_MS,
            )


def synthetic_items(workload: Workload) -> Iterator[Item]:
    """The catalog of every item the events can name, most popular first."""
    for k in range(workload.items):
        yield Item(item_id=f"i{k}", title=f"Item {k}", categories=[f"c{k % CATEGORIES}"])
