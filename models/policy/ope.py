"""Off-policy evaluation of a Plackett-Luce policy from logged slates: IPS and SNIPS.

Log format (JSONL, one logged slate per line; the streaming side writes it, :func:`log_record`
builds a line)::

    {"rec_id": "r1", "user_id": "u7", "policy_version": "pl-12", "created_at": 1700000000.0,
     "items": ["i3", "i9"],              # display order, position 0 first
     "propensities": [0.31, 0.52],       # logging P(item at k | items above), in (0, 1]
     "rewards": [1.5, 0.0],              # reward credited to each position (reward weights)
     "candidates": {"item_ids": [...],   # N candidates the slate was drawn from
                    "features": [[...]], # [N, F] base_features() rows (FEATURES order)
                    "vectors": [[...]]}} # [N, D] item vectors (for diversity gain)

Estimators for a target policy ``π`` (weights ``w`` at ``temperature``), per-decision form:
with ``W_ik = Π_{j<=k} π(a_ij | a_i<j) / β_ij`` (the target probability replays the logged
prefix through :func:`~streamrec.models.policy.pl_walk`),

- IPS:   ``V = mean_i Σ_k W_ik r_ik``, unbiased when a position's reward depends only on the
  items at and above it (users read top-down) and the logging propensities are > 0;
  95% interval by the CLT over slates.
- SNIPS: ``V = Σ_k Σ_i W_ik r_ik / Σ_i W_ik``, self-normalised per position (small bias, much
  lower variance); 95% interval by a seeded percentile bootstrap over slates.

Weights multiply down the slate: with 10 positions at the default temperature a target that
differs from the logger has an effective sample size of a few slates, and then neither interval
can be trusted (the CLI warns below 100). Evaluate the top positions (``positions``), targets
close to the logger, or log with a higher temperature.

Deterministic logging (propensity 1) supports only targets that would show the same slate;
log a stochastic policy to evaluate anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.errors import DataError
from streamrec.models.policy.slate import N_FEATURES, FloatArray, unit_rows
from streamrec.models.policy.stochastic import pl_walk, replay_chooser

Z95 = 1.959964


@dataclass(frozen=True)
class LoggedSlate:
    """One line of the OPE log, parsed. Shapes: features ``[N, F]``, vectors ``[N, D]``."""

    rec_id: str
    order: list[int]  # candidate indices of the shown items, display order
    propensities: FloatArray  # [K]
    rewards: FloatArray  # [K]
    features: FloatArray
    vectors: FloatArray


@dataclass(frozen=True)
class Estimate:
    """A value estimate (reward per slate) and its 95% interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class OPEResult:
    """IPS and SNIPS estimates of the target, the logging policy's observed value, and the
    effective sample size ``(Σ W)² / Σ W²`` of whole-slate weights (small means unreliable)."""

    ips: Estimate
    snips: Estimate
    logged: Estimate
    slates: int
    effective_sample_size: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "slates": self.slates,
            "effective_sample_size": self.effective_sample_size,
            "ips": self.ips.as_dict(),
            "snips": self.snips.as_dict(),
            "logged_policy": self.logged.as_dict(),
        }


def log_record(
    rec_id: str,
    user_id: str,
    policy_version: str,
    created_at: float,
    candidate_ids: Sequence[str],
    features: FloatArray,
    vectors: FloatArray,
    items: Sequence[str],
    propensities: Sequence[float],
    rewards: Sequence[float] | FloatArray,
) -> dict[str, Any]:
    """One JSONL line of the OPE log (see the module docstring)."""
    return {
        "rec_id": rec_id,
        "user_id": user_id,
        "policy_version": policy_version,
        "created_at": created_at,
        "items": list(items),
        "propensities": [float(p) for p in propensities],
        "rewards": [float(r) for r in rewards],
        "candidates": {
            "item_ids": list(candidate_ids),
            # 6 decimals: exact enough for the probabilities, a third of the full repr's size
            "features": np.round(np.asarray(features), 6).tolist(),
            "vectors": np.round(np.asarray(vectors), 6).tolist(),
        },
    }


