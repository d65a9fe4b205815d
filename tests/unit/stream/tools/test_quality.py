"""Prequential scoring against hand-computed cases (stream/tools/quality.py)."""

from __future__ import annotations

import numpy as np
import pytest
from event_streams import stream

from streamrec.settings import Settings
from streamrec.stream.tools.quality import (
    Slate,
    baseline_ranks,
    comparison_rows,
    head_to_head,
    latencies_ms,
    metric_means,
    positions,
    ratio_interval,
    scoreable_events,
    slates_by_trigger,
    system_figures,
    system_ranks,
    windowed_means,
    windows,
)
from streamrec.stream.tools.quality_report import covered_by_version


def slate(user: str, items: str, *triggers: int, at_ms: int = 0) -> Slate:
    return Slate(user, tuple(items.split()), tuple(f"e{t}" for t in triggers), at_ms)


# u1: e0 A, e2 C, e5 B; u2: e1 B, e4 A, e6 C; u3: e3 A (its only event).
SERVED = stream("u1 A", "u2 B", "u1 C", "u3 A", "u2 A", "u1 B", "u2 C")
SERVED_SLATES = [
    slate("u1", "C A B", 0),  # for e0: scored on e2 (C at rank 1); A was seen
    slate("u2", "B C", 1),  # for e1: scored on e4 (A missed); B was seen
    slate("u1", "D", 2, 5),  # coalesced e2 and e5: the slate for e5, so e5 (p = e2) has none
    slate("u2", "D E C", 4),  # for e4: scored on e6 (C at rank 3)
    slate("u3", "B", 3),  # for e3: u3 has no later event, never scored
]


def test_scoreable_events_need_an_earlier_event_of_the_user_and_the_scored_part() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    # e3 is u3's first event; e0 and e1 are before the split.
    assert scoreable.events.tolist() == [2, 4, 5, 6]
    assert scoreable.previous.tolist() == [0, 1, 2, 4]


def test_an_event_of_an_item_its_user_had_is_not_scored() -> None:
    # u1 views A, clicks A (a repeat: no slate may show A again), then views B; u2 has B twice.
    repeats = stream("u1 A", "u2 B", "u1 A", "u2 B", "u1 B", "u2 C")
    scoreable = scoreable_events(repeats, first_scored=1)
    assert scoreable.events.tolist() == [4, 5]
    assert scoreable.previous.tolist() == [2, 3]  # p is the user's event just before, repeat or not
    assert scoreable.repeats == 2


def test_a_slate_is_scored_only_for_the_event_after_its_newest_trigger() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    by_trigger = slates_by_trigger(SERVED_SLATES, positions(SERVED))
    system = system_ranks(SERVED, scoreable, by_trigger, k=10)
    assert system.covered.tolist() == [True, True, False, True]
    assert system.ranks.tolist() == [1, 0, 0, 3]
    assert system.slate_items == 3 + 2 + 3
    assert system.seen_items == 2  # A in u1's slate for e0, B in u2's slate for e1
    assert system.distinct_items == len({"A", "B", "C", "D", "E"})


def test_a_missing_slate_leaves_its_event_uncovered() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    without_e4 = [s for s in SERVED_SLATES if s.trigger_event_ids != ("e4",)]
    system = system_ranks(SERVED, scoreable, slates_by_trigger(without_e4, positions(SERVED)), 10)
    assert system.covered.tolist() == [True, True, False, False]


def test_slates_cut_to_k_before_scoring() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    by_trigger = slates_by_trigger(SERVED_SLATES, positions(SERVED))
    system = system_ranks(SERVED, scoreable, by_trigger, k=2)
    assert system.ranks.tolist() == [1, 0, 0, 0]  # C at 3 in u2's slate is beyond k = 2
    assert system.slate_items == 2 + 2 + 2


def test_first_slate_read_wins_for_one_trigger_and_unknown_triggers_are_ignored() -> None:
    first, again = slate("u1", "A", 0), slate("u1", "B", 0)
    foreign = Slate("u9", ("A",), ("warmup-1",), 0)
    assert slates_by_trigger([first, again, foreign], positions(SERVED)) == {0: first}


def test_metric_means_by_hand() -> None:
    ranks = np.asarray([1, 0, 0, 3], dtype=np.int64)
    means = metric_means(ranks, k=10)
    assert means["hr@10"] == pytest.approx(0.5)
    assert means["ndcg@10"] == pytest.approx((1 + 1 / 2) / 4, abs=1e-4)  # 1/log2(4) = 1/2
    assert means["mrr@10"] == pytest.approx((1 + 1 / 3) / 4, abs=1e-4)
    assert metric_means(np.zeros(0, dtype=np.int64), k=10)["ndcg@10"] is None


