"""The slate policy: rerankers that turn scored candidates into a published slate.

Every reranker implements :class:`Reranker`::

    reranker.rerank(context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate

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

Candidate vectors need not be normalised; similarities are cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamrec.errors import ConfigError
from streamrec.models.config import PolicySettings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Features of the stochastic policy's linear score, in column order.
FEATURES: tuple[str, ...] = ("relevance", "diversity_gain", "novelty", "popularity", "freshness")
N_FEATURES = len(FEATURES)
_DIV = FEATURES.index("diversity_gain")


@dataclass(frozen=True)
class Candidate:
    """One retrieved item before reranking.

    ``relevance``: any real score, larger is better (e.g. a dot product).
    ``vector``: item embedding ``[D]``. ``popularity``: non-negative count or rate.
    ``freshness``: in [0, 1], 1 for a brand-new item.
    """

    item_id: str
    relevance: float
    vector: FloatArray
    popularity: float = 0.0
    freshness: float = 0.0


@dataclass(frozen=True)
class UserContext:
    """What the policy knows about the user at request time.

    ``history_vectors``: embeddings ``[H, D]`` of the user's recently consumed items (most recent
    first or any order); novelty is measured against them. Empty when unknown.
    """

    user_id: str
    history_vectors: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True)
class SlateItem:
    """One published item. ``propensity`` in (0, 1]: P(this item at this position | items above)."""

    item_id: str
    score: float
    propensity: float
    reason: str


@dataclass(frozen=True)
class Slate:
    """A ranked slate plus what the learner needs to credit it.

    ``features``: ``[K, F]`` feature rows of the chosen items at the step they were chosen;
    ``expected_features``: ``[K, F]`` the policy's expected feature row at each step (the
    score-function baseline); both are ``None`` for deterministic rerankers.
    ``params``: the stochastic policy's weights ``[F]`` that produced the slate, else ``None``.
    """

    items: list[SlateItem]
    policy_version: str
    features: FloatArray | None = None
    expected_features: FloatArray | None = None
    params: FloatArray | None = None
    temperature: float | None = None

    @property
    def item_ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    @property
    def propensities(self) -> list[float]:
        return [it.propensity for it in self.items]


@runtime_checkable
class Reranker(Protocol):
    """Turns candidates into a slate of at most ``k`` items."""

    @property
    def version(self) -> str: ...

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate: ...


# --------------------------------------------------------------------------------------------
# shared numerics


def unit_rows(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero). ``[N, D] -> [N, D]``."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def stack_vectors(candidates: Sequence[Candidate]) -> FloatArray:
    """Candidate vectors as unit rows ``[N, D]``."""
    return unit_rows(np.stack([np.asarray(c.vector, dtype=np.float64) for c in candidates]))


def _zscore(x: FloatArray) -> FloatArray:
    # Per-request standardisation keeps the learned weights comparable across users whose
    # relevance scores live on different scales. (Written out: np.std's overhead dominated.)
    d = x - x.sum() / len(x)
    sd = float(np.sqrt(d @ d / len(x)))
    return d / sd if sd > 1e-12 else np.zeros_like(x)


def _zscore_masked(x: FloatArray, mask: npt.NDArray[np.bool_]) -> FloatArray:
    out = np.zeros_like(x)
    if mask.any():
        out[mask] = _zscore(x[mask])
    return out


def base_features(context: UserContext, candidates: Sequence[Candidate]) -> FloatArray:
    """Prefix-independent feature matrix ``[N, F]`` (columns :data:`FEATURES`).

    Every column is z-scored over the candidates of this request, so the learned weights are
    on one scale whatever the retrieval scores' units, and a feature that does not vary in a
    request (no history, nothing chosen yet) is 0 and cannot move the choice.

    relevance: the score; diversity_gain: 0 here (nothing chosen yet; while the slate is built
    it becomes the z-scored ``1 - max cos`` to the items already chosen); novelty:
    ``1 - max cos`` to the user's history; popularity: ``log1p(popularity)``; freshness.
    """
    n = len(candidates)
    feats = np.zeros((n, N_FEATURES))
    feats[:, 0] = _zscore(np.array([c.relevance for c in candidates], dtype=np.float64))
    hist = context.history_vectors
    if hist.size:
        sims = stack_vectors(candidates) @ unit_rows(np.asarray(hist, dtype=np.float64)).T
        feats[:, 2] = _zscore(1.0 - sims.max(axis=1))  # sims [N, H]
    pops = np.log1p(np.maximum([c.popularity for c in candidates], 0.0))
    feats[:, 3] = _zscore(np.asarray(pops, dtype=np.float64))
    feats[:, 4] = _zscore(np.array([c.freshness for c in candidates], dtype=np.float64))
    return feats


def _check(candidates: Sequence[Candidate], k: int) -> int:
    if k < 1:
        raise ConfigError(f"slate size k must be >= 1; got {k}")
    return min(k, len(candidates))


def _empty(version: str) -> Slate:
    return Slate(items=[], policy_version=version)


# --------------------------------------------------------------------------------------------
# deterministic rerankers


class RelevanceReranker:
    """Top-k by relevance; the baseline every diversity method is compared with."""

    def __init__(self, version: str = "relevance") -> None:
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        k = _check(candidates, k)
        rel = np.array([c.relevance for c in candidates])
        order = np.argsort(-rel, kind="stable")[:k]
        items = [SlateItem(candidates[i].item_id, float(rel[i]), 1.0, "relevance") for i in order]
        return Slate(items=items, policy_version=self._version)


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


class MMRReranker:
    """Maximal marginal relevance with trade-off ``diversity`` (λ) in [0, 1]."""

    def __init__(self, diversity: float, version: str | None = None) -> None:
        if not 0.0 <= diversity <= 1.0:
            raise ConfigError(f"MMR diversity must be in [0, 1]; got {diversity}")
        self.diversity = diversity
        self._version = version or f"mmr-{diversity:g}"

    @property
    def version(self) -> str:
        return self._version

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        k = _check(candidates, k)
        if k == 0:
            return _empty(self._version)
        rel = np.array([c.relevance for c in candidates], dtype=np.float64)
        order = mmr_order(rel, stack_vectors(candidates), k, self.diversity)
        items = [SlateItem(candidates[i].item_id, float(rel[i]), 1.0, "mmr") for i in order]
        return Slate(items=items, policy_version=self._version)


def dpp_kernel(relevance: FloatArray, vectors: FloatArray, diversity: float) -> FloatArray:
    """``L = diag(q) S diag(q)`` ``[N, N]`` with ``S`` cosine similarity and
    ``q = exp(alpha * rel)``, ``alpha = θ / (2(1-θ))``, ``θ = 1 - diversity`` (Chen et al. 2018,
    eq. 19: log det L_Y = θ/(1-θ)·Σ rel + log det S_Y up to scale). ``rel`` is z-scored first.
    """
    theta = min(1.0 - diversity, 0.99)  # θ -> 1 is pure relevance; cap keeps alpha finite
    alpha = theta / (2.0 * (1.0 - theta))
    q = np.exp(alpha * _zscore(relevance))
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


class DPPReranker:
    """DPP greedy MAP with relevance/diversity trade-off ``diversity`` in [0, 1)."""

    def __init__(self, diversity: float, version: str | None = None) -> None:
        if not 0.0 <= diversity < 1.0:
            raise ConfigError(f"DPP diversity must be in [0, 1); got {diversity}")
        self.diversity = diversity
        self._version = version or f"dpp-{diversity:g}"

    @property
    def version(self) -> str:
        return self._version

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        k = _check(candidates, k)
        if k == 0:
            return _empty(self._version)
        rel = np.array([c.relevance for c in candidates], dtype=np.float64)
        kernel = dpp_kernel(rel, stack_vectors(candidates), self.diversity)
        order = dpp_greedy(kernel, k)
        items = [SlateItem(candidates[i].item_id, float(rel[i]), 1.0, "dpp") for i in order]
        return Slate(items=items, policy_version=self._version)


# --------------------------------------------------------------------------------------------
# Plackett-Luce stochastic policy


@dataclass(frozen=True)
class Walk:
    """One pass through the Plackett-Luce steps.

    ``order`` ``[K]`` candidate indices; ``log_probs`` ``[K]`` log P(order[k] | order[:k]);
    ``features`` ``[K, F]`` chosen rows; ``expected`` ``[K, F]`` E[row] under the step's softmax;
    ``scores`` ``[K]`` logits of the chosen items; ``greedy`` ``[K]`` whether it was the argmax.
    ``∇_w log P(order[k] | ·) = (features[k] - expected[k]) / temperature``.
    """

    order: list[int]
    log_probs: FloatArray
    features: FloatArray
    expected: FloatArray
    scores: FloatArray
    greedy: list[bool]


def pl_walk(
    weights: FloatArray,
    base: FloatArray,
    vectors: FloatArray,
    k: int,
    temperature: float,
    choose: Callable[[int, FloatArray], int],
) -> Walk:
    """Run ``k`` Plackett-Luce steps; ``choose(step, probs [N]) -> index`` picks each item.

    Sampling passes a random chooser; replaying a logged slate passes one that returns the logged
    index, which gives the exact log-probability of that slate under ``weights`` (used by the
    learner and by off-policy evaluation). ``base`` ``[N, F]`` from :func:`base_features`,
    ``vectors`` ``[N, D]`` unit rows.
    """
    feats = base.copy()
    feats[:, _DIV] = 0.0  # nothing chosen yet, whatever a logged row holds in this column
    max_sim = np.full(base.shape[0], -np.inf)
    available = np.ones(base.shape[0], dtype=bool)
    order: list[int] = []
    log_probs, rows, expected, scores, greedy = [], [], [], [], []
    for step in range(k):
        logits = np.where(available, feats @ weights / temperature, -np.inf)
        top = float(logits.max())
        probs = np.exp(logits - top)
        probs /= probs.sum()
        idx = choose(step, probs)
        if not available[idx]:
            raise ConfigError(f"Plackett-Luce step {step} chose index {idx} twice")
        order.append(idx)
        log_probs.append(float(np.log(max(probs[idx], 1e-300))))
        rows.append(feats[idx].copy())
        expected.append(probs @ np.where(available[:, None], feats, 0.0))
        scores.append(float(logits[idx]))
        greedy.append(bool(logits[idx] >= top))
        available[idx] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[idx])
        # z-scored over the items still available, like the other columns
        gain = 1.0 - max_sim
        feats[:, _DIV] = np.where(available, _zscore_masked(gain, available), 0.0)
    return Walk(
        order=order,
        log_probs=np.array(log_probs),
        features=np.array(rows).reshape(len(order), base.shape[1]),
        expected=np.array(expected).reshape(len(order), base.shape[1]),
        scores=np.array(scores),
        greedy=greedy,
    )


def sample_index(probs: FloatArray, rng: np.random.Generator) -> int:
    """Draw an index with probability ``probs`` (sums to 1; zeros are never drawn)."""
    cdf = np.cumsum(probs)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def replay_chooser(order: Sequence[int]) -> Callable[[int, FloatArray], int]:
    """A chooser for :func:`pl_walk` that replays a logged order."""
    return lambda step, probs: int(order[step])


#: Initial weights: relevance only, so a fresh policy behaves like a softened relevance ranker.
DEFAULT_WEIGHTS = np.array([1.0, 0.0, 0.0, 0.0, 0.0])


class StochasticReranker:
    """Plackett-Luce over ``w·features / temperature``; ``w`` is what the online learner learns.

    Exploration is controlled twice: ``temperature`` divides the logits, and the learner keeps
    ``||w|| <= max_norm`` so the policy can never become deterministic (every propensity stays
    well above zero and importance weights stay bounded).
    """

    def __init__(
        self,
        weights: FloatArray | None = None,
        temperature: float = 0.25,
        version: str = "pl-0",
        seed: int | None = None,
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature
        self._params = (_weights(DEFAULT_WEIGHTS if weights is None else weights), version)
        self._rng = np.random.default_rng(seed)

    @property
    def weights(self) -> FloatArray:
        return self._params[0]

    @property
    def version(self) -> str:
        return self._params[1]

    def set_params(self, weights: FloatArray, version: str) -> None:
        """Hot-swap to new weights (from the learner) under a new version name.

        Weights and version change in one assignment, and ``rerank`` reads them once: a slate
        sampled while the learner (on another thread) swaps is sampled, logged and versioned
        with one set of weights, so its propensities are the logging policy's.
        """
        self._params = (_weights(weights), version)

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        weights, version = self._params
        k = _check(candidates, k)
        if k == 0:
            return _empty(version)
        base = base_features(context, candidates)
        rng = self._rng
        walk = pl_walk(
            weights,
            base,
            stack_vectors(candidates),
            k,
            self.temperature,
            lambda step, probs: sample_index(probs, rng),
        )
        items = [
            SlateItem(
                candidates[i].item_id,
                float(s),
                float(np.exp(lp)),
                "exploit" if g else "explore",
            )
            for i, s, lp, g in zip(
                walk.order, walk.scores, walk.log_probs, walk.greedy, strict=True
            )
        ]
        return Slate(
            items=items,
            policy_version=version,
            features=walk.features,
            expected_features=walk.expected,
            params=weights.copy(),
            temperature=self.temperature,
        )


def _weights(values: FloatArray) -> FloatArray:
    weights = np.array(values, dtype=np.float64)
    if weights.shape != (N_FEATURES,):
        raise ConfigError(f"weights must have {N_FEATURES} entries {FEATURES}")
    return weights


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
    return StochasticReranker(weights, settings.temperature, version, seed)
