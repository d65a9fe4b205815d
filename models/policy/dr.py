"""Doubly robust off-policy estimate of a new policy version from the learner's own experience.

The learner process evaluates each version it is about to announce on the last ``n`` closed
impressions (logged by earlier versions). Experience carries the chosen items' feature rows and
the policy's expected rows per position, not every candidate, so the per-decision importance
weight uses the learner's first-order expansion (models/policy/learner.py)::

    log π_w(a_k | a_<k) - log π_log(a_k | a_<k) ≈ (w - w_log) · (φ_k - E[φ_k]) / τ
    W_ik = min(clip, Π_{j<=k} exp(...))

Estimators of the reward per slate (``q_k(s)``: the reward model, the critic's predicted slate
reward ``now(s)`` spread over positions by the share each position earned in the data):

- IPS   ``mean_i Σ_k W_ik r_ik``; SNIPS ``Σ_k Σ_i W_ik r_ik / Σ_i W_ik``;
- DR    ``mean_i Σ_k [W_i,k-1 q_k(s_i) + W_ik (r_ik - q_k(s_i))]`` (per-decision doubly robust,
  Jiang & Li 2016, with an action-independent model): unbiased when the weights are, and with
  less variance than IPS wherever the model explains the reward.

Intervals: 95% by the CLT over slates. Exact for small steps between versions, which is what
the learner takes (``max_step``); :mod:`~streamrec.models.policy.ope` replays whole candidate
sets when the log has them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.errors import DataError
from streamrec.models.policy.learner import Sample
from streamrec.models.policy.ope import Estimate, clt
from streamrec.models.policy.slate import FloatArray


@dataclass(frozen=True)
class DoublyRobust:
    """IPS, SNIPS and DR estimates of the target and the logged policies' observed value."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate
    slates: int

    def as_dict(self) -> dict[str, object]:
        return {
            "slates": self.slates,
            "ips": self.ips.as_dict(),
            "snips": self.snips.as_dict(),
            "dr": self.dr.as_dict(),
            "logged_policy": self.logged.as_dict(),
        }


def _weights(sample: Sample, target: FloatArray, clip: float) -> FloatArray:
    score = (sample.features - sample.expected) / sample.temperature  # [K, F]
    log_ratio = np.cumsum(score @ (target - sample.params))  # [K]
    return np.minimum(np.exp(np.minimum(log_ratio, 50.0)), clip)


def doubly_robust(
    samples: Sequence[Sample],
    states: Sequence[FloatArray],
    target: FloatArray,
    reward_model: Callable[[FloatArray], FloatArray],
    clip: float,
) -> DoublyRobust:
    """Estimates for target weights ``[F]`` from logged samples and their states ``[S]``.

    ``reward_model(states [B, S]) -> [B]`` predicts a slate's reward (the critic's ``now``).
    Raises ``DataError`` without samples.
    """
    if not samples:
        raise DataError("no logged experience to evaluate the new policy on")
    k = max(len(s.rewards) for s in samples)
    w = np.zeros((len(samples), k))
    r = np.zeros((len(samples), k))
    for i, s in enumerate(samples):
        w[i, : len(s.rewards)] = _weights(s, np.asarray(target, dtype=np.float64), clip)
        r[i, : len(s.rewards)] = s.rewards
    # [K] where the reward lands, by size: with skip penalties the rewards can sum to 0 or less,
    # and their plain sum as the divisor sent the estimate to 1e10 (a review's run).
    magnitude = np.abs(r)
    share = magnitude.sum(axis=0) / max(float(magnitude.sum()), 1e-12)
    q = reward_model(np.stack(states))[:, None] * share[None, :]  # [n, K]
    before = np.concatenate([np.ones((len(samples), 1)), w[:, :-1]], axis=1)  # W_i,k-1
    dr = (before * q + w * (r - q)).sum(axis=1)
    den = w.sum(axis=0)
    snips = float(np.sum(np.where(den > 0, (w * r).sum(axis=0) / np.where(den > 0, den, 1), 0)))
    ips = clt((w * r).sum(axis=1))
    # the CLT half-width of IPS is the SNIPS interval's too (no bootstrap inside the learner)
    half = (ips.high - ips.low) / 2
    return DoublyRobust(
        ips=ips,
        snips=Estimate(snips, snips - half, snips + half),
        dr=clt(dr),
        logged=clt(r.sum(axis=1)),
        slates=len(samples),
    )
