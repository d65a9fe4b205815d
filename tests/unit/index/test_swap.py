"""Hot swap: readers always see one consistent version; changes during a rebuild survive."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from streamrec.errors import ModelError
from streamrec.index.config import IndexSettings
from streamrec.index.item_index import ItemIndex
from streamrec.index.swap import ServingSnapshot, SnapshotHolder

FLAT = IndexSettings(kind="flat")
DIM = 8


def snapshot(version: str, n: int = 200, seed: int = 0) -> ServingSnapshot[str]:
    """A snapshot whose encoder is its version string and whose item ids carry the version."""
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    index = ItemIndex.build([f"{version}:{i}" for i in range(n)], vectors, FLAT, version)
    return ServingSnapshot(model_version=version, encoder=version, index=index)


def test_concurrent_readers_never_mix_versions_across_swaps() -> None:
    versions = [snapshot(f"m{v}", seed=v) for v in range(4)]
    holder: SnapshotHolder[str] = SnapshotHolder(versions[0])
    query = np.ones((2, DIM), np.float32)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0] * 6

    def reader(slot: int) -> None:
        while not stop.is_set():
            snap = holder.current()
            rows = snap.index.search(query, 5)
            ids = {item.split(":")[0] for row in rows for item, _ in row}
            if snap.encoder != snap.model_version or snap.index.version != snap.model_version:
                problems.append(f"snapshot {snap.model_version} pairs other versions")
            if ids != {snap.model_version}:
                problems.append(f"{snap.model_version} returned items of {ids}")
            reads[slot] += 1

    threads = [threading.Thread(target=reader, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    seen = set()
    step = 0
    # Keep swapping until every reader has overlapped many swaps (threads may start late).
    while (step < 200 or min(reads) < 20) and step < 1_000_000:
        old = holder.swap(versions[(step + 1) % 4])
        seen.add(old.model_version)
        step += 1
        time.sleep(0)  # hand the GIL to readers so swaps interleave with their requests
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert seen == {"m0", "m1", "m2", "m3"}
    assert holder.generation == step
    assert min(reads) >= 20


def test_adds_during_rebuild_of_same_model_are_replayed() -> None:
    holder: SnapshotHolder[str] = SnapshotHolder(snapshot("m1"))
    ticket = holder.begin_rebuild()
    holder.add_items(["fresh"], np.ones((1, DIM), np.float32), "m1")
    holder.deactivate(["m1:0"])
    assert "fresh" in holder.current().index  # servable at once, before the swap
    rebuilt = snapshot("m1", seed=5)  # e.g. a compaction built from an older catalog read
    holder.swap(rebuilt, ticket)
    assert holder.current() is rebuilt
    assert "fresh" in rebuilt.index and "m1:0" not in rebuilt.index


def test_adds_during_rebuild_of_new_model_need_reencode() -> None:
    holder: SnapshotHolder[str] = SnapshotHolder(snapshot("m1"))
    ticket = holder.begin_rebuild()
    holder.add_items(["fresh"], np.ones((1, DIM), np.float32), "m1")
    with pytest.raises(ModelError, match="reencode"):
        holder.swap(snapshot("m2"), ticket)
    assert holder.current().model_version == "m1"  # refused swap changed nothing

    encoded: list[str] = []

    def reencode(item_ids: Sequence[str]) -> np.ndarray:
        encoded.extend(item_ids)
        return np.full((len(item_ids), DIM), -1.0, np.float32)

    holder.swap(snapshot("m2"), ticket, reencode=reencode)
    assert encoded == ["fresh"]
    assert "fresh" in holder.current().index


def test_stale_ticket_and_foreign_model_vectors_are_refused() -> None:
    holder: SnapshotHolder[str] = SnapshotHolder(snapshot("m1"))
    ticket = holder.begin_rebuild()
    holder.swap(snapshot("m2"))
    with pytest.raises(ModelError, match="stale"):
        holder.swap(snapshot("m3"), ticket)
    with pytest.raises(ModelError, match="encode new items"):
        holder.add_items(["x"], np.ones((1, DIM), np.float32), "m1")


def test_no_add_is_lost_while_rebuilds_and_swaps_run_concurrently() -> None:
    holder: SnapshotHolder[str] = SnapshotHolder(snapshot("m", n=50))
    added: list[str] = []
    done = threading.Event()

    def producer() -> None:
        rng = np.random.default_rng(1)
        for n in range(300):
            item = f"new{n}"
            holder.add_items([item], rng.standard_normal((1, DIM)).astype(np.float32), "m")
            added.append(item)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    swaps = 0
    while not done.is_set() or swaps < 3:
        ticket = holder.begin_rebuild()
        # Rebuild from a catalog read that may miss the latest adds; the journal fills the gap.
        catalog = holder.current().index.item_ids()
        vectors = np.zeros((len(catalog), DIM), np.float32)
        holder.swap(ServingSnapshot("m", "m", ItemIndex.build(catalog, vectors, FLAT, "m")), ticket)
        swaps += 1
    thread.join()
    final = holder.current().index
    assert [item for item in added if item not in final] == []
    assert final.size == 350
