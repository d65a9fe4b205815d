"""The refresher: dirty users in, slates out on the recommendations topic.

Ingest marks a user dirty after each applied event. The refresher collects dirty users until
``serving.batch_size`` of them are waiting or the oldest has waited ``serving.max_wait_ms``,
then answers the whole batch in one call of the slate builder. Several events of one user that
arrive before their batch leaves are coalesced: one slate answers them all and lists their ids
in ``trigger_event_ids``; every applied event is answered by exactly one slate.

The model builder's heavy part (encoder, FAISS, reranking) runs in the model process
(stream/model_process.py), waited for by a worker thread, or in that thread itself with
``serving.model_process=false``; either way the event loop keeps polling Kafka and heartbeating
while a batch is computed. Table reads happen on the loop before the thread starts, because
faust tables are not thread-safe. The heuristic builder
is cheap pure Python and runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamrec.index.candidates import (
    COVISITATION,
    TRENDING,
    Ranked,
    SharedList,
    covisitation_candidates,
    fuse_ranked,
    fuse_rrf_shared,
)
from streamrec.models.policy.rewards import Impression
from streamrec.models.policy.slate import Slate
from streamrec.stream.catalog import NO_CATALOG, CatalogView, catalog_fill, excluding
from streamrec.stream.config import ServingSettings
from streamrec.stream.contract import Event, SlateItem, encode_recommendation
from streamrec.stream.feedback import impression_of
from streamrec.stream.fusion import FusionLearner, Weights, source_lists
from streamrec.stream.item_stats import Neighbours
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.state import UserState

log = logging.getLogger(__name__)
LATEST_SLATES_KEPT = 100_000
LATENCY_WINDOW = 50_000


@dataclass
class Pending:
    """A dirty user waiting for its slate, with every event it answers.

    ``state`` is the user's state after the newest of those events, as ingest left it: the
    refresher uses it as is instead of reading and decoding the table entry again.
    """

    user_id: str
    partition: int
    state: UserState
    trigger_ids: list[str] = field(default_factory=list)
    broker_ts: list[float] = field(default_factory=list)  # seconds, producer/broker time
    marked_at: float = field(default_factory=time.perf_counter)


@dataclass
class RefreshInput:
    """What a builder needs about one user, read from tables on the event loop."""

    pending: Pending
    state: UserState
    covisits: dict[str, Neighbours]
    trending: Neighbours


@dataclass
class BuiltBatch:
    """Slates for a batch (same order), the versions that made them, stage timings (ms)."""

    slates: list[list[SlateItem]]
    model_version: str
    policy_version: str
    timing_ms: dict[str, float]
    policy_slates: list[Slate] | None = None  # the policy's own slates (features for learning)
    sources: list[dict[str, list[str]]] | None = None  # per slate: each source's top items


class SlateBuilder(Protocol):
    """Turns a batch of refresh inputs into slates; runs in a worker thread."""

    def build(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch: ...

    def observe(self, user_id: str, item_id: str) -> None:
        """The user's next event, for a builder that learns from it (on the event loop)."""


