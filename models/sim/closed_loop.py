"""Offline closed loop without Kafka: simulator -> candidates -> policy -> responses -> learner.

One run serves ``steps`` requests. Each request picks a simulated user, retrieves the top
``n_candidates`` items by a *relevance model* (the simulator's true affinity plus a persistent
per (user, item) error of ``relevance_noise`` standard deviations, so it is informative but
wrong in a fixed way, like a trained model), excludes items the user already clicked, reranks
them into a slate, lets the simulator respond, joins the responses through
:class:`~streamrec.models.rewards.RewardJoiner` and, for the learned policy, feeds the
:class:`~streamrec.models.learner.OnlineLearner` and hot-swaps its weights after each update.

The policy sees only what a production worker sees: relevance scores, item vectors, popularity,
freshness and the vectors of the user's recent clicks (its novelty context).

Metrics per bucket of ``bucket`` impressions (the time series of the report):
reward per 1,000 impressions, CTR (clicks / items shown), intra-list diversity (mean pairwise
``1 - cos`` inside a slate), catalog coverage (distinct items shown in the bucket / catalog),
novelty (mean self-information ``-log2(popularity share)`` of shown items, in bits) and the
new-item share (share of a slate's items not shown in the last ``coverage_window`` impressions:
the constrained learner's coverage term, models/policy/constraints.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.constraints import NewItemWindow
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.ope import log_record
from streamrec.models.policy.rewards import (
    Impression,
    MemoryImpressionStore,
    Response,
    Reward,
    RewardJoiner,
    position_rewards,
)
from streamrec.models.policy.slate import (
    Candidate,
    FloatArray,
    Reranker,
    UserContext,
    base_features,
    intra_list_diversity,
    stack_vectors,
    unit_rows,
)
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.models.sim.simulator import Simulator
from streamrec.stream.config import ServingSettings

METRICS: tuple[str, ...] = ("reward_per_1k", "ctr", "diversity", "coverage", "novelty", "new_share")


@dataclass(frozen=True)
class LoopConfig:
    """Size of one closed-loop run. ``request_interval_s``: simulated seconds between requests."""

    steps: int = 4_000
    n_candidates: int = 50
    relevance_noise: float = 0.5
    bucket: int = 250
    request_interval_s: float = 5.0
    history_vectors: int = 10
    seed: int = 0
    slate_size: int = ServingSettings.model_fields["slate_size"].default


@dataclass
class LoopResult:
    """Time series per metric (one value per bucket) and the final learned weights, if any."""

    policy: str
    series: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    weights: list[float] | None = None
    updates: int = 0
    rollbacks: int = 0

    def mean(self, metric: str, last_fraction: float = 1.0) -> float:
        """Mean of a metric's buckets over the last ``last_fraction`` of the run."""
        values = self.series[metric]
        start = int(len(values) * (1.0 - last_fraction))
        return float(np.mean(values[start:]))


@dataclass
class _Bucket:
    impressions: int = 0
    reward: float = 0.0
    clicks: int = 0
    shown: int = 0
    diversity: list[float] = field(default_factory=list)
    items: set[int] = field(default_factory=set)
    novelty: list[float] = field(default_factory=list)
    new_share: list[float] = field(default_factory=list)


def relevance_model(sim: Simulator, noise: float, seed: int) -> FloatArray:
    """Scores ``[U, I]``: true affinity plus a fixed Gaussian error of ``noise`` sd."""
    rng = np.random.default_rng(seed + 7_919)
    return np.asarray(sim.affinity + noise * rng.normal(size=sim.affinity.shape))


def candidates_for(sim: Simulator, scores: FloatArray, user_id: str, n: int) -> list[Candidate]:
    """Top ``n`` items by the relevance model that the user has not clicked yet."""
    row = scores[sim.user_row(user_id)].copy()
    row[sim.clicked(user_id)] = -np.inf
    top = np.argpartition(-row, n)[:n]
    return [
        Candidate(
            item_id=sim.item_ids[i],
            relevance=float(row[i]),
            vector=sim.item_vectors[i],
            popularity=float(sim.popularity[i]),
            freshness=float(sim.freshness[i]),
        )
        for i in top
    ]


def _context(
    sim: Simulator, user_id: str, n: int, now: float, last_visit: float | None
) -> UserContext:
    recent = sim.clicked(user_id)[-n:]
    vectors = sim.item_vectors[recent] if recent else np.zeros((0, sim.item_vectors.shape[1]))
    ages = now - np.array(sim.click_times(user_id)[-n:], dtype=np.float64)
    return UserContext(
        user_id=user_id,
        history_vectors=vectors,
        history_ages_s=ages if recent else None,
        since_last_visit_s=None if last_visit is None else now - last_visit,
    )


