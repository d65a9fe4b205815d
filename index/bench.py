"""The index benchmark behind ``streamrec bench index``.

For each dataset (clustered synthetic vectors, and optionally a ``.npy`` file of real item
vectors) it builds every requested kind through ``ItemIndex`` and measures, in one run:

* ``recall@k``: share of the exact top-k (the ``flat`` kind, FAISS ``IndexFlatIP``) returned;
* ``qps``: queries per second of one batched ``ItemIndex.search`` over all queries, id
  translation included, so every kind pays the same wrapper cost;
* ``speedup``: ``qps`` over the exact ``flat`` qps measured in the same run (the target's
  reference), and ``speedup_vs_numpy`` over the numpy baseline below, whichever exact search
  is faster on the machine;
* ``build_s``: training plus adding all items; ``index_mb``: the serialised FAISS index
  (``faiss.serialize_index``), which is what the index keeps in memory up to small headers.

A numpy baseline (chunked ``queries @ items.T`` plus ``argpartition``) is reported beside FAISS's
exact search. Timings depend on the machine and on what else runs on it; the report names the
CPU count and FAISS thread count.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrec.errors import DataError
from streamrec.index import factory
from streamrec.index.config import IndexKind, IndexSettings
from streamrec.index.item_index import ItemIndex
from streamrec.index.synthetic import mixture_with_queries

TARGET_RECALL, TARGET_SPEEDUP = 0.95, 10.0
SYNTHETIC_CLUSTERS, SYNTHETIC_SPREAD = 1000, 0.15

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """What to measure: catalog size, width, query count, k, kinds, optional real vectors."""

    items: int = 1_000_000
    dim: int = 64
    queries: int = 1000
    k: int = 100
    kinds: tuple[IndexKind, ...] = ("flat", "ivf_flat", "hnsw", "ivf_pq")
    vectors: Path | None = None
    seed: int = 0


def run(config: BenchConfig, settings: IndexSettings, progress: Progress) -> dict[str, Any]:
    """Benchmark every kind on every dataset; returns the figures ``console.report`` prints."""
    figures: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "faiss_version": faiss.__version__,
            "faiss_gpu": factory.gpu_available(),
        },
        "target": f"recall@{config.k} >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:g}x exact qps",
    }
    progress(f"generating {config.items:,} x {config.dim} clustered vectors")
    items, queries = mixture_with_queries(
        config.items,
        config.queries,
        config.dim,
        seed=config.seed,
        n_clusters=SYNTHETIC_CLUSTERS,
        spread=SYNTHETIC_SPREAD,
    )
    figures["synthetic"] = _dataset(
        f"Gaussian mixture: {SYNTHETIC_CLUSTERS} unit centres, noise sd {SYNTHETIC_SPREAD} "
        "per coordinate, L2-normalised",
        items,
        queries,
        config,
        settings,
        progress,
    )
    del items, queries
    gc.collect()
    if config.vectors is not None:
        items, queries = _load_vectors(config.vectors, config.queries, config.seed)
        figures["file"] = _dataset(
            f"{config.vectors} (queries: {len(queries)} sampled item rows)",
            items,
            queries,
            config,
            settings,
            progress,
        )
    return figures


def _dataset(
    name: str,
    items: np.ndarray,
    queries: np.ndarray,
    config: BenchConfig,
    settings: IndexSettings,
    progress: Progress,
) -> dict[str, Any]:
    ids = [str(n) for n in range(len(items))]
    k = min(config.k, len(items))
    progress(f"{name}: numpy exact baseline")
    numpy_qps = _numpy_qps(items, queries, k)
    rows: list[dict[str, Any]] = []
    truth: list[set[str]] = []
    exact_qps = 0.0
    kinds: list[IndexKind] = ["flat", *(kd for kd in config.kinds if kd != "flat")]
    for kind in kinds:
        progress(f"{name}: building {kind} over {len(items):,} items")
        row, found = _measure(kind, ids, items, queries, k, settings)
        if kind == "flat":
            truth, exact_qps = found, row["qps"]
        hits = [len(f & t) / len(t) for f, t in zip(found, truth, strict=True)]
        row["recall"] = float(np.mean(hits))
        row["speedup"] = row["qps"] / exact_qps
        row["speedup_vs_numpy"] = row["qps"] / numpy_qps
        row["meets_target"] = row["recall"] >= TARGET_RECALL and row["speedup"] >= TARGET_SPEEDUP
        rows.append(row)
        progress(f"{name}: {kind} recall {row['recall']:.4f}, {row['speedup']:.1f}x exact")
        gc.collect()
    ordered = [
        {
            key: row[key]
            for key in (
                "kind",
                "built_as",
                "params",
                "recall",
                "qps",
                "speedup",
                "speedup_vs_numpy",
                "build_s",
                "index_mb",
                "meets_target",
            )
        }
        for row in rows
    ]
    return {
        "dataset": name,
        "items": len(items),
        "dim": items.shape[1],
        "queries": len(queries),
        "k": k,
        "exact_faiss_qps": exact_qps,
        "exact_numpy_qps": numpy_qps,
        "results": ordered,
    }


def _measure(
    kind: IndexKind,
    ids: Sequence[str],
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    settings: IndexSettings,
) -> tuple[dict[str, Any], list[set[str]]]:
    kind_settings = settings.model_copy(update={"kind": kind})
    start = time.perf_counter()
    index = ItemIndex.build(ids, items, kind_settings, version="bench")
    build_s = time.perf_counter() - start
    index.search(queries[:8], k)  # warm caches and lazily built tables
    start = time.perf_counter()
    rows = index.search(queries, k)
    search_s = time.perf_counter() - start
    host = factory.to_host(index._index, index.on_gpu)
    row = {
        "kind": kind,
        "built_as": index.layout_kind,
        "params": _params(index, kind_settings),
        "qps": len(queries) / search_s,
        "build_s": build_s,
        "index_mb": faiss.serialize_index(host).nbytes / 2**20,
    }
    return row, [{item for item, _ in r} for r in rows]


def _params(index: ItemIndex, settings: IndexSettings) -> str:
    kind = index.layout_kind
    if kind == "ivf_flat":
        return f"nlist={index._layout.nlist} nprobe={settings.nprobe}"
    if kind == "ivf_pq":
        refine = f"refine={settings.refine_k_factor}" if index._layout.refine else "no refine"
        return (
            f"nlist={index._layout.nlist} nprobe={settings.nprobe} "
            f"PQ{settings.pq_m}x{settings.pq_nbits} {refine}"
        )
    if kind == "hnsw":
        return (
            f"M={settings.hnsw_m} efC={settings.hnsw_ef_construction} efS={settings.hnsw_ef_search}"
        )
    return "exact"


def _numpy_qps(items: np.ndarray, queries: np.ndarray, k: int, chunk: int = 64) -> float:
    """Exact top-k by chunked matmul + argpartition; queries per second."""
    start = time.perf_counter()
    for begin in range(0, len(queries), chunk):
        scores = queries[begin : begin + chunk] @ items.T  # [chunk, N]
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        np.take_along_axis(top, order, axis=1)
    return len(queries) / (time.perf_counter() - start)


def _load_vectors(path: Path, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors [N, D] from a ``.npy`` file, and ``n_queries`` rows sampled as queries."""
    if not path.is_file():
        raise DataError(f"--vectors {path} does not exist; pass a .npy file of item vectors [N, D]")
    try:
        items = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} is not a plain .npy array ({exc}); save it with np.save") from exc
    if items.ndim != 2 or len(items) == 0:
        raise DataError(f"{path} holds shape {items.shape}; expected item vectors [N, D]")
    items = np.ascontiguousarray(items, dtype=np.float32)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(items), min(n_queries, len(items)), replace=False)
    return items, items[picks].copy()
