"""What every slate policy shares: candidates in, a slate with propensities out, and the
features the stochastic policy scores (``FEATURES``). The rerankers themselves live in
models/policy/rerankers.py (deterministic) and models/policy/stochastic.py (Plackett-Luce).

Candidate vectors need not be normalised; similarities are cosine.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamrec.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Features of the stochastic policy's linear score, in column order.
FEATURES: tuple[str, ...] = ("relevance", "diversity_gain", "novelty", "popularity", "freshness")
N_FEATURES = len(FEATURES)
DIVERSITY = FEATURES.index("diversity_gain")


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
    ``history_ages_s``: ``[H]`` seconds since each of those items was consumed, and
    ``since_last_visit_s``: seconds since the user's previous slate; the critic's state
    features use them (models/policy/critic.py), ``None`` when unknown.
    """

    user_id: str
    history_vectors: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    history_ages_s: FloatArray | None = None
    since_last_visit_s: float | None = None


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
    ``state``: the critic's state features ``[S]`` of the request (models/policy/critic.py);
    ``diversity``: ``[2]`` intra-list diversity of this slate and of the relevance-only slate
    of the same candidates, and ``reference_items`` that relevance-only slate: what the
    constrained learner compares against (models/policy/constraints.py).
    """

    items: list[SlateItem]
    policy_version: str
    features: FloatArray | None = None
    expected_features: FloatArray | None = None
    params: FloatArray | None = None
    temperature: float | None = None
    state: FloatArray | None = None
    diversity: FloatArray | None = None
    reference_items: list[str] | None = None

    @property
    def item_ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    @property
    def propensities(self) -> list[float]:
        return [it.propensity for it in self.items]


@dataclass(frozen=True)
class CandidateSet:
    """One request's candidates as arrays: what the serving path builds for a whole batch
    without a :class:`Candidate` object per item. ``units`` ``[N, D]`` are unit rows; the
    other arrays are ``[N]`` (see :class:`Candidate` for their meaning)."""

    item_ids: list[str]
    relevance: FloatArray
    units: FloatArray
    popularity: FloatArray
    freshness: FloatArray

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> CandidateSet:
        return cls(
            item_ids=[c.item_id for c in candidates],
            relevance=np.array([c.relevance for c in candidates], dtype=np.float64),
            units=stack_vectors(candidates) if candidates else np.zeros((0, 0)),
            popularity=np.array([c.popularity for c in candidates], dtype=np.float64),
            freshness=np.array([c.freshness for c in candidates], dtype=np.float64),
        )


#: One slate request: who asks, and the candidates to choose from.
Request = tuple[UserContext, CandidateSet]


@runtime_checkable
class Reranker(Protocol):
    """Turns candidates into a slate of at most ``k`` items, one request or a batch.

    ``rerank_batch`` returns one slate per request, in order, each the slate ``rerank`` would
    return for it alone (a stochastic reranker draws its randomness request by request).
    """

    @property
    def version(self) -> str: ...

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate: ...

    def rerank_batch(self, requests: Sequence[Request], k: int) -> list[Slate]: ...


# --------------------------------------------------------------------------------------------
# shared numerics


def unit_rows(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero). ``[N, D] -> [N, D]``."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def stack_vectors(candidates: Sequence[Candidate]) -> FloatArray:
    """Candidate vectors as unit rows ``[N, D]``."""
    return unit_rows(np.stack([np.asarray(c.vector, dtype=np.float64) for c in candidates]))


def zscore(x: FloatArray) -> FloatArray:
    # Per-request standardisation keeps the learned weights comparable across users whose
    # relevance scores live on different scales. (Written out: np.std's overhead dominated.)
    d = x - x.sum() / len(x)
    sd = float(np.sqrt(d @ d / len(x)))
    return d / sd if sd > 1e-12 else np.zeros_like(x)


def zscore_rows(x: FloatArray) -> FloatArray:
    """:func:`zscore` of every row of ``x`` ``[B, N]`` at once."""
    d = x - x.sum(axis=1, keepdims=True) / x.shape[1]
    sd = np.sqrt((d * d).sum(axis=1, keepdims=True) / x.shape[1])
    return np.where(sd > 1e-12, d / np.where(sd > 1e-12, sd, 1.0), 0.0)


def zscore_masked(x: FloatArray, mask: npt.NDArray[np.bool_]) -> FloatArray:
    out = np.zeros_like(x)
    if mask.any():
        out[mask] = zscore(x[mask])
    return out


def zscore_masked_rows(x: FloatArray, mask: npt.NDArray[np.bool_]) -> FloatArray:
    """:func:`zscore_masked` of every row of ``x`` ``[B, N]`` under ``mask`` ``[B, N]``."""
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    d = x - np.where(mask, x, 0.0).sum(axis=1, keepdims=True) / count
    sd = np.sqrt(np.where(mask, d * d, 0.0).sum(axis=1, keepdims=True) / count)
    return np.where(mask & (sd > 1e-12), d / np.where(sd > 1e-12, sd, 1.0), 0.0)


def base_features(context: UserContext, candidates: Sequence[Candidate]) -> FloatArray:
    """Prefix-independent feature matrix ``[N, F]`` (columns :data:`FEATURES`).

    Every column is z-scored over the candidates of this request, so the learned weights are
    on one scale whatever the retrieval scores' units, and a feature that does not vary in a
    request (no history, nothing chosen yet) is 0 and cannot move the choice.

    relevance: ``-log(1 + rank)`` of the candidate by score (rank 0 for the best, ties in
    candidate order). Not the score itself: fused reciprocal-rank scores are nearly flat at the
    head (1/61 against 1/62), so z-scored they left the policy sampling almost uniformly among
    the top twenty and the published order was mostly chance (offline on ML-100K, NDCG@10 of
    the sampled slates fell from 1.35x to 1.22x co-visitation; with log ranks 1.32x, with
    exploration kept). diversity_gain: 0 here (nothing chosen yet; while the slate is built
    it becomes the z-scored ``1 - max cos`` to the items already chosen); novelty:
    ``1 - max cos`` to the user's history; popularity: ``log1p(popularity)``; freshness.
    """
    features: FloatArray = batch_features([(context, CandidateSet.of(candidates))])[0]
    return features


def batch_features(requests: Sequence[Request]) -> FloatArray:
    """:func:`base_features` ``[B, N, F]`` of requests that all have ``N`` candidates."""
    sets = [s for _, s in requests]
    feats = np.zeros((len(sets), len(sets[0]), N_FEATURES))
    if not len(sets[0]):
        return feats
    feats[:, :, 0] = zscore_rows(np.stack([_log_rank(s.relevance) for s in sets]))
    for row, (context, s) in enumerate(requests):
        hist = context.history_vectors
        if hist.size:
            sims = s.units @ unit_rows(np.asarray(hist, dtype=np.float64)).T  # [N, H]
            feats[row, :, 2] = zscore(1.0 - sims.max(axis=1))
    pops = np.log1p(np.maximum(np.stack([s.popularity for s in sets]), 0.0))
    feats[:, :, 3] = zscore_rows(pops)
    feats[:, :, 4] = zscore_rows(np.stack([s.freshness for s in sets]))
    return feats


def _log_rank(relevance: FloatArray) -> FloatArray:
    ranks = np.empty(len(relevance))
    ranks[np.argsort(-relevance, kind="stable")] = np.arange(len(relevance))
    return np.asarray(-np.log1p(ranks), dtype=np.float64)


def intra_list_diversity(units: FloatArray) -> float:
    """Mean pairwise ``1 - cos`` of a slate's unit vectors ``[K, D]`` (0 for fewer than 2)."""
    n = units.shape[0]
    if n < 2:
        return 0.0
    return float((n * n - (units @ units.T).sum()) / (n * (n - 1)))


def slate_length(candidates: Sized, k: int) -> int:
    if k < 1:
        raise ConfigError(f"slate size k must be >= 1; got {k}")
    return min(k, len(candidates))


def empty_slate(version: str) -> Slate:
    return Slate(items=[], policy_version=version)


# --------------------------------------------------------------------------------------------
# deterministic rerankers
