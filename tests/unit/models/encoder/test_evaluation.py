"""Protocol split and metric functions against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from encoder_doubles import BASE, window_split

from streamrec.datasets import Dataset, Interaction, Item
from streamrec.errors import DataError
from streamrec.models.encoder.evaluation import (
    evaluate_scorer,
    popularity_scorer,
    ranking_metrics,
    ranks_and_topk,
)


def _dataset(rows: list[tuple[str, str, int]]) -> Dataset:
    inter = sorted((Interaction(u, i, 1.0, BASE + t) for u, i, t in rows), key=lambda x: x.ts)
    items = {i: Item(i, i, (), None) for _, i, _ in rows}
    return Dataset("toy", inter, items)


def test_leave_one_out_uses_stable_time_order() -> None:
    # u's items 3 and 1 tie at ts 5: file order makes 1 the test item and 3 the validation item.
    ds = _dataset([("u", "2", 1), ("u", "3", 5), ("u", "1", 5), ("v", "2", 1), ("v", "1", 2)])
    split = window_split(ds, max_len=5)
    assert split.item_ids == ["1", "2", "3"]
    assert split.train == [[2], [2, 1]]  # v (2 items) only trains
    assert ([w.items for w in split.valid_windows], split.valid_targets) == ([[2]], [2])
    assert ([w.items for w in split.test_windows], split.test_targets) == ([[2, 3]], [0])
    assert split.test_history == [[2, 3]]


def test_leave_one_out_needs_three_interactions() -> None:
    with pytest.raises(DataError, match="3 or more events"):
        window_split(_dataset([("u", "1", 1), ("u", "2", 2)]), max_len=5)


def test_ranking_metrics_hand_computed() -> None:
    ranks = np.array([0, 2, 9, 10])
    topk = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    m = ranking_metrics(ranks, topk, n_items=10, k=10)
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)
    assert m["coverage@10"] == pytest.approx(5 / 10)


def test_ranks_ties_and_history_exclusion() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.9, 0.7]])
    targets = torch.tensor([2, 3])
    ranks, topk = ranks_and_topk(scores, targets, k=2)
    assert ranks.tolist() == [2, 2]  # row 0: tie with item 1 broken by lower index
    assert topk.tolist() == [[0, 1], [2, 1]]
    # Exclude items 0 (1-based 1) for row 0; for row 1 exclude items 2 and its own target 3.
    ranks, _ = ranks_and_topk(scores, targets, [[1], [3, 4]], k=2)
    assert ranks.tolist() == [1, 1]


def test_popularity_scorer_counts_training_only() -> None:
    score = popularity_scorer([[1, 2, 2], [2, 3]], n_items=3)
    assert score([[1], [2]]).tolist() == [[1.0, 3.0, 1.0]] * 2
    m = evaluate_scorer(score, [[1], [3]], [1, 0], 3, exclude_history=True)
    assert m["hr@10"] == 1.0 and m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
