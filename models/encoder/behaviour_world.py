"""A generated multi-behaviour log where each encoder input decides the next *new* item.

The evaluation protocol ranks only items the user has not had (history excluded), so a signal
that points at a repeat is invisible to it. In this world nobody meets an item twice, and each
input resolves a choice the item ids leave open (seeded; a RecBole atomic file with the extra
columns ``event_log.py`` reads: ``type``, ``context_device``):

* **Catalog**: ``topics`` topics of ``families`` families of ``family_size`` items. Item ids
  are ``1 ..``, a family's items consecutive. The families of a topic sit on a ring.
* **Sessions** open with a *landing*: an item from anywhere in the catalog (the home page).
  With probability ``detour_rate`` an in-session event is followed by a *detour*: another item
  from anywhere, after which the user goes on from where they were. A session is a *visit*
  (``session_gap_days`` after the last one on average, exponential, at least an hour, at most
  ``return_days / 2``) or, with probability ``return_share`` and always for a user's first
  session, a *return* after an absence of ``return_days`` or more (``return_days`` plus an
  exponential of that mean).
* **Visits pick up where the user left off** (a shop's "continue browsing" row): after the
  landing the walk goes on from the family the previous session was heading to. To item ids a
  visit's landing is a detour like any other.
* **Returns come back to a lifelong taste.** After a return's landing the next item is in one
  of the user's ``tastes`` families with probability ``taste_strength`` (else any family).
* **The gap before an event says how the user reached it**, drawn per event: with probability
  ``list_share`` from a category listing, paged through in 5-20 s, else from a product page
  read for 40-120 s. After a view reached from a listing the next item is, with probability
  ``list_strength``, from the same family (the user pages on through the list); after a page,
  the walk turns. Earlier events do not give it away, and at serving a slate is built right
  after the newest event, so the gap before it, which carries the signal, is known. So are
  the weeks before a return's landing (a taste comes next); the gap before the *next* event
  is not, and carries nothing here.
* **Long-term tastes** recur only after returns, so a 50-event window holds about one or two
  of them, and the state's summary slices hold the earlier ones.
* **Types**: an in-session event is an ``add_to_cart`` with probability ``cart_rate`` (else a
  ``view``, a quarter of them ``click``). After a cart the next item is, with probability
  ``intent_strength``, in the carted item's accessory family (the same family of the topic
  ``topics // 2`` away): purchase intent. Otherwise the walk goes on.
* **Context**: every event's device is ``tv`` (probability ``tv_share``) or ``mobile``, drawn
  per event (users switch screens, so earlier events do not give it away). After a page view
  the walk moves to the next family of the topic's ring on a tv and to the previous one on mobile,
  with probability ``context_strength`` (else either, evenly).

So item ids alone can learn each item's topic neighbourhood (its family and the two either
side, and after a random item, the session), types add which of those an accessory beats, gaps
whether the newest item came from a listing (same family next) or opened a return (a taste
next), the summary which families are tastes, and the device which way a page view turns.
Every strength at 0 leaves only what ids can see. Nothing here is beyond a real shop: event
types, device, timestamps and a user's own history are what its logs hold.
``tests/unit/models/encoder/test_behaviour_world.py`` checks each signal in the generated data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorldConfig", "generate", "write_world"]

_START_S = 1_672_531_200  # 2023-01-01
_HOUR_S = 3_600
_DAY_S = 86_400


@dataclass(frozen=True)
class WorldConfig:
    """Size, behaviour and the strength of each signal of the generated world (module doc)."""

    users: int = 500
    topics: int = 6
    families: int = 6
    family_size: int = 16
    tastes: int = 2
    min_events: int = 30
    max_events: int = 150
    session_events: float = 7.0
    session_gap_days: float = 2.0
    return_share: float = 0.3
    return_days: float = 14.0
    detour_rate: float = 0.15
    cart_rate: float = 0.2
    tv_share: float = 0.5
    taste_strength: float = 0.8
    list_share: float = 0.5
    list_strength: float = 1.0
    intent_strength: float = 1.0
    context_strength: float = 1.0
    seed: int = 0

    @property
    def items(self) -> int:
        """Catalog size."""
        return self.topics * self.families * self.family_size

    def family_of(self, item: int) -> int:
        """Family index (``topic * families + f``) of a 1-based item id."""
        return (item - 1) // self.family_size

    def accessory(self, family: int) -> int:
        """The family whose items follow a cart of an item of ``family``."""
        topic, f = divmod(family, self.families)
        return ((topic + self.topics // 2) % self.topics) * self.families + f

    def turn(self, family: int, step: int) -> int:
        """The family ``step`` places along ``family``'s topic ring."""
        topic, f = divmod(family, self.families)
        return topic * self.families + (f + step) % self.families


