"""A generated multi-behaviour log where each encoder input carries signal the item ids lack.

The world (seeded, written as a RecBole atomic file with the extra columns ``event_log.py``
reads: ``type``, ``value``, ``context_device``):

* Catalog: ``topics`` topics of ``items_per_topic`` items each, the items of a topic on a ring
  (neighbours are similar). Item ids are ``1 .. topics * items_per_topic``.
* Users have ``tastes`` favourite topics for life. They come back in sessions, days apart
  (``session_gap_days`` mean); a session's topic is one of their tastes with probability
  ``taste_share``, else any topic. So which topics a user returns to is visible in the long
  history (the state's summary), often not in the last 50 events.
* Within a session each item is liked with probability ``like_rate``; a liked item holds the
  user for 1-5 minutes, another for 2-10 s (the **time gap** to the next event), and the next
  item is a ring neighbour of the last *liked* item of the session (random in the topic before
  the first like). Ids alone do not say which items were liked; the gaps do.
* **Types**: most events are ``view`` (some ``click``); with probability ``cart_rate`` an item
  goes to the cart, and the next event is then its ``purchase`` with probability 0.8 (the
  purchase intent ids cannot see), which ends the session. A purchase's **value** is a rating
  (4-5 for a liked item, else 1-3); after a rating of 4 or more the next session stays in the
  same topic with probability 0.8.
* **Context**: a session is on ``tv`` (mean ``tv_session`` events) or ``mobile`` (mean
  ``mobile_session``); the device says how soon the session, and its topic, ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorldConfig", "generate", "write_world"]

_START_S = 1_672_531_200  # 2023-01-01


@dataclass(frozen=True)
class WorldConfig:
    """Size and behaviour of the generated world (see the module doc)."""

    users: int = 500
    topics: int = 12
    items_per_topic: int = 50
    tastes: int = 4
    taste_share: float = 0.5
    min_events: int = 40
    max_events: int = 200
    session_gap_days: float = 2.0
    like_rate: float = 0.4
    cart_rate: float = 0.1
    tv_share: float = 0.4
    tv_session: float = 15.0
    mobile_session: float = 5.0
    seed: int = 0


Row = tuple[str, str, int, str, str, str]  # user, item, ts (s), type, value, device


def generate(config: WorldConfig) -> list[Row]:
    """Every user's events, users one after another, each in time order."""
    rng = random.Random(config.seed)
    rows: list[Row] = []
    for u in range(config.users):
        rows += _user(rng, f"u{u + 1}", config)
    return rows


def write_world(folder: Path, config: WorldConfig, name: str = "behaviour") -> Path:
    """Write ``<folder>/<name>.inter`` (and ``.item``) in time order; returns the .inter path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(generate(config), key=lambda r: r[2])  # stable: a user's ties keep their order
    inter = folder / f"{name}.inter"
    header = "user_id:token\titem_id:token\ttimestamp:float\ttype:token\tvalue:float\t"
    lines = [header + "context_device:token"]
    lines += ["\t".join((u, i, str(ts), t, v, d)) for u, i, ts, t, v, d in rows]
    inter.write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_items = config.topics * config.items_per_topic
    items = ["item_id:token\ttitle:token_seq\tgenres:token_seq"]
    items += [f"{i + 1}\titem {i + 1}\ttopic{i // config.items_per_topic}" for i in range(n_items)]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    return inter


def _user(rng: random.Random, user: str, c: WorldConfig) -> list[Row]:
    tastes = rng.sample(range(c.topics), c.tastes)
    length = rng.randint(c.min_events, c.max_events)
    ts = _START_S + rng.randint(0, 30 * 86_400)
    rows: list[Row] = []
    topic, stay = rng.choice(tastes), False
    while len(rows) < length:
        if not stay:
            topic = rng.choice(tastes) if rng.random() < c.taste_share else rng.randrange(c.topics)
        rating, ts = _session(rng, user, topic, ts, c, rows)
        stay = rating >= 4 and rng.random() < 0.8
        ts += int(rng.expovariate(1.0 / (c.session_gap_days * 86_400))) + 3_600
    return rows[:length]


def _session(
    rng: random.Random, user: str, topic: int, ts: int, c: WorldConfig, rows: list[Row]
) -> tuple[int, int]:
    """Append one session's events; returns (purchase rating or 0, time after it)."""
    device = "tv" if rng.random() < c.tv_share else "mobile"
    mean = c.tv_session if device == "tv" else c.mobile_session
    anchor: int | None = None
    for _ in range(1 + int(rng.expovariate(1.0 / max(mean - 1, 1e-9)))):
        k = _next_item(rng, anchor, c.items_per_topic)
        item = str(topic * c.items_per_topic + k + 1)
        liked = rng.random() < c.like_rate
        anchor = k if liked else anchor
        if rng.random() < c.cart_rate:
            rows.append((user, item, ts, "add_to_cart", "", device))
            ts += rng.randint(30, 120)
            if rng.random() < 0.8:
                rating = rng.randint(4, 5) if liked else rng.randint(1, 3)
                rows.append((user, item, ts, "purchase", str(rating), device))
                return rating, ts
            continue
        kind = "click" if rng.random() < 0.25 else "view"
        rows.append((user, item, ts, kind, "", device))
        ts += rng.randint(60, 300) if liked else rng.randint(2, 10)
    return 0, ts


def _next_item(rng: random.Random, anchor: int | None, size: int) -> int:
    if anchor is None:
        return rng.randrange(size)
    return (anchor + rng.choice((-2, -1, 1, 2))) % size
