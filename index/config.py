"""Settings of the FAISS item index."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IndexSettings(BaseModel):
    """Which FAISS index to build and how to search it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["flat", "ivf_flat", "hnsw", "ivf_pq"] = Field(
        "flat", description="Index type: exact inner product, IVF, HNSW graph or IVF with PQ codes."
    )
    path: Path | None = Field(None, description="Folder of a saved index to load at start.")
    nlist: int = Field(1024, ge=1, description="IVF cells (ivf_flat, ivf_pq).")
    nprobe: int = Field(32, ge=1, description="IVF cells visited per query.")
    hnsw_m: int = Field(32, ge=2, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW search breadth.")
    pq_m: int = Field(16, ge=1, description="PQ sub-quantisers (ivf_pq); must divide the dimension.")
    use_gpu: bool = Field(True, description="Use a faiss GPU build when one is installed.")
