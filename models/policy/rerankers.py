"""The slate policy: rerankers that turn scored candidates into a published slate.

Every reranker implements :class:`Reranker`::

    reranker.rerank(context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate
    reranker.rerank_batch(requests: Sequence[tuple[UserContext, CandidateSet]], k) -> list[Slate]

The serving path calls ``rerank_batch`` once per batch with array-form candidates
(``CandidateSet``); ``rerank`` is the same computation for one request.

``Slate.items`` is a list of :class:`SlateItem` ``(item_id, score, propensity, reason)`` in
display order, and ``Slate.policy_version`` names the parameters that produced it.

Implementations (siblings, swappable):

- :class:`RelevanceReranker`: top-k by relevance (propensity 1).
- :class:`MMRReranker`: greedy maximal marginal relevance (Carbonell & Goldstein 1998).
- :class:`DPPReranker`: greedy MAP inference of a DPP with the fast incremental Cholesky
  update of Chen, Zhang & Zhou (NeurIPS 2018), quality/diversity kernel
  ``L = diag(q) S diag(q)`` with ``q = exp(alpha * relevance)``.
- :class:`StochasticReranker`: Plackett-Luce sampling over a learned linear score of the
  :data:`FEATURES`; each item's propensity is the probability of choosing it at its position
  given the items above it, so the slate's probability is their product.

:func:`make_reranker` builds the one ``PolicySettings.reranker`` names.

Deterministic rerankers report propensity 1.0: an off-policy estimator can still use their logs,
but only for target policies that would have shown the same slate.

Candidate vectors need not be normalised; similarities are cosine (models/policy/slate.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.errors import ConfigError
from streamrec.models.config import PolicySettings
from streamrec.models.policy.slate import (
    Candidate,
    CandidateSet,
    FloatArray,
    Request,
    Reranker,
    Slate,
    SlateItem,
    UserContext,
    slate_length,
    zscore,
)
from streamrec.models.policy.stochastic import StochasticReranker


class _Deterministic:
    """What the fixed rerankers share: a slate per request from its candidates alone."""

    def __init__(self, version: str) -> None:
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        return self.rerank_batch([(context, CandidateSet.of(candidates))], k)[0]

    def rerank_batch(self, requests: Sequence[Request], k: int) -> list[Slate]:
        slates = []
        for _, cands in requests:
            n = slate_length(cands, k)
            order = self.order(cands, n) if n else []
            items = [
                SlateItem(cands.item_ids[i], float(cands.relevance[i]), 1.0, self.reason)
                for i in order
            ]
            slates.append(Slate(items=items, policy_version=self._version))
        return slates

    reason = ""

    def order(self, cands: CandidateSet, k: int) -> list[int]:
        """The ``k`` >= 1 candidate indices of the slate, in display order."""
        raise NotImplementedError


class RelevanceReranker(_Deterministic):
    """Top-k by relevance; the baseline every diversity method is compared with."""

    reason = "relevance"

    def __init__(self, version: str = "relevance") -> None:
        super().__init__(version)

    def order(self, cands: CandidateSet, k: int) -> list[int]:
        return [int(i) for i in np.argsort(-cands.relevance, kind="stable")[:k]]


def mmr_order(relevance: FloatArray, vectors: FloatArray, k: int, diversity: float) -> list[int]:
    """Greedy MMR: argmax ``(1-λ)·rel_i - λ·max_{j∈S} cos(i, j)``; ties go to the lower index.

    ``relevance`` ``[N]`` is min-max scaled to [0, 1] first so λ means the same for every
    request. ``vectors`` ``[N, D]`` unit rows. Returns ``k`` indices in display order.
    """
    span = float(relevance.max() - relevance.min())
    rel = (relevance - relevance.min()) / span if span > 0 else np.zeros_like(relevance)
    sims = vectors @ vectors.T  # [N, N]
    max_sim = np.full(len(rel), -np.inf)
    chosen: list[int] = []
    available = np.ones(len(rel), dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = np.where(available, (1.0 - diversity) * rel - diversity * penalty, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sims[:, best])
    return chosen


class MMRReranker(_Deterministic):
    """Maximal marginal relevance with trade-off ``diversity`` (λ) in [0, 1]."""

    reason = "mmr"

    def __init__(self, diversity: float, version: str | None = None) -> None:
        if not 0.0 <= diversity <= 1.0:
            raise ConfigError(f"MMR diversity must be in [0, 1]; got {diversity}")
        self.diversity = diversity
        super().__init__(version or f"mmr-{diversity:g}")

    def order(self, cands: CandidateSet, k: int) -> list[int]:
        return mmr_order(cands.relevance, cands.units, k, self.diversity)


def dpp_kernel(relevance: FloatArray, vectors: FloatArray, diversity: float) -> FloatArray:
    """``L = diag(q) S diag(q)`` ``[N, N]`` with ``S`` cosine similarity and
    ``q = exp(alpha * rel)``, ``alpha = θ / (2(1-θ))``, ``θ = 1 - diversity`` (Chen et al. 2018,
    eq. 19: log det L_Y = θ/(1-θ)·Σ rel + log det S_Y up to scale). ``rel`` is z-scored first.
    """
    theta = min(1.0 - diversity, 0.99)  # θ -> 1 is pure relevance; cap keeps alpha finite
    alpha = theta / (2.0 * (1.0 - theta))
    q = np.exp(alpha * zscore(relevance))
    sim = vectors @ vectors.T
    return np.asarray(q[:, None] * sim * q[None, :], dtype=np.float64)


def dpp_greedy(kernel: FloatArray, k: int, eps: float = 1e-10) -> list[int]:
    """Fast greedy MAP of a DPP (Chen et al. 2018, Algorithm 1), O(N k²).

    Each step adds the item with the largest marginal gain in log det, i.e. the largest
    ``d_i² = L_ii - ||c_i||²`` where ``c_i`` are the incremental Cholesky rows. When every
    remaining ``d_i²`` is below ``eps`` (the kernel's rank is exhausted) the remaining slots are
    filled by kernel diagonal (quality) so the slate still has ``k`` items.
    """
    n = kernel.shape[0]
    cis = np.zeros((k, n))  # [k, N] Cholesky rows
    d2 = np.array(np.diag(kernel), dtype=np.float64, copy=True)  # [N]
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for step in range(k):
        gains = np.where(available, d2, -np.inf)
        best = int(np.argmax(gains))
        if gains[best] < eps:
            rest = [i for i in np.argsort(-np.diag(kernel), kind="stable") if available[i]]
            chosen.extend(int(i) for i in rest[: k - step])
            break
        chosen.append(best)
        available[best] = False
        e = (kernel[best, :] - cis[:step, best] @ cis[:step, :]) / np.sqrt(d2[best])
        cis[step, :] = e
        d2 = d2 - e**2
    return chosen


class DPPReranker(_Deterministic):
    """DPP greedy MAP with relevance/diversity trade-off ``diversity`` in [0, 1)."""

    reason = "dpp"

    def __init__(self, diversity: float, version: str | None = None) -> None:
        if not 0.0 <= diversity < 1.0:
            raise ConfigError(f"DPP diversity must be in [0, 1); got {diversity}")
        self.diversity = diversity
        super().__init__(version or f"dpp-{diversity:g}")

    def order(self, cands: CandidateSet, k: int) -> list[int]:
        return dpp_greedy(dpp_kernel(cands.relevance, cands.units, self.diversity), k)


# --------------------------------------------------------------------------------------------
# Plackett-Luce stochastic policy


def make_reranker(
    settings: PolicySettings,
    weights: FloatArray | None = None,
    version: str = "pl-0",
    seed: int | None = None,
) -> Reranker:
    """The reranker ``settings.reranker`` names; ``weights``/``version`` only for stochastic."""
    if settings.reranker == "relevance":
        return RelevanceReranker()
    if settings.reranker == "mmr":
        return MMRReranker(settings.diversity)
    if settings.reranker == "dpp":
        return DPPReranker(min(settings.diversity, 0.99))
    return StochasticReranker(
        weights, settings.temperature, version, seed, state_half_life_s=settings.state_half_life_s
    )
