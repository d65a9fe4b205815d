"""Model-based slates: encoder -> FAISS -> ranking -> policy rerank; hot swap and cold start.

One batch reads ``holder.current()`` once, so every slate of the batch is computed by one model
and one index and is stamped with that model's version; a swap lands between batches.

Per user the candidates come from three sources: the top ``serving.candidates`` items by dot
product with the user vector (seen items excluded inside FAISS), the co-visitation neighbours of
the user's last items, and the trending items; the learned ranker (stream/ranker.py) scores them,
or reciprocal rank fusion (index/candidates.py). The ranked list goes to the policy
(models/policy/) with each candidate's score as relevance, its item vector, trending score as
popularity and freshness 1.0 for items added after the model was trained. Each slate item's
reason is the history item most similar to it (cosine of item vectors), else its source.

A batch is computed in array form where it can be: one encoder call and one FAISS search for
all users, each user's candidates gathered from the model's item matrix
(stream/item_vectors.py) into a ``CandidateSet``, and one ``rerank_batch`` call for the batch
(the Plackett-Luce walk runs as one set of array operations per step for all users with as many
candidates). Only the fused ``Candidate`` objects of the items a slate keeps are built, for
their reasons. The slates are those the one-user-at-a-time path gave
(tests/unit/stream/test_model_builder.py compares them).

Cold start (stream/cold_start.py): a catalog record for an item the index lacks gets a text
vector in the item space and joins the index, typically within tens of milliseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamrec.errors import ModelError
from streamrec.index.candidates import (
    COVISITATION,
    EMBEDDING,
    TRENDING,
    Fused,
    Hits,
    covisitation_candidates,
    explain,
    fuse_ranked,
)
from streamrec.index.config import IndexSettings
from streamrec.index.swap import ServingSnapshot, SnapshotHolder
from streamrec.models.config import PolicySettings
from streamrec.models.policy.rerankers import make_reranker
from streamrec.models.policy.slate import (
    CandidateSet,
    FloatArray,
    Request,
    Reranker,
    Slate,
    UserContext,
    unit_rows,
)
from streamrec.models.policy.stochastic import StochasticReranker, policy_weights
from streamrec.stream.catalog import Unservable, excluding
from streamrec.stream.cold_start import ColdStart, item_text_of
from streamrec.stream.config import ServingSettings
from streamrec.stream.contract import Item, SlateItem
from streamrec.stream.fusion import Weights, source_lists
from streamrec.stream.item_vectors import ItemVectors
from streamrec.stream.ranker import (
    LearnedRanker,
    candidate_features,
    make_ranker,
    ranker_figures_of,
)
from streamrec.stream.served_model import ServedModel, load_snapshot

if TYPE_CHECKING:
    from streamrec.stream.refresh import BuiltBatch, RefreshInput, SlateBuilder

log = logging.getLogger(__name__)
RECENT_FOR_POLICY = 10  # the user's newest items the policy's novelty and critic compare with


class ModelBuilder:
    """SlateBuilder of the model path (see module docstring); thread-safe for one caller."""

    def __init__(
        self,
        holder: SnapshotHolder[ServedModel],
        serving: ServingSettings,
        policy: PolicySettings,
        weights: Callable[[], Weights],
        reranker: Reranker | None = None,
        ranker: LearnedRanker | None = None,
        unservable: Callable[[], Container[str]] = frozenset,
    ) -> None:
        self.holder = holder
        self.unservable = unservable  # what the catalog lets no slate show (stream/catalog.py)
        self.serving = serving
        self.weights = weights  # the fusion weights in use (stream/fusion.py)
        self.reranker = reranker or make_reranker(policy)
        self.ranker = ranker  # None: weighted reciprocal rank fusion

    def build(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch:
        from streamrec.stream.refresh import BuiltBatch

        snap = self.holder.current()
        t0 = time.perf_counter()
        users = snap.encoder.encoder.encode_states([entry.state for entry in batch])  # [B, D]
        t1 = time.perf_counter()
        listed = [entry.state.seen_items() for entry in batch]
        hits = snap.index.search(users, self.serving.candidates, listed)
        t2 = time.perf_counter()
        weights, unservable = self.weights(), self.unservable()
        table = snap.encoder.vectors.table()  # once: cold start may add items meanwhile
        requests, fused, lists = [], [], []
        for row, (entry, found) in enumerate(zip(batch, hits, strict=True)):
            # FAISS left out the seen items the state can list; the seen set leaves out the rest.
            seen = excluding(entry.state.seen.probe(), unservable)
            sources = self._sources(entry, found, seen)
            if self.ranker is None:
                ranked = fuse_ranked(
                    sources, self.serving.candidates, weights=weights, exclude=seen
                )
            else:
                ranked = self._learned(entry, sources, seen, users[row], table)
            requests.append(_request(entry, ranked.ranked, table, snap.encoder.cold_items))
            fused.append(ranked)
            lists.append(source_lists(sources, seen, self.serving.fusion.depth))
        t3 = time.perf_counter()
        policy_slates = self.reranker.rerank_batch(requests, slate_size)
        t4 = time.perf_counter()
        slates = [
            _published(slate, chosen, entry.state.history(), snap.encoder.vectors)
            for slate, chosen, entry in zip(policy_slates, fused, batch, strict=True)
        ]
        timing = {
            "encode_ms": (t1 - t0) * 1e3,
            "search_ms": (t2 - t1) * 1e3,
            "fuse_ms": (t3 - t2) * 1e3,
            "rerank_ms": (t4 - t3) * 1e3,
            "explain_ms": (time.perf_counter() - t4) * 1e3,
        }
        version = self.reranker.version
        return BuiltBatch(slates, snap.model_version, version, timing, policy_slates, lists)

    def observe(self, user_id: str, item_id: str) -> None:
        """The user's next event, for the learned ranker (on the event loop)."""
        if self.ranker is not None:
            self.ranker.observe(user_id, item_id)

    def _learned(
        self,
        entry: RefreshInput,
        sources: dict[str, Hits],
        seen: Container[str],
        user: np.ndarray,
        table: tuple[dict[str, int], np.ndarray],
    ) -> Fused:
        """The candidates ranked by the learned ranker, whose features are remembered for the
        user's next event."""
        assert self.ranker is not None
        rows, matrix = table
        history = entry.state.history()
        known = [rows[h] for h in history[-self.serving.ranker.recent_items :] if h in rows]
        recent = unit_rows(matrix[known].astype(np.float64)) if known else None

        def model(items: list[str]) -> np.ndarray:
            found = [rows.get(i, -1) for i in items]
            vectors = matrix[[max(r, 0) for r in found]].astype(np.float64)
            columns = np.zeros((len(items), 4))
            columns[:, 0] = vectors @ user
            if recent is not None:
                cosines = unit_rows(vectors) @ recent.T  # [n, recent]
                columns[:, 1], columns[:, 2] = cosines[:, -1], cosines.mean(axis=1)
                columns[:, 3] = cosines.max(axis=1)
            columns[np.array(found) < 0] = 0.0
            return columns

        last = dict(entry.covisits.get(history[-1], ())) if history else {}
        items, features = candidate_features(sources, last, model, seen)
        # Remembered here, in the model thread: the event loop only pops entries (observe), and
        # each OrderedDict operation is atomic under the GIL.
        self.ranker.remember(entry.pending.user_id, items, features)
        return self.ranker.rank(items, features, self.serving.candidates)

    def _sources(self, entry: RefreshInput, found: Hits, seen: Container[str]) -> dict[str, Hits]:
        history = entry.state.distinct_history()
        serving = self.serving
        return {
            EMBEDDING: found,
            COVISITATION: covisitation_candidates(
                entry.covisits, history, serving.candidates, serving.covisit_decay, exclude=seen
            ),
            TRENDING: entry.trending,
        }