Row = tuple[str, str, int, str, str]  # user, item, ts (s), type, device


def generate(config: WorldConfig) -> list[Row]:
    """Every user's events, users one after another, each in time order."""
    rng = random.Random(config.seed)
    rows: list[Row] = []
    for u in range(config.users):
        rows += _User(rng, f"u{u + 1}", config).events()
    return rows


def write_world(folder: Path, config: WorldConfig, name: str = "behaviour") -> Path:
    """Write ``<folder>/<name>.inter`` (and ``.item``) in time order; returns the .inter path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(generate(config), key=lambda r: r[2])  # stable: a user's ties keep their order
    inter = folder / f"{name}.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float\ttype:token\tcontext_device:token"]
    lines += ["\t".join((u, i, str(ts), t, d)) for u, i, ts, t, d in rows]
    inter.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = ["item_id:token\ttitle:token_seq\tgenres:token_seq"]
    items += [
        f"{i}\titem {i}\ttopic{config.family_of(i) // config.families}"
        for i in range(1, config.items + 1)
    ]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    return inter


class _User:
    """One user's life: sessions of a walk over families, each item met at most once."""

    def __init__(self, rng: random.Random, user: str, config: WorldConfig) -> None:
        self.rng, self.user, self.c = rng, user, config
        n_families = config.topics * config.families
        self.tastes = rng.sample(range(n_families), config.tastes)
        self.seen: set[int] = set()
        self.rows: list[Row] = []
        self.ts = _START_S + rng.randint(0, 30 * _DAY_S)
        self.resume = 0  # the family the walk was heading to when the last session ended

    def events(self) -> list[Row]:
        c, rng = self.c, self.rng
        length = rng.randint(c.min_events, c.max_events)
        returning = True  # a new user arrives with their tastes
        while len(self.rows) < length:
            self._session(returning)
            returning = rng.random() < c.return_share
            self.ts += self._absence(returning)
        return self.rows[:length]

    def _absence(self, returning: bool) -> int:
        """Seconds from a session's last event to the next landing (module doc)."""
        c, rng = self.c, self.rng
        if returning:
            return int(c.return_days * _DAY_S * (1.0 + rng.expovariate(1.0)))
        visit = _HOUR_S + rng.expovariate(1.0 / (c.session_gap_days * _DAY_S))
        return int(min(visit, c.return_days * _DAY_S / 2))

    def _session(self, returning: bool) -> None:
        c, rng = self.c, self.rng
        self._emit(self._anywhere(), "view")  # the landing
        family = self.resume
        if returning:
            taste = rng.random() < c.taste_strength
            family = rng.choice(self.tastes) if taste else rng.randrange(c.topics * c.families)
        for _ in range(1 + int(rng.expovariate(1.0 / max(c.session_events - 1.0, 1e-9)))):
            listing = rng.random() < c.list_share
            self.ts += rng.randint(5, 20) if listing else rng.randint(40, 120)
            item = self._pick(family)
            kind = "add_to_cart" if rng.random() < c.cart_rate else self._browse()
            device = self._emit(item, kind)
            stay = listing and rng.random() < c.list_strength
            family = self._next_family(c.family_of(item), kind, device, stay)
            if rng.random() < c.detour_rate:
                self.ts += rng.randint(5, 120)
                self._emit(self._anywhere(), self._browse())
        self.resume = family

    def _next_family(self, family: int, kind: str, device: str, stay: bool) -> int:
        c, rng = self.c, self.rng
        if kind == "add_to_cart" and rng.random() < c.intent_strength:
            return c.accessory(family)
        if stay:
            return family
        if rng.random() < c.context_strength:
            return c.turn(family, 1 if device == "tv" else -1)
        return c.turn(family, rng.choice((1, -1)))

    def _browse(self) -> str:
        return "click" if self.rng.random() < 0.25 else "view"

    def _emit(self, item: int, kind: str) -> str:
        device = "tv" if self.rng.random() < self.c.tv_share else "mobile"
        self.seen.add(item)
        self.rows.append((self.user, str(item), self.ts, kind, device))
        return device

    def _pick(self, family: int) -> int:
        """An unseen item of ``family``; of its topic when the family is used up."""
        size, fams = self.c.family_size, self.c.families
        start = family * size + 1
        fresh = [i for i in range(start, start + size) if i not in self.seen]
        if not fresh:
            first = (family // fams) * fams * size + 1
            fresh = [i for i in range(first, first + fams * size) if i not in self.seen]
        return self.rng.choice(fresh) if fresh else self._anywhere()

    def _anywhere(self) -> int:
        """An unseen item of the whole catalog (users never exhaust it: max_events < items)."""
        while True:
            item = self.rng.randint(1, self.c.items)
            if item not in self.seen:
                return item
