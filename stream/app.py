"""The Faust worker, built by ``create_app(settings)``: topics, tables, agents, pages, timers.

Processing guarantee and commits: at-least-once. Faust commits an events offset only after the
agent has finished with that event (and every earlier one of the partition), every
``broker_commit_interval`` seconds. Each event is handled without awaiting anything slow: state
changes are synchronous table writes, and the only awaits are buffered producer sends, so no
event is held open across model work (which would stall commits, faust-streaming #312). Model
work happens in the refresher, off the event path.

Tables (RocksDB by default, changelog topics compacted with no time retention, faust's
default for tables; the first three are read and written through a write-behind cache,
stream/write_behind.py):
    user_state   user_id -> UserState JSON (stream/state.py), bounded per user
    trending     "<partition>|<item>" -> [decayed score, last event ts]  (stream/stats.py)
    covisit      "<partition>|<item>" -> {neighbour: weight}, top-k bounded

Every offset commit and every partition hand-over first flushes the write-behind cache, then
waits until the table writes before it are in Kafka (stream/durability.py: faust alone does
not guarantee either).

On restart the worker restores tables from local RocksDB plus the changelog tail, then resumes
events from the committed offsets; events re-read since the last commit are duplicates by
event_id (stream/state.py) and change nothing.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiohttp import web
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamrec.errors import ContractError
from streamrec.settings import Settings
from streamrec.stream.catalog import Catalog
from streamrec.stream.connection import faust_broker_url, faust_credentials
from streamrec.stream.contract import Event, dead_letter, encode, parse_event
from streamrec.stream.control import ControlListener
from streamrec.stream.durability import drain, flush_before_commit, forget_acks
from streamrec.stream.feedback import Feedback
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.refresh import Refresher, SlateBuilder
from streamrec.stream.serving import ModelServer
from streamrec.stream.state import UserState, apply_event
from streamrec.stream.stats import TrendingBoard, bump_covisit, bump_trending, stat_key
from streamrec.stream.write_behind import CachedTable, WriteBehind

log = logging.getLogger(__name__)


@dataclass
class WorkerCounters:
    """Plain counts for /stats and the demo summary (Prometheus has the same, labelled)."""

    consumed: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    recommendations: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    last_recovery_s: float | None = None


class StreamrecApp:
    """Owns the faust app and every part registered on it (no import-time globals)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics(registry or CollectorRegistry(), settings.metrics.namespace)
        self.counters = WorkerCounters()
        self.app = self._build_app()
        topics = settings.kafka.topics
        raw: dict[str, Any] = {
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": topics.partitions,
        }
        self.events_topic = self.app.topic(topics.name("events"), **raw)
        self.recs_topic = self.app.topic(topics.name("recommendations"), **raw)
        self.deadletter_topic = self.app.topic(topics.name("deadletter"), **raw)
        self.user_state = self._cached_table("user_state")
        self.trending = self._cached_table("trending")
        self.covisit = self._cached_table("covisit")
        # user_state goes last: a flush cut short by a crash can then only over-count the item
        # statistics of its events, never skip them (write_behind.py).
        self.write_behind = WriteBehind(
            [self.trending, self.covisit, self.user_state],
            settings.state.flush_interval_ms / 1000.0,
            lambda: self.app.producer.buffer.size,
            self._observe_flush,
        )
        self.boards: dict[int, TrendingBoard] = {}
        self.sizes: dict[str, int] = {"user_state": 0, "trending": 0, "covisit": 0}
        self._assigned_at = time.perf_counter()
        self._last_read: dict[TP, int | None] = {}
        self.owned: set[int] = set()
        self.model_server = (
            ModelServer(settings.serving, settings.policy, settings.index, settings.encoder.device)
            if settings.serving.mode == "model"
            else None
        )
        self.catalog = Catalog(settings.kafka, self.metrics)
        items_topic = topics.name("items")
        self.catalog.dead_letter = lambda raw, key, exc, partition, offset: self._dead_letter(
            raw, key, exc, items_topic, partition, offset
        )
        self.refresher = Refresher(self)
        self.feedback = Feedback(self)
        self.control = ControlListener(self)
        self._register()

    def _cached_table(self, name: str) -> CachedTable:
        s = self.settings
        table = self.app.Table(
            name, default=None, partitions=s.kafka.topics.partitions, key_type=str
        )
        return CachedTable(table, s.state.cache_entries)

    def _observe_flush(self, written: int, seconds: float) -> None:
        self.metrics.table_writes_flushed.inc(written)
        self.metrics.table_flush_seconds.observe(seconds)

    def _build_app(self) -> faust.App:
        s = self.settings
        return faust.App(
            # The app id names the consumer group and the changelog topics; deriving it from
            # the topic prefix keeps deployments (and tests) that share a cluster apart.
            f"{s.kafka.topics.prefix}worker",
            broker=faust_broker_url(s.kafka),
            broker_credentials=faust_credentials(s.kafka),
            store=s.state.store_url,
            datadir=str(s.state.data_dir),
            topic_partitions=s.kafka.topics.partitions,
            topic_replication_factor=s.kafka.topics.replication_factor,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            # Bounded polls keep each handler loop short so heartbeats are never starved
            # (rebalance storms: robinhood/faust #259, #402).
            broker_max_poll_records=500,
            # Each event writes 3-5 changelog records; without a linger every one of them is its
            # own produce request and socket writes dominate the profile (23% of CPU measured).
            producer_linger_ms=5,
            # Standby replicas double table traffic; a restarted worker replays its changelog.
            table_standby_replicas=0,
            web_enabled=True,
            web_port=s.serving.web_port,
            web_bind=s.serving.web_bind,
            web_in_thread=False,
        )

    # -- registration --------------------------------------------------------------------------

    def _register(self) -> None:
        self.app.agent(self.events_topic, name="ingest")(self._ingest)
        self.app.task(self.catalog.run)
        self.app.task(self.refresher.run)
        self.app.task(self.write_behind.run)
        if self.model_server is not None:
            self.app.task(self.control.run)
            self.catalog.listeners.append(self.control.on_items)
        self.app.timer(5.0)(self._observe)
        # faust's stubs describe View methods and sync signal receivers; it also accepts plain
        # aiohttp handlers and coroutine receivers, which is what these are.
        page = cast(Any, self.app.page)
        page("/metrics")(self._metrics_page)
        page("/stats")(self._stats_page)
        page("/recommendations/{user_id}")(self._recommendation_page)
        for signal, receiver in (
            (self.app.on_partitions_assigned, self._on_assigned),
            (self.app.on_partitions_revoked, self._on_revoked),
            (self.app.on_rebalance_complete, self._on_recovered),
        ):
            connect = cast(Any, signal.connect)
            connect(receiver)

    async def _on_recovered(self, sender: Any, **kwargs: Any) -> None:
        seconds = time.perf_counter() - self._assigned_at
        self.counters.last_recovery_s = round(seconds, 3)
        self.metrics.recovery_seconds.set(seconds)
        # Counting RocksDB keys means iterating them all, a pause of tens of milliseconds on
        # the event loop: done once per rebalance here, then kept up by the writers.
        self.sizes = {name: len(table) for name, table in self._tables().items()}
        # Modules, models and the catalog live as long as the process: 520,000 objects that each
        # full collection would scan again, and faust collects four times per rebalance (200 ms
        # each, measured). Frozen, they are left out of every later collection.
        gc.freeze()
        log.info(
            "tables recovered %.2f s after partition assignment; %d users in local state",
            seconds,
            self.sizes["user_state"],
        )

    def _cached(self) -> dict[str, CachedTable]:
        return {"user_state": self.user_state, "trending": self.trending, "covisit": self.covisit}

    def _tables(self) -> dict[str, Any]:
        return {name: cached.table for name, cached in self._cached().items()}

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        self.owned = set()
        # Every write lands before the next owner restores: buffered ones first, then all acks.
        await self.write_behind.flush()
        await drain(self.app.producer)

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        consumer = self.app.consumer
        flush_before_commit(consumer, self.app.producer, self.write_behind.flush)
        forget_acks(consumer, assigned)
        events = self.events_topic.get_topic_name()
        self.owned = {tp.partition for tp in assigned if tp.topic == events}
        # A partition owned before may have been changed by another worker since.
        await self.write_behind.release(self.owned)
        self._assigned_at = time.perf_counter()
        self._last_read = {}
        # Trending boards are rebuilt from the (recovered) table on first use per partition.
        events = self.events_topic.get_topic_name()
        self.boards = {p: b for p, b in self.boards.items() if TP(events, p) in assigned}

    # -- the event path ------------------------------------------------------------------------

    async def _ingest(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            if message.partition not in self.owned:
                # faust can still hand the agent buffered records of a partition revoked by a
                # rebalance; its table store is closed by then, so applying one would start
                # from an empty state and overwrite the user's changelog entry. The new owner
                # re-reads it from the committed offset.
                self.metrics.revoked_skipped.inc()
                continue
            self.write_behind.remember(event)
            self.counters.consumed += 1
            self.metrics.events_consumed.inc()
            started = time.perf_counter()
            raw = event.value if isinstance(event.value, bytes) else b""
            try:
                parsed = parse_event(raw)
                _check_key(event.key, parsed)
            except ContractError as exc:
                await self._dead_letter(
                    raw, event.key, exc, message.topic, message.partition, message.offset
                )
                continue
            state = self._apply(parsed, message.partition, message.offset)
            if state is not None:
                if parsed.rec_id is not None:
                    self.feedback.on_response(parsed, message.partition)
                self.refresher.mark(parsed, message.partition, message.timestamp, state)
            self.feedback.tick(message.partition)
            self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def _apply(self, event: Event, partition: int, offset: int) -> UserState | None:
        """The user's new state, or None when the event changed nothing (a duplicate)."""
        stored = self.user_state.get(event.user_id, partition)
        if stored is None:
            self.sizes["user_state"] += 1  # a new user cannot be a duplicate: it is written below
        state = UserState.from_json(stored)
        previous = state.history()[-self.settings.state.covisit_window :]
        if not apply_event(state, event, self.settings.state, (partition, offset)):
            self.counters.duplicates += 1
            self.metrics.duplicates.inc()
            # Written again although unchanged (or only the skipped id remembered): after a
            # crash the local store can be ahead of the changelog, because faust puts a value
            # in RocksDB before its changelog record is sent, and a restarted worker trusts its
            # RocksDB. The events it re-reads are what brings the changelog up to date.
            self.user_state.set(event.user_id, state.to_json(), partition)
            return None
        self.user_state.set(event.user_id, state.to_json(), partition)
        self._update_stats(event, partition, previous)
        self.counters.accepted += 1
        self.metrics.events_accepted.inc()
        return state

    def _update_stats(self, event: Event, partition: int, previous: list[str]) -> None:
        s = self.settings.state
        weight = s.event_type_weights.get(event.type, 1.0)
        key = stat_key(partition, event.item_id)
        old = self.trending.get(key, partition)
        self.sizes["trending"] += old is None
        value = bump_trending(old, event.ts, weight, s.trending_half_life_s)
        self.trending.set(key, value, partition)
        self.board(partition).update(event.item_id, value)
        for prev in set(previous) - {event.item_id}:
            prev_key = stat_key(partition, prev)
            neighbours = self.covisit.get(prev_key, partition)
            self.sizes["covisit"] += neighbours is None
            top_k = s.covisit_top_k
            self.covisit.set(
                prev_key, bump_covisit(neighbours, event.item_id, weight, top_k), partition
            )

    def slate_builder(self) -> SlateBuilder | None:
        """The model path once a model is loaded; None means the heuristic path."""
        server = self.model_server
        return server.builder if server is not None else None

    def board(self, partition: int) -> TrendingBoard:
        """The partition's trending board, loaded from the table the first time."""
        board = self.boards.get(partition)
        if board is None:
            s = self.settings.state
            board = TrendingBoard(s.trending_half_life_s, s.trending_size)
            prefix = f"{partition}|"
            board.load(
                (k[len(prefix) :], v)
                for k, v in self.trending.table.items()
                if k.startswith(prefix)
            )
            self.boards[partition] = board
        return board

    async def _dead_letter(
        self, raw: bytes, key: Any, error: ContractError, topic: str, partition: int, offset: int
    ) -> None:
        """Send ``raw`` with its coordinates and reason to the dead-letter topic; count it."""
        record = dead_letter(raw, error, topic, partition, offset)
        log.warning(
            "dead-lettered %s[%s]@%s: %s (%s)", topic, partition, offset, error.message, error.code
        )
        await self.deadletter_topic.send(
            key=key if isinstance(key, bytes) else None, value=encode(record)
        )
        self.counters.dead_lettered += 1
        self.counters.rejected_by_code[error.code] = (
            self.counters.rejected_by_code.get(error.code, 0) + 1
        )
        self.metrics.events_rejected.labels(error.code).inc()
        self.metrics.dead_lettered.inc()

    # -- observation ---------------------------------------------------------------------------

    async def _observe(self) -> None:
        for name, size in self.sizes.items():
            self.metrics.table_entries.labels(name).set(size)
        for name, cached in self._cached().items():
            self.metrics.table_writes_pending.labels(name).set(cached.pending())
        self.metrics.table_entries.labels("catalog").set(len(self.catalog.items))
        consumer: Any = self.app.consumer  # faust keeps no public accessor for read offsets
        events = self.events_topic.get_topic_name()
        for tp in consumer.assignment():
            if tp.topic != events:
                continue
            read = consumer._read_offset.get(tp)
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = highwater - ((read or -1) + 1)
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(lag, 0))
                self._unstick(tp, read, lag)

    def _unstick(self, tp: TP, read: int | None, lag: int) -> None:
        """Resume a partition that has lag but made no progress since the last look.

        faust's flow control drops a partition from the fetch set when its stream buffer fills
        and re-adds it when the buffer drains; across a rebalance the re-add can be lost, and
        the partition then stalls with lag forever (seen in the three-worker test: 26 events
        left unread, commits stuck). Never during table recovery, which pauses event partitions
        on purpose; after it, re-fetching is idempotent here, so resuming is safe.
        """
        previous = self._last_read.get(tp, -2)
        self._last_read[tp] = read
        consumer: Any = self.app.consumer  # flow-control internals, no public API
        tables: Any = self.app.tables
        if self.app.in_recovery or not tables.recovery.completed.is_set():
            return  # recovery pauses event partitions on purpose until tables are restored
        if lag > 0 and previous == read and tp not in consumer._get_active_partitions():
            log.warning("partition %s stalled at offset %s with lag %d; resuming it", tp, read, lag)
            consumer._buffered_partitions.discard(tp)
            consumer.resume_partitions({tp})
            self.metrics.partition_resumes.inc()

    def stats(self) -> dict[str, Any]:
        """Figures for /stats and the demo summary."""
        c = self.counters
        return {
            "events_consumed": c.consumed,
            "events_accepted": c.accepted,
            "duplicates_dropped": c.duplicates,
            "dead_lettered": c.dead_lettered,
            "rejected_by_code": c.rejected_by_code,
            "recommendations_published": c.recommendations,
            "users_in_state": self.sizes["user_state"],
            "partitions": sorted(self.owned),
            "items_in_catalog": len(self.catalog.items),
            "catalog_loaded": self.catalog.loaded,
            "uptime_s": round(time.time() - c.started_at, 1),
            "last_recovery_s": c.last_recovery_s,
            "latency": self.refresher.latency_summary(),
            "model_version": self.model_server.model_version if self.model_server else None,
            "model_swaps": self.control.swaps,
            "feedback": self.feedback.stats(),
            "cold_start": {
                "items_added": self.control.cold_items,
                "last_seconds": self.control.cold_last_s,
            },
        }

    # faust calls a page function with the request alone; aiohttp responses pass through.
    async def _metrics_page(self, request: web.Request) -> web.Response:
        await self._observe()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _stats_page(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _recommendation_page(self, request: web.Request, user_id: str) -> web.Response:
        slate = self.refresher.latest.get(user_id)
        if slate is None:
            return web.json_response(
                {
                    "error": "unknown_user",
                    "message": f"no recommendation for user {user_id!r} yet; "
                    "the worker publishes one after the user's first event on its partitions",
                },
                status=404,
            )
        return web.Response(body=slate, content_type="application/json")


def _check_key(key: Any, event: Event) -> None:
    if key is not None and key != event.user_id.encode():
        raise ContractError(
            "bad_key",
            f"record key {key!r} differs from user_id {event.user_id!r}; events must be keyed by "
            "user_id so one user's events stay in order on one partition",
        )


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> StreamrecApp:
    """Build the worker app from settings (nothing happens at import time)."""
    return StreamrecApp(settings, registry)
