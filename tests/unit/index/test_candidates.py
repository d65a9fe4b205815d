"""Candidate sources, fusion scoring and provenance, reasons."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streamrec.errors import ModelError
from streamrec.index.candidates import (
    Candidate,
    Ranked,
    SharedList,
    covisitation_candidates,
    embedding_candidates,
    explain,
    fuse,
    fuse_ranked,
    fuse_rrf_shared,
    ranked,
    trending_candidates,
)
from streamrec.index.retriever import ExactRetriever
from streamrec.stream.config import SeenSetSettings
from streamrec.stream.seen import SeenSet


def test_rrf_fusion_sums_weighted_reciprocal_ranks_and_keeps_provenance() -> None:
    fused = fuse(
        {"embedding": [("a", 0.9), ("b", 0.8)], "trending": [("b", 500.0), ("c", 10.0)]},
        n=3,
        weights={"embedding": 2.0},
        rrf_k=1.0,
    )
    # a: 2/(1+1) = 1.0; b: 2/(1+2) + 1/(1+1) = 1.1667; c: 1/(1+2) = 0.333
    assert [c.item_id for c in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(2 / 3 + 1 / 2)
    assert fused[0].sources == ("embedding", "trending")
    assert fused[0].contributions == pytest.approx({"embedding": 2 / 3, "trending": 0.5})
    assert fused[2].sources == ("trending",)


def test_minmax_fusion_uses_score_gaps_and_excludes_before_normalising() -> None:
    fused = fuse(
        {"covisitation": [("seen", 100.0), ("a", 10.0), ("b", 5.0), ("c", 0.0)]},
        n=10,
        exclude={"seen"},
        method="minmax",
    )
    assert [(c.item_id, c.score) for c in fused] == [("a", 1.0), ("b", 0.5), ("c", 0.0)]


def test_fusion_excludes_through_a_container_that_cannot_be_listed() -> None:
    """A user's seen set in its Bloom phase only answers ``in``."""
    sizing = SeenSetSettings(exact_limit=0, capacity=100, fp_rate=1e-9)
    seen = SeenSet()
    for item in ("a", "c"):
        seen.add(item, sizing)
    assert seen.generations  # the Bloom phase: nothing to iterate
    hits = [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]
    for method in ("rrf", "minmax"):
        fused = fuse({"s": hits}, n=4, exclude=seen, method=method)
        assert [c.item_id for c in fused] == ["b", "d"]


def test_fusion_ties_break_by_id_and_duplicates_keep_best_score() -> None:
    fused = fuse({"s": [("b", 1.0), ("a", 1.0), ("a", 0.1)]}, n=5, method="minmax")
    assert [c.item_id for c in fused] == ["a", "b"]
    with pytest.raises(ModelError, match="weight"):
        fuse({"s": [("a", 1.0)]}, n=1, weights={"s": -1.0})


def test_covisitation_weights_newest_history_most_and_skips_history() -> None:
    covisits = {"old": [("x", 1.0), ("y", 1.0)], "new": [("y", 1.0), ("old", 5.0)]}
    got = covisitation_candidates(covisits, ["old", "new"], 5, 0.5, exclude={"old", "new"})
    assert got == [("y", 1.5), ("x", 0.5)]


def test_covisitation_keeps_recent_items_the_seen_set_does_not_hold() -> None:
    """A replayed track (its events all of ``repeatable_types``) is not in the seen set: it
    stays a candidate; the top n is taken after the seen recent items are left out."""
    covisits = {"old": [("x", 1.0), ("new", 2.0)], "new": [("old", 5.0), ("y", 1.0)]}
    replays = covisitation_candidates(covisits, ["old", "new"], 2, 0.5, exclude=set())
    assert replays == [("old", 5.0), ("new", 1.0)]
    only_new_seen = covisitation_candidates(covisits, ["old", "new"], 2, 0.5, exclude={"new"})
    assert only_new_seen == [("old", 5.0), ("y", 1.0)]


def test_trending_and_embedding_sources() -> None:
    assert trending_candidates([("a", 1.0), ("b", 3.0), ("c", 2.0)], 2) == [("b", 3.0), ("c", 2.0)]
    vectors = np.eye(3, dtype=np.float32)
    retriever = ExactRetriever.build(["a", "b", "c"], vectors)
    got = embedding_candidates(retriever, np.array([1.0, 0.5, 0.0], np.float32), 2, {"a"})
    assert got == [("b", 0.5), ("c", 0.0)]


def test_reason_is_most_similar_history_item_else_source() -> None:
    vectors = {
        "h_action": np.array([1.0, 0.0], np.float32),
        "h_drama": np.array([0.0, 3.0], np.float32),  # length must not matter (cosine)
        "r1": np.array([0.9, 0.1], np.float32),
        "r2": np.array([0.1, 0.2], np.float32),
    }
    recs = [
        Candidate("r1", 1.0, ("embedding",), {"embedding": 1.0}),
        Candidate("r2", 0.9, ("covisitation", "trending"), {"covisitation": 0.9}),
        Candidate("novec", 0.5, ("trending",), {"trending": 0.5}),
    ]
    reasons = explain(recs, ["h_action", "h_drama", "unknown"], vectors)
    assert reasons["r1"].label == "item:h_action"
    assert reasons["r2"].label == "item:h_drama"
    assert reasons["novec"].label == "source:trending"
    assert explain(recs, ["h_action"], None)["r2"].label == "source:covisitation"


