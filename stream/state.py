"""Per-user state and the one function that changes it, ``apply_event``.

Layout of a ``UserState`` (stored as compact JSON in the ``user_state`` table, key user_id):

    recent    the last ``recent_length`` events as (item_id, ts_ms, type), oldest first, ordered
              by event time; ties keep arrival order
    seen_ids  the last ``dedupe_window`` event ids applied, oldest first
    weights   total weight per event type (``event_type_weights``), all history
    summary   long-term memory of events pushed out of ``recent``: at most ``summary_slices``
              time slices ``(slice_start_ms, {item_id: weight})``, each holding its
              ``summary_items`` heaviest items. When a slice too many exists, the two oldest
              merge: the older one's weights decay by ``0.5 ** (gap / half_life)`` to the newer
              start and add up. So a long history costs O(slices * items), not O(events).
    last_ts   newest event time applied (ms); count: events applied
    position  (partition, offset) of the last record applied

Idempotency, two rules. (1) Redelivery: offsets are committed after processing (at-least-once),
so after a crash or rebalance the worker re-reads the records since the last commit. One user's
records all live in one partition (events are keyed by user_id), in offset order, so a record
at or below ``position`` in the same partition was applied already and changes nothing, however
many there are. (2) Producer duplicates (the same event published twice, at two offsets): an
``event_id`` among the last ``dedupe_window`` applied ids changes nothing.

Late events: an event older than the newest in ``recent`` is inserted at its time position; one
older than everything in a full ``recent`` goes straight to the summary. The result is the same
as if events had arrived in time order, except for the recency cut itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event

Recent = tuple[str, int, str]


@dataclass
class UserState:
    recent: list[Recent] = field(default_factory=list)
    seen_ids: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    summary: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    last_ts: int = 0
    count: int = 0
    position: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """Compact JSON form stored in the table (short keys keep the changelog small)."""
        return {
            "r": [list(r) for r in self.recent],
            "i": self.seen_ids,
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
        return cls(
            recent=[(str(i), int(ts), str(t)) for i, ts, t in obj["r"]],
            seen_ids=list(obj["i"]),
            weights={k: float(v) for k, v in obj["w"].items()},
            summary=[(int(start), dict(items)) for start, items in obj["s"]],
            last_ts=int(obj["t"]),
            count=int(obj["n"]),
            position=(int(obj["o"][0]), int(obj["o"][1])) if obj.get("o") else None,
        )

    def history(self) -> list[str]:
        """Recent item ids, oldest first (the encoder's input sequence)."""
        return [item for item, _, _ in self.recent]

    def seen_items(self) -> set[str]:
        """Every item this state still remembers: recent plus summary."""
        seen = {item for item, _, _ in self.recent}
        for _, items in self.summary:
            seen.update(items)
        return seen


def apply_event(
    state: UserState, event: Event, settings: StateSettings, position: tuple[int, int] | None = None
) -> bool:
    """Apply ``event`` (read at ``position`` = (partition, offset), if known) to ``state`` in
    place; False when it is a redelivery or a duplicate (state unchanged)."""
    if position is not None and _redelivered(state.position, position):
        return False
    if event.event_id in state.seen_ids:
        if position is not None:
            state.position = position  # skip this record for good, even if ids roll out
        return False
    if position is not None:
        state.position = position
    state.seen_ids.append(event.event_id)
    if len(state.seen_ids) > settings.dedupe_window:
        del state.seen_ids[: len(state.seen_ids) - settings.dedupe_window]
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
    while len(state.recent) > settings.recent_length:
        _summarise(state, state.recent.pop(0), settings)
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
