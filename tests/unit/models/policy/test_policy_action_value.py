"""The action-value critic: it recovers a known later-visit value of slates, and its credit
moves the actor towards the slates that value favours."""

from __future__ import annotations

import numpy as np

from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.action_value import (
    ActionValueCritic,
    LaterVisits,
    choice_credit,
    lambda_return,
    slate_features,
)
from streamrec.models.policy.learner import OnlineLearner, Sample
from streamrec.models.policy.slate import DIVERSITY, N_FEATURES


def test_lambda_return_is_the_discounted_next_value_at_lambda_0_and_the_rewards_at_1() -> None:
    values, rewards = np.array([2.0, 4.0]), np.array([1.0, 3.0])
    assert lambda_return(values, rewards, ended=False, discount=0.5, lam=0.0) == 1.0  # 0.5 * 2
    # λ = 1, user left after the second visit: 0.5 * (1 + 0.5 * 3)
    assert lambda_return(values, rewards, ended=True, discount=0.5, lam=1.0) == 1.25
    assert lambda_return(np.zeros(0), np.zeros(0), ended=True, discount=0.5, lam=0.0) == 0.0


def test_critic_recovers_a_known_action_value() -> None:
    # Two kinds of state; the next visit's value is V(s') = 2 + 3·kind + 1.5 ψ_div - 0.5 ψ_pop:
    # raised by the slate's diversity, lowered by its popularity. Q_later = gamma V(s').
    rng = np.random.default_rng(0)
    critic = ActionValueCritic([0, 1], discount=0.5, lam=0.0, window=2_000, ridge=1e-6)
    value_w = np.array([1.0, 0.0])  # V(s') = s'[0]; s'[0] carries the slate's later value
    for _ in range(2_000):
        state = np.array([1.0, float(rng.integers(2))])
        feats, expected = rng.normal(size=(4, N_FEATURES)), rng.normal(size=(4, N_FEATURES))
        psi = slate_features(feats, expected)
        nxt = 2.0 + 3.0 * state[1] + 1.5 * psi[DIVERSITY] - 0.5 * psi[3] + rng.normal(0, 0.1)
        critic.add(LaterVisits(state, psi, np.array([[nxt, 0.0]]), np.array([0.0]), False))
    critic.fit(value_w)
    expected = np.zeros(N_FEATURES)
    expected[DIVERSITY], expected[3] = 0.75, -0.25  # gamma = 0.5 times the coefficients of V(s')
    np.testing.assert_allclose(critic.action_w, expected, atol=0.02)
    np.testing.assert_allclose(critic.state_w, [1.0, 1.5], atol=0.02)


def test_choice_credit_alone_moves_the_weights_towards_what_q_prices() -> None:
    # No reward at all: only the action-value credit; θ_a favours diversity, so the gradient's
    # diversity component is positive (Cov_π(f) θ_a with a positive diagonal).
    rng = np.random.default_rng(1)
    learner = OnlineLearner(LearnerSettings(), PolicySettings())
    action_w = np.zeros(N_FEATURES)
    action_w[DIVERSITY] = 1.0
    samples, credit = [], []
    for _ in range(200):
        feats = rng.normal(size=(3, N_FEATURES))
        expected = np.zeros((3, N_FEATURES))
        samples.append(Sample(feats, expected, learner.weights.copy(), 0.25, np.zeros(3)))
        credit.append(choice_credit(action_w, feats, expected))
    grad = learner.weighted_gradient(samples, credit, baseline=False)
    assert grad[DIVERSITY] > 0.5 * np.abs(np.delete(grad, DIVERSITY)).max()


def test_saved_window_restores_the_same_fit() -> None:
    rng = np.random.default_rng(2)
    critic = ActionValueCritic([0, 1], discount=0.9, lam=0.5, window=50, ridge=1.0)
    for i in range(30):
        n_later = i % 3  # 0 to 2 later visits, so the saved rows are padded
        critic.add(
            LaterVisits(
                rng.normal(size=2),
                rng.normal(size=N_FEATURES),
                rng.normal(size=(n_later, 2)),
                rng.normal(size=n_later),
                ended=i % 2 == 0,
            )
        )
    value_w = np.array([0.5, -1.0])
    critic.fit(value_w)
    copy = ActionValueCritic([0, 1], discount=0.9, lam=0.5, window=50, ridge=1.0)
    copy.restore(critic.tensors())
    np.testing.assert_allclose(copy.action_w, critic.action_w)
    np.testing.assert_allclose(copy.targets(value_w), critic.targets(value_w))
