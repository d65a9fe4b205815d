"""Online learner: finds a toy bandit's optimum, rolls back on a reward drop, persists."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamrec.errors import ModelError
from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.guard import Span
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.rewards import Impression
from streamrec.models.policy.slate import Candidate, UserContext
from streamrec.models.policy.stochastic import StochasticReranker

POLICY = PolicySettings(temperature=0.5, max_weight_norm=3.0)


def _toy_round(
    rng: np.random.Generator, policy: StochasticReranker, best_feature: int
) -> tuple[Impression, np.ndarray, bool]:
    """One-item slates from 6 candidates; the reward is Bernoulli(0.9) for the candidate with
    the largest value of ``best_feature`` (here popularity), else Bernoulli(0.1)."""
    cands = [
        Candidate(
            f"i{i}",
            float(rng.normal()),
            rng.normal(size=4),
            float(rng.integers(1, 1000)),
            float(rng.uniform()),
        )
        for i in range(6)
    ]
    slate = policy.rerank(UserContext("u"), cands, 1)
    by_feature = (
        [c.popularity for c in cands] if best_feature == 3 else [c.freshness for c in cands]
    )
    best = cands[int(np.argmax(by_feature))].item_id
    hit = slate.item_ids[0] == best
    reward = float(rng.uniform() < (0.9 if hit else 0.1))
    return Impression.from_slate("r", "u", slate, 0.0), np.array([reward]), hit


def test_learner_finds_toy_bandit_optimum() -> None:
    rng = np.random.default_rng(0)
    settings = LearnerSettings(
        batch_size=32, lr=0.5, max_step=0.3, credit_discount=1.0, rollback_drop=10.0
    )
    learner = OnlineLearner(settings, POLICY)
    policy = StochasticReranker(learner.weights, temperature=POLICY.temperature, seed=1)
    hits = []
    for _ in range(3_000):
        imp, reward, hit = _toy_round(rng, policy, best_feature=3)
        learner.observe(imp, reward)
        hits.append(hit)
        if learner.ready():
            learner.update()
            policy.set_params(learner.weights, learner.version)
    w = learner.weights
    assert int(np.argmax(w)) == 3  # popularity, the known optimum's feature
    assert w[3] / np.linalg.norm(w) > 0.9
    assert np.mean(hits[-500:]) > 0.6 > np.mean(hits[:200])  # better than the start
    assert np.linalg.norm(w) <= POLICY.max_weight_norm + 1e-9


def _impression(version: str, weights: np.ndarray) -> Impression:
    feats = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    return Impression("r", "u", ["a"], [0.5], version, 0.0, feats, np.zeros((1, 5)), weights, 0.5)


def _feed(learner: OnlineLearner, n: int, reward: float, rng: np.random.Generator) -> None:
    for _ in range(n):
        r = reward + 0.1 * rng.normal()
        learner.observe(_impression(learner.version, learner.weights), np.array([r]))


def test_rollback_fires_when_reward_drops_and_not_otherwise() -> None:
    rng = np.random.default_rng(0)
    settings = LearnerSettings(batch_size=64, rollback_min_impressions=64, rollback_drop=0.2)
    learner = OnlineLearner(settings, PolicySettings())
    _feed(learner, 64, 1.0, rng)
    first = learner.update()
    assert first.applied and learner.version == "pl-1"
    _feed(learner, 64, 1.0, rng)  # same reward: no rollback
    assert learner.update().applied and learner.version == "pl-2"
    before = learner.previous
    assert before is not None
    _feed(learner, 64, 0.5, rng)  # pl-2 earns half: roll back to pl-1
    result = learner.update()
    assert result.rolled_back and not result.applied
    assert learner.version == "pl-1" and np.array_equal(learner.weights, before[0])
    assert learner.n_rollbacks == 1


def test_steps_are_bounded() -> None:
    settings = LearnerSettings(batch_size=1, lr=100.0, max_step=0.05)
    learner = OnlineLearner(settings, PolicySettings())
    learner.observe(_impression("pl-0", learner.weights), np.array([10.0]))
    start = learner.weights.copy()
    result = learner.update()
    assert np.linalg.norm(learner.weights - start) == pytest.approx(0.05)
    assert result.step_norm == pytest.approx(0.05)


def test_step_size_anneals_and_can_stay_constant() -> None:
    decaying = OnlineLearner(LearnerSettings(lr=0.1, lr_decay_updates=10.0), PolicySettings())
    assert decaying.step_size() == pytest.approx(0.1)
    decaying.n_updates = 30  # lr / sqrt(1 + 30 / 10)
    assert decaying.step_size() == pytest.approx(0.05)
    constant = OnlineLearner(LearnerSettings(lr=0.1, lr_decay_updates=0.0), PolicySettings())
    constant.n_updates = 30
    assert constant.step_size() == pytest.approx(0.1)


def test_updates_use_the_annealed_step() -> None:
    settings = LearnerSettings(batch_size=1, lr=0.1, lr_decay_updates=10.0, max_step=100.0)
    fresh = OnlineLearner(settings, PolicySettings())
    late = OnlineLearner(settings, PolicySettings())
    late.n_updates = 30
    for learner in (fresh, late):
        learner.observe(_impression(learner.version, learner.weights), np.array([1.0]))
    # same batch, same gradient: the later update moves half as far
    assert late.update().step_norm == pytest.approx(0.5 * fresh.update().step_norm)


def test_importance_weights_are_clipped() -> None:
    settings = LearnerSettings(batch_size=1, weight_clip=2.0)
    learner = OnlineLearner(settings, PolicySettings())
    far = np.array([-20.0, 0.0, 0.0, 0.0, 0.0])  # logged by very different weights
    imp = _impression("old", far)
    g_clipped = learner.gradient([_sample(imp, 1.0)])
    unclipped = OnlineLearner(LearnerSettings(batch_size=1, weight_clip=1e9), PolicySettings())
    g_free = unclipped.gradient([_sample(imp, 1.0)])
    assert np.linalg.norm(g_clipped) < np.linalg.norm(g_free)
    assert np.linalg.norm(g_clipped) <= 2.0 * 2.0 + 1e-9  # rho <= 2, |score| = 1 / 0.5


def _sample(imp: Impression, reward: float):  # type: ignore[no-untyped-def]
    learner = OnlineLearner(LearnerSettings(batch_size=1), PolicySettings())
    learner.observe(imp, np.array([reward]))
    return learner._buffer[0]


def test_state_survives_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    learner = OnlineLearner(LearnerSettings(batch_size=8), PolicySettings())
    for _ in range(3):
        _feed(learner, 8, 1.0, rng)
        learner.update()
    path = tmp_path / "learner.safetensors"
    learner.save(path)
    back = OnlineLearner.load(path, LearnerSettings(batch_size=8), PolicySettings())
    assert back.version == learner.version == "pl-3"
    assert np.array_equal(back.weights, learner.weights)
    # the rollback guard's open trial: checkpoint pl-0 (8 rewards a version < 64 to judge)
    assert back.guard.checkpoint is not None and learner.guard.checkpoint is not None
    assert back.guard.checkpoint[1] == learner.guard.checkpoint[1] == "pl-0"
    assert np.array_equal(back.guard.checkpoint[0], learner.guard.checkpoint[0])
    assert back.guard.trial == learner.guard.trial == Span("pl", 1, 3)
    assert list(back.guard.current) == list(learner.guard.current)
    assert len(back.guard.current) == 16
    assert list(back.guard.reference) == list(learner.guard.reference)
    assert [(n, p[1]) for n, p in back.guard.snapshots] == [(1, "pl-1"), (2, "pl-2"), (3, "pl-3")]
    assert np.array_equal(back.guard.snapshots[-1][1][0], learner.weights)
    assert back.n_updates == 3


def test_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError):
        OnlineLearner.load(path, LearnerSettings(), PolicySettings())


def test_versions_are_never_reused_after_rollback() -> None:
    rng = np.random.default_rng(0)
    settings = LearnerSettings(batch_size=64, rollback_min_impressions=64)
    learner = OnlineLearner(settings, PolicySettings())
    seen = []
    for reward in (1.0, 1.0, 0.3, 1.0, 1.0):
        _feed(learner, 64, reward, rng)
        learner.update()
        seen.append(learner.version)
    assert learner.n_rollbacks == 1
    issued = [v for i, v in enumerate(seen) if i != 2]  # index 2 is the restored pl-1
    assert len(set(issued)) == len(issued) and seen[2] == "pl-1"


def test_an_update_that_overflows_is_dropped_and_the_weights_kept(tmp_path: Path) -> None:
    """Before, the NaN weights were saved (and, in the learner process, committed) before
    anything checked them, so every restart served or announced NaN again."""
    learner = OnlineLearner(LearnerSettings(batch_size=1), PolicySettings())
    start, baseline = learner.weights.copy(), learner.baseline.copy()
    huge = _impression("pl-0", learner.weights)
    learner.observe(replace(huge, features=np.full((1, 5), 1e308)), np.array([1.0]))
    with np.errstate(over="ignore", invalid="ignore"):  # numpy's warnings: the overflow
        result = learner.update()
    assert not result.applied and learner.version == "pl-0" and learner.pending() == 0
    assert np.array_equal(learner.weights, start) and np.array_equal(learner.baseline, baseline)
    learner.observe(_impression("pl-0", learner.weights), np.array([1.0]))
    assert learner.update().applied and np.isfinite(learner.weights).all()


def test_load_refuses_non_finite_weights(tmp_path: Path) -> None:
    path = tmp_path / "learner.safetensors"
    learner = OnlineLearner(LearnerSettings(), PolicySettings())
    learner.weights[2] = np.nan  # as a learner before the update check could save them
    learner.save(path)
    with pytest.raises(ModelError, match="non-finite"):
        OnlineLearner.load(path, LearnerSettings(), PolicySettings())
