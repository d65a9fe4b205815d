"""Fusion weights fitted from next events: the source that predicts them gains weight."""

from __future__ import annotations

import random

import pytest

from streamrec.stream.config import FusionSettings
from streamrec.stream.fusion import FusionLearner, source_lists

SETTINGS = FusionSettings(warmup=50, half_life=1_000, floor=0.05, users=10)


def _round(learner: FusionLearner, user: str, rng: random.Random, good_rank: int) -> None:
    """One slate and the next event: 'good' ranks the next item at ``good_rank``, 'noise' only
    now and then (at rank 30)."""
    items = [f"i{n}" for n in range(40)]
    target = items[good_rank - 1]
    noise = rng.sample(items, 40)
    if rng.random() < 0.9:
        noise.remove(target)
    learner.remember(user, {"good": items, "noise": noise})
    learner.observe(user, target)


def test_weights_start_equal_then_favour_the_source_that_predicts_next_events() -> None:
    learner, rng = FusionLearner(SETTINGS), random.Random(0)
    for n in range(SETTINGS.warmup - 1):
        _round(learner, f"u{n % 5}", rng, good_rank=1)
    assert dict(learner.weights) == {}  # fuse then weighs every source 1.0
    for n in range(200):
        _round(learner, f"u{n % 5}", rng, good_rank=1)
    assert learner.weights["good"] == 1.0
    assert SETTINGS.floor <= learner.weights["noise"] < 0.3


def test_a_hit_deeper_in_the_list_is_worth_less() -> None:
    top, deep = FusionLearner(SETTINGS), FusionLearner(SETTINGS)
    rng = random.Random(1)
    for _ in range(100):
        _round(top, "u", rng, good_rank=1)
        _round(deep, "u", rng, good_rank=8)
    assert deep.gain["good"] == pytest.approx(top.gain["good"] / 3.17, rel=0.01)  # log2(9)


def test_an_event_without_a_remembered_slate_changes_nothing_and_users_are_bounded() -> None:
    learner = FusionLearner(SETTINGS)
    learner.observe("stranger", "i1")
    assert learner.observations == 0
    for n in range(SETTINGS.users + 5):
        learner.remember(f"u{n}", {"good": ["i1"]})
    assert len(learner.pending) == SETTINGS.users and "u0" not in learner.pending


def test_fixed_weights_when_learning_is_off() -> None:
    learner = FusionLearner(FusionSettings(learned=False, warmup=1))
    learner.remember("u", {"good": ["i1"]})
    learner.observe("u", "i1")
    assert dict(learner.weights) == {} and learner.observations == 0


def test_source_lists_skip_seen_items_and_stop_at_depth() -> None:
    sources = {"a": [("x", 3.0), ("y", 2.0), ("z", 1.0)], "b": [("y", 1.0)]}
    assert source_lists(sources, {"y"}, 1) == {"a": ["x"], "b": []}
    assert source_lists(sources, set(), 2) == {"a": ["x", "y"], "b": ["y"]}
