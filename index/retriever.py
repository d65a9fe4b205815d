"""The ``Retriever`` protocol and the exact brute-force retriever tests compare against.

    Retriever (Protocol)
    ├── ItemIndex        FAISS, any ``IndexSettings.kind`` (``item_index.py``)
    └── ExactRetriever   numpy matmul + partial sort, exact by construction

Both score by raw inner product and share the search contract: ``queries`` [B, D] float32,
``exclude`` one set of item ids per query (or None); each result row lists up to ``k``
``(item_id, score)`` pairs, best first, without excluded or deactivated items, and is exactly
``k`` long whenever that many eligible items exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from streamrec.errors import ModelError

SearchResult = list[list[tuple[str, float]]]


@runtime_checkable
class Retriever(Protocol):
    """Top-k inner-product search over a mutable item catalog."""

    @property
    def dim(self) -> int:
        """Vector width D."""
        ...

    @property
    def size(self) -> int:
        """Number of active (searchable) items."""
        ...

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None = None
    ) -> SearchResult:
        """Top-``k`` items per query row of ``queries`` [B, D]; see the module docstring."""
        ...

    def add(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace items; ``vectors`` [N, D] float32, one row per id."""
        ...

    def deactivate(self, item_ids: Sequence[str]) -> None:
        """Stop returning these items; unknown ids are ignored."""
        ...


def as_matrix(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [N, D] array, or ModelError saying what is wrong."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ModelError(f"{what} must be a 2-D array [N, D]; got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ModelError(
            f"{what} has dimension {array.shape[1]} but the index holds {dim}-dimensional "
            "vectors; encode with the model the index was built for, or rebuild the index"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ModelError(f"{what} must be floating point; got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ModelError(f"{what} contains NaN or infinity; check the encoder output")
    return array


def check_search_args(queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None) -> None:
    """Raise ModelError when ``k`` or ``exclude`` do not fit ``queries`` [B, D]."""
    if k < 1:
        raise ModelError(f"search k must be >= 1; got {k}")
    if exclude is not None and len(exclude) != queries.shape[0]:
        raise ModelError(
            f"exclude has {len(exclude)} sets for {queries.shape[0]} queries; pass one set per "
            "query row (an empty set when nothing is excluded)"
        )


class ExactRetriever:
    """Brute-force inner-product retriever (numpy); the ground truth in tests and benchmarks."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._ids: list[str] = []
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._active = np.empty(0, dtype=bool)
        self._row_of: dict[str, int] = {}

    @classmethod
    def build(cls, item_ids: Sequence[str], vectors: np.ndarray) -> ExactRetriever:
        """Retriever over ``vectors`` [N, D] float32 labelled by ``item_ids``."""
        matrix = as_matrix(vectors, None, "item vectors")
        retriever = cls(matrix.shape[1])
        retriever.add(item_ids, matrix)
        return retriever

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def size(self) -> int:
        return len(self._row_of)

    def add(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        matrix = as_matrix(vectors, self._dim, "item vectors")
        if len(item_ids) != matrix.shape[0]:
            raise ModelError(f"add got {len(item_ids)} ids for {matrix.shape[0]} vectors")
        if len(set(item_ids)) != len(item_ids):
            raise ModelError("add() got the same item id twice in one batch; deduplicate it")
        self.deactivate(item_ids)
        start = len(self._ids)
        self._ids.extend(item_ids)
        self._vectors = np.concatenate([self._vectors, matrix])
        self._active = np.concatenate([self._active, np.ones(len(item_ids), dtype=bool)])
        for offset, item_id in enumerate(item_ids):
            self._row_of[item_id] = start + offset

    def deactivate(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            row = self._row_of.pop(item_id, None)
            if row is not None:
                self._active[row] = False

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None = None
    ) -> SearchResult:
        matrix = as_matrix(queries, self._dim, "queries")
        check_search_args(matrix, k, exclude)
        scores = matrix @ self._vectors.T  # [B, N]
        scores[:, ~self._active] = -np.inf
        results: SearchResult = []
        for row, row_scores in enumerate(scores):
            for item_id in exclude[row] if exclude is not None else ():
                col = self._row_of.get(item_id)
                if col is not None:
                    row_scores[col] = -np.inf
            eligible = int(np.isfinite(row_scores).sum())
            take = min(k, eligible)
            top = np.argpartition(-row_scores, take - 1)[:take] if take else np.empty(0, int)
            top = top[np.argsort(-row_scores[top], kind="stable")]
            results.append([(self._ids[c], float(row_scores[c])) for c in top])
        return results
