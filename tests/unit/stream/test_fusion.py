"""Fusion weights fitted from next events: the source that predicts them gains weight."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamrec.index.candidates import fuse_ranked
from streamrec.stream.config import FusionSettings
from streamrec.stream.fusion import FusionLearner, fused_gains, source_lists
from streamrec.stream.metrics import WorkerMetrics

SETTINGS = FusionSettings(warmup=50, half_life=1_000, floor=0.05, users=10)
CUTOFF = 10


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
    learner, rng = FusionLearner(SETTINGS, CUTOFF), random.Random(0)
    for n in range(SETTINGS.warmup - 1):
        _round(learner, f"u{n % 5}", rng, good_rank=1)
    assert dict(learner.weights) == {}  # fuse then weighs every source 1.0
    for n in range(200):
        _round(learner, f"u{n % 5}", rng, good_rank=1)
    assert learner.weights["good"] == 1.0
    assert SETTINGS.floor <= learner.base["noise"] < 0.3
    assert learner.weights["noise"] <= learner.base["noise"]  # sharpened, never raised


def test_a_hit_deeper_in_the_list_is_worth_less() -> None:
    top, deep = FusionLearner(SETTINGS, CUTOFF), FusionLearner(SETTINGS, CUTOFF)
    rng = random.Random(1)
    for _ in range(100):
        _round(top, "u", rng, good_rank=1)
        _round(deep, "u", rng, good_rank=8)
    assert deep.gain["good"] == pytest.approx(top.gain["good"] / 3.17, rel=0.01)  # log2(9)


def test_an_event_without_a_remembered_slate_changes_nothing_and_users_are_bounded() -> None:
    learner = FusionLearner(SETTINGS, CUTOFF)
    learner.observe("stranger", "i1")
    assert learner.observations == 0
    for n in range(SETTINGS.users + 5):
        learner.remember(f"u{n}", {"good": ["i1"]})
    assert len(learner.pending) == SETTINGS.users and "u0" not in learner.pending


def test_fixed_weights_when_learning_is_off() -> None:
    learner = FusionLearner(FusionSettings(learned=False, warmup=1), CUTOFF)
    learner.remember("u", {"good": ["i1"]})
    learner.observe("u", "i1")
    assert dict(learner.weights) == {} and learner.observations == 0


def test_source_lists_skip_seen_items_and_stop_at_depth() -> None:
    sources = {"a": [("x", 3.0), ("y", 2.0), ("z", 1.0)], "b": [("y", 1.0)]}
    assert source_lists(sources, {"y"}, 1) == {"a": ["x"], "b": []}
    assert source_lists(sources, set(), 2) == {"a": ["x", "y"], "b": ["y"]}


def _brute_gain(lists: dict[str, list[str]], item: str, weights: dict[str, float]) -> float:
    """The gain of ``item`` in the slate fusion itself makes (ties broken by item id)."""
    sources = {name: [(i, float(-n)) for n, i in enumerate(items)] for name, items in lists.items()}
    top = [i for i, _ in fuse_ranked(sources, CUTOFF, weights=weights).ranked]
    return 1.0 / float(np.log2(2 + top.index(item))) if item in top else 0.0


def test_fused_gains_equal_the_gain_in_the_slate_fusion_makes() -> None:
    rng = random.Random(3)
    items = [f"i{n}" for n in range(60)]
    checked = 0
    for _ in range(300):
        lists = {"a": rng.sample(items, 30), "b": rng.sample(items, 20)}
        target = rng.choice(items)
        base = {"a": 1.0, "b": rng.uniform(0.05, 0.95)}
        powers = np.array([0.5, 1.0, 2.7])
        weights = np.array([base["a"], base["b"]])[:, None] ** powers[None, :]
        gains = fused_gains(lists, target, weights, CUTOFF)
        for column, power in enumerate(powers):
            want = _brute_gain(lists, target, {k: v**power for k, v in base.items()})
            assert gains[column] == pytest.approx(want)
            checked += want > 0
    assert checked > 50  # the cases include items inside the slate, not only misses


def test_a_tie_counts_half_a_place() -> None:
    # Equal weights: "x" (first in a) and "y" (first in b) tie; "y" is the target.
    gains = fused_gains({"a": ["x"], "b": ["y"]}, "y", np.ones((2, 1)), CUTOFF)
    assert gains[0] == pytest.approx(1.0 / np.log2(2.5))


def test_sharpness_grows_when_a_weaker_source_drowns_the_stronger_ones_best() -> None:
    """'weak' lists popular items that 'good' also lists lower down; the next item is good's
    first. Weighed by their gains alone the shared items outrank it; a higher power fixes it."""
    learner = FusionLearner(SETTINGS, CUTOFF)
    rng = random.Random(4)
    for n in range(400):
        items = [f"u{n}-{k}" for k in range(30)]
        shared = items[5:25]
        weak = rng.sample(shared, len(shared))
        if rng.random() < 0.4:  # the weak source finds the next item now and then
            weak.insert(rng.randrange(10), items[0])
        learner.remember("u", {"good": items, "weak": weak})
        learner.observe("u", items[0])
    assert learner.power > 1.0
    assert learner.weights["weak"] < learner.base["weak"]
    gains = learner.figures()["sharpness"]
    assert isinstance(gains, dict) and gains[str(learner.power)] == max(gains.values())


def test_the_gauges_show_the_weights_and_the_power_served() -> None:
    learner, rng = FusionLearner(SETTINGS, CUTOFF), random.Random(5)
    for n in range(SETTINGS.warmup + 50):
        _round(learner, f"u{n % 5}", rng, good_rank=2)
    registry = CollectorRegistry()
    WorkerMetrics(registry).show_fusion(learner.weights, learner.power)
    for source in ("good", "noise"):
        shown = registry.get_sample_value("streamrec_fusion_weight", {"source": source})
        assert shown == pytest.approx(learner.weights[source])
    assert registry.get_sample_value("streamrec_fusion_sharpness") == learner.power


def test_a_restored_learner_serves_what_the_saved_one_learned() -> None:
    saved, rng = FusionLearner(SETTINGS, CUTOFF), random.Random(6)
    for n in range(400):
        _round(saved, f"u{n % 5}", rng, good_rank=1 + n % 3)
    restored = FusionLearner(SETTINGS, CUTOFF)
    restored.restore(json.loads(json.dumps(saved.snapshot())))
    assert dict(restored.weights) == dict(saved.weights) and restored.power == saved.power
    # and both go on learning alike from the same next events
    for learner in (saved, restored):
        _round(learner, "v", random.Random(7), good_rank=2)
    assert restored.figures() == saved.figures()


def test_restoring_other_powers_drops_only_their_credit() -> None:
    saved, rng = FusionLearner(SETTINGS, CUTOFF), random.Random(8)
    for n in range(300):
        _round(saved, f"u{n % 5}", rng, good_rank=1)
    other = FusionLearner(SETTINGS.model_copy(update={"sharpness": (1.0, 2.0)}), CUTOFF)
    other.restore(saved.snapshot())
    assert other.gain == saved.gain and other.observations == saved.observations
    assert not other.sharpness_gain.any() and other.power == 1.0


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {
            "gain": {"good": -1.0},
            "seen": 1.0,
            "observations": 1,
            "sharpness": [],
            "sharpness_gain": [],
        },
        {
            "gain": {"good": 1.0},
            "seen": "nan",
            "observations": 1,
            "sharpness": [],
            "sharpness_gain": [],
        },
        {"gain": [], "seen": 1.0, "observations": 1, "sharpness": [], "sharpness_gain": []},
    ],
)
def test_a_broken_snapshot_is_refused_and_changes_nothing(broken: dict[str, object]) -> None:
    learner = FusionLearner(SETTINGS, CUTOFF)
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        learner.restore(broken)
    assert learner.observations == 0 and learner.gain == {} and dict(learner.weights) == {}
