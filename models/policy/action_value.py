"""The action-value critic: what a slate is worth for the user's *later* visits, given the state.

The state-value critic (:mod:`~streamrec.models.policy.critic`) sees only the request's state, so
the one thing that distinguishes a diverse slate from a narrow one in the same state, its items,
reaches the actor only through the noisy value of the user's next visit, several policy
versions later. This critic regresses the later visits' return on the state *and* the slate:

    Q_later(s, a) = θ_s · x(s) + θ_a · ψ(a),    ψ(a) = mean_k f_k(a_k)

where ``f_k`` is the policy's feature row of the item chosen at position ``k`` (relevance,
diversity gain, novelty, popularity, freshness; logged with every stochastic slate), and the
target is the gamma-discounted λ-return of the visits after this one, bootstrapped on the
state-value critic ``V`` (λ = 0: ``gamma V(s_{t+1})``). The fit is ridge over a window of recent
visits, refitted at every learner update.

Why this form: ``ψ`` is a sum over positions, so ``θ_a`` prices each *choice*: the choice at
position ``k`` adds ``θ_a · f_k / K`` to the slate's later value, and the actor is credited with
it at once, on the fresh slate, instead of with a scalar advantage that arrives visits later.
With the per-step expected row ``E_π[f_k]`` as baseline (also logged), the per-position credit
``θ_a · (f_k - E_π[f_k]) / K`` times the score ``(f_k - E_π[f_k]) / τ`` is an unbiased estimate
of ``Cov_π(f_k) θ_a / (K τ)``, the exact gradient of ``E_π[θ_a · f_k] / K`` at that step: no
reward noise enters this part of the gradient at all (only the fit of ``θ_a`` carries noise).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.models.policy.slate import N_FEATURES, FloatArray


def slate_features(features: FloatArray, expected: FloatArray) -> FloatArray:
    """``ψ(a)`` ``[F]``: the mean over positions of the chosen rows ``features`` ``[K, F]`` less
    the policy's expected rows ``expected`` ``[K, F]``."""
    if not len(features):
        return np.zeros(N_FEATURES)
    return np.asarray((features - expected).mean(axis=0), dtype=np.float64)


def choice_credit(weights: FloatArray, features: FloatArray, expected: FloatArray) -> FloatArray:
    """Each position's later-visit credit ``[K]``: ``θ_a · (f_k - E_π[f_k]) / K`` for the slate's
    chosen rows ``features`` and expected rows ``expected`` (both ``[K, F]``)."""
    k = max(len(features), 1)
    return np.asarray((features - expected) @ weights / k, dtype=np.float64)


def lambda_return(
    values: FloatArray, rewards: FloatArray, ended: bool, discount: float, lam: float
) -> float:
    """gamma-discounted λ-return of the visits *after* a slate, seen from that slate.

    ``values`` and ``rewards`` ``[L]`` are ``V(s)`` and the slate reward of the ``L`` later
    visits in order; ``ended``: the user did not come back after the last one (its return is
    its reward), else the last one is bootstrapped on its value. ``L = 0``: 0 when ended.
    """
    n = len(values)
    if n == 0:
        return 0.0
    g = float(rewards[-1]) if ended else float(values[-1])
    for i in range(n - 2, -1, -1):
        g = float(rewards[i]) + discount * ((1.0 - lam) * float(values[i + 1]) + lam * g)
    return discount * ((1.0 - lam) * float(values[0]) + lam * g)


@dataclass(frozen=True)
class LaterVisits:
    """One slate for the action-value fit: its state ``[S]``, ``ψ(a)`` ``[F]``, and the states
    ``[L, S]`` and rewards ``[L]`` of the user's later visits (``ended``: no return after)."""

    state: FloatArray
    action: FloatArray
    later_states: FloatArray
    later_rewards: FloatArray
    ended: bool


