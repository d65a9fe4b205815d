"""The learnable stochastic policy: Plackett-Luce sampling over a linear score of ``FEATURES``.

Each item's propensity is the probability of choosing it at its position given the items above
it, so the slate's probability is their product; the online learner (models/policy/learner.py)
learns the weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.errors import ConfigError
from streamrec.models.policy.critic import state_features
from streamrec.models.policy.slate import (
    DIVERSITY,
    FEATURES,
    N_FEATURES,
    Candidate,
    CandidateSet,
    FloatArray,
    Request,
    Slate,
    SlateItem,
    UserContext,
    batch_features,
    empty_slate,
    intra_list_diversity,
    slate_length,
    zscore_masked,
    zscore_masked_rows,
)


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
    feats[:, DIVERSITY] = 0.0  # nothing chosen yet, whatever a logged row holds in this column
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
        feats[:, DIVERSITY] = np.where(available, zscore_masked(gain, available), 0.0)
    return Walk(
        order=order,
        log_probs=np.array(log_probs),
        features=np.array(rows).reshape(len(order), base.shape[1]),
        expected=np.array(expected).reshape(len(order), base.shape[1]),
        scores=np.array(scores),
        greedy=greedy,
    )


def pl_walk_batch(
    weights: FloatArray,
    base: FloatArray,
    vectors: FloatArray,
    k: int,
    temperature: float,
    uniforms: FloatArray,
) -> list[Walk]:
    """:func:`pl_walk` of ``B`` requests at once, each sampled as :func:`sample_index` would
    with the uniform draws ``uniforms`` ``[B, k]``: row ``b`` of the result is the walk that
    ``pl_walk(weights, base[b], vectors[b], k, temperature, chooser)`` returns when the chooser
    draws ``uniforms[b]`` in turn. ``base`` ``[B, N, F]``, ``vectors`` ``[B, N, D]`` unit rows.

    The serving path's reranking: one set of array operations per step for the whole batch
    instead of one per request.
    """
    n_req, n = base.shape[:2]
    rows = np.arange(n_req)
    feats = base.copy()
    feats[:, :, DIVERSITY] = 0.0
    max_sim = np.full((n_req, n), -np.inf)
    available = np.ones((n_req, n), dtype=bool)
    order = np.zeros((n_req, k), dtype=np.int64)
    log_probs, scores = np.zeros((n_req, k)), np.zeros((n_req, k))
    chosen, expected = np.zeros((n_req, k, base.shape[2])), np.zeros((n_req, k, base.shape[2]))
    greedy = np.zeros((n_req, k), dtype=bool)
    for step in range(k):
        logits = np.where(available, feats @ weights / temperature, -np.inf)  # [B, N]
        top = logits.max(axis=1)
        probs = np.exp(logits - top[:, None])
        probs /= probs.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        # searchsorted(cdf, u * cdf[-1], side="right") of every row, as sample_index does
        idx = (cdf <= (uniforms[:, step] * cdf[:, -1])[:, None]).sum(axis=1)
        order[:, step] = idx
        log_probs[:, step] = np.log(np.maximum(probs[rows, idx], 1e-300))
        chosen[:, step] = feats[rows, idx]
        expected[:, step] = np.einsum("bn,bnf->bf", probs, feats)  # chosen rows have p = 0
        scores[:, step] = logits[rows, idx]
        greedy[:, step] = logits[rows, idx] >= top
        available[rows, idx] = False
        max_sim = np.maximum(max_sim, np.einsum("bnd,bd->bn", vectors, vectors[rows, idx]))
        gain = zscore_masked_rows(1.0 - max_sim, available)
        feats[:, :, DIVERSITY] = np.where(available, gain, 0.0)
    return [
        Walk(
            order=order[b].tolist(),
            log_probs=log_probs[b],
            features=chosen[b],
            expected=expected[b],
            scores=scores[b],
            greedy=greedy[b].tolist(),
        )
        for b in range(n_req)
    ]


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
        state_half_life_s: float = 3_600.0,
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature
        self.state_half_life_s = state_half_life_s
        self._params = (policy_weights(DEFAULT_WEIGHTS if weights is None else weights), version)
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
        self._params = (policy_weights(weights), version)

    def rerank(self, context: UserContext, candidates: Sequence[Candidate], k: int) -> Slate:
        return self.rerank_batch([(context, CandidateSet.of(candidates))], k)[0]

    def rerank_batch(self, requests: Sequence[Request], k: int) -> list[Slate]:
        """One slate per request; requests with as many candidates are walked together."""
        weights, version = self._params
        lengths = [slate_length(s, k) for _, s in requests]
        # Drawn request by request, in order: a batch samples what single requests would.
        draws = [self._rng.random(n) for n in lengths]
        slates: list[Slate] = [empty_slate(version)] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (_, s) in enumerate(requests):
            if lengths[i]:
                groups[len(s)].append(i)
        for members in groups.values():
            group = [requests[i] for i in members]
            base = batch_features(group)
            vectors = np.stack([s.units for _, s in group])
            n_draws = lengths[members[0]]
            walks = pl_walk_batch(
                weights, base, vectors, n_draws, self.temperature,
                np.stack([draws[i] for i in members]),
            )  # fmt: skip
            for i, request, feats, walk in zip(members, group, base, walks, strict=True):
                slates[i] = self._slate(request, feats, walk, weights, version)
        return slates

    def _slate(
        self, request: Request, base: FloatArray, walk: Walk, weights: FloatArray, version: str
    ) -> Slate:
        context, cands = request
        k = len(walk.order)
        items = [
            SlateItem(cands.item_ids[i], float(s), float(np.exp(lp)), "exploit" if g else "explore")
            for i, s, lp, g in zip(
                walk.order, walk.scores, walk.log_probs, walk.greedy, strict=True
            )
        ]
        # the relevance-only slate of the same candidates: the diversity constraint's reference
        top = np.argsort(-base[:, 0], kind="stable")[:k]
        return Slate(
            items=items,
            policy_version=version,
            features=walk.features,
            expected_features=walk.expected,
            params=weights.copy(),
            temperature=self.temperature,
            state=state_features(context, cands.relevance, cands.units, k, self.state_half_life_s),
            diversity=np.array(
                [
                    intra_list_diversity(cands.units[walk.order]),
                    intra_list_diversity(cands.units[top]),
                ]
            ),
            reference_items=[cands.item_ids[i] for i in top],
        )


def policy_weights(values: FloatArray | Sequence[float]) -> FloatArray:
    """``values`` as the policy's weights ``[F]``; ConfigError unless there is one finite weight
    per feature of ``FEATURES`` (NaN or infinite logits leave no distribution to sample)."""
    weights = np.array(values, dtype=np.float64)
    if weights.shape != (N_FEATURES,):
        raise ConfigError(
            f"weights must have {N_FEATURES} entries {FEATURES}; got shape {weights.shape}"
        )
    if not np.isfinite(weights).all():
        raise ConfigError(f"weights must be finite; got {weights.tolist()}")
    return weights