def _request(
    entry: RefreshInput,
    ranked: list[tuple[str, float]],
    table: tuple[dict[str, int], np.ndarray],
    cold_items: set[str],
) -> Request:
    """The policy's view of one user: the fused candidates the model has vectors for, as
    arrays, and the vectors of the user's recent items."""
    rows, matrix = table
    ranked = [(item_id, score) for item_id, score in ranked if item_id in rows]
    ids = [item_id for item_id, _ in ranked]
    vectors = matrix[[rows[i] for i in ids]].astype(np.float64)
    popularity = dict(entry.trending)
    candidates = CandidateSet(
        item_ids=ids,
        relevance=np.array([score for _, score in ranked], dtype=np.float64),
        units=unit_rows(vectors) if ids else np.zeros((0, 0)),
        popularity=np.array([popularity.get(i, 0.0) for i in ids], dtype=np.float64),
        freshness=np.array([1.0 if i in cold_items else 0.0 for i in ids], dtype=np.float64),
    )
    return _context(entry, rows, matrix), candidates


def _context(entry: RefreshInput, rows: dict[str, int], matrix: np.ndarray) -> UserContext:
    """The user's newest ``RECENT_FOR_POLICY`` items with vectors, their ages and the time since
    the previous event (the previous visit for the critic: a slate answers each event)."""
    recent = entry.state.recent
    known = [(rows[item], ts) for item, ts, _ in recent[-RECENT_FOR_POLICY:] if item in rows]
    if not known:
        return UserContext(entry.pending.user_id, np.zeros((0, 0)))
    newest = recent[-1][1]
    since = (newest - recent[-2][1]) / 1000.0 if len(recent) > 1 else None
    ages = np.array([(newest - ts) / 1000.0 for _, ts in known], dtype=np.float64)
    return UserContext(entry.pending.user_id, matrix[[row for row, _ in known]], ages, since)


