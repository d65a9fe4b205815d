"""Shared fixtures of the index tests: one FAISS thread (shared CI cores), small clustered data."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from streamrec.index.synthetic import gaussian_mixture


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def mixture() -> np.ndarray:
    """3,012 clustered unit vectors [3012, 16]: 3,000 items, then 12 queries."""
    return gaussian_mixture(3012, 16, n_clusters=30, spread=0.15, seed=7)


@pytest.fixture(scope="session")
def catalog(mixture: np.ndarray) -> tuple[list[str], np.ndarray]:
    """3,000 items [3000, 16] with ids ``i0..i2999``."""
    return [f"i{n}" for n in range(3000)], mixture[:3000]


@pytest.fixture(scope="session")
def queries(mixture: np.ndarray) -> np.ndarray:
    """12 queries [12, 16] from the same mixture, scaled x2 (raw inner product, not cosine)."""
    return mixture[3000:] * np.float32(2.0)