class ActionValueCritic:
    """Ridge regression of the later-visit return on state columns and ``ψ(a)``."""

    def __init__(
        self, columns: Sequence[int], discount: float, lam: float, window: int, ridge: float
    ) -> None:
        self.columns = list(columns)
        self.discount = discount
        self.lam = lam
        self.ridge = ridge
        self.state_w: FloatArray = np.zeros(len(self.columns))
        self.action_w: FloatArray = np.zeros(N_FEATURES)
        self.steps: deque[LaterVisits] = deque(maxlen=window)

    def add(self, step: LaterVisits) -> None:
        self.steps.append(step)

    def q(self, states: FloatArray, actions: FloatArray) -> FloatArray:
        """``Q_later(s, a)`` ``[B]`` for states ``[B, S]`` and ``ψ(a)`` ``[B, F]``."""
        states, actions = np.atleast_2d(states), np.atleast_2d(actions)
        return np.asarray(
            states[:, self.columns] @ self.state_w + actions @ self.action_w, dtype=np.float64
        )

    def targets(self, value: FloatArray) -> FloatArray:
        """λ-return targets ``[T]`` of the window under the state-value weights ``value``
        (over the same columns): recomputed at every fit, as ``V`` itself is refitted."""
        out = np.zeros(len(self.steps))
        for i, step in enumerate(self.steps):
            values = (
                step.later_states[:, self.columns] @ value
                if len(step.later_states)
                else np.zeros(0)
            )
            out[i] = lambda_return(values, step.later_rewards, step.ended, self.discount, self.lam)
        return out

    def fit(self, value: FloatArray) -> None:
        """Refit ``θ_s`` and ``θ_a`` on the window; ``value``: ``V``'s current weights."""
        if not self.steps:
            return
        x_s = np.stack([s.state for s in self.steps])[:, self.columns]
        x = np.hstack([x_s, np.stack([s.action for s in self.steps])])  # [T, S' + F]
        y = self.targets(value)
        gram = x.T @ x + self.ridge * np.eye(x.shape[1])
        w = np.linalg.solve(gram, x.T @ y)
        self.state_w = np.asarray(w[: len(self.columns)], dtype=np.float64)
        self.action_w = np.asarray(w[len(self.columns) :], dtype=np.float64)

    def tensors(self) -> dict[str, FloatArray]:
        """The fitted weights and the window as arrays (the learner's saved state); later
        visits padded to the longest, rewards NaN where padded."""
        out = {"q_state_w": self.state_w, "q_action_w": self.action_w}
        if not self.steps:
            return out
        steps = list(self.steps)
        n_later = max(len(s.later_rewards) for s in steps)
        width = len(steps[0].state)
        later = np.zeros((len(steps), n_later, width))
        rewards = np.full((len(steps), n_later), np.nan)
        for i, s in enumerate(steps):
            later[i, : len(s.later_rewards)] = s.later_states
            rewards[i, : len(s.later_rewards)] = s.later_rewards
        out["q_states"] = np.stack([s.state for s in steps])
        out["q_actions"] = np.stack([s.action for s in steps])
        out["q_later_states"] = later
        out["q_later_rewards"] = rewards
        out["q_ended"] = np.array([float(s.ended) for s in steps])
        return out

    def restore(self, tensors: Mapping[str, FloatArray]) -> None:
        """Inverse of :meth:`tensors` (absent keys: left as constructed)."""
        self.state_w = tensors.get("q_state_w", self.state_w)
        self.action_w = tensors.get("q_action_w", self.action_w)
        if "q_states" not in tensors:
            return
        rows = zip(tensors["q_states"], tensors["q_actions"], tensors["q_later_states"],
                   tensors["q_later_rewards"], tensors["q_ended"], strict=True)  # fmt: skip
        for state, action, later, rewards, ended in rows:
            n = int((~np.isnan(rewards)).sum())
            self.add(LaterVisits(state, action, later[:n], rewards[:n], bool(ended)))
