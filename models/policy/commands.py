"""CLI commands of the policy: ``streamrec ope``, ``streamrec report``, ``streamrec bench rerank``.

Registered on the root app by ``streamrec.cli`` through :func:`register`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import typer

from streamrec.console import JsonOption, err_console, get_settings, report
from streamrec.errors import ConfigError, DataError, StreamrecError
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.ope import evaluate, read_log
from streamrec.models.policy.rerankers import DPPReranker, MMRReranker, RelevanceReranker
from streamrec.models.policy.slate import FEATURES, Candidate, Reranker, UserContext
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.models.sim.closed_loop import LoopConfig
from streamrec.models.sim.frontier import WEIGHT_GRID, grid_search
from streamrec.models.sim.report import ReportConfig, run_policies, write_report
from streamrec.models.sim.simulator import Simulator


def _parse_weights(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--weights must be {len(FEATURES)} comma-separated numbers") from exc
    if len(values) != len(FEATURES):
        raise ConfigError(f"--weights needs {len(FEATURES)} numbers, one per {FEATURES}")
    return np.array(values)


def _fail(exc: StreamrecError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=2)


def ope_command(
    ctx: typer.Context,
    log: Path = typer.Argument(
        ..., help="JSONL of logged slates (format: streamrec.models.policy.ope)."
    ),
    params: Path | None = typer.Option(
        None, "--params", help="Learner state (safetensors) whose weights are the target policy."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help=f"Target weights, comma-separated, in order {','.join(FEATURES)}."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Target temperature; default: policy.temperature."
    ),
    bootstrap: int = typer.Option(500, "--bootstrap", min=10, help="SNIPS bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    positions: int | None = typer.Option(
        None, "--positions", min=1, help="Evaluate only the top N positions' reward."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Estimate a candidate Plackett-Luce policy's reward per slate from logged slates."""
    settings = get_settings(ctx)
    try:
        if (params is None) == (weights is None):
            raise ConfigError("give exactly one of --params FILE or --weights W1,...,W5")
        if params is not None:
            target = OnlineLearner.load(params, settings.learner, settings.policy).weights
        else:
            target = _parse_weights(weights or "")
        temp = temperature if temperature is not None else settings.policy.temperature
        result = evaluate(
            read_log(log), target, temp, bootstrap=bootstrap, seed=seed, positions=positions
        )
    except StreamrecError as exc:
        raise _fail(exc) from exc
    figures: dict[str, Any] = {
        "log": str(log),
        "target_weights": dict(zip(FEATURES, target.tolist(), strict=True)),
        "temperature": temp,
        "positions": positions or "all",
        **result.as_dict(),
    }
    if result.effective_sample_size < 100:
        figures["warning"] = (
            "effective sample size below 100: the target is too far from the logging policy "
            "for these intervals to be trusted; try --positions 1..3"
        )
    report("off-policy evaluation (reward per slate, 95% interval)", figures, as_json)


