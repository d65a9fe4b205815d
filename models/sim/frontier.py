"""Diversity as a first-class objective in the report: the grid search over fixed weight vectors
and the reward / diversity / coverage frontier.

Grid search: every weight vector of :data:`WEIGHT_GRID` (the stochastic policy's features at
its temperature, no learning) runs a short closed loop on seed 0; the best ``top`` by reward go
into the full multi-seed comparison as ``w-r,d,n,p,f`` policies. Short runs only rank the
vectors; the figures the report states are the full runs'.

Frontier: a policy is on it when no other policy is at least as good on all of reward,
intra-list diversity and coverage (mean over seeds) and better on one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.models.config import PolicySettings
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.models.sim.closed_loop import LoopConfig, run_closed_loop
from streamrec.models.sim.simulator import Simulator, SimulatorConfig

#: (relevance, diversity_gain, novelty, popularity, freshness): relevance fixed at 1 (the scale
#: is set by the temperature), freshness 0 (the simulated users ignore it).
WEIGHT_GRID: tuple[tuple[float, ...], ...] = tuple(
    (1.0, d, n, p, 0.0) for d, n, p in itertools.product((0.0, 1.0, 2.0), (-1.0, 0.0, 1.0),
                                                         (0.0, 1.0, 2.0))
)  # fmt: skip
AXES: tuple[str, ...] = ("reward_per_1k", "diversity", "coverage")


def weight_name(weights: tuple[float, ...]) -> str:
    return "w-" + ",".join(f"{w:g}" for w in weights)


def parse_weight_name(name: str) -> np.ndarray:
    return np.array([float(v) for v in name[2:].split(",")])


def grid_search(
    loop: LoopConfig,
    simulator: SimulatorConfig,
    policy: PolicySettings,
    make_simulator: Callable[[SimulatorConfig], Simulator],
    steps: int,
    grid: tuple[tuple[float, ...], ...] = WEIGHT_GRID,
) -> list[dict[str, Any]]:
    """Second-half reward per 1,000 impressions of each grid vector, seed 0, best first."""
    rows = []
    short = replace(loop, steps=steps, bucket=max(steps // 20, 1), seed=0)
    for weights in grid:
        sim = make_simulator(replace(simulator, seed=0))
        reranker = StochasticReranker(np.array(weights), temperature=policy.temperature, seed=0)
        run = run_closed_loop(weight_name(weights), reranker, sim, short, policy)
        rows.append({"weights": list(weights), "reward_per_1k": run.mean("reward_per_1k", 0.5)})
    return sorted(rows, key=lambda r: -float(r["reward_per_1k"]))


def pareto(points: dict[str, tuple[float, ...]]) -> list[str]:
    """Names whose point no other point weakly dominates (larger is better on every axis)."""
    on = []
    for name, p in points.items():
        dominated = any(
            all(b >= a for a, b in zip(p, q, strict=True)) and q != p
            for other, q in points.items()
            if other != name
        )
        if not dominated:
            on.append(name)
    return on


def frontier(table: dict[str, dict[str, Any]]) -> list[str]:
    """Policies of the report's table on the reward / diversity / coverage frontier."""
    return pareto({n: tuple(float(r[a]["mean"]) for a in AXES) for n, r in table.items()})


def plot_frontier(table: dict[str, dict[str, Any]], on: list[str], path: Path) -> Path:
    """Reward against diversity (colour: coverage), every policy named, frontier ones ringed."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    names = list(table)
    x = [table[n]["diversity"]["mean"] for n in names]
    y = [table[n]["reward_per_1k"]["mean"] for n in names]
    c = [table[n]["coverage"]["mean"] for n in names]
    dots = ax.scatter(x, y, c=c, cmap="viridis", s=40)
    fig.colorbar(dots, ax=ax, label="catalog coverage")
    for name, xi, yi in zip(names, x, y, strict=True):
        ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if name in on:
            ax.scatter([xi], [yi], s=160, facecolors="none", edgecolors="red")
    ax.set_xlabel("intra-list diversity")
    ax.set_ylabel("reward per 1,000 impressions (second half)")
    ax.set_title("reward / diversity / coverage (red rings: on the frontier)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
