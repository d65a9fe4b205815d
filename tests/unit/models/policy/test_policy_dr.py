"""The doubly robust estimate of a new policy on logged slates (models/policy/dr.py)."""

from __future__ import annotations

import numpy as np

from streamrec.models.policy.dr import doubly_robust
from streamrec.models.policy.learner import Sample

K, F = 4, 3


def _logged(rewards: list[list[float]]) -> list[Sample]:
    rng = np.random.default_rng(0)
    params = np.array([0.5, -0.2, 0.1])
    out = []
    for row in rewards:
        features = rng.normal(size=(K, F))
        out.append(Sample(features, features * 0.5, params, 0.5, np.asarray(row, dtype=float)))
    return out


def test_skip_penalties_that_cancel_the_rewards_leave_the_estimate_finite() -> None:
    """Clicks worth 1 and skips worth -0.5 summing to 0: the reward model's split over positions
    divided by that sum and sent the estimate to 1e10, which turned the learner's withdrawal
    check off exactly when the policy earned less than nothing."""
    rows = [[1.0, -0.5, 0.0, 0.0], [0.0, 0.0, -0.5, 0.0]] * 50  # sums to 0 over the window
    samples = _logged(rows)
    states = [np.ones(2) for _ in samples]
    logged = np.mean([sum(r) for r in rows])
    near = samples[0].params + np.array([0.05, 0.0, -0.05])  # a small step from the logging one
    estimate = doubly_robust(samples, states, near, lambda s: np.full(len(s), -0.2), clip=10.0)
    assert np.isclose(estimate.logged.value, logged)
    assert abs(estimate.dr.value - estimate.ips.value) < 0.5  # was about 1e10 apart
    assert estimate.dr.high - estimate.dr.low < 2.0
