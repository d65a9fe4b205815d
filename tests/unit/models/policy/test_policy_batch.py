"""The batched reranking the serving path uses gives the slates of the one-request path: the
Plackett-Luce walk of a batch against ``pl_walk`` with ``sample_index`` draws request by
request (the implementation before batching), and every reranker's batch against its
``rerank``."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.models.policy.rerankers import DPPReranker, MMRReranker, RelevanceReranker
from streamrec.models.policy.slate import (
    Candidate,
    CandidateSet,
    Reranker,
    UserContext,
    base_features,
    stack_vectors,
)
from streamrec.models.policy.stochastic import StochasticReranker, pl_walk, sample_index

WEIGHTS = np.array([1.0, 0.7, 0.4, -0.3, 0.2])


def _requests(rng: np.random.Generator) -> list[tuple[UserContext, list[Candidate]]]:
    """Mixed pool sizes (more than, fewer than and exactly k; empty), tied relevance, users
    with and without history."""
    out = []
    for n in (30, 7, 30, 0, 10, 30, 1, 12):
        cands = [
            Candidate(
                f"i{n}-{j}",
                float(rng.integers(0, 4)) if n == 12 else float(rng.normal()),
                rng.normal(size=6),
                float(rng.integers(0, 50)),
                float(j % 3 == 0),
            )
            for j in range(n)
        ]
        history = rng.normal(size=(int(rng.integers(0, 4)), 6))
        out.append((UserContext(f"u{n}", history if len(history) else np.zeros((0, 0))), cands))
    return out


def test_a_batch_samples_what_pl_walk_samples_request_by_request() -> None:
    requests = _requests(np.random.default_rng(1))
    batched = StochasticReranker(WEIGHTS, 0.5, seed=11).rerank_batch(
        [(ctx, CandidateSet.of(c)) for ctx, c in requests], 10
    )
    rng = np.random.default_rng(11)
    for (ctx, cands), slate in zip(requests, batched, strict=True):
        if not cands:
            assert slate.items == []
            continue
        walk = pl_walk(
            WEIGHTS, base_features(ctx, cands), stack_vectors(cands), min(10, len(cands)), 0.5,
            lambda step, probs: sample_index(probs, rng),
        )  # fmt: skip
        assert slate.item_ids == [cands[i].item_id for i in walk.order]
        assert slate.propensities == pytest.approx(np.exp(walk.log_probs).tolist(), rel=1e-9)
        assert slate.features is not None and slate.expected_features is not None
        np.testing.assert_allclose(slate.features, walk.features, atol=1e-9)
        np.testing.assert_allclose(slate.expected_features, walk.expected, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: StochasticReranker(WEIGHTS, 0.5, seed=5),
        RelevanceReranker,
        lambda: MMRReranker(0.4),
        lambda: DPPReranker(0.4),
    ],
)
def test_every_reranker_batches_what_it_reranks_one_by_one(make: type[Reranker]) -> None:
    requests = _requests(np.random.default_rng(2))
    batched = make().rerank_batch([(ctx, CandidateSet.of(c)) for ctx, c in requests], 5)
    one_by_one = make()
    singles = [one_by_one.rerank(ctx, cands, 5) for ctx, cands in requests]
    assert [s.item_ids for s in batched] == [s.item_ids for s in singles]
    assert [s.propensities for s in batched] == [s.propensities for s in singles]
    assert any(s.item_ids for s in batched)
