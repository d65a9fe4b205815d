"""CLI commands of streamrec.index, registered on the root app by `streamrec.cli`.

    streamrec bench index [--items 1000000] [--dim 64] [--queries 1000] [--k 100]
                          [--kinds flat,ivf_flat,hnsw,ivf_pq] [--vectors items.npy]
                          [--threads N] [--json]

Index parameters (nlist, nprobe, HNSW M/ef, PQ shape) come from the ``index`` settings section,
so ``STREAMREC_INDEX__NPROBE=16 streamrec bench index`` measures another operating point.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast, get_args

import faiss
import typer

from streamrec.console import JsonOption, err_console, get_settings, report
from streamrec.errors import ConfigError
from streamrec.index.bench import BenchConfig, run
from streamrec.index.config import IndexKind


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this package's commands to the root app and its `bench` group."""
    bench.command("index")(bench_index)


def bench_index(
    ctx: typer.Context,
    items: int = typer.Option(1_000_000, min=1, help="Synthetic catalog size."),
    dim: int = typer.Option(64, min=1, help="Vector width."),
    queries: int = typer.Option(1000, min=1, help="Queries per measurement (one batch)."),
    k: int = typer.Option(100, min=1, help="Results per query; recall is measured at k."),
    kinds: str = typer.Option(
        "flat,ivf_flat,hnsw,ivf_pq", help="Comma-separated index kinds (flat is always run)."
    ),
    vectors: Path | None = typer.Option(
        None, help="Also benchmark these item vectors (.npy, [N, D] float32), e.g. MovieLens."
    ),
    threads: int | None = typer.Option(None, min=1, help="FAISS OpenMP threads (default: all)."),
    seed: int = typer.Option(0, help="Seed of the synthetic data and query sample."),
    as_json: bool = JsonOption,
) -> None:
    """Recall@k, queries/s, speed-up over exact search, build time and size per index kind."""
    settings = get_settings(ctx).index
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    config = BenchConfig(
        items=items,
        dim=dim,
        queries=queries,
        k=k,
        kinds=_parse_kinds(kinds),
        vectors=vectors,
        seed=seed,
    )
    figures = run(config, settings, progress=lambda msg: err_console.log(msg))
    report("index benchmark", figures, as_json)


def _parse_kinds(text: str) -> tuple[IndexKind, ...]:
    allowed = get_args(IndexKind)
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in allowed]
    if unknown:
        raise ConfigError(f"--kinds got {unknown}; choose from {', '.join(allowed)}")
    return tuple(cast(IndexKind, kind) for kind in kinds)
