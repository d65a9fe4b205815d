"""apply_event: bounded sequences, idempotency, late events, long-term summary."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event
from streamrec.stream.state import UserState, apply_event

BASE = 1_700_000_000_000
DAY_MS = 86_400_000


def ev(n: int, ts: int, item: str | None = None, kind: str = "click") -> Event:
    return Event(event_id=f"e{n}", user_id="u", item_id=item or f"i{n}", type=kind, ts=ts)  # type: ignore[arg-type]


def test_duplicate_event_changes_nothing() -> None:
    s, cfg = UserState(), StateSettings()
    assert apply_event(s, ev(1, BASE), cfg)
    before = s.to_json()
    assert not apply_event(s, ev(1, BASE), cfg)
    assert s.to_json() == before


def test_redelivered_records_are_skipped_by_offset_beyond_the_id_window() -> None:
    cfg = StateSettings(dedupe_window=4)
    s = UserState()
    for n in range(20):
        assert apply_event(s, ev(n, BASE + n), cfg, (2, 100 + n))
    before = s.to_json()
    for n in range(20):  # the whole partition re-read after a crash
        assert not apply_event(s, ev(n, BASE + n), cfg, (2, 100 + n))
    assert s.to_json() == before


def test_a_producer_duplicate_at_a_new_offset_is_dropped_by_event_id() -> None:
    s, cfg = UserState(), StateSettings()
    assert apply_event(s, ev(1, BASE), cfg, (0, 5))
    assert not apply_event(s, ev(1, BASE), cfg, (0, 9))
    assert s.count == 1 and s.position == (0, 9)


def test_recent_is_bounded_and_overflow_goes_to_summary() -> None:
    cfg = StateSettings(recent_length=5, summary_slices=3, summary_items=4)
    s = UserState()
    for n in range(40):
        apply_event(s, ev(n, BASE + n * DAY_MS), cfg)
    assert [i for i, _, _ in s.recent] == [f"i{n}" for n in range(35, 40)]
    assert len(s.summary) == 3
    assert all(len(items) <= 4 for _, items in s.summary)
    assert s.count == 40 and s.last_ts == BASE + 39 * DAY_MS
    assert s.weights == {"click": 40 * cfg.event_type_weights["click"]}


def test_late_event_is_placed_by_time_and_ties_keep_arrival_order() -> None:
    s, cfg = UserState(), StateSettings()
    apply_event(s, ev(1, BASE + 10), cfg)
    apply_event(s, ev(2, BASE + 30), cfg)
    apply_event(s, ev(3, BASE + 20), cfg)  # late
    apply_event(s, ev(4, BASE + 20), cfg)  # tie with the late one: after it
    assert s.history() == ["i1", "i3", "i4", "i2"]


def test_event_older_than_a_full_window_goes_straight_to_summary() -> None:
    cfg = StateSettings(recent_length=2)
    s = UserState()
    apply_event(s, ev(1, BASE + 5 * DAY_MS), cfg)
    apply_event(s, ev(2, BASE + 6 * DAY_MS), cfg)
    apply_event(s, ev(3, BASE), cfg)
    assert s.history() == ["i1", "i2"]
    assert "i3" in s.seen_items()


def test_summary_merge_decays_the_older_slice() -> None:
    cfg = StateSettings(
        recent_length=1, summary_slices=1, summary_slice_s=86_400, decay_half_life_s=86_400.0
    )
    s = UserState()
    apply_event(s, ev(1, BASE, item="a"), cfg)
    apply_event(s, ev(2, BASE + DAY_MS, item="b"), cfg)  # pushes a into slice 0
    apply_event(s, ev(3, BASE + 2 * DAY_MS, item="c"), cfg)  # b into slice 1 -> merge
    ((_, items),) = s.summary
    w = cfg.event_type_weights["click"]
    assert abs(items["a"] - w * 0.5) < 1e-9 and abs(items["b"] - w) < 1e-9


def test_json_round_trip() -> None:
    s, cfg = UserState(), StateSettings(recent_length=3)
    for n in range(10):
        apply_event(s, ev(n, BASE + n * DAY_MS, kind=random.choice(["view", "purchase"])), cfg)
    assert UserState.from_json(s.to_json()) == s


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10**9)), min_size=1, max_size=80))
def test_redelivery_of_any_prefix_never_double_counts(deliveries: list[tuple[int, int]]) -> None:
    """At-least-once: re-applying the events since the last commit leaves the state as is."""
    cfg = StateSettings(recent_length=10)
    events = [ev(n, BASE + ts) for n, ts in deliveries]
    once = UserState()
    for e in events:
        apply_event(once, e, cfg)
    twice = UserState()
    cut = len(events) // 2
    for e in events[:cut] + events[cut // 2 :]:  # crash after `cut`, resume from cut // 2
        apply_event(twice, e, cfg)
    assert twice == once
    assert once.count == len({n for n, _ in deliveries})