def parse_record(data: Mapping[str, Any], where: str = "record") -> LoggedSlate:
    """Validate one log line; raises ``DataError`` saying what is wrong and where."""
    try:
        cands = data["candidates"]
        ids = [str(i) for i in cands["item_ids"]]
        index = {item: i for i, item in enumerate(ids)}
        order = [index[str(item)] for item in data["items"]]
        props = np.asarray(data["propensities"], dtype=np.float64)
        rewards = np.asarray(data["rewards"], dtype=np.float64)
        feats = np.asarray(cands["features"], dtype=np.float64).reshape(len(ids), N_FEATURES)
        vecs = unit_rows(np.asarray(cands["vectors"], dtype=np.float64).reshape(len(ids), -1))
    except KeyError as exc:
        raise DataError(f"{where}: missing field or unknown candidate {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: malformed ({exc}); see streamrec.models.policy.ope for the format"
        ) from exc
    if not (len(order) == len(props) == len(rewards)):
        raise DataError(f"{where}: items, propensities and rewards differ in length")
    if np.any(props <= 0) or np.any(props > 1):
        raise DataError(f"{where}: propensities must be in (0, 1]")
    return LoggedSlate(str(data.get("rec_id", where)), order, props, rewards, feats, vecs)


def read_log(path: Path) -> list[LoggedSlate]:
    """Parse a JSONL log; blank lines are skipped, any bad line raises ``DataError``."""
    if not path.is_file():
        raise DataError(f"OPE log {path} does not exist")
    out: list[LoggedSlate] = []
    with path.open() as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
            out.append(parse_record(data, f"{path}:{n}"))
    if not out:
        raise DataError(f"OPE log {path} holds no slates")
    return out


def decision_weights(
    logs: Iterable[LoggedSlate], weights: FloatArray, temperature: float
) -> list[FloatArray]:
    """Cumulative per-decision importance weights ``W_i`` ``[K_i]`` for each slate."""
    out = []
    for s in logs:
        walk = pl_walk(
            weights, s.features, s.vectors, len(s.order), temperature, replay_chooser(s.order)
        )
        out.append(np.exp(np.cumsum(walk.log_probs - np.log(s.propensities))))
    return out


def _truncate(s: LoggedSlate, positions: int) -> LoggedSlate:
    return LoggedSlate(
        s.rec_id,
        s.order[:positions],
        s.propensities[:positions],
        s.rewards[:positions],
        s.features,
        s.vectors,
    )


def clt(x: FloatArray) -> Estimate:
    mean = float(x.mean())
    half = Z95 * float(x.std(ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("inf")
    return Estimate(mean, mean - half, mean + half)


def _snips_value(w: FloatArray, r: FloatArray) -> float:
    # w, r: [n, K] padded with zeros where a slate is shorter
    den = w.sum(axis=0)
    return float(np.sum(np.where(den > 0, (w * r).sum(axis=0) / np.where(den > 0, den, 1), 0.0)))


def evaluate(
    logs: Sequence[LoggedSlate],
    weights: FloatArray,
    temperature: float,
    bootstrap: int = 500,
    seed: int = 0,
    positions: int | None = None,
) -> OPEResult:
    """IPS and SNIPS value of the PL policy ``(weights, temperature)`` on ``logs``.

    ``positions``: evaluate only the reward of the top ``positions`` slots. Weights compound
    down the slate, so the full-slate estimate of a target far from the logger rests on a
    handful of slates (see ``effective_sample_size``); the top few positions stay estimable.
    """
    if not logs:
        raise DataError("no logged slates to evaluate")
    if positions is not None:
        logs = [_truncate(s, positions) for s in logs]
    ws = decision_weights(logs, np.asarray(weights, dtype=np.float64), temperature)
    k = max(len(s.order) for s in logs)
    w = np.zeros((len(logs), k))
    r = np.zeros((len(logs), k))
    for i, (s, wi) in enumerate(zip(logs, ws, strict=True)):
        w[i, : len(wi)] = wi
        r[i, : len(wi)] = s.rewards
    per_slate = (w * r).sum(axis=1)
    rng = np.random.default_rng(seed)
    boots = np.array(
        [_snips_value(w[idx], r[idx]) for idx in rng.integers(0, len(logs), (bootstrap, len(logs)))]
    )
    whole = np.array([wi[-1] if len(wi) else 1.0 for wi in ws])
    snips = _snips_value(w, r)
    return OPEResult(
        ips=clt(per_slate),
        snips=Estimate(snips, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))),
        logged=clt(r.sum(axis=1)),
        slates=len(logs),
        effective_sample_size=float(whole.sum() ** 2 / max(float((whole**2).sum()), 1e-300)),
    )
