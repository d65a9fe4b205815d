"""streamrec.index: FAISS item index, hot swap, candidate sources and fusion.

    retriever.py   Retriever protocol, ExactRetriever (brute force, the tests' reference)
    item_index.py  ItemIndex: build / search / add / deactivate / save / load
    factory.py     kind -> FAISS structure, small-catalog fallbacks, search parameters, GPU
    ids.py         string ids <-> int64 labels, tombstones
    swap.py        ServingSnapshot + SnapshotHolder: atomic hot swap, rebuild journal
    candidates.py  embedding / co-visitation / trending sources, fusion, reasons
    synthetic.py   clustered synthetic vectors;  bench.py + commands.py: `streamrec bench index`

Names below are imported lazily: ``streamrec.settings`` imports ``streamrec.index.config`` and
must not pay for importing FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IndexSettings": "config",
    "ItemIndex": "item_index",
    "Retriever": "retriever",
    "ExactRetriever": "retriever",
    "ServingSnapshot": "swap",
    "SnapshotHolder": "swap",
    "RebuildTicket": "swap",
    "Candidate": "candidates",
    "Reason": "candidates",
    "embedding_candidates": "candidates",
    "covisitation_candidates": "candidates",
    "trending_candidates": "candidates",
    "fuse": "candidates",
    "explain": "candidates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamrec.index' has no attribute {name!r}")
    return getattr(importlib.import_module(f"streamrec.index.{module}"), name)
