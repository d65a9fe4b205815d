"""One policy snapshot per slate: while another thread swaps the stochastic reranker's weights
(as the learner does on the event loop while the model thread reranks), every slate's logged
version, weights and propensities are those of one snapshot, the one that sampled it."""

from __future__ import annotations

import threading

import numpy as np

from streamrec.models.policy.slate import Candidate, CandidateSet, UserContext, base_features
from streamrec.models.policy.slate import stack_vectors as units
from streamrec.models.policy.stochastic import StochasticReranker, pl_walk, replay_chooser


def _weights(n: int) -> np.ndarray:
    """The weights published as version ``pl-<n>``: each version's differ."""
    rng = np.random.default_rng(n)
    return np.asarray(rng.normal(size=5), dtype=np.float64)


def test_concurrent_weight_swaps_never_mix_two_snapshots_in_one_slate() -> None:
    rng = np.random.default_rng(0)
    pools = [
        [Candidate(f"i{u}-{j}", float(rng.normal()), rng.normal(size=8), j) for j in range(40)]
        for u in range(6)
    ]
    requests = [(UserContext(f"u{u}"), CandidateSet.of(pool)) for u, pool in enumerate(pools)]
    reranker = StochasticReranker(_weights(0), 0.5, version="pl-0", seed=1)
    done = threading.Event()
    swaps = 0

    def learner() -> None:
        nonlocal swaps
        while not done.is_set():
            swaps += 1
            reranker.set_params(_weights(swaps), f"pl-{swaps}")

    thread = threading.Thread(target=learner)
    thread.start()
    try:
        batches = [reranker.rerank_batch(requests, 5) for _ in range(300)]
    finally:
        done.set()
        thread.join()
    assert swaps > 100  # the swaps really interleaved with the batches
    versions = set()
    for batch in batches:
        assert len({slate.policy_version for slate in batch}) == 1  # one snapshot per batch
        for pool, slate in zip(pools, batch, strict=True):
            expected = _weights(int(slate.policy_version.removeprefix("pl-")))
            assert slate.params is not None and np.array_equal(slate.params, expected)
            order = [[c.item_id for c in pool].index(i) for i in slate.item_ids]
            replayed = pl_walk(
                expected, base_features(UserContext("u"), pool), units(pool), 5, 0.5,
                replay_chooser(order),
            )  # fmt: skip
            np.testing.assert_allclose(slate.propensities, np.exp(replayed.log_probs), rtol=1e-9)
            versions.add(slate.policy_version)
    assert len(versions) > 10