def test_system_figures_report_both_ways_and_the_ratio_on_covered_events() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    system = system_ranks(
        SERVED, scoreable, slates_by_trigger(SERVED_SLATES, positions(SERVED)), 10
    )
    covisit = np.asarray([2, 1, 1, 0], dtype=np.int64)
    baselines = {"covisit": covisit, "popularity": np.zeros(4, dtype=np.int64)}
    figures = system_figures(system, baselines, 10, catalog_size=10, latencies=[5.0, 7.0])
    assert figures["covered"] == 3
    assert figures["slate_coverage"] == 0.75
    assert figures["covered_events"] == metric_means(np.asarray([1, 0, 3]), 10)
    assert figures["all_scoreable"] == metric_means(np.asarray([1, 0, 0, 3]), 10)
    # covisit on the covered events only: ranks 2, 1, 0 -> NDCG (1/log2(3) + 1) / 3.
    covisit_ndcg = (1 / np.log2(3) + 1) / 3
    assert figures["ndcg@10_ratio_to_covisit"] == pytest.approx(0.5 / covisit_ndcg, abs=2e-3)
    assert figures["seen_share"] == pytest.approx(2 / 8, abs=1e-3)
    assert figures["catalog_coverage"] == 0.5
    assert figures["latency_p50_ms"] == 6.0


def test_head_to_head_uses_only_events_both_covered() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    full = system_ranks(SERVED, scoreable, slates_by_trigger(SERVED_SLATES, positions(SERVED)), 10)
    fewer = [s for s in SERVED_SLATES if s.trigger_event_ids != ("e0",)]
    other = system_ranks(SERVED, scoreable, slates_by_trigger(fewer, positions(SERVED)), 10)
    figures = head_to_head(("model", other), ("heuristic", full), 10)
    assert figures["events"] == 2  # e4 and e6: e2 lacks the second system's slate
    assert figures["heuristic"] == metric_means(np.asarray([0, 3]), 10)
    interval = figures["ndcg@10_ratio_95ci"]
    assert isinstance(interval, list) and interval[0] <= interval[1]


def test_ratio_interval_is_paired_seeded_and_narrows_with_more_events() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400) * (rng.random(400) < 0.2)  # sparse gains, as NDCG@10 is
    better = base * 1.2
    interval = ratio_interval(better, base)
    assert interval is not None and interval[0] == interval[1] == pytest.approx(1.2)  # paired
    noisy = rng.random(400) * (rng.random(400) < 0.2)
    small = ratio_interval(noisy, base)
    large = ratio_interval(np.tile(noisy, 25), np.tile(base, 25))
    assert small is not None and large is not None and small == ratio_interval(noisy, base)
    point = noisy.mean() / base.mean()
    assert small[0] < point < small[1] and large[0] < point < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3  # 25x the events: about 1/5 as wide
    assert ratio_interval(base[:1], base[:1]) is None
    assert ratio_interval(base, np.zeros(400)) is None


# u1: e0 B, e7 C, e9 B (a repeat); u2: e1 A, e8 C; u3: e2 A, e3 C; u4: e4 A, e5 B; u5: e6 A.
TIES = stream("u1 B", "u2 A", "u3 A", "u3 C", "u4 A", "u4 B", "u5 A", "u1 C", "u2 C", "u1 B")


def test_baselines_by_hand_with_ties_broken_by_item_id() -> None:
    scoreable = scoreable_events(TIES, first_scored=6)
    # e6 is u5's first event; e9 is u1's B again, which no slate may show: not scored
    assert scoreable.events.tolist() == [7, 8] and scoreable.repeats == 1
    ranks = baseline_ranks(TIES, scoreable, catalog=["A", "B", "C", "Z"], k=10)
    # e7 (u1 saw B): counts A4 B2 C1, unseen A then C -> 2. Nothing ever followed B -> miss.
    # e8 (u2 saw A): counts A4 B2 C2, B and C tie, B has the smaller id -> C at 2.
    #   Followers of A: C (u3, first) and B (u4) once each; the tie goes to B -> C at 2.
    assert ranks["popularity"].tolist() == [2, 2]
    assert ranks["covisit"].tolist() == [0, 2]


def test_baselines_count_only_events_before_the_scored_one_and_cut_at_k() -> None:
    scoreable = scoreable_events(TIES, first_scored=6)
    ranks = baseline_ranks(TIES, scoreable, catalog=[], k=1)
    assert ranks["popularity"].tolist() == [0, 0]
    # u6's pair A -> B is counted only after e1 is scored, so only u7's e3 can hit it.
    events = stream("u6 A", "u6 B", "u7 A", "u7 B")
    ranks = baseline_ranks(events, scoreable_events(events, 0), catalog=[], k=10)
    assert ranks["covisit"].tolist() == [0, 1]


