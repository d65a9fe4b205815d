"""Online learner for the Plackett-Luce policy's weights: off-policy REINFORCE with guardrails.

Interface for the streaming side::

    learner = OnlineLearner(settings.learner, settings.policy)   # or OnlineLearner.load(path)
    learner.observe(impression, rewards)   # once per impression, when its attribution window
                                           # closes, with every Reward joined to it (maybe none)
    if learner.ready():
        result = learner.update()          # new weights + version, or a rollback
        reranker.set_params(learner.weights, learner.version)  # what the worker's slates use
    learner.save(path)                     # safetensors; survives a worker restart

Gradient. For position ``k`` of a slate sampled by Plackett-Luce,
``∇_w log π(a_k | a_<k) = (φ_k(a_k) - E_π[φ_k]) / τ`` (the impression logs both rows). The
estimate per mini-batch is ``mean_i Σ_k rho_ik (G_ik - b_k) ∇ log π(a_ik | ·)`` with reward-to-go
``G_ik = Σ_{j>=k} gamma^(j-k) r_ij`` (a choice changes its own reward and, through diversity and
satiation, those below it; ``gamma = credit_discount`` < 1 trades a little bias for much less
variance, since most of a choice's effect is on its own position) and a running per-position
baseline ``b_k``. Impressions were logged by older
weights ``w_log``; the per-decision importance weight
``rho_ik = Π_{j<=k} π_w(a_ij)/π_log(a_ij)`` uses the first-order expansion
``log π_w - log π_log ≈ (w - w_log)·(φ - E[φ]) / τ``: it needs only the logged rows, not every
candidate, and is accurate because steps are bounded (``max_step``) and impressions are
consumed within a few versions. ``rho`` is clipped at ``weight_clip`` (variance guard).

Step size. Update ``n`` uses ``lr / sqrt(1 + n / lr_decay_updates)`` (:meth:`step_size`): a
mini-batch gradient is mostly click noise, and at a constant rate the weights kept wandering
after they had found the optimum (closed-loop report, 5 seeds: seed-to-seed sd of the reward
per 1,000 impressions 63 at a constant rate, 16 with the default decay). A restarted worker
resumes the schedule from its saved ``n_updates``.

Guardrails. Each step is clipped to ``max_step`` in L2; weights stay inside the ball
``||w|| <= PolicySettings.max_weight_norm`` (exploration never vanishes). Before each update the
rollback guard (models/policy/guard.py) judges what was learned since its checkpoint on the
rewards of the impressions logged under it, as they close: when they fall below the reference
(earlier versions' impressions) by ``rollback_drop`` and by more than two standard errors (noise
alone must not trigger it), the checkpoint's weights and version serve again and the pending
batch is discarded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from streamrec.errors import ModelError
from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.guard import Policy, RollbackGuard
from streamrec.models.policy.rewards import Impression, Reward, position_rewards
from streamrec.models.policy.slate import N_FEATURES, FloatArray
from streamrec.models.policy.stochastic import DEFAULT_WEIGHTS

FORMAT = "streamrec-learner/1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateResult:
    """What one :meth:`OnlineLearner.update` did."""

    version: str
    applied: bool
    rolled_back: bool
    batch: int
    mean_reward: float
    step_norm: float


@dataclass
class Sample:
    features: FloatArray  # [K, F]
    expected: FloatArray  # [K, F]
    params: FloatArray  # [F] logging weights
    temperature: float
    rewards: FloatArray  # [K]

    @classmethod
    def of(cls, impression: Impression, rewards: FloatArray) -> Sample | None:
        """The learner's view of a stochastic impression; ``None`` for a deterministic one."""
        imp = impression
        if imp.features is None or imp.expected_features is None:
            return None
        if imp.params is None or imp.temperature is None:
            return None
        return cls(imp.features, imp.expected_features, imp.params, imp.temperature, rewards)


def discounted_to_go(rewards: FloatArray, discount: float) -> FloatArray:
    """``G_k = Σ_{j>=k} discount^(j-k) r_j`` ``[K]``."""
    out = np.zeros_like(rewards)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = rewards[k] + discount * acc
        out[k] = acc
    return out