def _write_ope_line(
    out: IO[str],
    impression: Impression,
    context: UserContext,
    cands: list[Candidate],
    rewards: list[Reward],
) -> None:
    record = log_record(
        impression.rec_id,
        impression.user_id,
        impression.policy_version,
        impression.created_at,
        [c.item_id for c in cands],
        base_features(context, cands),
        stack_vectors(cands),
        impression.items,
        impression.propensities,
        position_rewards(impression, rewards),
    )
    out.write(json.dumps(record) + "\n")


def _row(sim: Simulator, item_id: str) -> int:
    row = sim.item_index(item_id)
    assert row is not None, "candidates come from the simulator's catalog"
    return int(row)


def _intra_list_diversity(sim: Simulator, rows: list[int]) -> float:
    return intra_list_diversity(unit_rows(sim.item_vectors[rows]))


def run_closed_loop(
    policy: str,
    reranker: Reranker,
    sim: Simulator,
    config: LoopConfig,
    policy_settings: PolicySettings,
    learner: OnlineLearner | None = None,
    on_update: Callable[[OnlineLearner], None] | None = None,
    ope_log: IO[str] | None = None,
    coverage_window: int | None = None,
) -> LoopResult:
    """Serve ``config.steps`` requests; learn online when ``learner`` is given.

    ``reranker`` must be a :class:`StochasticReranker` when a learner is given (its weights are
    swapped after every update). Deterministic given the simulator's and the config's seeds.
    ``ope_log``: when given, every stochastic slate is written to it as one line of the
    :mod:`~streamrec.models.policy.ope` log format (what the streaming side logs in production).
    """
    rng = np.random.default_rng(config.seed + 104_729)
    scores = relevance_model(sim, config.relevance_noise, config.seed)
    store = MemoryImpressionStore()
    learner_settings = learner.settings if learner else LearnerSettings()
    joiner = RewardJoiner(store, window_s=1e9, weights=learner_settings.reward_weights)
    new_items = NewItemWindow(coverage_window or learner_settings.coverage_window)
    share = sim.popularity / sim.popularity.sum()
    self_info = -np.log2(np.maximum(share, 1e-12))
    result = LoopResult(policy=policy)
    bucket = _Bucket()
    k = config.slate_size
    last_visit: dict[str, float] = {}
    for step in range(config.steps):
        now = step * config.request_interval_s
        user_id = sim.user_ids[int(rng.integers(len(sim.user_ids)))]
        cands = candidates_for(sim, scores, user_id, config.n_candidates)
        context = _context(sim, user_id, config.history_vectors, now, last_visit.get(user_id))
        last_visit[user_id] = now
        slate = reranker.rerank(context, cands, k)
        rec_id = f"{policy}-{config.seed}-{step}"
        impression = Impression.from_slate(rec_id, user_id, slate, now)
        joiner.record(impression)
        rewards: list[Reward] = []
        for event in sim.respond(user_id, rec_id, slate.item_ids, now):
            out = joiner.join(Response.from_event(event))
            if isinstance(out, Reward):
                rewards.append(out)
        # responses are immediate, so the window is over: drop what the store kept
        store.impressions.pop(rec_id, None)
        store.rewards.pop(rec_id, None)
        if ope_log is not None and impression.stochastic:
            _write_ope_line(ope_log, impression, context, cands, rewards)
        rows = [_row(sim, i) for i in slate.item_ids]
        bucket.impressions += 1
        bucket.reward += sum(r.value for r in rewards)
        bucket.clicks += sum(1 for r in rewards if r.type == "click")
        bucket.shown += len(rows)
        bucket.diversity.append(_intra_list_diversity(sim, rows))
        bucket.items.update(rows)
        bucket.novelty.extend(self_info[rows].tolist())
        bucket.new_share.append(new_items.new_share(slate.item_ids))
        if learner is not None:
            learner.observe(impression, rewards)
            if learner.ready():
                learner.update()
                assert isinstance(reranker, StochasticReranker)
                reranker.set_params(learner.weights, learner.version)
                if on_update is not None:
                    on_update(learner)
        if bucket.impressions == config.bucket:
            _close(result, bucket, len(sim.item_ids))
            bucket = _Bucket()
    if bucket.impressions:
        _close(result, bucket, len(sim.item_ids))
    if learner is not None:
        result.weights = learner.weights.tolist()
        result.updates = learner.n_updates
        result.rollbacks = learner.n_rollbacks
    return result


def _close(result: LoopResult, b: _Bucket, n_items: int) -> None:
    s = result.series
    s["reward_per_1k"].append(1_000.0 * b.reward / b.impressions)
    s["ctr"].append(b.clicks / max(b.shown, 1))
    s["diversity"].append(float(np.mean(b.diversity)))
    s["coverage"].append(len(b.items) / n_items)
    s["novelty"].append(float(np.mean(b.novelty)))
    s["new_share"].append(float(np.mean(b.new_share)))
