"""apply_event: bounded sequences, idempotency, late events, long-term summary, seen items."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.stream.config import SeenIdsSettings, SeenSetSettings, StateSettings
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
    cfg = StateSettings(seen_event_ids=SeenIdsSettings(exact_limit=1, capacity=2))
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


def test_a_copy_changes_apart_from_its_original_in_every_part() -> None:
    cfg = StateSettings(
        recent_length=3,
        context_fields=("device",),
        seen_items=SeenSetSettings(exact_limit=4, capacity=8),
        seen_event_ids=SeenIdsSettings(exact_limit=4, capacity=8),
    )
    for phase in (2, 12):  # exact sets and a short summary; Bloom generations, merged slices
        s = UserState()
        for n in range(phase):
            event = ev(n, BASE + n * DAY_MS, item=f"i{n % 5}").model_copy(
                update={"value": float(n), "context": {"device": "tv"}}
            )
            apply_event(s, event, cfg, (0, n))
        before = json.dumps(s.to_json())
        copy = s.copy()
        assert copy == s
        for n in range(phase, phase + 6):
            late = ev(n, BASE + (n % 3) * DAY_MS + 1, item=f"j{n}")  # into recent and summary
            assert apply_event(copy, late, cfg, (0, n))
        assert json.dumps(s.to_json()) == before, f"the original changed after {phase} events"
        assert copy != s


def test_values_and_kept_context_live_as_long_as_their_recent_event() -> None:
    cfg = StateSettings(recent_length=3, context_fields=("device",))
    s = UserState()
    for n in range(6):
        extra = {"value": float(n)} if n % 2 else {"dwell_ms": 1500 * n}
        event = ev(n, BASE + n * 1000).model_copy(
            update={**extra, "context": {"device": "tv", "page": "home"}}
        )
        apply_event(s, event, cfg)
    assert [s.extras[r] for r in s.recent] == [
        (3.0, {"device": "tv"}),  # the value, else the dwell in seconds; only kept fields
        (6.0, {"device": "tv"}),
        (5.0, {"device": "tv"}),
    ]
    assert set(s.extras) == set(s.recent)  # those that left recent left extras too
    plain = ev(9, BASE + 9000)
    apply_event(s, plain, cfg)  # no value, no context: no entry, nothing stored
    assert (plain.item_id, plain.ts, plain.type) not in s.extras
    assert s.to_json()["r"][-1] == [plain.item_id, plain.ts, plain.type]
    assert UserState.from_json(json.loads(json.dumps(s.to_json()))) == s


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


def _without_position(state: UserState) -> dict[str, object]:
    return {k: v for k, v in state.to_json().items() if k != "o"}


def test_a_re_sent_history_of_thousands_of_events_changes_nothing() -> None:
    """A producer re-running a replay after an outage sends every id again at new offsets."""
    s, cfg = UserState(), StateSettings()
    history = [ev(n, BASE + n * 60_000, item=f"i{n % 700}") for n in range(3_000)]
    for offset, e in enumerate(history):
        assert apply_event(s, e, cfg, (1, offset))
    before = _without_position(s)
    applied = [apply_event(s, e, cfg, (1, 3_000 + k)) for k, e in enumerate(history)]
    assert not any(applied)
    assert _without_position(s) == before and s.count == 3_000 and s.position == (1, 5_999)


def test_every_item_is_seen_beyond_recent_and_summary_unless_its_type_repeats() -> None:
    cfg = StateSettings(recent_length=5, summary_slices=1, summary_items=3)
    s = UserState()
    for n in range(300):  # far more items than recent and summary hold
        apply_event(s, ev(n, BASE + n * DAY_MS), cfg)
    apply_event(s, ev(300, BASE + 300 * DAY_MS, item="bought", kind="purchase"), cfg)
    assert all(s.has_seen(f"i{n}") for n in range(300)) and s.has_seen("bought")
    assert not s.has_seen("never") and "never" not in s.seen
    repeat = StateSettings(recent_length=5, repeatable_types=frozenset({"purchase"}))
    r = UserState()
    apply_event(r, ev(1, BASE, item="milk", kind="purchase"), repeat)
    apply_event(r, ev(2, BASE + 1, item="bread", kind="view"), repeat)
    assert not r.has_seen("milk") and r.has_seen("bread")
    assert r.seen_items() == {"bread"}  # explicit ids for FAISS agree with has_seen


def test_seen_items_lists_the_recent_and_summary_items_the_seen_set_holds() -> None:
    cfg = StateSettings(recent_length=3, summary_slices=2, summary_items=2)
    s = UserState()
    for n in range(10):
        apply_event(s, ev(n, BASE + n * DAY_MS), cfg)
    listed = {item for item, _, _ in s.recent} | {i for _, items in s.summary for i in items}
    assert s.seen_items() == listed and all(s.has_seen(i) for i in listed)


def test_state_written_before_seen_sets_still_loads() -> None:
    """Changelogs hold states without ``x`` whose ``i`` lists the last 128 event ids."""
    old = {
        "r": [["i2", BASE + 2, "click"], ["i3", BASE + 3, "view"]],
        "i": ["e1", "e2", "e3"],
        "w": {"click": 4.0, "view": 1.0},
        "s": [[BASE - BASE % (86_400 * 1000), {"i1": 2.0}]],
        "t": BASE + 3,
        "n": 3,
        "o": [0, 7],
    }
    s, cfg = UserState.from_json(old), StateSettings()
    assert s.seen_items() == {"i1", "i2", "i3"}
    assert not apply_event(s, ev(2, BASE + 2), cfg, (0, 8))  # a known id: a duplicate
    assert apply_event(s, ev(4, BASE + 4), cfg, (0, 9))
    assert s.has_seen("i4") and s.count == 4
    assert UserState.from_json(json.loads(json.dumps(s.to_json()))) == s


# Defaults: two 1e-6 generations (10,068 base64 digits each) and two 1 % ones (3,680), 50
# recent events with a value and a device each, and 8 x 32 summary items of 13-character ids:
# about 37 KB.
MAX_STATE_JSON_BYTES = 40 * 1024


def test_the_state_of_a_user_with_100000_events_stays_bounded() -> None:
    s, cfg = UserState(), StateSettings(context_fields=("device",))
    sizes: dict[int, int] = {}
    applied = 0
    extra = {"value": 4.5, "context": {"device": "ios", "page": "home"}}
    for n in range(100_000):
        event = ev(n, BASE + n * 60_000, item=f"item-{n:08d}").model_copy(update=extra)
        applied += apply_event(s, event, cfg)
        if n + 1 in (10_000, 100_000):
            sizes[n + 1] = len(json.dumps(s.to_json(), separators=(",", ":")))
    assert sizes[100_000] <= MAX_STATE_JSON_BYTES
    assert sizes[100_000] <= sizes[10_000] * 1.02  # it levelled off: no growth with history
    # New ids read as applied with probability <= 1e-6 each (one of these 100,000 does).
    assert s.count == applied >= 99_990 and s.has_seen("item-00099999")


def test_the_distinct_history_keeps_each_item_at_its_latest_event() -> None:
    s, cfg = UserState(), StateSettings()
    for n, item in enumerate(["a", "b", "a", "c", "c"]):
        assert apply_event(s, ev(n, BASE + n, item), cfg)
    assert s.history() == ["a", "b", "a", "c", "c"]
    assert s.distinct_history() == ["b", "a", "c"]
    assert s.covisit_previous("c", 3) == ("b", "a")  # the event's own item is no pair of it
    assert s.covisit_previous("d", 2) == ("a", "c")


def test_the_covisit_window_is_the_last_distinct_items_of_any_history() -> None:
    rng, cfg = random.Random(5), StateSettings()
    for _ in range(50):
        s = UserState()
        for n in range(rng.randint(0, 70)):
            assert apply_event(s, ev(n, BASE + n, f"i{rng.randint(0, 8)}"), cfg)
        item, window = f"i{rng.randint(0, 8)}", rng.randint(1, 5)
        others = [i for i in s.distinct_history() if i != item]
        assert s.covisit_previous(item, window) == tuple(others[-window:])


def test_only_a_dwell_shorter_than_min_dwell_ms_is_a_skip() -> None:
    music = StateSettings(min_dwell_ms=10_000, repeatable_types=frozenset({"dwell"}))

    def dwell(ms: int | None, kind: str = "dwell") -> Event:
        return Event(event_id="e", user_id="u", item_id="i", type=kind, ts=1_700_000_000_000,
                     dwell_ms=ms)  # fmt: skip

    skips = [music.is_skip(e) for e in (dwell(3_000), dwell(10_000), dwell(None), dwell(1, "view"))]
    assert skips == [True, False, False, False]  # no dwell_ms: not judged
    assert (music.marks_seen(dwell(3_000)), music.marks_seen(dwell(60_000))) == (True, False)
    assert (music.weight_of(dwell(3_000)), music.weight_of(dwell(60_000))) == (0.0, 1.5)
    assert not StateSettings().is_skip(dwell(0))  # the default: every dwell counts