def _naive_rrf(
    sources: dict[str, list[tuple[str, float]]], n: int, exclude: set[str]
) -> list[tuple[str, float]]:
    """The module docstring's definition, written the slow obvious way."""
    totals: dict[str, float] = {}
    for hits in sources.values():
        best: dict[str, float] = {}
        for item, score in hits:
            if item not in exclude:
                best[item] = max(score, best.get(item, score))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (item, _) in enumerate(ranked, 1):
            totals[item] = totals.get(item, 0.0) + 1.0 / (60.0 + rank)
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@pytest.mark.parametrize("seed", range(20))
def test_rrf_fusion_matches_its_definition_with_ties_duplicates_and_exclusions(seed: int) -> None:
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(40)]
    sources = {
        name: [(rng.choice(items), float(rng.randint(0, 5))) for _ in range(rng.randint(0, 60))]
        for name in ("a", "b", "c")
    }
    exclude = set(rng.sample(items, 8))
    fused = fuse(sources, 10, exclude=exclude)
    expected = _naive_rrf(sources, 10, exclude)
    assert [c.item_id for c in fused] == [item for item, _ in expected]
    assert [c.score for c in fused] == pytest.approx([score for _, score in expected])


def test_a_pre_ranked_source_fuses_as_its_raw_hits_do() -> None:
    """``ranked`` lists (the trending board's, co-visitation's) skip fusion's dedupe and sort:
    the result must be what the raw hits give, ties and duplicates included."""
    raw = [("c", 2.0), ("a", 2.0), ("b", 5.0), ("a", 1.0), ("d", 0.5), ("e", 2.0)]
    other = [("d", 9.0), ("a", 1.0)]
    pre = ranked(raw)
    assert isinstance(pre, Ranked) and [i for i, _ in pre] == ["b", "a", "c", "e", "d"]
    as_raw = fuse({"t": raw, "o": other}, 5, exclude={"e"})
    as_ranked = fuse({"t": pre, "o": other}, 5, exclude={"e"})
    assert [(c.item_id, c.score, c.sources) for c in as_ranked] == [
        (c.item_id, c.score, c.sources) for c in as_raw
    ]


def test_co_visitation_scores_equal_a_plain_weighted_sum_ties_by_item_id() -> None:
    rng = random.Random(7)
    catalog = [f"i{k}" for k in range(40)]
    for _ in range(50):
        recent = rng.sample(catalog, rng.randint(1, 6))
        covisits = {  # small integer scores: many ties; neighbours may be recent items too
            item: [(rng.choice(catalog), float(rng.randint(1, 4))) for _ in range(12)]
            for item in recent
        }
        expected: dict[str, float] = {}
        for age, item in enumerate(reversed(recent)):
            for neighbour, score in covisits[item]:
                expected[neighbour] = expected.get(neighbour, 0.0) + 0.8**age * score
        want = sorted(
            ((i, s) for i, s in expected.items() if i not in recent), key=lambda p: (-p[1], p[0])
        )[:7]
        got = covisitation_candidates(covisits, recent, 7, exclude=set(recent))
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])


@pytest.mark.parametrize("seed", range(30))
def test_fusion_with_a_shared_list_equals_fusing_every_item(seed: int) -> None:
    """Same top, scores, provenance and shared eligible list as ``fuse_ranked`` (how the
    heuristic path fused before the shared list was prepared), with exclusions as a set, as a
    user's exact seen items and as Bloom filters, and with weights that tie shared parts."""
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(300)]
    own = ranked([(rng.choice(items), float(rng.randint(0, 6))) for _ in range(rng.randint(0, 80))])
    shared = ranked([(item, float(rng.randint(0, 30))) for item in rng.sample(items, 200)])
    excluded = rng.sample(items, rng.choice([0, 3, 40, 250]))
    weights = {"own": rng.choice([1.0, 0.3, 0.0]), "shared": rng.choice([1.0, 0.05, 0.0])}
    n, depth = rng.choice([(10, 50), (60, 20), (1, 1)])
    bloom = SeenSet()
    for item in excluded:
        bloom.add(item, SeenSetSettings(exact_limit=16, capacity=1_000, fp_rate=0.05))
    for exclude in (set(excluded), dict.fromkeys(excluded), bloom):
        sources = {"own": own, "shared": shared}
        expected = fuse_ranked(sources, n, weights=weights, exclude=exclude)
        fused, eligible = fuse_rrf_shared(
            ("own", own),
            ("shared", SharedList.of(shared)),
            n,
            depth,
            weights=weights,
            exclude=exclude,
        )
        assert fused.ranked == expected.ranked
        top = [item for item, _ in fused.ranked]
        assert [fused.candidate(i) for i in top] == [expected.candidate(i) for i in top]
        assert eligible == [item for item, _ in shared if item not in exclude][:depth]


@pytest.mark.parametrize("seed", range(10))
def test_main_source_is_the_candidates_strongest_source_ties_by_name(seed: int) -> None:
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(30)]
    sources = {  # equal weights and short lists: many equal contributions
        name: [(rng.choice(items), float(rng.randint(0, 3))) for _ in range(rng.randint(0, 20))]
        for name in ("c", "a", "b")
    }
    fused = fuse_ranked(sources, 30, weights={"a": 1.0, "b": 1.0, "c": rng.choice([1.0, 0.0])})
    assert fused.ranked
    for item, _ in fused.ranked:
        assert fused.main_source(item) == fused.candidate(item).sources[0]
