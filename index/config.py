"""Settings of the FAISS item index.

Defaults are tuned on one million clustered 64-dimensional items on a 2-core CPU (see
``streamrec bench index``); small catalogs fall back to simpler kinds (see ``factory.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IndexKind = Literal["flat", "ivf_flat", "hnsw", "ivf_pq"]


class IndexSettings(BaseModel):
    """Which FAISS index to build and how to search it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndexKind = Field(
        default="flat",
        description="Index type: exact inner product, IVF, HNSW graph or IVF with PQ codes.",
    )
    nlist: int | None = Field(
        default=None,
        ge=1,
        description="IVF cells (ivf_flat, ivf_pq); None sizes them to the catalog with the usual "
        "2*sqrt(N) rule, rounded to a power of two (2,048 at 1M items, the tuned point).",
    )
    nprobe: int = Field(default=24, ge=1, description="IVF cells visited per query.")
    min_points_per_list: int = Field(
        default=39,
        ge=1,
        description="Training points needed per IVF cell; with fewer items nlist shrinks "
        "(FAISS's own k-means warns below 39).",
    )
    hnsw_m: int = Field(default=16, ge=2, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(
        default=40,
        ge=1,
        description="HNSW build breadth; higher builds slower and finds better links.",
    )
    hnsw_ef_search: int = Field(default=256, ge=1, description="HNSW search breadth.")
    pq_m: int = Field(
        default=16, ge=1, description="PQ sub-quantisers (ivf_pq); must divide the dimension."
    )
    pq_nbits: int = Field(default=8, ge=1, le=16, description="Bits per PQ sub-quantiser code.")
    refine_k_factor: int = Field(
        default=4,
        ge=0,
        description="ivf_pq re-scores k*refine_k_factor PQ candidates with exact vectors, "
        "which recall@100 >= 0.95 needs; 0 keeps PQ codes only (least memory, lower recall).",
    )
    train_max_points: int = Field(
        default=131_072,
        ge=1,
        description="Largest random sample IVF/PQ training sees: 64 per cell at the default "
        "nlist; k-means time grows with sample size x nlist.",
    )
    seed: int = Field(default=1234, description="Seed of the training sample and k-means.")
    use_gpu: bool = Field(default=True, description="Use a faiss GPU build when one is installed.")
