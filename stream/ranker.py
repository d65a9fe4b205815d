"""The model path's learned ranker: candidates scored by a linear model fitted on next events.

Weighted reciprocal rank fusion (index/candidates.py) sees only each source's ranks. The ranker
sees what the sources know about each candidate of the union of the sources (seen items left
out), as ``FEATURES``:

    dot            the encoder's user vector . the item's vector, z-scored over the candidates
                   (computed for every candidate, also those only co-visitation or trending found)
    sim_last       cosine of the item's vector with the user's newest item's (encoder vectors)
    sim_recent     mean cosine of the item's vector with the user's last ``recent_items``'
    sim_max        the largest of those cosines
    covisit        log(1 + the co-visitation score from the user's recent items, decayed by age)
    covisit_last   log(1 + the co-visitation count with the user's newest item alone)
    trending       the trending score over the best trending score
    rank_*         10 / (10 + rank) in each source's list (0 when the source lacks the item)

A candidate scores ``w . x``. The weights are fitted prequentially with one step of stochastic
gradient descent on the softmax (listwise) cross-entropy per next event: when a slate is built
the candidates' features are remembered for the user; when the user's next event arrives and
its item was a candidate, ``w += lr * (x_item - sum_i p_i x_i)`` with ``p = softmax(w . x)``.
That loss rewards putting the next item first among the candidates, the quantity NDCG@10
rewards most, and no event ever trains the ranker before the slate it is scored on was built.
The start weights (``START``) give the rank features most of the say, so the first slates are
close to reciprocal rank fusion.

Read from the model thread, written on the event loop: ``weights`` is one array replaced in one
assignment, so a batch scores with one consistent set.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.index.candidates import COVISITATION, EMBEDDING, TRENDING, Fused, Hits
from streamrec.stream.config import RankerSettings, ServingSettings

Matrix = npt.NDArray[np.float32]
SOURCES = (EMBEDDING, COVISITATION, TRENDING)
FEATURES = (
    "dot",
    "covisit",
    "covisit_last",
    "trending",
    *(f"rank_{s}" for s in SOURCES),
    "sim_last",
    "sim_recent",
    "sim_max",
)
START = np.array([0.5, 0.5, 0.5, 0.0, 2.0, 2.0, 1.0, 0.5, 0.5, 0.5], dtype=np.float64)
MODEL_COLUMNS = (0, 7, 8, 9)  # what the model side computes: dot and the three similarities
RANK_SCALE = 10.0  # a rank feature halves from rank 1 to rank 11
_first = operator.itemgetter(0)


def candidate_features(
    sources: Mapping[str, Hits],
    last_item: Mapping[str, float],
    model: Callable[[list[str]], npt.NDArray[np.floating[Any]]],
    exclude: Container[str],
) -> tuple[list[str], Matrix]:
    """The union of ``sources`` minus ``exclude`` and its feature rows (``FEATURES`` order).

    ``last_item`` maps an item to its co-visitation count with the user's newest item; ``model``
    gives the candidates' [n, 4] model columns (``MODEL_COLUMNS``: the dot product with the
    user's vector, the cosine with the newest item's vector, the mean and the largest cosine
    with the recent items' vectors; 0 for items the model lacks).
    """
    lists = [sources.get(name, ()) for name in SOURCES]
    union = dict.fromkeys(map(_first, itertools.chain.from_iterable(lists)))
    items = [item for item in union if item not in exclude]  # one membership test per item
    index = {item: n for n, item in enumerate(items)}
    matrix = np.zeros((len(items), len(FEATURES)), dtype=np.float32)
    if not items:
        return items, matrix
    for column, name, hits in zip(range(4, 7), SOURCES, lists, strict=True):
        # Ranks count the eligible items only, each at its first place in the list.
        ranked = [index[item] for item in dict.fromkeys(map(_first, hits)) if item in index]
        matrix[ranked, column] = RANK_SCALE / (RANK_SCALE + np.arange(1, len(ranked) + 1))
        if name in (COVISITATION, TRENDING):
            first = dict(reversed(hits))  # an item listed twice keeps its first score
            scores = np.array([first[items[n]] for n in ranked], dtype=np.float64)
            if name == COVISITATION:
                matrix[ranked, 1] = np.log1p(scores)
            else:
                matrix[ranked, 3] = scores
    best = float(matrix[:, 3].max())
    if best > 0:
        matrix[:, 3] /= best
    matrix[:, MODEL_COLUMNS] = np.asarray(model(items), dtype=np.float32)
    dot = matrix[:, 0]
    matrix[:, 0] = (dot - dot.mean()) / (dot.std() + 1e-6)
    for item, count in last_item.items():
        n = index.get(item)
        if n is not None:
            matrix[n, 2] = math.log1p(count)
    return items, matrix


def make_ranker(serving: ServingSettings) -> LearnedRanker | None:
    """The ranker ``serving.ranker.method`` asks for; None for reciprocal rank fusion."""
    return LearnedRanker(serving.ranker) if serving.ranker.method == "learned" else None


class LearnedRanker:
    """Scores candidates and learns from next events (see module docstring)."""

    def __init__(self, settings: RankerSettings) -> None:
        self.settings = settings
        self.weights = START.copy()
        self.pending: OrderedDict[str, tuple[dict[str, int], Matrix]] = OrderedDict()
        self.updates = 0

    def rank(self, items: list[str], matrix: Matrix, n: int) -> Fused:
        """The best ``n`` of ``items`` by ``w . x``, as fusion gives them (ties by item id)."""
        scores = matrix.astype(np.float64) @ self.weights if items else np.zeros(0)
        # Best score first, ties by item id: lexsort's last key is the primary one.
        order = np.lexsort((np.array(items, dtype=str), -scores))[:n].tolist() if items else []
        ranked = [(items[i], float(scores[i])) for i in order]
        by_item = dict(ranked)
        ranks = matrix[order, 4:7].tolist()  # [n, sources]
        parts = {
            name: {items[i]: row[k] for i, row in zip(order, ranks, strict=True) if row[k] > 0}
            for k, name in enumerate(SOURCES)
        }
        return Fused(ranked, by_item, parts)

    def remember(self, user_id: str, items: Sequence[str], matrix: Matrix) -> None:
        """The candidates behind the slate just built for ``user_id``."""
        self.pending[user_id] = ({item: n for n, item in enumerate(items)}, matrix)
        self.pending.move_to_end(user_id)
        while len(self.pending) > self.settings.users:
            self.pending.popitem(last=False)

    def observe(self, user_id: str, item_id: str) -> None:
        """The user's next event: one gradient step when its item was a candidate."""
        remembered = self.pending.pop(user_id, None)
        if remembered is None or not self.settings.learned:
            return
        rows, matrix = remembered
        target = rows.get(item_id)
        if target is None:
            return
        x = matrix.astype(np.float64)
        logits = x @ self.weights
        p = np.exp(logits - logits.max())
        p /= p.sum()
        gradient = x[target] - p @ x
        self.weights = self.weights + self.settings.learning_rate * gradient
        self.updates += 1

    def restore(self, weights: Mapping[str, float], updates: int) -> None:
        """Continue from weights fitted before (``figures()``), as long as they name exactly
        ``FEATURES``; ValueError otherwise (a checkpoint of another feature set)."""
        values = np.array([float(weights.get(name, math.nan)) for name in FEATURES])
        if set(weights) != set(FEATURES) or not np.isfinite(values).all() or updates < 0:
            raise ValueError(f"ranker weights for features {sorted(weights)}, not {FEATURES}")
        self.weights, self.updates = values, int(updates)

    def figures(self) -> dict[str, object]:
        """For /stats: the weights in use and how many next events fitted them."""
        return {
            "weights": dict(zip(FEATURES, map(float, self.weights), strict=True)),
            "updates": self.updates,
        }


def ranker_state(figures: Mapping[str, object] | None) -> tuple[Mapping[str, float], int] | None:
    """``(weights, updates)`` of a learned ranker's ``figures()``; None when there are none."""
    if figures is None:
        return None
    weights, updates = figures.get("weights"), figures.get("updates")
    if not isinstance(weights, Mapping) or not isinstance(updates, int):
        return None
    return {str(name): float(value) for name, value in weights.items()}, updates


def ranker_figures_of(state: tuple[Mapping[str, float], int]) -> dict[str, object]:
    """``figures()`` of a ranker at ``(weights, updates)``: the inverse of ``ranker_state``."""
    return {"weights": dict(state[0]), "updates": state[1]}
