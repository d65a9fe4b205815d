"""The critic: what a user's state is worth over their next visits, from features the worker has.

State features (:data:`STATE_FEATURES`, computed by :func:`state_features` when a slate is
served, logged with the impression, and chosen by ``LearnerSettings.critic_features``):

- ``bias``: 1.
- ``satiation``: how tired the user is of this request's candidates: the mean over candidates
  of ``Σ_h decay_h · max(0, cos(c, h))²`` over the recent clicks ``h``, with
  ``decay_h = 2^(-age_h / half_life)``. A user's next visit is worth less when the last slate's
  clicks piled up on one topic; this feature is how the critic sees that.
- ``concentration``: decayed mean pairwise ``max(0, cos)²`` of the recent clicks (1: all one
  topic, 0: unrelated).
- ``activity``: decayed count of recent clicks ``Σ_h decay_h``.
- ``since_last_visit``: ``log1p(minutes since the user's previous slate)`` (0 when unknown).
- ``pool``: mean raw relevance of the top ``k`` candidates (how good the request's pool is).

:class:`LinearCritic` holds ridge regressions over the chosen features, refitted on a
window of recent transitions at every learner update: ``value(s)`` predicts the discounted
return ``r_t + gamma V(s_{t+1})`` (fitted value iteration: the targets use the previous fit),
``now(s)`` the slate's own reward ``r_t`` (``value - now`` is the part of the return that comes
from the user's later visits) and ``togo(s, k)`` each position's within-slate reward-to-go
(the actor's state-dependent baseline). Linear in a handful of features because it must
learn from a few thousand transitions and its weights should be readable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.errors import ConfigError
from streamrec.models.policy.slate import FloatArray, UserContext, unit_rows

STATE_FEATURES: tuple[str, ...] = (
    "bias",
    "satiation",
    "concentration",
    "activity",
    "since_last_visit",
    "pool",
)
N_STATE = len(STATE_FEATURES)


def _decay(context: UserContext, half_life_s: float) -> FloatArray:
    n = context.history_vectors.shape[0]
    ages = context.history_ages_s
    if ages is None or len(ages) != n:
        return np.ones(n)  # ages unknown: every recent click counts fully
    return np.asarray(np.exp2(-np.maximum(ages, 0.0) / half_life_s), dtype=np.float64)


def state_features(
    context: UserContext, relevance: FloatArray, vectors: FloatArray, k: int, half_life_s: float
) -> FloatArray:
    """All :data:`STATE_FEATURES` ``[S]`` of one request: its candidates' ``relevance`` ``[N]``
    and ``vectors`` ``[N, D]`` unit rows."""
    out = np.zeros(N_STATE)
    out[0] = 1.0
    ranked = np.sort(relevance)[::-1]
    out[5] = float(np.mean(ranked[:k])) if len(ranked) else 0.0
    if context.since_last_visit_s is not None:
        out[4] = float(np.log1p(max(context.since_last_visit_s, 0.0) / 60.0))
    hist = context.history_vectors
    if not hist.size or not len(relevance):
        return out
    decay = _decay(context, half_life_s)  # [H]
    units = unit_rows(np.asarray(hist, dtype=np.float64))
    sims = np.maximum(vectors @ units.T, 0.0) ** 2  # [N, H]
    out[1] = float((sims @ decay).mean())
    out[3] = float(decay.sum())
    if len(units) > 1:
        pair = np.maximum(units @ units.T, 0.0) ** 2  # [H, H]
        w = np.outer(decay, decay)
        np.fill_diagonal(w, 0.0)
        out[2] = float((pair * w).sum() / max(float(w.sum()), 1e-12))
    return out


def feature_index(names: Sequence[str]) -> list[int]:
    """Columns of :data:`STATE_FEATURES` for ``names``; raises ``ConfigError`` on unknown ones."""
    unknown = [n for n in names if n not in STATE_FEATURES]
    if unknown:
        raise ConfigError(f"unknown critic features {unknown}; choose from {STATE_FEATURES}")
    return [STATE_FEATURES.index(n) for n in names]


@dataclass(frozen=True)
class Transition:
    """One visit for the critic: state ``[S]``, the slate's reward, the next visit's state
    (``None`` when the user did not come back within the timeout: the return ends there) and
    each position's within-slate reward-to-go ``[K]`` (``None``: not known, no baseline row)."""

    state: FloatArray
    reward: float
    next_state: FloatArray | None
    togo: FloatArray | None = None


class LinearCritic:
    """Ridge regressions ``value(s)`` and ``now(s)`` over the chosen state columns."""

    def __init__(self, columns: Sequence[int], discount: float, window: int, ridge: float) -> None:
        self.columns = list(columns)
        self.discount = discount
        self.ridge = ridge
        self.value_w: FloatArray = np.zeros(len(self.columns))
        self.now_w: FloatArray = np.zeros(len(self.columns))
        self.togo_w: FloatArray = np.zeros((len(self.columns), 0))  # [S', K]
        self.transitions: deque[Transition] = deque(maxlen=window)
        self.fits = 0

    def _x(self, states: FloatArray) -> FloatArray:
        return np.atleast_2d(states)[:, self.columns]

    def value(self, states: FloatArray) -> FloatArray:
        """``V(s)`` ``[B]`` for states ``[B, S]`` (or one ``[S]``)."""
        return self._x(states) @ self.value_w

    def now(self, states: FloatArray) -> FloatArray:
        """Predicted reward of the slate served in state ``s`` ``[B]``."""
        return self._x(states) @ self.now_w

    def togo(self, state: FloatArray, k: int) -> FloatArray:
        """Expected within-slate reward-to-go ``[k]`` of each position in state ``s`` ``[S]``
        (0 for positions the fit has not seen): the actor's state-dependent baseline."""
        out = np.zeros(k)
        fitted = self._x(state)[0] @ self.togo_w[:, :k]
        out[: len(fitted)] = fitted
        return out

    def add(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def fit(self) -> None:
        """Refit both heads on the window; the value targets bootstrap on the previous fit."""
        if not self.transitions:
            return
        steps = list(self.transitions)
        x = self._x(np.stack([t.state for t in steps]))  # [T, S']
        reward = np.array([t.reward for t in steps])
        ends = np.array([t.next_state is None for t in steps])
        nxt = np.stack([t.state if t.next_state is None else t.next_state for t in steps])
        target = reward + self.discount * np.where(ends, 0.0, self.value(nxt))
        gram = x.T @ x + self.ridge * np.eye(x.shape[1])
        self.value_w = np.asarray(np.linalg.solve(gram, x.T @ target), dtype=np.float64)
        self.now_w = np.asarray(np.linalg.solve(gram, x.T @ reward), dtype=np.float64)
        rows = [i for i, t in enumerate(steps) if t.togo is not None]
        if rows:
            k = max(len(t.togo) for t in steps if t.togo is not None)
            togo = np.zeros((len(rows), k))  # [T', K]; a shorter slate's missing positions: 0
            for j, i in enumerate(rows):
                t_togo = steps[i].togo
                assert t_togo is not None
                togo[j, : len(t_togo)] = t_togo
            xt = x[rows]
            gram_t = xt.T @ xt + self.ridge * np.eye(xt.shape[1])
            self.togo_w = np.asarray(np.linalg.solve(gram_t, xt.T @ togo), dtype=np.float64)
        self.fits += 1
