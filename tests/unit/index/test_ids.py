"""IdMap and ItemIndex under random add/deactivate sequences, checked against exact search."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.index.config import IndexSettings
from streamrec.index.ids import IdMap
from streamrec.index.item_index import ItemIndex
from streamrec.index.retriever import ExactRetriever


def test_labels_are_sequential_and_never_reused() -> None:
    ids = IdMap()
    labels, replaced = ids.assign(["a", "b"])
    assert labels.tolist() == [0, 1] and replaced == []
    labels, replaced = ids.assign(["a"])
    assert labels.tolist() == [2] and replaced == [0]
    assert ids.tombstone(["b", "unknown"]) == [1]
    assert ids.slots == [None, None, "a"]
    assert (ids.active_count, ids.tombstone_count, ids.next_label) == (1, 2, 3)
    assert ids.tombstoned_labels().tolist() == [0, 1]
    assert IdMap.from_slots(ids.slots).label("a") == 2


# Each op: ("add", item numbers) or ("off", item numbers); vectors come from a seeded table.
ops = st.lists(
    st.tuples(st.sampled_from(["add", "off"]), st.sets(st.integers(0, 59), min_size=1, max_size=8)),
    min_size=1,
    max_size=12,
)
# Exhaustive IVF (nprobe = nlist) must agree with exact search like flat does.
EXACT_KINDS = [
    IndexSettings(kind="flat"),
    IndexSettings(kind="ivf_flat", nlist=4, nprobe=4, min_points_per_list=5),
]


@settings(max_examples=40, deadline=None)
@given(ops=ops, seed=st.integers(0, 1000), k=st.integers(1, 30))
def test_index_matches_exact_retriever_after_any_op_sequence(
    ops: list[tuple[str, set[int]]], seed: int, k: int
) -> None:
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((60, 6)).astype(np.float32)
    queries = rng.standard_normal((3, 6)).astype(np.float32)
    base_ids = [f"b{n}" for n in range(40)]
    base = rng.standard_normal((40, 6)).astype(np.float32)
    exclude = [{"b0", "x1"}, set(), {f"x{n}" for n in range(0, 60, 2)}]
    for index_settings in EXACT_KINDS:
        index = ItemIndex.build(base_ids, base, index_settings, "v")
        exact = ExactRetriever.build(base_ids, base)
        for op, numbers in ops:
            item_ids = [f"x{n}" for n in sorted(numbers)]
            for target in (index, exact):
                if op == "add":
                    target.add(item_ids, table[sorted(numbers)] * np.float32(1.0 + seed % 3))
                else:
                    target.deactivate(item_ids)
        got, want = index.search(queries, k, exclude), exact.search(queries, k, exclude)
        assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
        assert index.size == exact.size
