"""The item-statistics replica: exactly once per event, the same whatever the interleaving of
partitions, and a snapshot that restores it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.settings import Settings
from streamrec.stream import item_stats
from streamrec.stream.config import StateSettings
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.item_updates import DeltaFollower

# Large enough that no neighbour list is cut: cuts depend on arrival order by design.
STATE = StateSettings(covisit_top_k=1000)


def _stream(partitions: int, per_partition: int, seed: int) -> list[list[ItemDelta]]:
    """Per partition, its deltas in offset order (items from a small catalog, so they repeat)."""
    rng = random.Random(seed)
    streams = []
    for p in range(partitions):
        deltas, ts = [], 1_700_000_000_000
        for offset in range(per_partition):
            ts += rng.randint(0, 60_000)
            previous = tuple(f"i{rng.randint(0, 20)}" for _ in range(rng.randint(0, 3)))
            deltas.append(ItemDelta(f"i{rng.randint(0, 20)}", previous, ts, 1.0, (p, offset)))
        streams.append(deltas)
    return streams


def _interleave(streams: list[list[ItemDelta]], seed: int) -> list[ItemDelta]:
    """One arrival order: each partition in its own order, partitions mixed at random."""
    rng, queues, out = random.Random(seed), [list(s) for s in streams], []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


def _replica(deltas: list[ItemDelta]) -> ItemStats:
    stats = ItemStats(STATE)
    for delta in deltas:
        stats.apply(delta)
    return stats


def _same(a: ItemStats, b: ItemStats) -> None:
    assert a.covisit == b.covisit
    assert a.trending_scores.keys() == b.trending_scores.keys()
    for item, (score, last) in a.trending_scores.items():
        assert score == pytest.approx(b.trending_scores[item][0], rel=1e-9)
        assert last == b.trending_scores[item][1]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_every_interleaving_of_partitions_gives_the_single_process_reference(seed: int) -> None:
    streams = _stream(4, 60, seed)
    reference = _replica([d for stream in streams for d in stream])  # one partition at a time
    _same(_replica(_interleave(streams, seed)), reference)


def test_redelivered_deltas_change_nothing() -> None:
    streams = _stream(2, 50, 1)
    reference = _replica(_interleave(streams, 1))
    # A restarted owner of partition 1 re-reads from its last commit (offset 20) and publishes
    # those events' deltas again after the first run's.
    again = _interleave(streams, 1) + streams[1][20:]
    _same(_replica(again), reference)


def test_co_visitation_counts_every_partitions_events() -> None:
    stats = ItemStats(STATE)
    stats.apply(ItemDelta("b", ("a",), 1, 1.0, (0, 0)))
    stats.apply(ItemDelta("b", ("a",), 2, 2.0, (3, 0)))  # a user of another partition
    assert stats.covisits(["a"])["a"] == [("b", 3.0)]


def test_a_snapshot_restores_the_replica_and_the_positions_read(tmp_path: Path) -> None:
    kafka = Settings().kafka
    deltas = _interleave(_stream(3, 40, 2), 2)
    follower = DeltaFollower(kafka, _replica(deltas), tmp_path / "item_stats.json", 60.0)
    follower.positions = {0: 41, 2: 7}
    follower.save()
    restored = DeltaFollower(kafka, ItemStats(STATE), tmp_path / "item_stats.json", 60.0)
    restored.load()
    _same(restored.stats, follower.stats)
    assert restored.positions == {0: 41, 2: 7}
    assert restored.stats.trending() == follower.stats.trending()
    assert not restored.stats.apply(deltas[-1])  # what the snapshot holds is not applied twice


def test_an_unreadable_snapshot_means_reading_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "item_stats.json"
    path.write_text("{truncated")
    follower = DeltaFollower(Settings().kafka, ItemStats(STATE), path, 60.0)
    follower.load()
    assert follower.positions == {} and follower.stats.covisit == {}


def test_neighbour_lists_read_between_deltas_are_those_of_a_fresh_replica() -> None:
    """Ranked lists are kept between reads: each delta must drop the lists it changes (here
    with lists cut at 3 neighbours, so the cut's reordering is read as well)."""
    small = StateSettings(covisit_top_k=3)
    deltas = _interleave(_stream(3, 80, 5), 5)
    live = ItemStats(small)
    catalog = [f"i{k}" for k in range(21)]
    for n, delta in enumerate(deltas):
        live.apply(delta)
        if n % 7 == 0:
            fresh = ItemStats(small)
            for earlier in deltas[: n + 1]:
                fresh.apply(earlier)
            assert live.covisits(catalog) == fresh.covisits(catalog)


def test_the_ranked_lists_kept_for_reading_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(item_stats, "RANKED_KEPT", 5)
    stats = _replica(_interleave(_stream(2, 60, 3), 3))
    catalog = [f"i{k}" for k in range(21)]
    first = stats.covisits(catalog)
    assert len(stats._ranked) == 5
    assert stats.covisits(catalog) == first  # evicted lists are ranked again, the same
