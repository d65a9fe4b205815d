"""Which FAISS structure each ``IndexSettings.kind`` becomes, and how it is searched.

Every kind scores by raw inner product (``METRIC_INNER_PRODUCT``): the encoder ranks items by
dot product, so vectors are indexed as given. L2-normalise them before ``build`` when cosine
is wanted; nothing here normalises.

| kind      | FAISS structure (index_factory)   | notes                                        |
| --------- | --------------------------------- | -------------------------------------------- |
| flat      | ``Flat``                          | exact; the reference the others are tuned on |
| ivf_flat  | ``IVF{nlist},Flat``               | trained k-means cells, ``nprobe`` visited     |
| hnsw      | ``HNSW{M},Flat``                  | graph, no training, CPU only                  |
| ivf_pq    | ``IVF{nlist},PQ{m}x{nbits}np,RFlat`` | PQ shortlist, exact vectors re-score     |

``ivf_pq`` keeps the full vectors for re-scoring (``refine_k_factor >= 1``), so it saves no
memory over ``ivf_flat``; ``refine_k_factor=0`` drops them (``m`` bytes per item plus the id)
and returns approximate PQ scores at a lower recall.

``nlist=None`` (default) picks ``2*sqrt(N)`` rounded to a power of two for the N items of the
build. Small catalogs: IVF k-means needs ``min_points_per_list`` points per cell, so ``nlist``
shrinks to ``n // min_points_per_list``; below 2 cells the index is ``flat``. PQ codebooks need
``2**nbits * min_points_per_list`` points; below that ``ivf_pq`` builds as ``ivf_flat`` (and may
shrink further). The chosen structure is kept until the next full rebuild, so adds to a
fallback index do not upgrade it; rebuild through the hot swap once the catalog has grown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from streamrec.errors import ConfigError
from streamrec.index.config import IndexKind, IndexSettings

# faiss-gpu has no HNSW and the refine wrapper does not convert; these kinds may move.
_GPU_KINDS: frozenset[str] = frozenset({"flat", "ivf_flat"})


@dataclass(frozen=True)
class Layout:
    """The structure actually built: kind after fallbacks, effective cells, refine wrapper."""

    kind: IndexKind
    nlist: int
    refine: bool = False


def choose_layout(n_items: int, dim: int, settings: IndexSettings) -> Layout:
    """Apply the small-catalog fallbacks to ``settings.kind`` for ``n_items`` training items."""
    kind = settings.kind
    if kind == "ivf_pq":
        if dim % settings.pq_m != 0:
            raise ConfigError(
                f"index.pq_m={settings.pq_m} does not divide the vector dimension {dim}; "
                f"set STREAMREC_INDEX__PQ_M to a divisor of {dim}"
            )
        if n_items < (1 << settings.pq_nbits) * settings.min_points_per_list:
            kind = "ivf_flat"
    if kind in ("ivf_flat", "ivf_pq"):
        wanted = settings.nlist if settings.nlist is not None else auto_nlist(n_items)
        nlist = min(wanted, n_items // settings.min_points_per_list)
        if nlist < 2:
            return Layout("flat", 0)
        return Layout(kind, nlist, refine=kind == "ivf_pq" and settings.refine_k_factor > 0)
    return Layout(kind, 0)


def auto_nlist(n_items: int) -> int:
    """``2*sqrt(n_items)`` rounded to the nearest power of two (at least 1)."""
    if n_items < 1:
        return 1
    return int(2 ** round(math.log2(max(1.0, 2.0 * math.sqrt(n_items)))))


def create(layout: Layout, dim: int, settings: IndexSettings) -> faiss.Index:
    """An empty (untrained) CPU index for ``layout``."""
    spec = {
        "flat": "Flat",
        "ivf_flat": f"IVF{layout.nlist},Flat",
        "hnsw": f"HNSW{settings.hnsw_m},Flat",
        "ivf_pq": f"IVF{layout.nlist},PQ{settings.pq_m}x{settings.pq_nbits}np",
    }[layout.kind]
    if layout.refine:
        spec += ",RFlat"
    # "np" turns off polysemous training, which index_factory enables for PQ by default: it
    # only speeds up Hamming-filtered search (unused here) and costs tens of seconds per train.
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if layout.kind == "hnsw":
        hnsw: Any = faiss.downcast_index(index)  # faiss's stubs type it as the base Index
        hnsw.hnsw.efConstruction = settings.hnsw_ef_construction
    return index


def train(index: faiss.Index, vectors: np.ndarray, settings: IndexSettings) -> None:
    """Train IVF cells / PQ codebooks on a seeded sample of ``vectors`` [N, D] float32."""
    if index.is_trained:
        return
    n = vectors.shape[0]
    sample = vectors
    if n > settings.train_max_points:
        rng = np.random.default_rng(settings.seed)
        sample = vectors[np.sort(rng.choice(n, settings.train_max_points, replace=False))]
    ivf = ivf_of(index)
    if ivf is not None:
        # Our own sample is already bounded; stop FAISS from subsampling again with its own seed.
        ivf.cp.seed = settings.seed
        ivf.cp.max_points_per_centroid = max(1, sample.shape[0] // max(1, ivf.nlist) + 1)
    index.train(np.ascontiguousarray(sample))


def ivf_of(index: faiss.Index) -> Any:
    """The IndexIVF inside ``index`` (also under the refine wrapper), or None."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    return inner if isinstance(inner, faiss.IndexIVF) else None


