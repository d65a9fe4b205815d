"""Actor-critic learner, its critic, the Lagrangian constraints and the frontier."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.actor_critic import ActorCriticLearner
from streamrec.models.policy.constraints import Lagrangian
from streamrec.models.policy.critic import (
    STATE_FEATURES,
    LinearCritic,
    Transition,
    state_features,
)
from streamrec.models.policy.learner import OnlineLearner, Sample
from streamrec.models.policy.rewards import Impression
from streamrec.models.policy.slate import Candidate, UserContext, unit_rows
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.models.sim import report
from streamrec.models.sim.closed_loop import LoopConfig
from streamrec.models.sim.frontier import pareto
from streamrec.models.sim.report import ReportConfig
from streamrec.models.sim.simulator import SimulatorConfig

POLICY = PolicySettings()


def _candidates(rng: np.random.Generator, n: int = 8) -> list[Candidate]:
    return [
        Candidate(f"i{i}", float(rng.normal()), rng.normal(size=4), 10.0, 0.0) for i in range(n)
    ]


def test_satiation_feature_grows_with_recent_similar_clicks() -> None:
    rng = np.random.default_rng(0)
    cands = _candidates(rng)
    vectors = unit_rows(np.stack([c.vector for c in cands]))
    sat = STATE_FEATURES.index("satiation")
    fresh = UserContext("u", vectors[:3], history_ages_s=np.zeros(3))
    old = UserContext("u", vectors[:3], history_ages_s=np.full(3, 4 * 3_600.0))
    none = UserContext("u")
    relevance = np.array([c.relevance for c in cands])
    f_fresh = state_features(fresh, relevance, vectors, 4, 3_600.0)
    f_old = state_features(old, relevance, vectors, 4, 3_600.0)
    f_none = state_features(none, relevance, vectors, 4, 3_600.0)
    assert f_fresh[sat] > f_old[sat] > 0.0 == f_none[sat]


def test_critic_learns_discounted_value_of_a_two_state_chain() -> None:
    # state a (reward 1) -> state b (reward 0) -> a ...: V(a) = 1 / (1 - g^2), V(b) = g V(a)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    critic = LinearCritic([0, 1], discount=0.5, window=100, ridge=0.0)
    for _ in range(50):
        critic.add(Transition(a, 1.0, b))
        critic.add(Transition(b, 0.0, a))
    for _ in range(60):
        critic.fit()
    np.testing.assert_allclose(critic.value(np.stack([a, b])), [4 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(critic.now(np.stack([a, b])), [1.0, 0.0], atol=1e-9)


def _impression(
    policy: StochasticReranker, user: str, t: float, rng: np.random.Generator
) -> Impression:
    slate = policy.rerank(UserContext(user), _candidates(rng), 3)
    return Impression.from_slate(f"{user}-{t}", user, slate, t)


def test_visits_wait_for_the_horizon_or_the_timeout() -> None:
    rng = np.random.default_rng(1)
    settings = LearnerSettings(
        algorithm="actor_critic", horizon=2, gae_lambda=0.5, visit_timeout_s=100.0
    )
    learner = ActorCriticLearner(settings, POLICY)
    policy = StochasticReranker(seed=0)
    for t in (0.0, 10.0):
        learner.observe(_impression(policy, "u", t, rng), np.zeros(3))
    assert learner.chains == [] and learner.pending() == 2  # own-slate credit needs no wait
    learner.observe(_impression(policy, "u", 20.0, rng), np.ones(3))
    assert len(learner.chains) == 1 and not learner.chains[0].ended
    assert len(learner.chains[0].later) == 2
    learner.observe(_impression(policy, "v", 500.0, rng), np.zeros(3))  # u silent for 480 s
    assert len(learner.chains) == 3 and all(c.ended for c in learner.chains[1:])


def test_without_gae_lambda_a_visit_waits_for_the_next_visit_only() -> None:
    rng = np.random.default_rng(1)
    learner = ActorCriticLearner(LearnerSettings(algorithm="actor_critic", horizon=3), POLICY)
    policy = StochasticReranker(seed=0)
    for t in (0.0, 10.0):
        learner.observe(_impression(policy, "u", t, rng), np.zeros(3))
    assert len(learner.chains) == 1 and len(learner.chains[0].later) == 1


def test_critic_baseline_predicts_each_positions_reward_to_go() -> None:
    # two kinds of state: in a the slate earns (2, 1) down its positions, in b nothing
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    critic = LinearCritic([0, 1], discount=0.0, window=100, ridge=0.0)
    for _ in range(20):
        critic.add(Transition(a, 3.0, b, np.array([2.0, 1.0])))
        critic.add(Transition(b, 0.0, a, np.array([0.0, 0.0])))
    np.testing.assert_allclose(critic.togo(a, 3), 0.0)  # not fitted yet: no baseline
    critic.fit()
    np.testing.assert_allclose(critic.togo(a, 3), [2.0, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(critic.togo(b, 2), [0.0, 0.0], atol=1e-9)


def test_a_stale_slates_importance_weight_is_clipped_where_asked() -> None:
    settings = LearnerSettings(algorithm="actor_critic", weight_clip=10.0)
    learner = ActorCriticLearner(settings, POLICY)
    choice = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])  # [K=1, F]
    sample = Sample(choice, np.zeros((1, 5)), np.zeros(5), 1.0, np.array([1.0]))
    learner.weights = np.array([5.0, 0.0, 0.0, 0.0, 0.0])  # rho = e^5 against the logging w
    fresh = learner.weighted_gradient([sample], [np.ones(1)], baseline=False)
    stale = learner.weighted_gradient([sample], [np.ones(1)], baseline=False, clip=1.5)
    np.testing.assert_allclose(fresh, 10.0 * choice[0])
    np.testing.assert_allclose(stale, 1.5 * choice[0])


def test_future_advantage_is_zero_without_discount() -> None:
    rng = np.random.default_rng(2)
    settings = LearnerSettings(algorithm="actor_critic", horizon=1, discount=0.0, batch_size=8)
    learner = ActorCriticLearner(settings, POLICY)
    policy = StochasticReranker(seed=0)
    for t in range(40):
        learner.observe(_impression(policy, f"u{t % 4}", float(t), rng), rng.uniform(size=3))
    learner.critic.fit()
    advantages = [learner.future_advantage(c) for c in learner.chains]
    np.testing.assert_allclose(advantages, 0.0, atol=1e-9)
    assert learner.update().applied and learner.version == "ac-1"


def test_lagrangian_grows_while_violated_and_relaxes_when_met() -> None:
    lag = Lagrangian(lr=1.0, window=10)
    lag.step(np.array([-0.2, 0.1]))
    np.testing.assert_allclose(lag.multipliers, [0.2, 0.0])
    lag.step(np.array([0.5, 0.0]))
    np.testing.assert_allclose(lag.multipliers, [0.0, 0.0])


def test_lagrangian_terms_compare_with_the_relevance_slate() -> None:
    lag = Lagrangian(lr=1.0, window=10)
    imp = Impression(
        "r", "u", ["a", "b"], [0.5, 0.5], "pl-0", 0.0,
        diversity=np.array([0.6, 0.4]), reference_items=["a", "c"],
    )  # fmt: skip
    np.testing.assert_allclose(lag.terms(imp), [0.2, 0.0])
    again = Impression(
        "r2", "u", ["d", "e"], [0.5, 0.5], "pl-0", 1.0,
        diversity=np.array([0.4, 0.4]), reference_items=["a", "c"],
    )  # fmt: skip
    np.testing.assert_allclose(lag.terms(again), [0.0, 1.0])  # new items vs repeated reference


def test_a_fixed_coverage_target_replaces_the_drifting_relevance_reference() -> None:
    lag = Lagrangian(lr=1.0, window=10, coverage_target=0.75)
    for n, items in enumerate((["a", "b"], ["a", "c"], ["a", "b"])):
        imp = Impression(
            f"r{n}", "u", items, [0.5, 0.5], "pl-0", float(n),
            diversity=np.array([0.5, 0.5]), reference_items=["x", f"y{n}"],
        )  # fmt: skip
        terms = lag.terms(imp)
        # new share of the slate (1, 0.5, 0) against 0.75, whatever the reference slates show
        np.testing.assert_allclose(terms, [0.0, [0.25, -0.25, -0.75][n]])


def test_the_report_holds_the_constrained_learner_to_the_relevance_policys_new_items() -> None:
    config = ReportConfig(
        seeds=1,
        loop=LoopConfig(steps=300, bucket=100),
        simulator=SimulatorConfig(n_users=40, n_items=200, world_seed=0),
        mmr_grid=(),
        dpp_grid=(),
        learners=("constrained",),
    )
    seen: list[float | None] = []
    make = report.make_learner

    def record(name: str, policy: PolicySettings, learner: LearnerSettings) -> OnlineLearner:
        seen.append(learner.coverage_target)
        assert learner.coverage_window == config.loop.bucket  # measured as the report does
        return make(name, policy, learner)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "make_learner", record)
        results = report.run_policies(config, PolicySettings(), LearnerSettings())
    relevance = results["relevance"][0].mean("new_share", config.last_fraction)
    assert 0.0 < relevance < 1.0 and seen == [pytest.approx(relevance)]
    # A target the settings fix is kept.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "make_learner", record)
        report.run_policies(config, PolicySettings(), LearnerSettings(coverage_target=0.4))
    assert seen[-1] == 0.4


def test_pareto_keeps_only_undominated_points() -> None:
    points = {
        "a": (1.0, 1.0, 1.0),
        "b": (2.0, 0.5, 1.0),
        "c": (0.5, 0.5, 0.5),
        "d": (1.0, 1.0, 1.0),
    }
    assert pareto(points) == ["a", "b", "d"]