def report_command(
    ctx: typer.Context,
    out: Path = typer.Option(Path("policy-report"), "--out", help="Folder for tables and plots."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Independent runs per policy."),
    steps: int = typer.Option(20_000, "--steps", min=10, help="Requests per run."),
    dataset: str = typer.Option(
        "synthetic", "--dataset", help="synthetic, or movielens (ML-100K fitted users)."
    ),
    ope_log: bool = typer.Option(
        False,
        "--ope-log/--no-ope-log",
        help="Also write OUT/ope-log.jsonl (actor-critic policy, seed 0; ~20 kB per slate).",
    ),
    grid_steps: int = typer.Option(
        5_000, "--grid-steps", min=0, help="Requests per grid-search run (0: no grid search)."
    ),
    grid_top: int = typer.Option(
        2, "--grid-top", min=1, help="Best grid weight vectors run in full on every seed."
    ),
    mmr_grid: str = typer.Option("0.6,0.9,0.95", "--mmr-grid", help="MMR trade-offs to run."),
    dpp_grid: str = typer.Option("0.6,0.9,0.95", "--dpp-grid", help="DPP trade-offs to run."),
    as_json: bool = JsonOption,
) -> None:
    """Closed-loop comparison: relevance, fixed MMR/DPP, the grid search's best fixed weight
    vectors, and the online learners (REINFORCE, actor-critic, constrained)."""
    settings = get_settings(ctx)
    loop = LoopConfig(
        steps=steps, bucket=max(steps // 40, 1), slate_size=settings.serving.slate_size
    )
    try:
        config = ReportConfig(
            seeds=seeds, loop=loop, mmr_grid=_floats(mmr_grid), dpp_grid=_floats(dpp_grid)
        )
        make = _simulator_factory(dataset, settings.data.cache_dir)
        grid: list[dict[str, Any]] = []
        if grid_steps:
            err_console.log(f"grid search: {len(WEIGHT_GRID)} weight vectors, {grid_steps} steps")
            grid = grid_search(loop, config.simulator, settings.policy, make, grid_steps)
            best = tuple(tuple(float(w) for w in row["weights"]) for row in grid[:grid_top])
            config = replace(config, weight_vectors=best)
        results = run_policies(
            config,
            settings.policy,
            settings.learner,
            make,
            progress=lambda name, s: err_console.log(f"seed {s}: {name}"),
            ope_log=out / "ope-log.jsonl" if ope_log else None,
        )
        summary = write_report(results, config, out, grid, dataset)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    summary["files"] = [
        str(out / f) for f in ("summary.md", "summary.json", "metrics.png", "frontier.png")
    ]
    report("policy comparison (mean [95% interval] over seeds)", summary, as_json)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"expected comma-separated numbers; got {text!r}") from exc


def _simulator_factory(dataset: str, cache_dir: Path) -> Any:
    if dataset == "synthetic":
        return Simulator.synthetic
    if dataset == "movielens":
        from streamrec.datasets import load_dataset

        data = load_dataset(None, cache_dir)
        return lambda cfg: Simulator.from_dataset(data, cfg)
    raise DataError(f"--dataset must be synthetic or movielens; got {dataset!r}")


def bench_rerank_command(
    ctx: typer.Context,
    candidates: int = typer.Option(100, "--candidates", min=1, help="Candidates per request."),
    dims: int = typer.Option(64, "--dims", min=1, help="Item vector width."),
    requests: int = typer.Option(300, "--requests", min=1, help="Timed requests per reranker."),
    as_json: bool = JsonOption,
) -> None:
    """Per-request latency of each reranker (p50/p99 ms) on random candidates."""
    k = get_settings(ctx).serving.slate_size
    rng = np.random.default_rng(0)
    pools = [
        [Candidate(f"i{i}", float(rng.normal()), rng.normal(size=dims), float(rng.integers(1, 999)),
                   float(rng.uniform())) for i in range(candidates)]
        for _ in range(8)
    ]  # fmt: skip
    ctx_user = UserContext("u", rng.normal(size=(10, dims)))
    rerankers: list[Reranker] = [RelevanceReranker(), MMRReranker(0.5), DPPReranker(0.5),
                                 StochasticReranker(seed=0)]  # fmt: skip
    figures: dict[str, Any] = {"candidates": candidates, "dims": dims, "k": k}
    for r in rerankers:
        times = []
        for n in range(requests):
            start = time.perf_counter()
            r.rerank(ctx_user, pools[n % len(pools)], k)
            times.append((time.perf_counter() - start) * 1_000.0)
        figures[r.version] = {"p50_ms": float(np.percentile(times, 50)),
                              "p99_ms": float(np.percentile(times, 99))}  # fmt: skip
    report("rerank latency", figures, as_json)


def learner_command(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where the learner's state lives; default: STATE data dir/learner."
    ),
) -> None:
    """The one learner of the worker group (learner.mode = shared): experience topic in,
    policy versions out on the control topic. Restartable: resumes from its saved state."""
    settings = get_settings(ctx)
    from streamrec.stream.learner_process import main

    try:
        main(settings, data_dir or settings.state.data_dir / "learner")
    except StreamrecError as exc:
        raise _fail(exc) from exc


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add ``ope``, ``report`` and ``learner`` to the root app and ``rerank`` to ``bench``."""
    app.command("ope")(ope_command)
    app.command("learner")(learner_command)
    app.command("report")(report_command)
    bench.command("rerank")(bench_rerank_command)
