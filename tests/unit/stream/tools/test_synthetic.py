"""The synthetic workload of `bench pipeline`: counts, Zipf item shape, uniform users, seeds."""

from __future__ import annotations

from collections import Counter

import pytest

from streamrec.errors import ConfigError
from streamrec.stream.soak import SoakOptions
from streamrec.stream.soak import synthetic_events as soak_events
from streamrec.stream.tools.bench import check_mode
from streamrec.stream.tools.synthetic import (
    TYPES,
    Workload,
    item_popularity,
    synthetic_events,
    synthetic_items,
)

WORKLOAD = Workload(users=2_000, items=500, events=20_000, zipf=1.1, seed=3)


def test_counts_ids_and_time_order() -> None:
    events = list(synthetic_events(WORKLOAD))
    assert len(events) == 20_000 and len({e.event_id for e in events}) == 20_000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert {e.type for e in events} == set(TYPES)
    catalog = list(synthetic_items(WORKLOAD))
    assert [i.item_id for i in catalog] == [f"i{k}" for k in range(500)]
    assert {e.item_id for e in events} <= {i.item_id for i in catalog}


def test_items_follow_zipf_and_users_are_spread_out() -> None:
    events = list(synthetic_events(WORKLOAD))
    items = Counter(e.item_id for e in events)
    # Zipf 1.1 over 500 items: rank 1 takes about 15% of the traffic, rank 10 about 1.2%,
    # and the shares fall with the rank.
    expected = item_popularity(500, 1.1)
    assert abs(items["i0"] / 20_000 - expected[0]) < 0.01
    assert abs(items["i9"] / 20_000 - expected[9]) < 0.003
    assert items["i0"] > items["i1"] > items["i10"] > items["i100"]
    users = Counter(e.user_id for e in events)
    assert len(users) > 0.99 * 2_000 and max(users.values()) < 30  # about 10 each
    views = sum(e.type == "view" for e in events) / 20_000
    assert 0.57 < views < 0.63


def test_a_seed_gives_the_same_events_and_another_seed_others() -> None:
    first = [e.model_dump() for e in synthetic_events(WORKLOAD)]
    assert [e.model_dump() for e in synthetic_events(WORKLOAD)] == first
    other = Workload(users=2_000, items=500, events=20_000, zipf=1.1, seed=4)
    assert [e.model_dump() for e in synthetic_events(other)] != first


def test_the_soak_stream_is_the_same_workload() -> None:
    # `bench soak` and `bench pipeline --users/--items` measure the same traffic.
    options = SoakOptions(events=3_000, users=200, items=50, zipf=1.1, seed=3)
    workload = Workload(users=200, items=50, events=3_000, zipf=1.1, seed=3)
    assert list(soak_events(options)) == list(synthetic_events(workload))


def test_model_mode_refuses_a_synthetic_workload() -> None:
    with pytest.raises(ConfigError, match="heuristic mode only"):
        check_mode(WORKLOAD, "model")
    check_mode(WORKLOAD, "heuristic")
    check_mode(None, "model")  # MovieLens-100K is what the demo's encoder knows
