"""The rollback guard judges what was learned since its checkpoint on rewards that close late."""

from __future__ import annotations

import numpy as np

from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.guard import RollbackGuard, Span
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.rewards import Impression

SETTINGS = LearnerSettings(batch_size=64, rollback_min_impressions=64, rollback_drop=0.2)


def _impression(version: str, weights: np.ndarray) -> Impression:
    feats = np.ones((1, 5))
    return Impression("r", "u", ["a"], [0.5], version, 0.0, feats, np.zeros((1, 5)), weights, 0.5)


def _close(learner: OnlineLearner, version: str, reward: float, rng: np.random.Generator) -> None:
    """64 impressions logged under ``version`` whose attribution windows close now."""
    for _ in range(64):
        noisy = np.array([reward + 0.1 * rng.normal()])
        learner.observe(_impression(version, learner.weights), noisy)


def test_a_trial_whose_rewards_close_three_updates_late_is_rolled_back_to_its_checkpoint() -> None:
    """Rewards close long after their slates, so each update is triggered by impressions of
    versions several updates old; before, the guard judged only the version being replaced
    and never had a reward of it, so it never fired."""
    rng = np.random.default_rng(0)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    start = learner.weights.copy()
    for _ in range(3):  # pl-0's slates close while pl-1, pl-2, pl-3 are issued
        _close(learner, "pl-0", 1.0, rng)
        assert learner.update().applied
    assert learner.version == "pl-3"
    _close(learner, "pl-1", 0.5, rng)  # pl-1's slates, what was learned since pl-0, earn half
    result = learner.update()
    assert result.rolled_back and not result.applied and learner.n_rollbacks == 1
    assert learner.version == "pl-0" and np.array_equal(learner.weights, start)


def test_a_trial_that_holds_passes_and_the_next_update_opens_one_where_it_ended() -> None:
    rng = np.random.default_rng(1)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    for version in ("pl-0", "pl-0", "pl-1"):
        _close(learner, version, 1.0, rng)
        assert learner.update().applied
    # pl-1's rewards held: the trial since pl-0 passed, and pl-3 opened one at pl-2
    assert learner.guard.checkpoint is not None and learner.guard.checkpoint[1] == "pl-2"
    assert learner.guard.trial == Span("pl", 3, 3) and learner.n_rollbacks == 0


def test_a_failed_trials_late_rewards_never_lower_the_reference() -> None:
    guard = RollbackGuard(SETTINGS)
    for reward in [1.0] * 64:
        guard.count("pl-0", reward)
    guard.issued((np.zeros(5), "pl-0"), "pl-1")
    for reward in [0.2] * 64:
        guard.count("pl-1", reward)
    checkpoint = guard.verdict()
    assert checkpoint is not None and checkpoint[1] == "pl-0"
    for reward in [0.2] * 64:  # more of pl-1's slates close after the rollback
        guard.count("pl-1", reward)
    assert list(guard.reference) == [1.0] * 64


def test_no_verdict_before_both_sides_hold_enough_rewards() -> None:
    guard = RollbackGuard(SETTINGS)
    guard.issued((np.zeros(5), "pl-0"), "pl-1")
    for reward in [0.0] * 64:
        guard.count("pl-1", reward)
    assert guard.verdict() is None and guard.trial == Span("pl", 1, 1)  # no reference: stays open
    for reward in [1.0] * 63:
        guard.count("pl-0", reward)
    assert guard.verdict() is None
    guard.count("pl-0", 1.0)
    assert guard.verdict() is not None


def test_a_trial_is_a_range_of_one_lineages_version_numbers() -> None:
    """Under real traffic a trial issues thousands of versions: kept as three fields."""
    span = Span.of("pl-a1b2-7").to("pl-a1b2-9000")
    assert span == Span("pl-a1b2", 7, 9000)
    assert span.holds("pl-a1b2-8") and span.holds("pl-a1b2-9000")
    assert not span.holds("pl-a1b2-6") and not span.holds("pl-c3d4-8")
    assert not span.holds("heuristic-1x") and not span.holds("relevance")
