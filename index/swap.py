"""Atomic hot swap of the (model, item index) pair that serving reads.

    holder = SnapshotHolder(ServingSnapshot("m1", encoder_m1, index_m1))
    snap = holder.current()          # once per request/batch: encoder and index of ONE version
    user_vecs = snap.encoder(...); snap.index.search(user_vecs, k, exclude)

    ticket = holder.begin_rebuild()  # from here on, adds/deactivations are journaled
    index_m2 = ItemIndex.build(catalog_ids, encode_m2(catalog), settings, "m2")  # takes minutes
    holder.swap(ServingSnapshot("m2", encoder_m2, index_m2), ticket, reencode=encode_m2_ids)

Reads are lock-free: ``current()`` returns one attribute, which Python replaces atomically, and a
snapshot is immutable (its index is only mutated through the holder, below). ``swap`` and the
catalog mutations share one lock, so each mutation lands entirely before or entirely after a
swap.

The rule for incremental changes during a rebuild (nothing is lost):

* ``add_items`` / ``deactivate`` always apply to the current snapshot's index at once, so new
  items are servable within the call.
* Between ``begin_rebuild()`` and ``swap()`` they are also journaled. ``swap`` replays the journal
  onto the new snapshot's index before publishing it, in order. Added vectors are reused when
  they were encoded by the new snapshot's ``model_version``; otherwise ``reencode(item_ids)``
  must produce vectors with the new model (the item encoder is opaque here), and ``swap`` refuses
  without it. A rebuild fed from the catalog table after ``begin_rebuild()`` may see some of these
  items again; replay then only refreshes their vectors (re-adding an id replaces it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

import numpy as np

from streamrec.errors import ModelError
from streamrec.index.item_index import ItemIndex

E = TypeVar("E")

Reencode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ServingSnapshot(Generic[E]):
    """One consistent serving state: model version, its encoder and an index of its vectors."""

    model_version: str
    encoder: E
    index: ItemIndex
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class RebuildTicket:
    """Where a rebuild started in the journal of one holder generation."""

    generation: int
    position: int


@dataclass(frozen=True)
class _Change:
    op: Literal["add", "deactivate"]
    item_ids: tuple[str, ...]
    vectors: np.ndarray | None
    model_version: str


class SnapshotHolder(Generic[E]):
    """Holds the current ``ServingSnapshot``; see the module docstring for the rules."""

    def __init__(self, initial: ServingSnapshot[E]) -> None:
        self._snapshot = initial
        self._lock = threading.Lock()
        self._generation = 0
        self._journal: list[_Change] = []
        self._recording = False

    def current(self) -> ServingSnapshot[E]:
        """The snapshot to use for a whole request or batch (lock-free)."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """How many swaps have happened."""
        return self._generation

    def begin_rebuild(self) -> RebuildTicket:
        """Start journaling catalog changes for a snapshot being built; pass the ticket to swap."""
        with self._lock:
            self._recording = True
            return RebuildTicket(self._generation, len(self._journal))

    def add_items(self, item_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> None:
        """Add or replace items in the current index; ``vectors`` [N, D] from ``model_version``.

        Raises ModelError when ``model_version`` is not the current snapshot's: the vectors
        would live in another model's space.
        """
        with self._lock:
            current = self._snapshot
            if model_version != current.model_version:
                raise ModelError(
                    f"add_items got vectors of model {model_version!r} but serving runs "
                    f"{current.model_version!r}; encode new items with holder.current().encoder"
                )
            current.index.add(item_ids, vectors)
            if self._recording:
                self._journal.append(
                    _Change("add", tuple(item_ids), np.array(vectors, copy=True), model_version)
                )

    def deactivate(self, item_ids: Sequence[str]) -> None:
        """Deactivate items in the current index (and in the one being rebuilt, at swap)."""
        with self._lock:
            current = self._snapshot
            current.index.deactivate(item_ids)
            if self._recording:
                self._journal.append(
                    _Change("deactivate", tuple(item_ids), None, current.model_version)
                )

    def swap(
        self,
        new: ServingSnapshot[E],
        ticket: RebuildTicket | None = None,
        reencode: Reencode | None = None,
    ) -> ServingSnapshot[E]:
        """Replay journaled changes since ``ticket`` onto ``new.index``, publish it, return the old.

        Without a ticket nothing is replayed (``new`` must already reflect the catalog).
        """
        with self._lock:
            changes = self._changes_since(ticket)
            needs_reencode = any(
                c.op == "add" and c.model_version != new.model_version for c in changes
            )
            if needs_reencode and reencode is None:
                raise ModelError(
                    f"swap to model {new.model_version!r}: items were added with model "
                    f"{self._snapshot.model_version!r} during the rebuild; pass reencode= to "
                    "encode them with the new model"
                )
            for change in changes:
                _replay(change, new, reencode)
            old, self._snapshot = self._snapshot, new
            self._generation += 1
            self._journal, self._recording = [], False
            return old

    def _changes_since(self, ticket: RebuildTicket | None) -> list[_Change]:
        if ticket is None:
            return []
        if ticket.generation != self._generation:
            raise ModelError(
                f"rebuild ticket from generation {ticket.generation} is stale (holder is at "
                f"{self._generation}; another swap happened since begin_rebuild); rebuild again"
            )
        return self._journal[ticket.position :]


def _replay(change: _Change, new: ServingSnapshot[E], reencode: Reencode | None) -> None:
    if change.op == "deactivate":
        new.index.deactivate(change.item_ids)
        return
    vectors = change.vectors
    if change.model_version != new.model_version:
        assert reencode is not None  # checked by swap before any replay
        vectors = reencode(change.item_ids)
    assert vectors is not None  # add changes always carry vectors
    new.index.add(change.item_ids, vectors)
