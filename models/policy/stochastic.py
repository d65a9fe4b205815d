"""The learnable stochastic policy: Plackett-Luce sampling over a linear score of ``FEATURES``.

Each item's propensity is the probability of choosing it at its position given the items above
it, so the slate's probability is their product; the online learner (models/policy/learner.py)
learns the weights.
"""

from __future__ import annotations

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
    FloatArray,
    Slate,
    SlateItem,
    UserContext,
    base_features,
    empty_slate,
    intra_list_diversity,
    slate_length,
    stack_vectors,
    zscore_masked,
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
        k = slate_length(candidates, k)
        if k == 0:
            return empty_slate(version)
        base = base_features(context, candidates)
        rng = self._rng
        vectors = stack_vectors(candidates)
        walk = pl_walk(
            weights,
            base,
            vectors,
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
        # the relevance-only slate of the same candidates: the diversity constraint's reference
        top = np.argsort(-base[:, 0], kind="stable")[:k]
        return Slate(
            items=items,
            policy_version=version,
            features=walk.features,
            expected_features=walk.expected,
            params=weights.copy(),
            temperature=self.temperature,
            state=state_features(context, candidates, vectors, k, self.state_half_life_s),
            diversity=np.array(
                [intra_list_diversity(vectors[walk.order]), intra_list_diversity(vectors[top])]
            ),
            reference_items=[candidates[i].item_id for i in top],
        )


def _weights(values: FloatArray) -> FloatArray:
    weights = np.array(values, dtype=np.float64)
    if weights.shape != (N_FEATURES,):
        raise ConfigError(f"weights must have {N_FEATURES} entries {FEATURES}")
    return weights