def test_latency_is_from_the_newest_trigger_record() -> None:
    slates = [slate("u1", "A", 2, 5, at_ms=140), slate("u2", "B", 1, at_ms=30)]
    sent = {"e1": 10, "e2": 20, "e5": 100}
    assert latencies_ms(slates, positions(SERVED), sent) == [40.0, 20.0]


def test_windows_are_nearly_equal_and_cover_every_value() -> None:
    assert windows(5, 2) == [(0, 2), (2, 5)]
    assert windows(3, 25) == [(0, 1), (1, 2), (2, 3)]


def test_windowed_means_only_where_the_mask_holds() -> None:
    values = np.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
    bounds = [(0, 2), (2, 5)]
    assert windowed_means(values, bounds).tolist() == [1.5, 4.0]
    mask = np.asarray([False, False, True, False, True])
    means = windowed_means(values, bounds, mask)
    assert np.isnan(means[0]) and means[1] == 4.0


def test_comparison_rows_put_each_system_beside_the_baselines_on_its_events() -> None:
    scoreable = scoreable_events(SERVED, first_scored=2)
    system = system_ranks(
        SERVED, scoreable, slates_by_trigger(SERVED_SLATES, positions(SERVED)), 10
    )
    baselines = {
        "covisit": np.asarray([2, 1, 1, 0], dtype=np.int64),
        "popularity": np.asarray([0, 0, 1, 1], dtype=np.int64),
    }
    figures = {
        "heuristic": system_figures(system, baselines, 10, catalog_size=10, latencies=[1.0]),
        "baselines_on_all_scoreable": {n: metric_means(r, 10) for n, r in baselines.items()},
    }
    rows = comparison_rows(figures)
    assert [(r["system"], r["events"]) for r in rows] == [
        ("heuristic", "covered"),
        ("covisit", "heuristic covered"),
        ("popularity", "heuristic covered"),
        ("heuristic", "all scoreable"),
        ("covisit", "all scoreable"),
        ("popularity", "all scoreable"),
    ]
    assert rows[2]["hr@10"] == pytest.approx(1 / 3, abs=1e-4)  # popularity hit e6 only


def test_with_repeatable_types_a_replay_is_scored_and_a_slate_offering_it_hits() -> None:
    # A music service: plays (views) repeat, a like (click) marks the track seen.
    # u1: e0 plays A, e1 plays B, e2 plays A again, e3 likes B, e4 plays B (seen since e3).
    events = stream("u1 A", "u1 B", "u1 A", "u1 B", "u1 B")
    events[3] = events[3].model_copy(update={"type": "click"})
    plays = Settings.model_validate({"state": {"repeatable_types": ["view"]}}).state
    scoreable = scoreable_events(events, 1, plays.marks_seen)
    assert scoreable.events.tolist() == [1, 2, 3] and scoreable.repeats == 1
    assert scoreable.previous.tolist() == [0, 1, 2]
    assert scoreable_events(events, 1).events.tolist() == [1]  # the default: every event sees
    system = system_ranks(events, scoreable, slates_by_trigger([slate("u1", "A B", 1)],
                                                                positions(events)), 10)  # fmt: skip
    assert system.ranks.tolist() == [0, 1, 0]  # the replay of A at rank 1
    assert system.seen_items == 0  # A and B were only played: not seen, so not a violation
    # covisit: e3's p is e2 (A), followed once by B (e0 -> e1); B is not seen yet -> rank 1
    assert baseline_ranks(events, scoreable, catalog=[], k=10)["covisit"].tolist() == [0, 0, 1]


def test_covered_events_are_counted_by_the_model_that_built_their_slate() -> None:
    """Whether the trainer's candidates served any scored event: the bench's own evidence."""
    built = ["first-half", "first-half", "candidate-1", "candidate-1", "candidate-1"]
    at = [10, 11, 20, 30, 12]
    versioned = [
        Slate(s.user_id, s.items, s.trigger_event_ids, ms, version)
        for s, ms, version in zip(SERVED_SLATES, at, built, strict=True)
    ]
    scoreable = scoreable_events(SERVED, first_scored=2)
    # e2 and e4 on the first-half model's slates (for e0 and e1), e6 on the candidate's (e4);
    # e5's slate answered e2 and e5 together, so e5 is not covered.
    counts = covered_by_version(SERVED, scoreable, versioned)
    assert counts == {"first-half": 2, "candidate-1": 1}
    assert list(counts) == ["first-half", "candidate-1"]  # in the order each first served
