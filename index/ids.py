"""String item ids mapped to the int64 labels FAISS stores.

Labels are handed out sequentially (0, 1, 2, ...) and never reused, so for every index kind a
label is also the vector's position in the FAISS index (``ntotal == next_label`` always holds).
Deactivating an item tombstones its label: the vector stays in FAISS (HNSW and the refine
wrapper used by IVF-PQ cannot remove vectors) and is filtered at search time. Re-adding an
active id gives it a fresh label and tombstones the old one, which is how a vector is updated.
A rebuild (see ``streamrec.index.swap``) drops tombstones for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.errors import ModelError


class IdMap:
    """Bidirectional map between string item ids and int64 labels, with tombstones."""

    def __init__(self) -> None:
        self._label_of: dict[str, int] = {}
        # Position = label; None marks a tombstoned label.
        self._id_of: list[str | None] = []

    @classmethod
    def from_slots(cls, slots: Sequence[str | None]) -> IdMap:
        """Rebuild from the saved per-label slot list (None = tombstone)."""
        id_map = cls()
        for label, item_id in enumerate(slots):
            id_map._id_of.append(item_id)
            if item_id is None:
                continue
            if item_id in id_map._label_of:
                raise ModelError(
                    f"saved id map lists item {item_id!r} twice (labels "
                    f"{id_map._label_of[item_id]} and {label}); the index folder is corrupt, "
                    "rebuild it"
                )
            id_map._label_of[item_id] = label
        return id_map

    @property
    def slots(self) -> list[str | None]:
        """Per-label item id, None where tombstoned (what ``save`` writes)."""
        return list(self._id_of)

    @property
    def next_label(self) -> int:
        """Label the next added item gets; equals the number of vectors in FAISS."""
        return len(self._id_of)

    @property
    def active_count(self) -> int:
        """Number of items that search may return."""
        return len(self._label_of)

    @property
    def tombstone_count(self) -> int:
        """Vectors still in FAISS that search must skip."""
        return len(self._id_of) - len(self._label_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._label_of

    def label(self, item_id: str) -> int | None:
        """Label of an active item, None when unknown or deactivated."""
        return self._label_of.get(item_id)

    def item_id(self, label: int) -> str | None:
        """Item id of a label, None for -1 (FAISS padding) and tombstones."""
        if label < 0 or label >= len(self._id_of):
            return None
        return self._id_of[label]

    def assign(self, item_ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Give each id a fresh label.

        Returns ``(labels [N] int64, replaced)`` where ``replaced`` lists the old labels of ids
        that were already active (now tombstoned).
        """
        if len(set(item_ids)) != len(item_ids):
            raise ModelError(
                "add() got the same item id twice in one batch; deduplicate the batch "
                "(keep the newest vector) before adding"
            )
        replaced = [lbl for lbl in (self._label_of.get(i) for i in item_ids) if lbl is not None]
        for old in replaced:
            self._id_of[old] = None
        start = len(self._id_of)
        for offset, item_id in enumerate(item_ids):
            self._label_of[item_id] = start + offset
            self._id_of.append(item_id)
        return np.arange(start, start + len(item_ids), dtype=np.int64), replaced

    def tombstone(self, item_ids: Iterable[str]) -> list[int]:
        """Deactivate ids; unknown or already inactive ids are ignored. Returns the labels hit."""
        hit: list[int] = []
        for item_id in item_ids:
            label = self._label_of.pop(item_id, None)
            if label is not None:
                self._id_of[label] = None
                hit.append(label)
        return hit

    def tombstoned_labels(self) -> np.ndarray:
        """Labels search must skip, int64 [T]."""
        return np.fromiter(
            (lbl for lbl, item_id in enumerate(self._id_of) if item_id is None), dtype=np.int64
        )

    def active_ids(self) -> list[str]:
        """Active item ids in label order."""
        return [item_id for item_id in self._id_of if item_id is not None]