class OnlineLearner:
    """Learns the stochastic policy's weights ``[F]`` from impressions and their rewards."""

    prefix = "pl"  # of version names

    def __init__(
        self,
        settings: LearnerSettings,
        policy: PolicySettings,
        weights: FloatArray | None = None,
        version: str = "pl-0",
    ) -> None:
        self.settings = settings
        self.max_norm = policy.max_weight_norm
        self.weights = np.array(DEFAULT_WEIGHTS if weights is None else weights, dtype=np.float64)
        self.version = version
        # Set by a learner process: its versions then carry it, so two lineages of one
        # consumer group (a learner replaced by a fresh one) never share a version name.
        self.lineage = ""
        self.previous: Policy | None = None  # served before the last update (``withdraw``)
        self.guard = RollbackGuard(settings)
        self.n_updates = 0
        self.n_rollbacks = 0
        self.baseline = np.zeros(0)
        self._buffer: list[Sample] = []
        self.loaded_meta: dict[str, str] = {}

    # ---------------------------------------------------------------- data in

    def observe(self, impression: Impression, rewards: Sequence[Reward] | FloatArray) -> None:
        """Record one impression with its joined rewards (or a ``[K]`` per-position array).

        Call once per impression after its attribution window closed. Impressions of other
        policy versions still count: deterministic ones only for the rollback statistics.
        """
        per_pos = (
            np.asarray(rewards, dtype=np.float64)
            if isinstance(rewards, np.ndarray)
            else position_rewards(impression, rewards)
        )
        self.count_reward(impression, per_pos)
        sample = Sample.of(impression, per_pos)
        if sample is not None:
            self._buffer.append(sample)

    def count_reward(self, impression: Impression, per_pos: FloatArray) -> None:
        """Rollback statistics: the impression's reward under its version. While the guard
        holds, only the newest ``batch_size`` impressions stay buffered: a hold lasts at least
        the attribution window, and an unbounded buffer outgrew the state file's header."""
        self.guard.count(impression.policy_version, float(per_pos.sum()))
        if self.guard.holding is not None:
            self.trim_batch(int(self.settings.batch_size))

    def ready(self) -> bool:
        """True once a mini-batch of stochastic impressions is buffered and the rollback guard
        is not holding (after a rollback the newest batch waits for the first update after)."""
        return self.pending() >= int(self.settings.batch_size) and self.guard.holding is None

    # ---------------------------------------------------------------- learning

    def gradient(self, samples: Sequence[Sample]) -> FloatArray:
        """Off-policy REINFORCE estimate ``[F]`` of ∇ E[slate reward]; updates the baseline."""
        discount = self.settings.credit_discount
        return self.weighted_gradient(
            samples, [discounted_to_go(s.rewards, discount) for s in samples]
        )

    def weighted_gradient(
        self,
        samples: Sequence[Sample],
        returns: Sequence[FloatArray],
        baseline: bool = True,
        clip: float | None = None,
    ) -> FloatArray:
        """``mean_i Σ_k rho_ik (returns_ik - b_k) ∇ log π(a_ik | ·)`` ``[F]``; ``returns[i]``
        ``[K_i]`` is what each choice is credited with. Updates the per-position baseline;
        ``baseline=False``: returns already centred, ``b_k`` neither used nor updated.
        ``clip``: where ``rho`` is clipped (default ``weight_clip``)."""
        grad = np.zeros(N_FEATURES)
        clip = self.settings.weight_clip if clip is None else clip
        if not samples:
            return grad
        k_max = max(len(s.rewards) for s in samples)
        if self.baseline.shape[0] < k_max:
            self.baseline = np.concatenate([self.baseline, np.zeros(k_max - len(self.baseline))])
        togo_sum = np.zeros(k_max)
        togo_n = np.zeros(k_max)
        for s, togo in zip(samples, returns, strict=True):
            k = len(s.rewards)
            score = (s.features - s.expected) / s.temperature  # [K, F] ∇ log π per step
            log_ratio = np.cumsum(score @ (self.weights - s.params))  # [K] per-decision
            rho = np.minimum(np.exp(np.minimum(log_ratio, 50.0)), clip)
            centred = togo - self.baseline[:k] if baseline else togo
            grad += ((rho * centred)[:, None] * score).sum(axis=0)
            togo_sum[:k] += togo
            togo_n[:k] += 1
        seen = (togo_n > 0) & baseline
        # Slow-moving baseline: subtracting it leaves the gradient unbiased, cuts its variance.
        self.baseline[seen] = 0.9 * self.baseline[seen] + 0.1 * togo_sum[seen] / togo_n[seen]
        return grad / len(samples)

    def batch_gradient(self) -> FloatArray:
        """Gradient of the buffered mini-batch (subclasses credit it differently)."""
        return self.gradient(self._buffer)

    def pending(self) -> int:
        """Impressions ready for the next update."""
        return len(self._buffer)

    def clear_batch(self) -> None:
        self._buffer = []

    def trim_batch(self, keep: int) -> None:
        """Keep only the newest ``keep`` buffered impressions."""
        del self._buffer[: max(len(self._buffer) - keep, 0)]

    def update(self) -> UpdateResult:
        """Check the rollback guard, then take one bounded gradient step on the buffered batch."""
        batch = self.pending()
        trial = self.guard.current
        current = float(np.mean(trial)) if trial else float("nan")
        checkpoint = self.guard.verdict()
        if checkpoint is not None:
            return self._roll_back(checkpoint, batch, current)
        if not batch:
            return UpdateResult(self.version, False, False, 0, current, 0.0)
        baseline = self.baseline.copy()
        step = self.step_size() * self.batch_gradient()
        norm = float(np.linalg.norm(step))
        if norm > self.settings.max_step:
            step *= self.settings.max_step / norm
        new = self.weights + step
        size = float(np.linalg.norm(new))
        if size > self.max_norm:
            new *= self.max_norm / size
        if not np.isfinite(new).all():  # an overflow: saved or served, NaN would stand for good
            log.error("update on %d impressions gave non-finite weights; batch dropped", batch)
            self.baseline = baseline
            self.clear_batch()
            return UpdateResult(self.version, False, False, batch, current, float("nan"))
        self.previous = (self.weights.copy(), self.version)
        self.weights = new
        self.n_updates += 1
        # Both counters only grow, so a version name is never reused after a rollback.
        self.version = self.version_name(self.n_updates + self.n_rollbacks)
        self.guard.issued(self.previous, (self.weights, self.version))
        self.clear_batch()
        return UpdateResult(self.version, True, False, batch, current, float(np.linalg.norm(step)))

    def withdraw(self) -> None:
        """Undo the update just applied (its off-policy estimate failed): the previous weights
        and version serve again, counted as a rollback."""
        assert self.previous is not None, "withdraw() follows an applied update"
        self.guard.forget(self.version)
        self.weights, self.version = self.previous[0].copy(), self.previous[1]
        self.previous = None
        self.n_rollbacks += 1  # the trial stays open: the withdrawn version never served

    def step_size(self) -> float:
        """Learning rate of the next update: ``lr / sqrt(1 + n_updates / lr_decay_updates)``.

        Per-batch gradients are mostly click noise, so at a constant rate the weights keep
        wandering near the optimum; a rate decaying like ``1/sqrt(n)`` averages that noise out
        while the early updates, when the gradient is large, stay fast (module docstring)."""
        lr, decay = float(self.settings.lr), float(self.settings.lr_decay_updates)
        if decay == 0:
            return lr
        return lr / float(np.sqrt(1.0 + self.n_updates / decay))

    def _roll_back(self, restored: Policy, batch: int, current: float) -> UpdateResult:
        self.weights, self.version = restored[0].copy(), restored[1]
        self.previous = None
        self.n_rollbacks += 1
        self.guard.close()  # a second drop is judged against the restored weights
        self.clear_batch()
        return UpdateResult(self.version, False, True, batch, current, 0.0)

    # ---------------------------------------------------------------- persistence

    def version_name(self, count: int) -> str:
        """The name of version ``count``: ``<prefix>-<count>``, with the lineage between."""
        return "-".join(part for part in (self.prefix, self.lineage, str(count)) if part)

    def adopt(self, weights: FloatArray, version: str) -> None:
        """Serve ``weights`` under ``version`` from now on (another learner's last policy): the
        start point of a learner that replaces a lost one. ModelError for another layout."""
        if np.shape(weights) != self.weights.shape:
            raise ModelError(
                f"policy {version} has {np.size(weights)} weights, this learner "
                f"{self.weights.size}: it was learned over other features"
            )
        self.weights = np.asarray(weights, dtype=np.float64).copy()
        self.version = version
        self.previous = None
        self.guard.close()

    def save(self, path: Path, extra: Mapping[str, str] | None = None) -> None:
        """Write the learner's whole state as safetensors (atomic): weights, the rollback guard,
        baseline, counters, rollback statistics and whatever a subclass holds. ``extra``:
        caller's metadata stored alongside (the learner process's consumed offsets)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "algorithm": self.prefix,
            "version": self.version,
            "lineage": self.lineage,
            "counters": json.dumps({"updates": self.n_updates, "rollbacks": self.n_rollbacks}),
            **self.guard.meta(),
            **self.state_meta(),
            **(extra or {}),
        }
        tensors = self.state_tensors()
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), meta)
        os.replace(tmp, path)  # a crash mid-write never leaves a torn file behind

    def state_tensors(self) -> dict[str, FloatArray]:
        """Arrays :meth:`save` writes (subclasses add theirs)."""
        return {"weights": self.weights, "baseline": self.baseline, **self.guard.tensors()}

    def state_meta(self) -> dict[str, str]:
        """String metadata :meth:`save` writes: the buffered batch, as JSON."""
        return {"buffer": json.dumps([sample_to_json(s) for s in self._buffer])}

    def restore(self, tensors: Mapping[str, FloatArray], meta: Mapping[str, str]) -> None:
        """Inverse of :meth:`state_tensors` / :meth:`state_meta` (weights and version are set)."""
        self.baseline = np.asarray(tensors.get("baseline", np.zeros(0)), dtype=np.float64)
        self.guard.restore(tensors, meta)
        counters = json.loads(meta.get("counters", "{}"))
        self.n_updates = int(counters.get("updates", 0))
        self.n_rollbacks = int(counters.get("rollbacks", 0))
        self.lineage = meta.get("lineage", "")
        self._buffer = [sample_from_json(d) for d in json.loads(meta.get("buffer", "[]"))]

    @classmethod
    def load(cls, path: Path, settings: LearnerSettings, policy: PolicySettings) -> Self:
        """Restore a learner written by :meth:`save`; raises ``ModelError`` if unusable.
        The file's metadata stays readable as ``loaded_meta``."""
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        except (OSError, SafetensorError, ValueError) as exc:
            raise ModelError(
                f"learner state {path} unreadable ({exc}); delete it to restart"
            ) from exc
        if meta.get("format") != FORMAT or tensors.get("weights") is None:
            raise ModelError(f"{path} is not a {FORMAT} file; it was written by something else")
        if not np.isfinite(tensors["weights"]).all():  # saved before updates were checked
            raise ModelError(f"{path} holds non-finite weights; delete it to restart")
        if meta.get("algorithm", "pl") != cls.prefix:
            raise ModelError(
                f"{path} holds a {meta.get('algorithm')!r} learner, not {cls.prefix!r}; set "
                "learner.algorithm to match or delete the file to start afresh"
            )
        learner = cls(settings, policy, weights=tensors["weights"], version=meta["version"])
        learner.restore(tensors, meta)
        learner.loaded_meta = dict(meta)
        return learner


def sample_to_json(sample: Sample) -> dict[str, Any]:
    """A buffered sample as JSON (saved with the learner: restarts lose no experience)."""
    return {
        "features": sample.features.tolist(),
        "expected": sample.expected.tolist(),
        "params": sample.params.tolist(),
        "temperature": sample.temperature,
        "rewards": sample.rewards.tolist(),
    }


def sample_from_json(data: Mapping[str, Any]) -> Sample:
    return Sample(
        np.asarray(data["features"], dtype=np.float64),
        np.asarray(data["expected"], dtype=np.float64),
        np.asarray(data["params"], dtype=np.float64),
        float(data["temperature"]),
        np.asarray(data["rewards"], dtype=np.float64),
    )
