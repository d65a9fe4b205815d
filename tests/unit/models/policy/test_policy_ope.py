"""OPE recovers the exact value of a known target policy from synthetic logs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.errors import DataError
from streamrec.models.policy.ope import evaluate, log_record, read_log
from streamrec.models.policy.slate import unit_rows
from streamrec.models.policy.stochastic import pl_walk, replay_chooser

N, K, F, D, TEMP = 5, 2, 5, 3, 0.5
LOGGING = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
TARGET = np.array([-0.5, 1.0, 0.0, 1.5, 0.0])


def _world(seed: int, contexts: int = 12) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(contexts):
        feats = rng.normal(size=(N, F))
        feats[:, 1] = 0.0  # diversity column is filled in by pl_walk
        vecs = unit_rows(rng.normal(size=(N, D)))
        appeal = 1 / (1 + np.exp(-(feats[:, 3] - 0.5 * feats[:, 0])))  # users like column 3
        out.append((feats, vecs, appeal))
    return out


def _click_probs(order: tuple[int, ...], vecs: np.ndarray, appeal: np.ndarray) -> np.ndarray:
    """Per-position click probability: position bias and a penalty for a similar item above."""
    probs = []
    for k, item in enumerate(order):
        p = appeal[item] / (1 + k)
        if k and vecs[item] @ vecs[order[k - 1]] > 0.3:
            p *= 0.4
        probs.append(p)
    return np.array(probs)


def _true_value(world: list[tuple[np.ndarray, np.ndarray, np.ndarray]], w: np.ndarray) -> float:
    total = 0.0
    for feats, vecs, appeal in world:
        for order in itertools.permutations(range(N), K):
            walk = pl_walk(w, feats, vecs, K, TEMP, replay_chooser(order))
            total += float(np.exp(walk.log_probs.sum())) * _click_probs(order, vecs, appeal).sum()
    return total / len(world)


def _write_logs(path: Path, seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    world = _world(seed)
    rng = np.random.default_rng(seed + 1)
    with path.open("w") as fh:
        for i in range(n):
            feats, vecs, appeal = world[int(rng.integers(len(world)))]
            walk = pl_walk(LOGGING, feats, vecs, K, TEMP,
                           lambda step, p: int(rng.choice(len(p), p=p)))  # fmt: skip
            order = tuple(walk.order)
            rewards = (rng.uniform(size=K) < _click_probs(order, vecs, appeal)).astype(float)
            ids = [f"c{j}" for j in range(N)]
            shown = [ids[j] for j in order]
            props = np.exp(walk.log_probs)
            record = log_record(
                f"r{i}", "u", "pl-0", float(i), ids, feats, vecs, shown, props, rewards
            )
            fh.write(json.dumps(record) + "\n")
    return world


def test_ips_and_snips_cover_the_true_value(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    world = _write_logs(log, seed=3, n=6_000)
    truth = _true_value(world, TARGET)
    logging_truth = _true_value(world, LOGGING)
    assert abs(truth - logging_truth) > 0.05  # the target really differs from the logger
    result = evaluate(read_log(log), TARGET, TEMP, bootstrap=300, seed=0)
    for est in (result.ips, result.snips):
        assert est.low <= truth <= est.high
        assert not est.low <= logging_truth <= est.high  # the interval is informative
    assert result.logged.low <= logging_truth <= result.logged.high
    assert 0 < result.effective_sample_size < result.slates


def test_on_policy_weights_are_one(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    _write_logs(log, seed=4, n=200)
    result = evaluate(read_log(log), LOGGING, TEMP, bootstrap=50)
    assert result.ips.value == pytest.approx(result.logged.value)
    assert result.effective_sample_size == pytest.approx(200)


def test_bad_logs_raise_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"items": ["a"], "propensities": [0.5], "rewards": [1]}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        read_log(bad)
    bad.write_text("not json\n")
    with pytest.raises(DataError):
        read_log(bad)
    with pytest.raises(DataError):
        read_log(tmp_path / "missing.jsonl")


def test_top_positions_keep_more_effective_samples(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    world = _write_logs(log, seed=5, n=1_000)
    logs = read_log(log)
    full = evaluate(logs, TARGET, TEMP, bootstrap=50)
    top = evaluate(logs, TARGET, TEMP, bootstrap=50, positions=1)
    assert top.effective_sample_size > full.effective_sample_size
    assert top.ips.value < full.ips.value  # one position's reward, not two
    assert world  # the same synthetic world as above
