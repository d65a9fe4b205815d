"""Rerankers against independent brute-force implementations; Plackett-Luce propensities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamrec.errors import ConfigError
from streamrec.models.config import PolicySettings
from streamrec.models.policy.rerankers import (
    DPPReranker,
    MMRReranker,
    RelevanceReranker,
    dpp_greedy,
    dpp_kernel,
    make_reranker,
)
from streamrec.models.policy.slate import (
    FEATURES,
    Candidate,
    Reranker,
    UserContext,
    base_features,
    stack_vectors,
)
from streamrec.models.policy.stochastic import StochasticReranker, pl_walk, replay_chooser


def _candidates(rng: np.random.Generator, n: int, d: int = 4) -> list[Candidate]:
    return [
        Candidate(
            item_id=f"i{i}",
            relevance=float(rng.normal()),
            vector=rng.normal(size=d),
            popularity=float(rng.integers(0, 100)),
            freshness=float(rng.uniform()),
        )
        for i in range(n)
    ]


def _naive_mmr(cands: list[Candidate], k: int, lam: float) -> list[str]:
    """Textbook MMR written independently: plain loops, explicit cosine."""
    rels = [c.relevance for c in cands]
    lo, hi = min(rels), max(rels)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    chosen: list[int] = []
    for _ in range(k):
        best, best_score = -1, -np.inf
        for i, c in enumerate(cands):
            if i in chosen:
                continue
            sim = max((cos(c.vector, cands[j].vector) for j in chosen), default=0.0)
            score = (1 - lam) * (c.relevance - lo) / (hi - lo) - lam * sim
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return [cands[i].item_id for i in chosen]


def _naive_dpp(kernel: np.ndarray, k: int) -> list[int]:
    """Greedy MAP that recomputes log det L[S + i] from scratch for every candidate."""
    chosen: list[int] = []
    for _ in range(k):
        best, best_val = -1, -np.inf
        for i in range(kernel.shape[0]):
            if i in chosen:
                continue
            idx = [*chosen, i]
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(idx, idx)])
            val = logdet if sign > 0 else -np.inf
            if val > best_val:
                best, best_val = i, val
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_mmr_matches_naive(seed: int, lam: float) -> None:
    cands = _candidates(np.random.default_rng(seed), 9)
    slate = MMRReranker(lam).rerank(UserContext("u"), cands, 5)
    assert slate.item_ids == _naive_mmr(cands, 5, lam)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.7])
def test_dpp_fast_greedy_matches_logdet_greedy(seed: int, diversity: float) -> None:
    rng = np.random.default_rng(seed)
    cands = _candidates(rng, 10, d=8)  # rank 8 >= k, so the fast path never runs out
    kernel = dpp_kernel(np.array([c.relevance for c in cands]), stack_vectors(cands), diversity)
    assert dpp_greedy(kernel, 6) == _naive_dpp(kernel, 6)


def test_dpp_fills_slate_when_kernel_rank_runs_out() -> None:
    cands = _candidates(np.random.default_rng(1), 8, d=2)  # rank 2 < k
    slate = DPPReranker(0.5).rerank(UserContext("u"), cands, 5)
    assert len(slate.item_ids) == len(set(slate.item_ids)) == 5


def test_dpp_diversity_lowers_slate_similarity() -> None:
    rng = np.random.default_rng(3)
    cands = _candidates(rng, 40, d=6)
    vecs = {c.item_id: c.vector / np.linalg.norm(c.vector) for c in cands}

    def mean_sim(ids: list[str]) -> float:
        m = np.array([vecs[i] for i in ids])
        s = m @ m.T
        return float((s.sum() - len(ids)) / (len(ids) * (len(ids) - 1)))

    plain = RelevanceReranker().rerank(UserContext("u"), cands, 8).item_ids
    diverse = DPPReranker(0.9).rerank(UserContext("u"), cands, 8).item_ids
    assert mean_sim(diverse) < mean_sim(plain)


def test_every_reranker_implements_the_protocol() -> None:
    rerankers = [RelevanceReranker(), MMRReranker(0.3), DPPReranker(0.3), StochasticReranker()]
    cands = _candidates(np.random.default_rng(0), 12)
    for r in rerankers:
        assert isinstance(r, Reranker)
        slate = r.rerank(UserContext("u"), cands, 4)
        assert len(slate.items) == 4 and slate.policy_version == r.version
        assert all(0.0 < p <= 1.0 for p in slate.propensities)


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        MMRReranker(1.5)
    with pytest.raises(ConfigError):
        StochasticReranker(temperature=0.0)
    with pytest.raises(ConfigError):
        RelevanceReranker().rerank(UserContext("u"), _candidates(np.random.default_rng(0), 3), 0)


def _walk_inputs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, UserContext]:
    rng = np.random.default_rng(seed)
    cands = _candidates(rng, n)
    ctx = UserContext("u", rng.normal(size=(2, 4)))
    weights = rng.normal(size=len(FEATURES))
    return weights, base_features(ctx, cands), stack_vectors(cands), ctx


@pytest.mark.parametrize("seed", range(5))
def test_plackett_luce_slate_probabilities_sum_to_one(seed: int) -> None:
    weights, base, vecs, _ = _walk_inputs(seed, 5)
    first = [
        np.exp(pl_walk(weights, base, vecs, 1, 0.5, replay_chooser([i])).log_probs[0])
        for i in range(5)
    ]
    assert sum(first) == pytest.approx(1.0)
    total = 0.0
    for order in itertools.permutations(range(5), 3):
        walk = pl_walk(weights, base, vecs, 3, 0.5, replay_chooser(order))
        assert np.all(walk.log_probs <= 0.0)
        total += float(np.exp(walk.log_probs.sum()))
    assert total == pytest.approx(1.0)


def test_sampled_slates_follow_their_propensities() -> None:
    rng = np.random.default_rng(11)
    cands = _candidates(rng, 4)
    ctx = UserContext("u")
    policy = StochasticReranker(np.array([1.0, 0.5, 0.0, 0.3, 0.0]), temperature=0.7, seed=5)
    counts: dict[tuple[str, ...], int] = {}
    claimed: dict[tuple[str, ...], float] = {}
    n = 20_000
    for _ in range(n):
        slate = policy.rerank(ctx, cands, 2)
        key = tuple(slate.item_ids)
        counts[key] = counts.get(key, 0) + 1
        claimed[key] = float(np.prod(slate.propensities))
    assert sum(claimed[key] for key in claimed) == pytest.approx(1.0, abs=1e-9)
    for key, c in counts.items():
        p = claimed[key]
        assert abs(c / n - p) < 4.0 * np.sqrt(p * (1 - p) / n) + 1e-3


def test_stochastic_slate_carries_learning_features() -> None:
    cands = _candidates(np.random.default_rng(2), 10)
    slate = StochasticReranker(seed=0).rerank(UserContext("u"), cands, 4)
    assert slate.features is not None and slate.features.shape == (4, len(FEATURES))
    assert slate.expected_features is not None and slate.expected_features.shape == (4, 5)
    assert slate.params is not None and slate.temperature == 0.25


@pytest.mark.parametrize(
    ("name", "kind"),
    [("relevance", RelevanceReranker), ("mmr", MMRReranker), ("dpp", DPPReranker),
     ("stochastic", StochasticReranker)],
)  # fmt: skip
def test_make_reranker_follows_settings(name: str, kind: type) -> None:
    settings = PolicySettings(reranker=name, diversity=0.4)  # type: ignore[arg-type]
    assert isinstance(make_reranker(settings, seed=0), kind)
