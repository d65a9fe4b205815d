"""``ItemIndex``: the FAISS item index the serving path searches.

    index = ItemIndex.build(item_ids, vectors, settings, version="m3")   # vectors [N, D] float32
    rows = index.search(user_vectors, k=100, exclude=[seen_a, seen_b])  # [B, D] -> B rows
    index.add(["i9"], v9)          # new or changed item, searchable immediately, no rebuild
    index.deactivate(["i4"])       # never returned again
    index.save(folder); ItemIndex.load(folder)

Scores are raw inner products (see ``factory.py``). Search over-fetches ``k`` plus the largest
per-query exclusion, filters, and retries only the rows that came back short with twice the
fetch and twice the breadth (nprobe / efSearch) until they are ``k`` long or the search was
exhaustive; so rows are ``k`` long whenever ``k`` eligible items exist (on a GPU, as long as
``k`` plus exclusions and tombstones stay within FAISS's 2,048-result limit). Deactivated items
are tombstones (``ids.py``) skipped by an ``IDSelector`` inside FAISS (CPU) and filtered again
afterwards. GPU: ``flat`` and ``ivf_flat`` move to GPU 0 when a faiss GPU build sees a device
and ``use_gpu`` is set; HNSW and IVF-PQ with refine stay on the CPU. (Not exercised on a GPU
yet: this repository's CI has none.)

Thread safety: one lock serialises search, add and deactivate on one index (FAISS may not be
searched while it is being added to). FAISS still uses its OpenMP threads inside one batched
search. Readers that need a stable model/index pair go through ``swap.SnapshotHolder``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from pydantic import ValidationError

from streamrec.errors import ModelError
from streamrec.index import factory
from streamrec.index.config import IndexSettings
from streamrec.index.ids import IdMap
from streamrec.index.retriever import SearchResult, as_matrix, check_search_args

FORMAT_VERSION = 1
# faiss-gpu answers at most 2,048 results per query; GPU rows may come back short beyond that.
GPU_MAX_K = 2048
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"


class ItemIndex:
    """FAISS index over item vectors with string ids, tombstones and versioned persistence."""

    def __init__(
        self,
        index: faiss.Index,
        id_map: IdMap,
        layout: factory.Layout,
        settings: IndexSettings,
        dim: int,
        version: str,
        created_at: str,
    ) -> None:
        """Use ``build`` or ``load``; this wires already consistent parts together."""
        self._index, on_gpu = factory.to_device(index, layout, settings)
        self._on_gpu: bool = on_gpu
        self._ids: IdMap = id_map
        self._layout: factory.Layout = layout
        self._settings = settings
        self._dim: int = dim
        self._version: str = version
        self._created_at: str = created_at
        self._lock = threading.Lock()
        self._selector: faiss.IDSelector | None = None
        self._selector_keep: list[Any] = []
        self._refresh_selector()

    @classmethod
    def build(
        cls, item_ids: Sequence[str], vectors: np.ndarray, settings: IndexSettings, version: str
    ) -> ItemIndex:
        """Train (IVF kinds) and fill an index from ``vectors`` [N, D] float32, one row per id.

        Kinds fall back on small catalogs as ``factory.py`` documents; ``layout_kind`` tells.
        """
        matrix = as_matrix(vectors, None, "item vectors")
        if len(item_ids) != matrix.shape[0]:
            raise ModelError(f"build got {len(item_ids)} ids for {matrix.shape[0]} vectors")
        layout = factory.choose_layout(matrix.shape[0], matrix.shape[1], settings)
        index = factory.create(layout, matrix.shape[1], settings)
        factory.train(index, matrix, settings)
        created_at = datetime.now(UTC).isoformat()
        item_index = cls(index, IdMap(), layout, settings, matrix.shape[1], version, created_at)
        item_index.add(item_ids, matrix)
        return item_index

    @property
    def version(self) -> str:
        """Version label given at build (normally the model version of the vectors)."""
        return self._version

    @property
    def size(self) -> int:
        """Active (searchable) items."""
        return self._ids.active_count

    @property
    def dim(self) -> int:
        """Vector width D."""
        return self._dim

    @property
    def layout_kind(self) -> str:
        """Kind actually built after small-catalog fallbacks (may differ from settings.kind)."""
        return self._layout.kind

    @property
    def tombstones(self) -> int:
        """Deactivated or replaced vectors still stored; a rebuild drops them."""
        return self._ids.tombstone_count

    @property
    def on_gpu(self) -> bool:
        """Whether the FAISS index lives on a GPU."""
        return self._on_gpu

    @property
    def created_at(self) -> str:
        """ISO-8601 UTC time of the build."""
        return self._created_at

    def item_ids(self) -> list[str]:
        """Active item ids."""
        with self._lock:
            return self._ids.active_ids()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def add(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add new items or replace the vectors of known ones; ``vectors`` [N, D] float32."""
        matrix = as_matrix(vectors, self._dim, "item vectors")
        if len(item_ids) != matrix.shape[0]:
            raise ModelError(f"add got {len(item_ids)} ids for {matrix.shape[0]} vectors")
        if not item_ids:
            return
        with self._lock:
            labels, replaced = self._ids.assign(list(item_ids))
            if self._layout.kind == "ivf_flat":
                self._index.add_with_ids(matrix, labels)
            else:
                # Sequential positions are the labels for flat, HNSW and the refine wrapper.
                self._index.add(matrix)
            if self._index.ntotal != self._ids.next_label:
                raise ModelError(
                    f"index {self._version}: FAISS holds {self._index.ntotal} vectors but "
                    f"{self._ids.next_label} labels were assigned; rebuild the index"
                )
            if replaced:
                self._refresh_selector()

    def deactivate(self, item_ids: Sequence[str]) -> None:
        """Never return these items again (until re-added); unknown ids are ignored."""
        with self._lock:
            if self._ids.tombstone(item_ids):
                self._refresh_selector()

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None = None
    ) -> SearchResult:
        """Top-``k`` ``(item_id, score)`` per row of ``queries`` [B, D], best first.

        ``exclude[b]`` holds item ids query ``b`` must not get (seen items); unknown ids are
        fine. Rows are ``k`` long whenever ``k`` eligible items exist.
        """
        matrix = as_matrix(queries, self._dim, "queries")
        check_search_args(matrix, k, exclude)
        excluded = [set(e) for e in exclude] if exclude is not None else [set()] * len(matrix)
        results: SearchResult = [[] for _ in range(len(matrix))]
        with self._lock:
            pending = list(range(len(matrix)))
            # Only excluded ids the index holds can take a slot in FAISS's answer.
            fetch = k + max((sum(1 for i in e if i in self._ids) for e in excluded), default=0)
            widen = 1
            while pending:
                pending = self._search_round(matrix, k, excluded, pending, fetch, widen, results)
                fetch *= 2
                widen *= 2
        return results

    def _search_round(
        self,
        queries: np.ndarray,
        k: int,
        excluded: list[set[str]],
        rows: list[int],
        fetch: int,
        widen: int,
        results: SearchResult,
    ) -> list[int]:
        """Search ``rows`` once, fill ``results``; return the rows still short and retryable."""
        ntotal = self._index.ntotal
        if ntotal == 0:
            return []
        fetch = min(fetch, ntotal)
        exhaustive = factory.is_exhaustive(self._layout, self._settings, widen, fetch, ntotal)
        if self._on_gpu and fetch >= GPU_MAX_K:
            fetch, exhaustive = GPU_MAX_K, True
        scores, labels = self._raw_search(queries[rows], fetch, widen)
        short: list[int] = []
        for row, row_scores, row_labels in zip(rows, scores, labels, strict=True):
            hits = self._filter(row_scores, row_labels, excluded[row], k)
            results[row] = hits
            eligible = self._ids.active_count - sum(1 for e in excluded[row] if e in self._ids)
            if len(hits) < min(k, eligible) and not exhaustive:
                short.append(row)
        return short

    def _raw_search(
        self, queries: np.ndarray, fetch: int, widen: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores [B, fetch] float32 and labels [B, fetch] int64 (-1 pads missing results)."""
        # GPU indexes take no IDSelector (tombstones are then only filtered afterwards), and a
        # GPU flat index needs no parameters at all.
        selector = None if self._on_gpu else self._selector
        params = None
        if not (self._on_gpu and self._layout.kind == "flat"):
            params = factory.search_params(
                self._layout, self._settings, widen=widen, k=fetch, selector=selector
            )
        found: tuple[np.ndarray, np.ndarray] = self._index.search(queries, fetch, params=params)
        return found

    def _filter(
        self, scores: np.ndarray, labels: np.ndarray, excluded: set[str], k: int
    ) -> list[tuple[str, float]]:
        hits: list[tuple[str, float]] = []
        for score, label in zip(scores.tolist(), labels.tolist(), strict=True):
            item_id = self._ids.item_id(label)
            if item_id is None or item_id in excluded:
                continue
            hits.append((item_id, score))
            if len(hits) == k:
                break
        return hits

    def _refresh_selector(self) -> None:
        tombstoned = self._ids.tombstoned_labels()
        if tombstoned.size == 0:
            self._selector, self._selector_keep = None, []
            return
        batch = faiss.IDSelectorBatch(tombstoned)
        # IDSelectorNot only points at the batch selector; keep both (and the array) alive.
        self._selector = faiss.IDSelectorNot(batch)
        self._selector_keep = [batch, tombstoned]

    def save(self, path: Path) -> None:
        """Write ``path/index.faiss`` (faiss.write_index) and ``path/meta.json`` (id map, version).

        Files are written under temporary names and renamed, metadata last, so a reader never
        sees metadata that points at a half-written index.
        """
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            host = factory.to_host(self._index, self._on_gpu)
            meta = {
                "format_version": FORMAT_VERSION,
                "version": self._version,
                "kind": self._settings.kind,
                "layout_kind": self._layout.kind,
                "nlist": self._layout.nlist,
                "refine": self._layout.refine,
                "dim": self._dim,
                "ntotal": int(host.ntotal),
                "created_at": self._created_at,
                "saved_at": datetime.now(UTC).isoformat(),
                "settings": self._settings.model_dump(mode="json"),
                "slots": self._ids.slots,
            }
            tmp_index = path / f".{INDEX_FILE}.tmp"
            faiss.write_index(host, str(tmp_index))
        tmp_meta = path / f".{META_FILE}.tmp"
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp_index, path / INDEX_FILE)
        os.replace(tmp_meta, path / META_FILE)

    @classmethod
    def load(cls, path: Path, settings: IndexSettings | None = None) -> ItemIndex:
        """Read a folder written by ``save``.

        ``settings`` overrides the saved search settings (nprobe, efSearch, refine factor,
        use_gpu, ...); the structure (kind, nlist, PQ shape, refine or not) comes from the file.
        """
        meta = _read_meta(path)
        try:
            # Settings a later version dropped are left out: they no longer mean anything.
            known = {k: v for k, v in meta["settings"].items() if k in IndexSettings.model_fields}
            saved = IndexSettings.model_validate(known)
        except (ValidationError, AttributeError) as exc:
            raise ModelError(f"{path / META_FILE}: saved settings are invalid ({exc})") from exc
        layout = factory.Layout(
            meta["layout_kind"], int(meta["nlist"]), refine=bool(meta.get("refine", False))
        )
        active = saved if settings is None else _search_overrides(saved, settings, layout)
        index = faiss.read_index(str(path / INDEX_FILE))
        slots = meta["slots"]
        if index.ntotal != len(slots) or index.ntotal != meta["ntotal"] or index.d != meta["dim"]:
            raise ModelError(
                f"{path}: {INDEX_FILE} holds {index.ntotal} vectors of dimension {index.d} but "
                f"{META_FILE} describes {len(slots)} of dimension {meta['dim']}; the folder mixes "
                "two saves, save the index again"
            )
        return cls(
            index,
            IdMap.from_slots(slots),
            layout,
            active,
            int(meta["dim"]),
            str(meta["version"]),
            str(meta["created_at"]),
        )


def _search_overrides(
    saved: IndexSettings, override: IndexSettings, layout: factory.Layout
) -> IndexSettings:
    """``override`` with the structural fields of ``saved`` (what the file was built as)."""
    refine = override.refine_k_factor or saved.refine_k_factor
    structural = {
        "kind": saved.kind,
        "pq_m": saved.pq_m,
        "pq_nbits": saved.pq_nbits,
        "refine_k_factor": refine if layout.refine else 0,
    }
    return override.model_copy(update=structural)


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path, index_path = path / META_FILE, path / INDEX_FILE
    if not meta_path.is_file() or not index_path.is_file():
        raise ModelError(
            f"{path} is not a saved item index (needs {INDEX_FILE} and {META_FILE}); "
            "pass a folder written by ItemIndex.save"
        )
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path} is not valid JSON ({exc}); save the index again") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this streamrec "
            f"reads {FORMAT_VERSION}; rebuild the index with this version"
        )
    missing = {"version", "layout_kind", "nlist", "dim", "ntotal", "created_at", "slots"} - set(
        meta
    )
    if missing:
        raise ModelError(f"{meta_path} lacks {sorted(missing)}; save the index again")
    return meta
