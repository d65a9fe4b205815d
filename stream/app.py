"""The Faust worker, wired by ``create_app(settings)`` from narrow parts (none holds the app).

One event's path: the ``events`` topic -> ``Ingest`` (stream/ingest.py: validate, apply to
``user_state``, count in ``ItemStats``) -> ``Refresher`` (stream/refresh.py: batch dirty users,
build slates by the heuristic or the model path, publish on ``recommendations``) -> ``Feedback``
(stream/feedback.py: store the impression; join responses to it; close it into the online
learner, whose new policy goes to the ``ModelServer``). ``ControlListener`` swaps models,
``Catalog`` follows the items topic, ``Pages`` serves /metrics, /stats and pull requests.

Processing guarantee and commits: at-least-once. Faust commits an events offset only after the
agent has finished with that event (and every earlier one of the partition), every
``broker_commit_interval`` seconds; model work happens in the refresher, off the event path.

Tables (RocksDB by default, changelog topics compacted with no time retention, faust's
default for tables):
    user_state   user_id -> UserState JSON (stream/state.py), bounded per user, read and
                 written through a write-behind cache (stream/write_behind.py)
    impressions  rec_id -> impression and its rewards (stream/impressions.py)
Item statistics (trending, co-visitation) are not a table: every worker keeps a replica of all
traffic's, fed by the item-updates topic (stream/item_stats.py, stream/item_updates.py).

Every offset commit and every partition hand-over first flushes the write-behind cache, then
waits until the table writes before it are in Kafka (stream/durability.py: faust alone does
not guarantee either). On restart the worker restores tables from local RocksDB plus the
changelog tail, then resumes events from the committed offsets; events re-read since the last
commit are duplicates (stream/state.py) and change nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from faust.types import TP
from prometheus_client import CollectorRegistry

from streamrec.settings import Settings
from streamrec.stream.catalog import Catalog
from streamrec.stream.compat import fetch_only_active, forget_acks, on_agent_error
from streamrec.stream.control import ControlListener
from streamrec.stream.deadletter import DeadLetters
from streamrec.stream.durability import drain, flush_before_commit
from streamrec.stream.experience import ExperiencePublisher
from streamrec.stream.faust_app import faust_app
from streamrec.stream.feedback import Feedback
from streamrec.stream.fusion import FusionLearner, Weights
from streamrec.stream.health import count_agent_crashes
from streamrec.stream.ingest import STATE_CODEC, Ingest
from streamrec.stream.item_stats import ItemStats
from streamrec.stream.item_updates import DeltaFollower, DeltaPublisher
from streamrec.stream.lag import LagWatch
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.pages import Pages
from streamrec.stream.refresh import Refresher
from streamrec.stream.resume_hold import ResumeHold
from streamrec.stream.routing import events_router
from streamrec.stream.serving_memory import ServingMemory
from streamrec.stream.state import UserState
from streamrec.stream.threads import thread_roles
from streamrec.stream.topics import IMPRESSIONS, USER_STATE
from streamrec.stream.write_behind import CachedTable, WriteBehind

if TYPE_CHECKING:
    from streamrec.stream.serving import ModelService

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


class StreamrecApp:
    """The faust app and its parts; wiring only (each part gets what it uses)."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None,
        events_partitions: int | None,
    ) -> None:
        s = settings
        self.settings = s
        self.metrics = WorkerMetrics(registry or CollectorRegistry(), s.metrics.namespace)
        self.started_at = time.time()
        self.last_recovery_s: float | None = None
        self.owned: set[int] = set()
        self.app = faust_app(s)
        topics = s.kafka.topics
        raw: dict[str, Any] = {**RAW, "partitions": topics.partitions}
        self.events_topic = self.app.topic(topics.name("events"), **raw)
        recs_topic = self.app.topic(topics.name("recommendations"), **raw)
        deadletter_topic = self.app.topic(topics.name("deadletter"), **raw)
        updates_topic = self.app.topic(topics.name("item_updates"), **raw)
        experience_topic = self.app.topic(topics.name("experience"), **raw)
        self.deltas = DeltaPublisher(lambda key, value: updates_topic.send(key=key, value=value))
        self.user_state = self._user_states()
        self.write_behind = WriteBehind(
            [self.user_state],
            s.state.flush_interval_ms / 1000.0,
            lambda: self.app.producer.buffer.size,
            self._observe_flush,
            before_write=self.deltas.acked,
        )
        self.item_stats = ItemStats(s.state)
        self.follower = DeltaFollower(
            s.kafka,
            self.item_stats,
            s.state.data_dir / "item_stats.json",
            s.state.item_stats_snapshot_s,
        )
        self.follower.load()
        self.dead_letters = DeadLetters(
            lambda key, value: deadletter_topic.send(key=key, value=value),
            self.metrics,
            s.kafka.topics.name("items"),
        )
        self.fusion = FusionLearner(s.serving.fusion, s.serving.slate_size)
        self.model_server = _model_service(s, lambda: self.fusion.weights)
        server = self.model_server
        self.memory = ServingMemory(
            s.state.data_dir / "serving_learned.json",
            self.fusion,
            (server.ranker_figures, server.set_ranker) if server is not None else None,
            s.serving.learned_snapshot_s,
        )
        self.memory.load()
        self.catalog = Catalog(
            s.kafka, self.metrics, self.dead_letters.reject, s.serving, s.state.data_dir
        )
        if self.model_server is not None:
            self.catalog.on_unservable.append(self.model_server.set_unservable)
        impressions = self.app.Table(
            IMPRESSIONS,
            default=None,
            partitions=topics.partitions,
            key_type=str,
            options=s.state.rocksdb_options(),
        )
        # shared learner: closed impressions go out on experience in the closing event's context
        # (flushed before its offset commits); policies come back on control
        self.experience = (
            ExperiencePublisher(lambda key, value: experience_topic.send_soon(key=key, value=value))
            if s.learner.mode == "shared"
            else None
        )
        self.feedback = Feedback(
            impressions,
            self.write_behind.context_of,
            s.learner,
            s.policy,
            s.state.data_dir / "learner.safetensors",
            self.model_server.set_policy if self.model_server else _no_policy,
            self.metrics,
            self.experience,
        )
        self.refresher = Refresher(
            s.serving,
            self.item_stats,
            lambda: self.model_server.builder if self.model_server else None,
            lambda key, value: recs_topic.send(key=key, value=value),
            self.feedback.store,
            self.fusion,
            self.metrics,
            self.catalog,
        )
        self.ingest = Ingest(
            s.state,
            self.user_state,
            self.deltas.publish,
            lambda: self.owned,
            self.write_behind.remember,
            self.dead_letters.reject,
            self.feedback,
            self.refresher.mark,
            self.metrics,
            events_router(self.events_topic, events_partitions, self.metrics.events_forwarded),
        )
        self.control = (
            ControlListener(
                s.kafka,
                self.model_server,
                s.encoder.checkpoint,
                self.catalog.items,
                self.metrics,
                self.feedback.serve_announced if s.learner.mode == "shared" else None,
                kept_context=s.state.context_fields,
                catalog_loaded=lambda: self.catalog.loaded,
            )
            if self.model_server
            else None
        )
        self.lag = LagWatch(
            lambda: self.app.consumer,
            self.events_topic.get_topic_name(),
            self._recovering,
            self.metrics,
        )
        self.pages = Pages(
            self.metrics.registry,
            self.observe,
            self.stats,
            self.refresher.latest,
            self.readiness,
            s.serving.web_token,
        )
        self._assigned_at = time.perf_counter()
        self._register()

    def _user_states(self) -> CachedTable[UserState]:
        s = self.settings
        table = self.app.Table(
            USER_STATE,
            default=None,
            partitions=s.kafka.topics.partitions,
            key_type=str,
            options=s.state.rocksdb_options(),
        )
        return CachedTable(table, s.state.cache_entries, STATE_CODEC)

    def _observe_flush(self, written: int, seconds: float) -> None:
        self.metrics.table_writes_flushed.inc(written)
        self.metrics.table_flush_seconds.observe(seconds)

    def _register(self) -> None:
        on_agent_error(self.app, count_agent_crashes(self.metrics, ["ingest"]))
        self.app.agent(self.events_topic, name="ingest")(self.ingest.run)
        self.app.task(self.catalog.run)
        self.app.task(self.refresher.run)
        self.app.task(self.write_behind.run)
        self.app.task(self.follower.run)
        self.app.task(self.memory.run)
        if self.control is not None:
            self.app.task(self.control.run)
            self.catalog.listeners.append(self.control.on_items)
        self.app.timer(5.0)(self.observe)
        # faust's stubs describe View methods and sync signal receivers; it also accepts plain
        # aiohttp handlers and coroutine receivers, which is what these are.
        page = cast(Any, self.app.page)
        page("/metrics")(self.pages.metrics)
        page("/ready")(self.pages.ready)
        page("/stats")(self.pages.stats_page)
        page("/recommendations/{user_id}")(self.pages.recommendation)
        for signal, receiver in (
            (self.app.on_partitions_assigned, self._on_assigned),
            (self.app.on_partitions_revoked, self._on_revoked),
            (self.app.on_rebalance_complete, self._on_recovered),
        ):
            connect = cast(Any, signal.connect)
            connect(receiver)

    # -- rebalances ----------------------------------------------------------------------------

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        self.owned = set()
        # Every write lands before the next owner restores: buffered ones first, then all acks.
        await self.write_behind.flush()
        await drain(self.app.producer)

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        consumer = self.app.consumer
        events = self.events_topic.get_topic_name()
        flush_before_commit(
            consumer,
            self.app.producer,
            self.write_behind.flush,
            self.settings.kafka.outage_limit_s,
            owned=lambda tp: tp.topic != events or tp.partition in self.owned,
            after=self.ingest.router.settle,
        )
        # No fetch may move a partition past records faust then drops, and none may start
        # before recovery's last flow resume, which empties the buffers (stream/durability.py).
        fetch_only_active(consumer)
        ResumeHold.install(self.app, lambda tp: tp.topic == events).assigned()
        forget_acks(consumer, assigned)
        self.owned = {tp.partition for tp in assigned if tp.topic == events}
        # A partition owned before may have been changed by another worker since.
        await self.write_behind.release(self.owned)
        self._assigned_at = time.perf_counter()
        self.lag.reset()

    async def _on_recovered(self, sender: Any, **kwargs: Any) -> None:
        seconds = time.perf_counter() - self._assigned_at
        self.last_recovery_s = round(seconds, 3)
        self.metrics.recovery_seconds.set(seconds)
        # Counting RocksDB keys means iterating them all, a pause of tens of milliseconds on
        # the event loop: done once per rebalance here, then kept up by the writers.
        self.ingest.counts.users = len(self.user_state.table)
        self.feedback.reopen(self.owned)
        log.info(
            "tables recovered %.2f s after partition assignment; %d users in local state",
            seconds,
            self.ingest.counts.users,
        )

    def _recovering(self) -> bool:
        tables: Any = self.app.tables
        return bool(self.app.in_recovery or not tables.recovery.completed.is_set())

    def readiness(self) -> str | None:
        """Why this worker cannot answer yet (None: it can); the /ready probe."""
        if self._recovering():
            return "recovering its tables"
        if not self.catalog.loaded:
            return "reading the catalog"
        if self.model_server is not None and self.model_server.model_version is None:
            control = self.control
            if control is not None and control.load_failure is not None:
                return "no model could load (the log says why)"
            if control is not None and control.initial is None:
                return "waiting for a model announced on control (no encoder.checkpoint is set)"
            return "loading its model"
        return None

    # -- observation ---------------------------------------------------------------------------

    async def observe(self) -> None:
        """Bring the gauges up to date (every 5 s, and before each scrape)."""
        sizes = {"user_state": self.ingest.counts.users, **self.item_stats.sizes()}
        for name, size in sizes.items():
            self.metrics.table_entries.labels(name).set(size)
        self.metrics.table_writes_pending.labels("user_state").set(self.user_state.pending())
        self.metrics.table_entries.labels("catalog").set(len(self.catalog.items))
        self.metrics.show_fusion(self.fusion.weights, self.fusion.power)
        self.metrics.show_policy(self.feedback.learner.version)
        await self.lag.check()

    def stats(self) -> dict[str, Any]:
        """Figures for /stats and the demo summary."""
        counts = self.ingest.counts
        control = self.control
        return {
            "events_consumed": counts.consumed,
            "events_accepted": counts.accepted,
            "duplicates_dropped": counts.duplicates,
            "events_forwarded": self.ingest.router.count,
            "dead_lettered": self.dead_letters.count,
            "rejected_by_code": self.dead_letters.by_code,
            "items_rejected_by_code": self.dead_letters.items_by_code,
            "items_rejected_before": self.catalog.repeats,  # dead-lettered on an earlier run
            "recommendations_published": self.refresher.published,
            "users_in_state": counts.users,
            "partitions": sorted(self.owned),
            "items_in_catalog": len(self.catalog.items),
            "catalog_loaded": self.catalog.loaded,
            "uptime_s": round(time.time() - self.started_at, 1),
            "last_recovery_s": self.last_recovery_s,
            "latency": self.refresher.latency_summary(),
            "model_version": self.model_server.model_version if self.model_server else None,
            "slates_built_with": self.refresher.versions,  # heuristic: "none", "heuristic-1"
            "model_swaps": control.swaps if control else 0,
            "item_stats": self.item_stats.figures(),
            # what the worker holds in memory per user, each bounded (bench soak reads these)
            "held": {
                "cached_states": self.user_state.size(),
                "latest_slates": len(self.refresher.latest),
                "fusion_users": len(self.fusion.pending),
            },
            "fusion": self.fusion.figures(),
            "ranker": self.model_server.ranker_figures() if self.model_server else None,
            "feedback": self.feedback.stats(),
            "policy_announced": control.policy_version if control else None,
            "experience_published": self.experience.published if self.experience else 0,
            "cold_start": {
                "items_added": control.cold_items if control else 0,
                "last_seconds": control.cold_last_s if control else None,
            },
            "threads": thread_roles(),  # kernel thread id -> role, for bench pipeline's CPU
        }


def _model_service(s: Settings, weights: Callable[[], Weights]) -> ModelService | None:
    """The model path's server, in a child process or in this one (``serving.model_process``).

    torch, transformers and FAISS come with the server: 800 MB of RSS (measured) that a
    heuristic worker never loads, and a worker with a model process loads only in the child.
    """
    if s.serving.mode != "model":
        return None
    if s.serving.model_process:  # torch, transformers and FAISS load in the child only
        from streamrec.stream.model_process import ModelProcess

        return ModelProcess(s.serving, s.policy, s.index, s.encoder.device, weights)
    from streamrec.stream.serving import ModelServer

    return ModelServer(s.serving, s.policy, s.index, s.encoder.device, weights)


def _no_policy(weights: Any, version: str) -> None:
    """The heuristic path has no learnable policy to hand new weights to."""


def create_app(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    events_partitions: int | None = None,
) -> StreamrecApp:
    """Build the worker app from settings (nothing happens at import time); the events topic
    has ``events_partitions`` (None: unknown, and events are not forwarded: stream/routing.py)."""
    return StreamrecApp(settings, registry, events_partitions)