def _published(
    slate: Slate, fused: Fused, history: list[str], vectors: ItemVectors
) -> list[SlateItem]:
    """The slate as published: each item with its reason (models/policy gives scores only)."""
    reasons = explain([fused.candidate(i.item_id) for i in slate.items], history, vectors)
    return [
        SlateItem(
            item_id=i.item_id,
            score=round(float(i.score), 6),
            propensity=float(i.propensity),
            reason=reasons[i.item_id].label,
        )
        for i in slate.items
    ]


class ModelService(Protocol):
    """What the worker asks of its model, in this process (``ModelServer``) or in a child
    process (stream/model_process.py)."""

    @property
    def builder(self) -> SlateBuilder | None: ...

    @property
    def model_version(self) -> str | None: ...

    @property
    def index_size(self) -> int | None: ...

    def load(self, checkpoint: Path, catalog: dict[str, Item]) -> str: ...

    def add_items(self, items: list[Item]) -> int: ...

    def set_policy(self, weights: FloatArray, version: str) -> None: ...

    def ranker_figures(self) -> dict[str, object] | None: ...

    def set_ranker(self, weights: Mapping[str, float], updates: int) -> None: ...

    def set_unservable(self, unservable: Unservable) -> None: ...


class ModelServer:
    """Owns the serving snapshot: initial load, hot swap to announced versions, cold start."""

    def __init__(
        self,
        serving: ServingSettings,
        policy: PolicySettings,
        index: IndexSettings,
        device: str,
        weights: Callable[[], Weights],
    ) -> None:
        self.serving, self.policy, self.index, self.device = serving, policy, index, device
        self.weights = weights
        self.holder: SnapshotHolder[ServedModel] | None = None
        self.cold: ColdStart | None = None
        self.builder: ModelBuilder | None = None
        self._policy: tuple[FloatArray, str] | None = None
        self._ranker: tuple[Mapping[str, float], int] | None = None
        self._unservable = Unservable(frozenset(), None)  # until the catalog says

    def set_unservable(self, unservable: Unservable) -> None:
        """What the catalog lets no slate show (a frozen copy), from the next batch on."""
        self._unservable = unservable

    def set_ranker(self, weights: Mapping[str, float], updates: int) -> None:
        """Serve the learned ranker from weights fitted before (``ranker_figures``: a restart's
        saved ones); kept for a model loaded later. Unusable weights are logged and dropped."""
        self._ranker = (weights, updates)
        ranker = self.builder.ranker if self.builder is not None else None
        if ranker is not None:
            try:
                ranker.restore(weights, updates)
            except ValueError as exc:
                log.warning("learned ranker starts afresh: %s", exc)

    def set_policy(self, weights: FloatArray, version: str) -> None:
        """Serve the learner's policy (weights [F], version); kept for a model loaded later.

        Only the stochastic reranker has learnable weights; with a fixed reranker this is a
        no-op apart from remembering them. ConfigError for weights the policy cannot use, and
        they are not kept: every later model load would fail on them.
        """
        self._policy = (policy_weights(weights), version)
        reranker = self.builder.reranker if self.builder is not None else None
        if isinstance(reranker, StochasticReranker):
            reranker.set_params(weights, version)

    @property
    def model_version(self) -> str | None:
        return self.holder.current().model_version if self.holder else None

    @property
    def index_size(self) -> int | None:
        return self.holder.current().index.size if self.holder else None

    def add_items(self, items: list[Item]) -> int:
        """Cold-start the items the index lacks (none before a model is loaded)."""
        return self.cold.add(items) if self.cold is not None else 0

    def ranker_figures(self) -> dict[str, object] | None:
        """The learned ranker's figures once the model path serves with one; before, the
        weights it was given to start from."""
        ranker = self.builder.ranker if self.builder is not None else None
        if ranker is None and self._ranker is not None:
            return ranker_figures_of(self._ranker)
        return ranker.figures() if ranker is not None else None

    def load(self, checkpoint: Path, catalog: dict[str, Item]) -> str:
        """Serve ``checkpoint``: the first load, or an atomic swap from the current model.

        Blocking (loads weights, builds the index); call it from a worker thread. Catalog items
        the new model does not know get text vectors through the new model's projection; a
        model that cannot give them any is refused before it serves (ModelError), so what
        serves is always what ``model_version`` says.
        """
        snapshot = load_snapshot(checkpoint, self.index, self.device)
        _check_cold_start(snapshot, catalog)
        if self.holder is None:
            holder = SnapshotHolder(snapshot)
            self.cold = ColdStart(holder)
            self.builder = ModelBuilder(
                holder,
                self.serving,
                self.policy,
                self.weights,
                ranker=make_ranker(self.serving),
                unservable=lambda: self._unservable,
            )
            if self._policy is not None:
                self.set_policy(*self._policy)
            if self._ranker is not None:
                self.set_ranker(*self._ranker)
            self.holder = holder  # last: model_version reports the model once it can serve
            self.cold.text_encoder()  # load now, so the first new item does not wait for it
        else:
            ticket = self.holder.begin_rebuild()
            cold = self.cold
            assert cold is not None  # set together with the holder

            def reencode(item_ids: Sequence[str]) -> np.ndarray:
                texts = [item_text_of(catalog[i]) if i in catalog else i for i in item_ids]
                vectors: np.ndarray = snapshot.encoder.encoder.text_vectors_to_item_space(
                    cold.text_encoder().embed(texts)
                )
                return vectors

            self.holder.swap(snapshot, ticket, reencode=reencode)
        if self.cold is not None and catalog:
            try:
                self.cold.add(list(catalog.values()))
            except Exception as exc:  # the model serves: a failed load must not be reported
                log.error("model %s serves, but cold start failed: %r", snapshot.model_version, exc)
        return str(snapshot.model_version)


def _check_cold_start(snapshot: ServingSnapshot[ServedModel], catalog: Mapping[str, Item]) -> None:
    encoder = snapshot.encoder.encoder
    unknown = sum(item not in snapshot.index for item in catalog)
    if unknown and not encoder.has_projection:
        raise ModelError(
            f"checkpoint {snapshot.model_version} has no text projection, so it cannot serve "
            f"the {unknown} catalog items it was not trained on; train it with text (the default)"
        )