@runtime_checkable
class RemoteBuilder(SlateBuilder, Protocol):
    """A builder whose work runs in another process: awaited on the loop, not in a thread."""

    async def build_async(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch: ...


class HeuristicBuilder:
    """Co-visitation and trending fused by weighted reciprocal rank (index/candidates.py, the
    weights learned by stream/fusion.py); no model. A slate they leave short is filled with the
    catalog's newest unseen items (``serving.catalog_fill``), reason ``source:catalog``.

    Deterministic, so every propensity is 1.0. Seen items are never recommended.
    """

    def __init__(
        self,
        weights: Callable[[], Weights],
        depth: int,
        decay: float,
        catalog: CatalogView | None = None,
    ) -> None:
        self.weights = weights
        self.depth = depth  # of the source lists handed back for the fusion learner
        self.decay = decay  # of each recent item's co-visitation neighbours (serving.covisit_decay)
        self.catalog = catalog if catalog is not None else NO_CATALOG
        self._trending: SharedList | None = None

    def build(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch:
        started = time.perf_counter()
        weights = self.weights()
        slates, lists = [], []
        for entry in batch:
            items, sources = self._one(entry, slate_size, weights)
            slates.append(items)
            lists.append(sources)
        timing = {"fuse_ms": (time.perf_counter() - started) * 1e3}
        return BuiltBatch(slates, "none", "heuristic-1", timing, sources=lists)

    def observe(self, user_id: str, item_id: str) -> None:
        """Nothing to learn here: the fusion weights learn in ``Refresher.mark``."""

    def _one(
        self, entry: RefreshInput, slate_size: int, weights: Weights
    ) -> tuple[list[SlateItem], dict[str, list[str]]]:
        history = entry.state.distinct_history()
        seen = excluding(entry.state.seen.probe(), self.catalog.unservable())
        covisited = covisitation_candidates(
            entry.covisits, history, self.depth, self.decay, exclude=seen
        )
        trending = self._shared(entry.trending)
        if trending is None:
            sources = {COVISITATION: covisited, TRENDING: entry.trending}
            fused = fuse_ranked(sources, slate_size, weights=weights, exclude=seen)
            lists = source_lists(sources, seen, self.depth)
        else:
            fused, eligible = fuse_rrf_shared(
                (COVISITATION, covisited),
                (TRENDING, trending),
                slate_size,
                self.depth,
                weights=weights,
                exclude=seen,
            )
            lists = source_lists({COVISITATION: covisited}, seen, self.depth)
            lists[TRENDING] = eligible
        # What ``explain`` gives without item vectors (the item's main source), and records the
        # worker builds from its own values, so not validated again: a Candidate, a Reason and
        # a validated SlateItem per item were 8% of the worker's samples at 200,000 users.
        items = [
            SlateItem.model_construct(
                item_id=item_id,
                score=round(score, 6),
                propensity=1.0,
                reason=f"source:{fused.main_source(item_id)}",
            )
            for item_id, score in fused.ranked
        ]
        if len(items) < slate_size:
            items += catalog_fill(self.catalog.newest(), seen, items, slate_size - len(items))
        return items, lists

    def _shared(self, trending: Neighbours) -> SharedList | None:
        """The trending list prepared for fusion, once per list: the replica hands out one
        list object until its board re-ranks (stream/stats.py)."""
        if not isinstance(trending, Ranked):
            return None
        if self._trending is None or self._trending.hits is not trending:
            self._trending = SharedList.of(trending)
        return self._trending


class StatsSource(Protocol):
    """The item statistics a slate is built from (stream/item_stats.py)."""

    def covisits(self, items: Sequence[str], partition: int) -> dict[str, Neighbours]: ...

    def trending(self, partition: int) -> Neighbours: ...


def refresh_input(pending: Pending, stats: StatsSource, serving: ServingSettings) -> RefreshInput:
    """What a builder gets for ``pending``: its state, the co-visitation neighbours of its last
    ``serving.covisit_history`` distinct items and the trending items (also the offline
    replay's)."""
    recent = pending.state.distinct_history()[-serving.covisit_history :]
    covisits = stats.covisits(recent, pending.partition)
    return RefreshInput(pending, pending.state, covisits, stats.trending(pending.partition))


# (key, value) -> sent: the recommendations topic's send.
SendFn = Callable[[bytes, bytes], Awaitable[Any]]
# (impression, partition) -> stored: Feedback.store.
StoreFn = Callable[[Impression, int], bool]


class Refresher:
    """Collects dirty users and publishes their slates (see module docstring)."""

    def __init__(
        self,
        serving: ServingSettings,
        stats: StatsSource,
        model: Callable[[], SlateBuilder | None],
        send: SendFn,
        store: StoreFn,
        fusion: FusionLearner,
        metrics: WorkerMetrics,
        catalog: CatalogView | None = None,
    ) -> None:
        self.serving = serving
        self.stats = stats
        self.model = model  # the model path's builder once a model is loaded, else None
        self.send = send
        self.store = store
        self.metrics = metrics
        self.fusion = fusion
        self.heuristic = HeuristicBuilder(
            lambda: fusion.weights, serving.fusion.depth, serving.covisit_decay, catalog
        )
        self.published = 0
        self.versions: dict[str, str] = {}  # of the newest slate: what /stats says slates carry
        self.dirty: OrderedDict[str, Pending] = OrderedDict()
        # Encoded slates: bytes are invisible to the garbage collector, while 100,000 slate
        # objects made its full collections long enough to show in the p99 latency.
        self.latest: OrderedDict[str, bytes] = OrderedDict()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._wake = asyncio.Event()

    def mark(self, event: Event, partition: int, broker_ts: float | None, state: UserState) -> None:
        """Record that ``event`` changed its user's ``state`` and needs an answer."""
        self.fusion.observe(event.user_id, event.item_id)
        model = self.model()
        if model is not None:
            model.observe(event.user_id, event.item_id)
        pending = self.dirty.get(event.user_id)
        if pending is None:
            pending = self.dirty[event.user_id] = Pending(event.user_id, partition, state)
        else:
            pending.state = state
        pending.trigger_ids.append(event.event_id)
        pending.broker_ts.append(broker_ts if broker_ts is not None else time.time())
        self._wake.set()

    async def run(self) -> None:
        """Batch loop; runs for the worker's lifetime."""
        while True:
            await self._wake.wait()
            await self._fill_or_timeout()
            batch = self._take()
            if not self.dirty:
                self._wake.clear()
            if batch:
                try:
                    await self._answer(batch)
                except Exception:  # a bad batch must not stop the loop; its users re-queue
                    log.exception("refresh of %d users failed; retrying them", len(batch))
                    self._requeue(batch)
                    await asyncio.sleep(0.5)

    def _requeue(self, batch: list[Pending]) -> None:
        """Put a failed batch back; a user marked again meanwhile keeps every event id."""
        for pending in batch:
            newer = self.dirty.pop(pending.user_id, None)
            if newer is not None:
                pending.trigger_ids.extend(newer.trigger_ids)
                pending.broker_ts.extend(newer.broker_ts)
                pending.state = newer.state
            self.dirty[pending.user_id] = pending
        self._wake.set()  # retried without waiting for the users' next events

    async def _fill_or_timeout(self) -> None:
        if not self.dirty:
            return
        oldest = next(iter(self.dirty.values())).marked_at
        deadline = oldest + self.serving.max_wait_ms / 1000.0
        while len(self.dirty) < self.serving.batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.001))

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        while self.dirty and len(batch) < self.serving.batch_size:
            batch.append(self.dirty.popitem(last=False)[1])
        return batch

    async def _answer(self, batch: list[Pending]) -> None:
        metrics = self.metrics
        metrics.batch_size.observe(len(batch))
        metrics.batch_wait_seconds.observe(time.perf_counter() - batch[0].marked_at)
        started = time.perf_counter()
        inputs = [self._input(p) for p in batch]
        gathered = time.perf_counter()
        model = self.model()
        if model is None:
            # Pure Python and fast: a thread would only add hand-offs and contend for the GIL.
            built = self.heuristic.build(inputs, self.serving.slate_size)
        elif isinstance(model, RemoteBuilder):
            built = await model.build_async(inputs, self.serving.slate_size)
        else:
            built = await asyncio.to_thread(model.build, inputs, self.serving.slate_size)
        timing = {"gather_ms": (gathered - started) * 1e3, **built.timing_ms}
        self.versions = {
            "model_version": built.model_version,
            "policy_version": built.policy_version,
        }
        for stage, ms in timing.items():
            metrics.stage_seconds.labels(stage.removesuffix("_ms")).observe(ms / 1e3)
        for entry, lists in zip(inputs, built.sources or [], strict=False):
            self.fusion.remember(entry.pending.user_id, lists)
        done = time.perf_counter()
        for n, (entry, items) in enumerate(zip(inputs, built.slates, strict=True)):
            stages = {
                "wait_ms": (started - entry.pending.marked_at) * 1e3,  # before its batch began
                **timing,
                "publish_ms": (time.perf_counter() - done) * 1e3,  # slates published before it
            }
            rec_id, created_at = await self._publish(entry.pending, items, built, stages)
            if not items:  # nothing shown: no response can join it, nothing to learn from
                continue
            user_id = entry.pending.user_id
            impression = (
                Impression.from_slate(rec_id, user_id, built.policy_slates[n], created_at / 1000)
                if built.policy_slates is not None
                else impression_of(rec_id, user_id, items, built.policy_version, created_at)
            )
            self.store(impression, entry.pending.partition)
        metrics.stage_seconds.labels("publish").observe(time.perf_counter() - done)

    def _input(self, pending: Pending) -> RefreshInput:
        return refresh_input(pending, self.stats, self.serving)

    async def _publish(
        self, pending: Pending, items: list[SlateItem], built: BuiltBatch, timing: dict[str, float]
    ) -> tuple[str, int]:
        """Send the slate's record; its rec_id and publication time (epoch ms)."""
        now = time.time()
        rec_id, created_at = uuid.uuid4().hex, int(now * 1000)
        body = encode_recommendation(
            rec_id,
            pending.user_id,
            items,
            built.model_version,
            built.policy_version,
            pending.trigger_ids,
            created_at,
            {
                **{k: round(v, 3) for k, v in timing.items()},
                "queue_ms": round((time.perf_counter() - pending.marked_at) * 1e3, 3),
            },
        )
        await self.send(pending.user_id.encode(), body)
        for ts in pending.broker_ts:
            latency = max(0.0, now - ts)
            self.latencies.append(latency)
            self.metrics.event_to_rec_seconds.observe(latency)
        self.published += 1
        self.metrics.recommendations.inc()
        self.latest[pending.user_id] = body
        self.latest.move_to_end(pending.user_id)
        if len(self.latest) > LATEST_SLATES_KEPT:
            self.latest.popitem(last=False)
        return rec_id, created_at

    def latency_summary(self) -> dict[str, float | None]:
        """p50/p99 event-to-recommendation latency (ms) over the last answered events."""
        if not self.latencies:
            return {"p50_ms": None, "p99_ms": None, "samples": 0}
        values = np.fromiter(self.latencies, dtype=np.float64) * 1e3
        return {
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
            "samples": len(values),
        }
