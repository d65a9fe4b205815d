"""Diversity as a constraint: Lagrange multipliers that keep the learned policy's intra-list
diversity and catalog coverage at least at the relevance-only policy's.

Every stochastic slate logs its own intra-list diversity, the diversity of the relevance-only
slate of the same candidates, and that slate's items (``Slate.diversity``,
``Slate.reference_items``). Per slate the constraint terms are

    g_div = ILD(slate) - ILD(relevance-only slate)
    g_cov = share of the slate's items not shown in the last ``window`` impressions
            - the same share for the relevance-only slates over their own window

(the second is each slate's contribution to catalog coverage). With ``coverage_target`` set,
the second term's reference is that fixed share instead: the relevance-only slates of the
learner's own candidates are a reference that drifts with the learner (its users' candidate
pools change with what it shows; measured in session 7: 0.554 of the catalog per 250
impressions against 0.618 for the relevance-only policy itself), so the constraint held
against them while the run's coverage fell short. The learner maximises
``E[r + μ·g]`` and after each update moves ``μ ← max(0, μ - lr · mean(g))``: a multiplier grows
while its constraint is violated on average and shrinks back to 0 once it holds, so the policy
pays for diversity only as much as it must (Lagrangian relaxation, dual ascent).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from streamrec.models.policy.rewards import Impression
from streamrec.models.policy.slate import FloatArray


class NewItemWindow:
    """Item counts over the last ``size`` slates."""

    def __init__(self, size: int) -> None:
        self.slates: deque[list[str]] = deque(maxlen=size)
        self.counts: Counter[str] = Counter()

    def new_share(self, items: Sequence[str]) -> float:
        """Share of ``items`` not shown in the window; then they join it."""
        share = sum(1 for i in items if self.counts[i] == 0) / max(len(items), 1)
        if len(self.slates) == self.slates.maxlen:
            self.counts.subtract(self.slates[0])
        self.slates.append(list(items))
        self.counts.update(items)
        return share


class Lagrangian:
    """Multipliers ``μ`` ``[2]`` (diversity, coverage) and the per-slate terms ``g``."""

    def __init__(
        self,
        lr: float,
        window: int,
        multipliers: FloatArray | None = None,
        coverage_target: float | None = None,
    ) -> None:
        self.lr = lr
        self.multipliers = np.zeros(2) if multipliers is None else np.asarray(multipliers)
        self.coverage_target = coverage_target
        self._shown = NewItemWindow(window)
        self._reference = NewItemWindow(window)

    def terms(self, impression: Impression) -> FloatArray:
        """``g`` ``[2]`` of one impression (zeros when it logged no reference)."""
        if impression.diversity is None or impression.reference_items is None:
            return np.zeros(2)
        ild, ref_ild = float(impression.diversity[0]), float(impression.diversity[1])
        cov = self._shown.new_share(impression.items)
        ref_cov = (
            self._reference.new_share(impression.reference_items)
            if self.coverage_target is None
            else self.coverage_target
        )
        return np.array([ild - ref_ild, cov - ref_cov])

    def bonus(self, terms: FloatArray) -> float:
        """``μ·g``: what the slate's reward is shaped by."""
        return float(self.multipliers @ terms)

    def step(self, batch_terms: FloatArray) -> None:
        """Dual ascent on the mean terms ``[2]`` of the batch just learned from."""
        self.multipliers = np.maximum(0.0, self.multipliers - self.lr * batch_terms)
