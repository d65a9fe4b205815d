"""Simulator: repeatable, position bias and satiation real; the closed loop is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.errors import ContractError
from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.rerankers import MMRReranker
from streamrec.models.policy.stochastic import DEFAULT_WEIGHTS, StochasticReranker
from streamrec.models.sim.closed_loop import LoopConfig, run_closed_loop
from streamrec.models.sim.simulator import Simulator, SimulatorConfig

SMALL = SimulatorConfig(n_users=20, n_items=100, seed=3)


def test_same_seed_same_events() -> None:
    def run() -> list[dict[str, object]]:
        sim = Simulator.synthetic(SMALL)
        out = []
        for t in range(30):
            out += sim.respond(f"u{t % 20}", f"r{t}", [f"i{j}" for j in range(t, t + 10)], t * 60.0)
        return out

    first, second = run(), run()
    assert first == second and any(e["type"] == "click" for e in first)


def test_events_follow_the_contract() -> None:
    sim = Simulator.synthetic(SMALL)
    events = [e for t in range(50) for e in sim.respond("u1", f"r{t}", ["i1", "i2", "zz"], t)]
    assert {e["type"] for e in events} <= {"click", "dwell", "add_to_cart", "purchase"}
    assert all(e["item_id"] != "zz" and e["rec_id"].startswith("r") for e in events)
    assert all(e["dwell_ms"] > 0 for e in events if e["type"] == "dwell")
    with pytest.raises(ContractError):
        sim.respond("nobody", "r", ["i1"], 0.0)


def test_position_bias_lowers_lower_positions() -> None:
    sim = Simulator.synthetic(SMALL)
    probs = sim.click_probabilities("u0", [5] * 10, 0.0)  # same item in every slot
    sim_no_slate = Simulator.synthetic(SimulatorConfig(**{**SMALL.__dict__, "slate_satiation": 0}))
    flat = sim_no_slate.click_probabilities("u0", [5] * 10, 0.0)
    assert np.all(np.diff(flat) < 0)  # pure position bias
    assert np.all(probs[1:] < flat[1:])  # duplicates above satiate


def test_clicks_satiate_similar_items_and_wear_off() -> None:
    sim = Simulator.synthetic(SMALL)
    sims = sim.item_vectors @ sim.item_vectors[0]
    similar = int(np.argsort(-sims)[1])
    before = sim.utilities("u0", [similar], 0.0)[0]
    user = sim._users["u0"]
    for _ in range(3):
        user.history.append((0, 0.0))  # three clicks on item 0 at t=0
    assert sim.utilities("u0", [similar], 0.0)[0] < before - 0.5
    later = sim.utilities("u0", [similar], 10 * SMALL.satiation_half_life_s)[0]
    assert later == pytest.approx(before, abs=0.01)


def test_fit_on_interactions() -> None:
    users = ["a", "a", "b", "b", "c", "c", "c"]
    items = ["x", "y", "x", "z", "y", "z", "x"]
    ratings = [5.0, 1.0, 4.0, 2.0, 1.0, 5.0, 3.0]
    sim = Simulator.from_interactions(users, items, ratings, SimulatorConfig(dims=2))
    assert sim.item_vectors.shape == (3, 2) and sim.user_ids == ["a", "b", "c"]
    assert sim.popularity.tolist() == [3.0, 2.0, 2.0]


def test_closed_loop_is_repeatable_and_updates_the_policy() -> None:
    cfg = LoopConfig(steps=300, bucket=100, seed=1)
    ps = PolicySettings()

    def learned() -> tuple[list[float], list[float]]:
        sim = Simulator.synthetic(SMALL)
        learner = OnlineLearner(LearnerSettings(batch_size=32), ps)
        res = run_closed_loop("pl", StochasticReranker(seed=1), sim, cfg, ps, learner)
        assert res.weights is not None and res.updates >= 8
        assert res.weights != DEFAULT_WEIGHTS.tolist()  # the updates moved the policy
        return res.series["reward_per_1k"], res.weights

    assert learned() == learned()
    fixed = run_closed_loop("mmr", MMRReranker(0.5), Simulator.synthetic(SMALL), cfg, ps)
    assert len(fixed.series["ctr"]) == 3 and 0 <= fixed.mean("coverage") <= 1
