"""Offline protocol: leave-one-out by time, full ranking over all items, HR/NDCG/MRR/coverage@k.

Protocol (DESIGN "Learning"): each user's interactions in stable time order (ties keep file
order); the last one is the test target, the second-last the validation target; training uses
everything before (every earlier item is a target of its prefix). The test input is the whole
history before the test item (validation item included). Every item is ranked (no sampled
negatives). With ``exclude_history`` the items of the input sequence are removed from the
ranking (as RecBole does), except the target itself, so a repeat consumption stays rankable.
Ties in score are broken by item index (lower first), the same order ``topk`` lists use. The
split itself is cut in ``windows.py``, over the states the worker would have held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import numpy as np
import torch

from streamrec.datasets import Dataset

__all__ = [
    "catalog_order",
    "evaluate_scorer",
    "popularity_scorer",
    "ranking_metrics",
    "ranks_and_topk",
]

Row = TypeVar("Row")  # what a scorer reads per user: an item sequence or a featurized Window


def catalog_order(dataset: Dataset) -> list[str]:
    """The item map of a model trained on ``dataset``: every catalog item, numeric ids in
    numeric order, others after them in text order (stable and readable)."""
    return sorted(dataset.items, key=_sort_key)


def _sort_key(item_id: str) -> tuple[int, int | str]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def ranks_and_topk(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: Sequence[Sequence[int]] | None = None,
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of each target and the top-k item lists.

    ``scores`` [B, N]; ``targets`` [B] 0-based; ``exclude`` per row 1-based item indices to
    remove from the ranking (the row's own target is never removed). Returns ranks [B] and
    topk [B, k] (0-based items).
    """
    scores = scores.float().clone()
    rows = torch.arange(scores.shape[0], device=scores.device)
    if exclude is not None:
        r = [row for row, seq in enumerate(exclude) for _ in seq]
        c = [item - 1 for seq in exclude for item in seq]
        if r:
            target_scores = scores[rows, targets]
            scores[torch.tensor(r), torch.tensor(c)] = float("-inf")
            scores[rows, targets] = target_scores
    target = scores[rows, targets].unsqueeze(1)  # [B, 1]
    item = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)  # [1, N]
    ahead = (scores > target) | ((scores == target) & (item < targets.unsqueeze(1)))
    ranks = ahead.sum(dim=1)  # [B]
    # Stable descending sort breaks ties by lower index, matching the rank rule above.
    topk = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # [B, k]
    return ranks, topk


def ranking_metrics(
    ranks: np.ndarray, topk: np.ndarray, n_items: int, k: int = 10
) -> dict[str, float]:
    """HR@k, NDCG@k, MRR@k from 0-based ranks [U], and coverage@k from top-k lists [U, k].

    NDCG with one relevant item is ``1 / log2(rank + 2)`` when rank < k; coverage is the share
    of the catalog that appears in at least one user's top-k.
    """
    ranks = np.asarray(ranks)
    hit = ranks < k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
        f"mrr@{k}": float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean()),
        f"coverage@{k}": float(len(np.unique(np.asarray(topk)[:, :k])) / n_items),
    }


def evaluate_scorer(
    scorer: Callable[[list[Row]], torch.Tensor],
    inputs: Sequence[Row],
    targets: Sequence[int],
    n_items: int,
    exclude_history: bool,
    batch_size: int = 512,
    k: int = 10,
    history: Sequence[Sequence[int]] | None = None,
) -> dict[str, float]:
    """Rank every target among all ``n_items`` items with ``scorer``; metrics at ``k``.

    ``inputs`` are what ``scorer`` reads (item sequences, or ``Window`` rows); ``history`` the
    1-based items removed by ``exclude_history`` (default: the inputs, when they are sequences).
    """
    excluded = history if history is not None else cast(Sequence[Sequence[int]], inputs)
    all_ranks, all_topk = [], []
    for start in range(0, len(inputs), batch_size):
        batch = list(inputs[start : start + batch_size])
        scores = scorer(batch)  # [B, N]
        tgt = torch.tensor(targets[start : start + batch_size], device=scores.device)
        rows = excluded[start : start + batch_size] if exclude_history else None
        ranks, topk = ranks_and_topk(scores, tgt, rows, k)
        all_ranks.append(ranks.cpu().numpy())
        all_topk.append(topk.cpu().numpy())
    return ranking_metrics(np.concatenate(all_ranks), np.concatenate(all_topk), n_items, k)


def popularity_scorer(
    train: Sequence[Sequence[int]], n_items: int
) -> Callable[[Sequence[object]], torch.Tensor]:
    """Most-interacted items first, counted on the training sequences only."""
    counts = np.zeros(n_items, dtype=np.float32)
    for seq in train:
        np.add.at(counts, np.asarray(seq, dtype=np.int64) - 1, 1.0)
    row = torch.from_numpy(counts)

    def score(batch: Sequence[object]) -> torch.Tensor:
        return row.unsqueeze(0).expand(len(batch), -1)  # [B, N]

    return score
