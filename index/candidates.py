"""Candidate sources (embedding, co-visitation, trending), their fusion, and per-item reasons.

Each source yields ``(item_id, raw_score)`` pairs, best first; raw scores of different sources
are not comparable (inner products, co-visit counts, event rates). ``fuse`` makes them so:

* ``method="rrf"`` (default), reciprocal rank fusion: a source contributes
  ``weight / (rrf_k + rank)`` with rank 1 for its best eligible item. Only ranks matter, so one
  source's heavy-tailed scores cannot drown the others; ``rrf_k=60`` is the value from Cormack
  et al. (2009) that keeps the head from dominating.
* ``method="minmax"``: a source contributes ``weight * (s - min) / (max - min)`` over its
  eligible items (1.0 for all when max == min), so score gaps matter, not just order.

Contributions are summed over sources, so an item several sources agree on rises. Excluded
(seen) items are dropped before normalising. Ties break by item id, so output is deterministic.
Each fused ``Candidate`` keeps which sources contributed, strongest first (provenance).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import sys
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

import numpy as np

from streamrec.errors import ModelError
from streamrec.index.retriever import Retriever

Hits = Sequence[tuple[str, float]]


class Ranked(list[tuple[str, float]]):
    """Hits already unique and in fusion order (score descending, ties by item id): fusion
    takes them as they are instead of deduplicating and sorting them again for every slate
    (the trending list is the same 200 items for every user; see ``ranked``)."""


def ranked(hits: Hits) -> Ranked:
    """``hits`` deduplicated (each item at its best score) and in fusion order."""
    return Ranked(_ranked(_dedupe(hits)))


EMBEDDING, COVISITATION, TRENDING = "embedding", "covisitation", "trending"
RRF_K = 60.0  # Cormack et al. (2009); see the module docstring


@dataclass(frozen=True)
class Candidate:
    """A fused candidate: total ``score``, ``sources`` strongest first, per-source parts."""

    item_id: str
    score: float
    sources: tuple[str, ...]
    contributions: Mapping[str, float]


@dataclass(frozen=True)
class Reason:
    """Why an item is recommended: the most similar history item, else its main source."""

    source: str
    similar_to: str | None = None

    @property
    def label(self) -> str:
        """``item:<history item id>`` or ``source:<source name>`` (the recommendation's reason)."""
        return f"item:{self.similar_to}" if self.similar_to is not None else f"source:{self.source}"


def embedding_candidates(
    retriever: Retriever, user_vector: np.ndarray, n: int, exclude: Collection[str] = ()
) -> list[tuple[str, float]]:
    """Top-``n`` items by inner product with ``user_vector`` [D] or [1, D], minus ``exclude``."""
    query = np.asarray(user_vector, dtype=np.float32).reshape(1, -1)
    hits: list[tuple[str, float]] = retriever.search(query, n, [set(exclude)])[0]
    return hits


def covisitation_candidates(
    covisits: Mapping[str, Sequence[tuple[str, float]]],
    recent: Sequence[str],
    n: int,
    recency_decay: float = 0.8,
    *,
    exclude: Container[str],
) -> list[tuple[str, float]]:
    """Items co-visited with the user's ``recent`` items (oldest first, newest last).

    ``covisits[item]`` lists ``(neighbour, score)``. A neighbour scores
    ``sum_r decay**age(r) * score(r, neighbour)`` where age 0 is the newest recent item, so
    neighbours of what the user just did count most. The recent items ``exclude`` holds (the
    user's seen set) are left out before the top ``n`` is taken (older seen items are left to
    fusion's exclusion); a recent item of a repeatable type only (a replayed track) stays a
    candidate, as on the model path's other sources (a new-user pass found heuristic slates
    never offered one, whatever ``state.repeatable_types`` said).
    """
    if not 0.0 < recency_decay <= 1.0:
        raise ModelError(f"recency_decay must be in (0, 1]; got {recency_decay}")
    totals: dict[str, float] = {}
    total = totals.get  # the loop runs once per neighbour: hundreds per slate
    weight = 1.0
    for item in reversed(recent):
        for neighbour, score in covisits.get(item, ()):
            totals[neighbour] = total(neighbour, 0.0) + weight * score
        weight *= recency_decay
    for item in recent:
        if item in totals and item in exclude:  # a Bloom probe costs microseconds: only if needed
            del totals[item]
    return Ranked(_top(totals.items(), n))


def trending_candidates(trending: Sequence[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` highest-scoring ``(item, score)`` pairs of the trending statistics."""
    return _top(list(trending), n)


def fuse(
    sources: Mapping[str, Hits],
    n: int,
    *,
    weights: Mapping[str, float] | None = None,
    exclude: Container[str] = frozenset(),
    method: Literal["rrf", "minmax"] = "rrf",
    rrf_k: float = RRF_K,
) -> list[Candidate]:
    """Fuse named source lists into the top-``n`` candidates (scoring in the module docstring).

    ``weights`` default to 1.0 per source; a source missing from ``weights`` gets 1.0.
    ``exclude`` is only probed with ``in`` (a set, or a user's bounded ``SeenSet``, which cannot
    be listed), so pass something whose ``in`` is fast.
    """
    fused = fuse_ranked(sources, n, weights=weights, exclude=exclude, method=method, rrf_k=rrf_k)
    return [fused.candidate(item_id) for item_id, _ in fused.ranked]


@dataclass(frozen=True)
class Fused:
    """``fuse`` without a :class:`Candidate` per item: the top ``(item, score)`` pairs, best
    first, and each source's weighted contributions, for the provenance of the few items a
    slate keeps (``candidate``)."""

    ranked: list[tuple[str, float]]
    scores: Mapping[str, float]
    parts: Mapping[str, Mapping[str, float]]

    def main_source(self, item_id: str) -> str:
        """``candidate(item_id).sources[0]``: the source that gave the item most (ties: the
        smaller name), without building the candidate."""
        best, most = "", -math.inf
        for name, part in self.parts.items():
            value = part.get(item_id)
            if value is not None and (value > most or (value == most and name < best)):
                best, most = name, value
        return best

    def candidate(self, item_id: str) -> Candidate:
        parts = self.parts
        contributions = {name: part[item_id] for name, part in parts.items() if item_id in part}
        return Candidate(
            item_id=item_id,
            score=self.scores[item_id],
            sources=tuple(sorted(contributions, key=lambda s: (-contributions[s], s))),
            contributions=contributions,
        )


def fuse_ranked(
    sources: Mapping[str, Hits],
    n: int,
    *,
    weights: Mapping[str, float] | None = None,
    exclude: Container[str] = frozenset(),
    method: Literal["rrf", "minmax"] = "rrf",
    rrf_k: float = RRF_K,
) -> Fused:
    """What :func:`fuse` computes, before any :class:`Candidate` is built."""
    parts: dict[str, dict[str, float]] = {}  # per source: item -> weighted contribution
    scores: dict[str, float] = {}
    for name, hits in sources.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        if weight < 0:
            raise ModelError(f"fusion weight of source {name!r} is {weight}; use a weight >= 0")
        normalised = (
            _rrf(hits, exclude, rrf_k)
            if method == "rrf"
            else _normalise(_dedupe([(i, s) for i, s in hits if i not in exclude]), method)
        )
        part = parts[name] = {i: weight * v for i, v in normalised.items()}
        for item_id, contribution in part.items():
            scores[item_id] = scores.get(item_id, 0.0) + contribution
    return Fused(_top(scores.items(), n), scores, parts)


@dataclass(frozen=True)
class SharedList:
    """A ranked source every slate fuses alike (the trending list), its items in order and
    each item's position; made once per change of the list."""

    hits: Ranked
    items: list[str]
    position: Mapping[str, int]

    @classmethod
    def of(cls, hits: Ranked) -> SharedList:
        items = [item for item, _ in hits]
        return cls(hits, items, {item: p for p, item in enumerate(items)})


@functools.cache
def _reciprocal_ranks(rrf_k: float, n: int) -> list[float]:
    """``1.0 / (rrf_k + rank)`` for ranks 1..n, as ``_rrf`` computes each."""
    return [1.0 / (rrf_k + rank) for rank in range(1, n + 1)]


def fuse_rrf_shared(
    own: tuple[str, Hits],
    shared: tuple[str, SharedList],
    n: int,
    depth: int,
    *,
    weights: Mapping[str, float],
    exclude: Container[str],
    rrf_k: float = RRF_K,
) -> tuple[Fused, list[str]]:
    """``fuse_ranked`` of the sources ``{own, shared}`` (in that order) by RRF, and the shared
    list's first ``depth`` items not excluded; the same top ``n`` and provenance without
    scoring every item of the shared list for every slate.

    Why the top is the same: an item only the shared list holds scores its shared part alone,
    which falls strictly with its eligible rank (for a weight of at least the smallest normal
    float; else this falls back to ``fuse_ranked``), so none past the first ``n`` eligible can
    outrank those ``n``. So the shared list is scored down to its ``max(n, depth)``-th eligible
    item, plus the items of ``own`` it holds further down, whose eligible ranks follow from
    the positions the user excludes (found from the excluded items themselves when they are
    the shorter collection). The returned ``Fused`` holds the scores and parts of those items
    only; every item of the top ``n`` is among them.
    """
    (own_name, own_hits), (shared_name, shared_list) = own, shared
    hits, position = shared_list.hits, shared_list.position
    shared_weight = weights.get(shared_name, 1.0)
    if shared_weight < sys.float_info.min:  # equal parts would tie by item id: fuse them all
        sources = {own_name: own_hits, shared_name: hits}
        fused = fuse_ranked(sources, n, weights=weights, exclude=exclude, rrf_k=rrf_k)
        eligible = [item for item, _ in hits if item not in exclude][:depth]
        return fused, eligible
    own_weight = weights.get(own_name, 1.0)
    if own_weight < 0:
        raise ModelError(f"fusion weight of source {own_name!r} is {own_weight}; use a weight >= 0")
    own_part = {item: own_weight * v for item, v in _rrf(own_hits, exclude, rrf_k).items()}
    if isinstance(exclude, Collection) and len(exclude) < len(hits):
        skipped = sorted(position[item] for item in exclude if item in position)
    else:
        skipped = [p for p, (item, _) in enumerate(hits) if item in exclude]
    skipped_set = set(skipped)
    wanted = max(n, depth)
    # The first ``wanted`` eligible items lie within the first ``wanted + len(skipped)``.
    head = shared_list.items[: wanted + len(skipped)]
    if skipped:
        head = [item for p, item in enumerate(head) if p not in skipped_set]
    head = head[:wanted]
    reciprocal = _reciprocal_ranks(rrf_k, len(hits))
    shared_part = dict(zip(head, map(shared_weight.__mul__, reciprocal), strict=False))
    eligible = head[:depth]
    for item in own_part:
        p = position.get(item, -1)
        if p >= 0 and p not in skipped_set and item not in shared_part:
            shared_part[item] = shared_weight * reciprocal[p - bisect.bisect_left(skipped, p)]
    scores = dict(own_part)  # 0.0 + part, as fuse_ranked sums them
    for item, contribution in shared_part.items():
        scores[item] = scores.get(item, 0.0) + contribution
    parts = {own_name: own_part, shared_name: shared_part}
    return Fused(_top(scores.items(), n), scores, parts), eligible


def explain(
    recommended: Sequence[Candidate],
    history: Sequence[str],
    vectors: Mapping[str, np.ndarray] | None,
) -> dict[str, Reason]:
    """Reason per recommended item: the history item with the highest cosine similarity.

    ``vectors`` maps item id -> vector [D]; items or histories without vectors fall back to the
    candidate's strongest source. A candidate never explains itself.
    """
    reasons = {c.item_id: Reason(source=c.sources[0] if c.sources else "") for c in recommended}
    if not vectors:
        return reasons
    known_history = list(dict.fromkeys(h for h in history if h in vectors))
    explainable = [c for c in recommended if c.item_id in vectors]
    if not known_history or not explainable:
        return reasons
    hist = _unit_rows(np.stack([np.asarray(vectors[h], np.float32) for h in known_history]))
    cand = _unit_rows(np.stack([np.asarray(vectors[c.item_id], np.float32) for c in explainable]))
    sims = cand @ hist.T  # [C, H] cosine similarities
    column = {hist_id: col for col, hist_id in enumerate(known_history)}
    for row, candidate in enumerate(explainable):
        if candidate.item_id in column:
            sims[row, column[candidate.item_id]] = -np.inf
        best = int(np.argmax(sims[row]))
        if np.isfinite(sims[row, best]):
            reasons[candidate.item_id] = Reason(
                source=reasons[candidate.item_id].source, similar_to=known_history[best]
            )
    return reasons


def _rrf(hits: Hits, excluded: Container[str], rrf_k: float) -> dict[str, float]:
    """``1 / (rrf_k + rank)`` per eligible item, rank 1 for the best (each item at its best)."""
    scores: dict[str, float] = {}
    rank = 0
    for item_id, _ in hits if isinstance(hits, Ranked) else ranked(hits):
        if item_id not in excluded:
            rank += 1
            scores[item_id] = 1.0 / (rrf_k + rank)
    return scores


def _normalise(hits: Hits, method: str) -> dict[str, float]:
    if method != "minmax":
        raise ModelError(f"unknown fusion method {method!r}; use 'rrf' or 'minmax'")
    if not hits:
        return {}
    values = [s for _, s in hits]
    low, high = min(values), max(values)
    if high == low:
        return {item_id: 1.0 for item_id, _ in hits}
    return {item_id: (s - low) / (high - low) for item_id, s in hits}


def _dedupe(hits: Hits) -> list[tuple[str, float]]:
    """Keep each item once, with its best score (a source may list an item twice)."""
    # In ascending score order the best score of an item is the last one the dict keeps.
    return list(dict(sorted(hits, key=itemgetter(1))).items())


def _ranked(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(item, score)`` pairs by score, best first, ties by item id (unique ids)."""
    ranked = sorted(pairs, key=itemgetter(0))
    ranked.sort(key=itemgetter(1), reverse=True)  # stable: equal scores stay in id order
    return ranked


def _top(pairs: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` best of ``pairs`` in ``_ranked`` order (unique ids)."""
    pairs = list(pairs)
    if 0 < n < len(pairs) // 2:
        # Sorting every pair twice was most of a slate's co-visitation time (1,000 neighbours
        # for 100 kept): only pairs scoring at least the n-th best score can be among them.
        cut = heapq.nlargest(n, [score for _, score in pairs])[-1]
        pairs = [pair for pair in pairs if pair[1] >= cut]
    return _ranked(pairs)[:n]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)
