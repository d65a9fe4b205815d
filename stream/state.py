"""Per-user state and the one function that changes it, ``apply_event``.

Layout of a ``UserState`` (stored as compact JSON in the ``user_state`` table, key user_id):

    recent     the last ``recent_length`` events as (item_id, ts_ms, type), oldest first, ordered
               by event time; ties keep arrival order
    extras     per recent event that has them, its value (``value``, else ``dwell_ms`` in
               seconds) and the context fields named in ``context_fields``: what an encoder
               trained with values or context reads. Stored inline as the 4th and 5th element
               of the event's ``r`` entry, so an event without them costs nothing; dropped when
               the event leaves ``recent``.
    event_ids  every applied event id, in a ``SeenSet`` (``stream/seen.py``) sized by
               ``seen_event_ids``: exact up to 256 ids, then two Bloom generations that always
               remember the last 2,000 ids (forget those older than 4,000) with at most 1e-6
               false positives. JSON key ``i``; older states stored the last 128 ids there as a
               list, which is the exact form, so they load as they are.
    seen       every item the user interacted with through a type not in ``repeatable_types``,
               a ``SeenSet`` sized by ``seen_items``: exact up to 256 items, then Bloom
               generations remembering the last 2,000 (at most 4,000) items with at most 1 %
               false positives. JSON key ``x``; a state without it starts from its recent and
               summary items (what it excluded before).
    weights    total weight per event type (``event_type_weights``), all history
    summary    long-term memory of events pushed out of ``recent``: at most ``summary_slices``
               time slices ``(slice_start_ms, {item_id: weight})``, each holding its
               ``summary_items`` heaviest items. When a slice too many exists, the two oldest
               merge: the older one's weights decay by ``0.5 ** (gap / half_life)`` to the newer
               start and add up. So a long history costs O(slices * items), not O(events).
    last_ts    newest event time applied (ms); count: events applied
    position   (partition, offset) of the last record applied

Bounded: with the default settings the JSON of a user stays under 40 KiB however many events
they have (measured in ``tests/unit/stream/test_state.py`` after 100,000 events: two 10 KB and
two 3.7 KB Bloom generations in base64, plus recent and summary).

Idempotency, two rules. (1) Redelivery: offsets are committed after processing (at-least-once),
so after a crash or rebalance the worker re-reads the records since the last commit. One user's
records all live in one partition (events are keyed by user_id), in offset order, so a record
at or below ``position`` in the same partition was applied already and changes nothing, however
many there are. (2) Producer duplicates (the same event published twice, at two offsets, or a
whole history re-sent with the same ids): an ``event_id`` in ``event_ids`` changes nothing but
``position``. Rule (2) can err: once a user has more than 256 ids, a new id reads as applied
with probability at most 1e-6 and that genuine event is dropped. That is the price of a bounded
state; ids older than the last 2,000 to 4,000 can be applied twice.

Seen items: ``has_seen`` and ``seen`` (a ``Container[str]``) say whether to keep an item out of
the user's slates. An unseen item reads as seen with probability at most 1 % once the user has
more than 256 seen items (a lost candidate, not a repeat); items older than the last 2,000 to
4,000 seen ones are forgotten and may be recommended again.

Late events: an event older than the newest in ``recent`` is inserted at its time position; one
older than everything in a full ``recent`` goes straight to the summary. The result is the same
as if events had arrived in time order, except for the recency cut itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from streamrec.stream.config import StateSettings
from streamrec.stream.contract import ContextValue, Event
from streamrec.stream.seen import SeenSet

Recent = tuple[str, int, str]
# A recent event's value and kept context fields (either may be absent, not both).
Extra = tuple[float | None, dict[str, ContextValue] | None]


@dataclass
class UserState:
    recent: list[Recent] = field(default_factory=list)
    extras: dict[Recent, Extra] = field(default_factory=dict)
    event_ids: SeenSet = field(default_factory=SeenSet)
    seen: SeenSet = field(default_factory=SeenSet)
    weights: dict[str, float] = field(default_factory=dict)
    summary: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    last_ts: int = 0
    count: int = 0
    position: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """Compact JSON form stored in the table (short keys keep the changelog small)."""
        return {
            "r": _recent_to_json(self.recent, self.extras),
            "i": self.event_ids.to_json(),
            "x": self.seen.to_json(),
            "w": self.weights,
            "s": [[start, items] for start, items in self.summary],
            "t": self.last_ts,
            "n": self.count,
            "o": list(self.position) if self.position else None,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> UserState:
        if not obj:
            return cls()
        recent, extras = _recent_from_json(obj["r"])
        state = cls(
            recent=recent,
            extras=extras,
            event_ids=SeenSet.from_json(obj["i"]),
            seen=SeenSet.from_json(obj.get("x")),
            weights={k: float(v) for k, v in obj["w"].items()},
            summary=[(int(start), dict(items)) for start, items in obj["s"]],
            last_ts=int(obj["t"]),
            count=int(obj["n"]),
            position=(int(obj["o"][0]), int(obj["o"][1])) if obj.get("o") else None,
        )
        if "x" not in obj:  # written before seen items were kept: start from what it remembers
            state.seen = SeenSet(exact=dict.fromkeys(state._remembered_items()))
        return state

    def copy(self) -> UserState:
        """An independent copy for ``apply_event`` to change: the worker's cached state may be
        read meanwhile by a slate being built from it (stream/write_behind.py), so the worker
        changes a copy and caches that. Far cheaper than a JSON round trip."""
        return UserState(
            recent=list(self.recent),
            extras=dict(self.extras),  # its values are tuples, replaced, never changed
            event_ids=self.event_ids.copy(),
            seen=self.seen.copy(),
            weights=dict(self.weights),
            summary=[(start, dict(items)) for start, items in self.summary],
            last_ts=self.last_ts,
            count=self.count,
            position=self.position,
        )

    def history(self) -> list[str]:
        """Recent item ids, oldest first (the encoder's input sequence)."""
        return [item for item, _, _ in self.recent]

    def distinct_history(self) -> list[str]:
        """``history`` with each item at its latest event only, oldest first: a burst of events
        on one item (its view, click, dwell and cart) is one visit of it to co-visitation."""
        return list(reversed(dict.fromkeys(reversed(self.history()))))

    def covisit_previous(self, item_id: str, window: int) -> tuple[str, ...]:
        """The ``window`` items visited last before an event of ``item_id``, other than it:
        what co-visitation pairs the event with. Counted in events, a view, click and dwell of
        one item filled a window of 3 with that item alone, and no pair was learnt."""
        found: dict[str, None] = {}
        for item, _, _ in reversed(self.recent):  # newest first, stopping at the window: ingest
            if item != item_id:  # calls it per event, and recent can hold 1,000 events
                found[item] = None
                if len(found) == window:
                    break
        return tuple(reversed(found))

    def has_seen(self, item_id: str) -> bool:
        """True when ``item_id`` must stay out of this user's slates: always for the last 2,000
        seen items (``seen_items.capacity``), wrongly for at most 1 % of unseen ones."""
        return item_id in self.seen

    def seen_items(self) -> set[str]:
        """The seen items this state can list: those of recent and summary that ``has_seen``.

        For an index that needs explicit ids (FAISS); a subset of what ``seen`` excludes, so
        post-filter its hits with ``seen`` as well.
        """
        return {item for item in self._remembered_items() if item in self.seen}

    def _remembered_items(self) -> list[str]:
        """Items of recent, then of the summary slices, each once, in that order."""
        items = dict.fromkeys(item for item, _, _ in self.recent)
        for _, slice_items in self.summary:
            items.update(dict.fromkeys(slice_items))
        return list(items)


def _recent_to_json(recent: list[Recent], extras: dict[Recent, Extra]) -> list[list[Any]]:
    """Each entry as a list; one with extras carries its value, then its context if any."""
    if not extras:
        return [list(r) for r in recent]
    out = []
    for entry in recent:
        extra = extras.get(entry)
        if extra is None:
            out.append(list(entry))
        elif extra[1] is None:
            out.append([*entry, extra[0]])
        else:
            out.append([*entry, *extra])
    return out


def _recent_from_json(raw: list[list[Any]]) -> tuple[list[Recent], dict[Recent, Extra]]:
    recent: list[Recent] = []
    extras: dict[Recent, Extra] = {}
    for r in raw:
        entry = (str(r[0]), int(r[1]), str(r[2]))
        recent.append(entry)
        if len(r) > 3:
            extras[entry] = (None if r[3] is None else float(r[3]), r[4] if len(r) > 4 else None)
    return recent, extras


def event_extra(event: Event, context_fields: tuple[str, ...]) -> Extra | None:
    """What ``extras`` keeps of ``event``: its value (else its dwell in seconds) and the named
    context fields it has; None when it has neither."""
    value = event.value
    if value is None and event.dwell_ms is not None:
        value = event.dwell_ms / 1000
    ctx = event.context or {}
    kept = {name: v for name in context_fields if (v := ctx.get(name)) is not None}
    if value is None and not kept:
        return None
    return value, kept or None


def apply_event(
    state: UserState, event: Event, settings: StateSettings, position: tuple[int, int] | None = None
) -> bool:
    """Apply ``event`` (read at ``position`` = (partition, offset), if known) to ``state`` in
    place; False when it is a redelivery or a duplicate. Neither changes the state, except that
    a duplicate moves ``position`` and keeps its id remembered (``SeenSet.add``)."""
    if position is not None and _redelivered(state.position, position):
        return False
    if position is not None:
        state.position = position  # a duplicate is skipped for good too, even if ids roll out
    if not state.event_ids.add(event.event_id, settings.seen_event_ids):
        return False
    if settings.marks_seen(event):
        state.seen.add(event.item_id, settings.seen_items)
    weight = settings.event_type_weights.get(event.type, 1.0)
    state.weights[event.type] = state.weights.get(event.type, 0.0) + weight
    state.count += 1
    state.last_ts = max(state.last_ts, event.ts)
    entry: Recent = (event.item_id, event.ts, event.type)
    if len(state.recent) >= settings.recent_length and event.ts < state.recent[0][1]:
        _summarise(state, entry, settings)  # older than all we keep verbatim
        return True
    # Insert after every event with ts <= this one: time order, arrival order among ties.
    pos = bisect.bisect_right([ts for _, ts, _ in state.recent], event.ts)
    state.recent.insert(pos, entry)
    # Two events with one (item, time, type) share a key: the newer one's extras are read.
    extra = event_extra(event, settings.context_fields)
    if extra is None:
        state.extras.pop(entry, None)
    else:
        state.extras[entry] = extra
    while len(state.recent) > settings.recent_length:
        old = state.recent.pop(0)
        if old in state.extras and old not in state.recent:
            del state.extras[old]
        _summarise(state, old, settings)
    return True


def _redelivered(last: tuple[int, int] | None, position: tuple[int, int]) -> bool:
    """Same partition, offset not past the last applied one."""
    return last is not None and last[0] == position[0] and position[1] <= last[1]


def _summarise(state: UserState, entry: Recent, settings: StateSettings) -> None:
    item, ts, kind = entry
    start = ts - ts % (settings.summary_slice_s * 1000)
    starts = [s for s, _ in state.summary]
    pos = bisect.bisect_left(starts, start)
    if pos == len(starts) or starts[pos] != start:
        state.summary.insert(pos, (start, {}))
    items = state.summary[pos][1]
    items[item] = items.get(item, 0.0) + settings.event_type_weights.get(kind, 1.0)
    _truncate(items, settings.summary_items)
    while len(state.summary) > settings.summary_slices:
        _merge_oldest(state, settings)


def _merge_oldest(state: UserState, settings: StateSettings) -> None:
    (old_start, old), (new_start, new) = state.summary[0], state.summary[1]
    decay = 0.5 ** ((new_start - old_start) / 1000 / settings.decay_half_life_s)
    merged = dict(new)
    for item, weight in old.items():
        merged[item] = merged.get(item, 0.0) + weight * decay
    _truncate(merged, settings.summary_items)
    state.summary[:2] = [(new_start, merged)]


def _truncate(items: dict[str, float], keep: int) -> None:
    if len(items) <= keep:
        return
    # Heaviest first; ties by item id so every replica truncates identically.
    kept = sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    items.clear()
    items.update(kept)
