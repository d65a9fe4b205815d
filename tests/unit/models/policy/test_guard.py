"""The rollback guard judges what was learned since its checkpoint on rewards that close late."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.actor_critic import make_learner
from streamrec.models.policy.critic import N_STATE
from streamrec.models.policy.guard import SNAPSHOTS, RollbackGuard, Span
from streamrec.models.policy.learner import FORMAT, OnlineLearner
from streamrec.models.policy.rewards import Impression

SETTINGS = LearnerSettings(batch_size=64, rollback_min_impressions=64, rollback_drop=0.2)


def _impression(version: str, weights: np.ndarray) -> Impression:
    feats = np.ones((1, 5))
    return Impression(
        "r", "u", ["a"], [0.5], version, 0.0, feats, np.zeros((1, 5)), weights, 0.5,
        state=np.ones(N_STATE),  # for the actor-critic; REINFORCE reads none
    )  # fmt: skip


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


def test_a_pass_approves_only_the_versions_its_rewards_came_from() -> None:
    """The first rewards of a trial close while the learner has issued more versions. Before,
    a pass on them closed the whole trial, so the later versions' rewards, bad or not, went
    to the reference and were never judged (found in review)."""
    rng = np.random.default_rng(1)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    for _ in range(4):  # pl-0's slates close while pl-1 .. pl-4 are issued
        _close(learner, "pl-0", 1.0, rng)
        assert learner.update().applied
    judged = learner.guard.snapshots[0][1][0].copy()  # pl-1's weights
    _close(learner, "pl-1", 1.0, rng)  # pl-1 holds: the checkpoint moves to it, not past it
    assert learner.update().applied and learner.version == "pl-5"
    assert learner.guard.checkpoint is not None and learner.guard.checkpoint[1] == "pl-1"
    assert learner.guard.trial == Span("pl", 2, 5)
    _close(learner, "pl-2", 0.3, rng)  # what was learned after pl-1 earns less: undone
    result = learner.update()
    assert result.rolled_back and learner.version == "pl-1"
    assert np.array_equal(learner.weights, judged) and learner.n_rollbacks == 1
    _close(learner, "pl-2", 0.3, rng)  # late ones too: never in the reference
    assert not learner.guard.reference and learner.guard.holding


def test_a_failed_trials_late_rewards_never_lower_the_reference() -> None:
    guard = RollbackGuard(SETTINGS)
    for reward in [1.0] * 64:
        guard.count("pl-0", reward)
    guard.issued((np.zeros(5), "pl-0"), (np.ones(5), "pl-1"))
    for reward in [0.2] * 64:
        guard.count("pl-1", reward)
    checkpoint = guard.verdict()
    assert checkpoint is not None and checkpoint[1] == "pl-0"
    for reward in [0.2] * 64:  # more of pl-1's slates close after the rollback
        guard.count("pl-1", reward)
    assert not guard.reference and guard.holding == "pl-0"  # refilled only by what serves now
    for reward in [0.9] * 64:
        guard.count("pl-0", reward)
    assert list(guard.reference) == [0.9] * 64 and not guard.holding


def test_no_verdict_before_both_sides_hold_enough_rewards() -> None:
    guard = RollbackGuard(SETTINGS)
    guard.issued((np.zeros(5), "pl-0"), (np.ones(5), "pl-1"))
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


def test_the_kept_weights_stay_bounded_and_dense_where_recent() -> None:
    guard = RollbackGuard(SETTINGS)
    for n in range(1, 1001):
        guard.issued((np.zeros(5), f"pl-{n - 1}"), (np.full(5, float(n)), f"pl-{n}"))
    numbers = [n for n, _ in guard.snapshots]
    assert len(numbers) <= SNAPSHOTS and numbers == sorted(numbers)
    assert numbers[-1] >= 990 and numbers[0] == 1  # thinned by halving: old sparse, new dense
    assert all(policy[0][0] == n for n, policy in guard.snapshots)


def test_a_state_file_from_before_trials_judges_the_version_it_served(tmp_path: Path) -> None:
    """Such a file holds the version before its last update as ``previous_*``: that is the
    checkpoint, and the version it served then the trial (found in review: before, rewards of
    that version closing after the restart went to the reference)."""
    path = tmp_path / "old.safetensors"
    weights = {"weights": np.ones(5), "baseline": np.zeros(0), "previous_weights": np.zeros(5)}
    meta = {"format": FORMAT, "algorithm": "pl", "version": "pl-8", "previous_version": "pl-7"}
    save_file({**weights, "current": np.ones(3), "reference": np.ones(2)}, str(path), meta)
    learner = OnlineLearner.load(path, SETTINGS, PolicySettings())
    assert learner.guard.checkpoint is not None and learner.guard.checkpoint[1] == "pl-7"
    assert learner.guard.trial == Span("pl", 8, 8) and len(learner.guard.current) == 3


def test_late_rewards_of_an_earlier_failed_trial_stay_out_after_a_second_failure() -> None:
    """A lagging experience partition can deliver a failed trial's rewards after the next
    trial failed too (found in review: only the last failed trial was remembered)."""
    guard = RollbackGuard(SETTINGS)
    guard.count("pl-0", 1.0)
    guard.reference.extend([1.0] * 63)
    for failed, served in (("pl-1", "pl-0"), ("pl-3", "pl-0")):
        guard.issued((np.zeros(5), served), (np.ones(5), failed))
        for _ in range(64):
            guard.count(failed, 0.1)
        assert guard.verdict() is not None
        for _ in range(64):  # the restored pl-0 serves alone until the reference is refilled
            guard.count("pl-0", 1.0)
    guard.count("pl-1", 0.1)  # the first failed trial's slate, closing late
    assert list(guard.reference) == [1.0] * 64


def test_a_withdrawn_versions_weights_never_become_a_checkpoint() -> None:
    """A version its off-policy estimate withdrew never served; thinning could otherwise
    leave its weights as the newest kept ones at or below a judged version."""
    rng = np.random.default_rng(2)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    _close(learner, "pl-0", 1.0, rng)
    assert learner.update().applied and learner.version == "pl-1"
    learner.withdraw()
    assert learner.version == "pl-0"
    assert all(policy[1] != "pl-1" for _, policy in learner.guard.snapshots)
    assert learner.guard.trial == Span("pl", 1, 1)  # still open: pl-0 was its checkpoint


def _hold_after_a_rollback(learner: OnlineLearner, rng: np.random.Generator) -> None:
    """Version 0 earns 1.0, then what was learned after it 0.5: rolled back to version 0."""
    first, second = learner.version_name(0), learner.version_name(1)
    _close(learner, first, 1.0, rng)
    assert learner.update().applied and learner.version == second
    _close(learner, second, 0.5, rng)
    assert learner.update().rolled_back and learner.version == first


def test_after_a_rollback_the_next_trial_is_judged_against_what_serves_now() -> None:
    """The reward level fell for every policy (satiation, a quieter hour), not only for the
    trial. Before, the next trial opened one update after the rollback and was judged against
    the rewards from before the fall, so it failed too, and the next, each one paging (seen
    in an ops run: twelve rollbacks in three and a half minutes)."""
    rng = np.random.default_rng(3)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    _hold_after_a_rollback(learner, rng)
    for _ in range(63):  # the restored pl-0 earns what anything earns now
        learner.observe(_impression("pl-0", learner.weights), np.array([0.5]))
    assert learner.guard.holding == "pl-0" and not learner.ready()
    _close(learner, "pl-0", 0.5, rng)  # the reference refilled by pl-0's own rewards
    assert learner.guard.holding is None and learner.ready()
    result = learner.update()
    assert result.applied and learner.version == "pl-3"
    _close(learner, "pl-3", 0.5, rng)  # the new trial earns as much: judged, and kept
    assert not learner.update().rolled_back and learner.n_rollbacks == 1


@pytest.mark.parametrize("algorithm", ["reinforce", "actor_critic"])
def test_a_holding_learner_keeps_a_bounded_batch_and_issues_nothing(algorithm: str) -> None:
    """A hold lasts at least the attribution window: buffering all of it outgrew the state
    file's header after 45,000 impressions (found in review) and crashed the learner."""
    rng = np.random.default_rng(4)
    learner = make_learner(SETTINGS.model_copy(update={"algorithm": algorithm}), PolicySettings())
    _hold_after_a_rollback(learner, rng)
    for n in range(2_000):  # the failed trial's late slates and older versions': not counted
        version = learner.version_name(1) if n % 2 else "older-0"
        impression = _impression(version, learner.weights)
        learner.observe(dataclasses.replace(impression, user_id=f"u{n % 7}"), np.array([0.5]))
    assert learner.pending() <= SETTINGS.batch_size + 1 and not learner.ready()
    assert learner.guard.holding == learner.version_name(0) and not learner.guard.reference


def test_a_hold_survives_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    learner = OnlineLearner(SETTINGS, PolicySettings())
    _hold_after_a_rollback(learner, rng)
    learner.observe(_impression("pl-0", learner.weights), np.array([0.5]))
    learner.save(tmp_path / "l.safetensors")
    loaded = OnlineLearner.load(tmp_path / "l.safetensors", SETTINGS, PolicySettings())
    assert loaded.guard.holding == "pl-0" and list(loaded.guard.reference) == [0.5]


def test_a_hold_ends_when_the_window_is_full_even_if_smaller_than_a_judgement() -> None:
    """``rollback_window`` below ``rollback_min_impressions`` can never judge; it must not
    hold the learner for ever either."""
    guard = RollbackGuard(LearnerSettings(rollback_window=8, rollback_min_impressions=64))
    guard.holding = "pl-0"
    for _ in range(8):
        guard.count("pl-0", 1.0)
    assert guard.holding is None