def search_params(
    layout: Layout,
    settings: IndexSettings,
    *,
    widen: int,
    k: int,
    selector: faiss.IDSelector | None,
) -> faiss.SearchParameters:
    """Per-call parameters: base breadth times ``widen`` (retries on short rows), skip ``selector``.

    ``k`` is the number of results asked of FAISS; HNSW needs ``efSearch >= k``.
    """
    # Typed Any: faiss's bundled stubs lack SearchParametersHNSW and the dynamic attributes.
    params: Any
    if layout.kind == "hnsw":
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing in stubs
        params.efSearch = max(settings.hnsw_ef_search * widen, k)
    elif layout.kind == "ivf_flat" or (layout.kind == "ivf_pq" and not layout.refine):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(layout.nlist, settings.nprobe * widen)
    elif layout.kind == "ivf_pq":
        base = faiss.SearchParametersIVF()
        base.nprobe = min(layout.nlist, settings.nprobe * widen)
        if selector is not None:
            # The refine wrapper ignores its own selector; the IVF below must apply it.
            base.sel = selector
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = float(max(1, settings.refine_k_factor))
        params.base_index_params = base
        # Keep the base parameters alive as long as the wrapper that points at them.
        params.referenced_objects = [base]
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    result: faiss.SearchParameters = params
    return result


def is_exhaustive(layout: Layout, settings: IndexSettings, widen: int, k: int, ntotal: int) -> bool:
    """Whether a search at this breadth can see every stored vector (retries stop there)."""
    if layout.kind in ("ivf_flat", "ivf_pq"):
        return settings.nprobe * widen >= layout.nlist and k >= ntotal
    if layout.kind == "hnsw":
        return max(settings.hnsw_ef_search * widen, k) >= ntotal
    return True


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one device."""
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


def to_device(index: faiss.Index, layout: Layout, settings: IndexSettings) -> tuple[Any, bool]:
    """Move ``index`` to GPU 0 when allowed and supported; returns ``(index, on_gpu)``."""
    if not (settings.use_gpu and layout.kind in _GPU_KINDS and gpu_available()):
        return index, False
    resources = faiss.StandardGpuResources()
    gpu_index: Any = faiss.index_cpu_to_gpu(resources, 0, index)
    # The GPU index borrows the resources object; keep it reachable from the index.
    gpu_index.referenced_objects = [resources]
    return gpu_index, True


def to_host(index: Any, on_gpu: bool) -> faiss.Index:
    """CPU copy of a GPU index (for ``write_index``); the index itself when already on the CPU."""
    return faiss.index_gpu_to_cpu(index) if on_gpu else index
