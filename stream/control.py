"""Model and policy announcements on the ``control`` topic, and the worker side that acts on them.

``announce_model`` publishes a ``ModelAnnouncement``; every worker reads the one-partition
control topic from the beginning, so a worker that starts later still ends on the latest
announced version, and all workers apply announcements in the same order. Loading happens in a
worker thread; the swap itself is atomic between refresh batches (stream/serving.py).

Policy announcements (``PolicyAnnouncement``, key ``policy``) come from the one learner process
(stream/learner_process.py) and carry the policy's weights inline (a few numbers, so no shared
file system is needed); every worker hands them to its serving reranker, so all of the
consumer group serves the same version. A worker that sees none keeps its last policy, and so
does one that sees weights the policy cannot use (checked as the record is parsed; counted in
``policy_announcements_rejected``): the topic is compacted, so such a record stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamrec.errors import ConfigError, StreamrecError
from streamrec.models.policy.stochastic import policy_weights
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Item, ModelAnnouncement, encode
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.model_checks import warn_no_model, warn_unkept_context, warn_unknown_catalog
from streamrec.stream.producer import kafka_producer
from streamrec.stream.topics import create_topics, topic_specs

if TYPE_CHECKING:  # the service may live in a child process: no torch in this one
    from streamrec.stream.serving import ModelService

log = logging.getLogger(__name__)
# Model announcements of the backlog a starting worker keeps to fall back on, newest first.
BACKLOG_MODELS = 8
# How long a starting worker waits for the control backlog (whose newest model replaces
# encoder.checkpoint) before it serves the configured checkpoint anyway: a topic that cannot be
# read must not leave it with no model.
CATCH_UP_S = 30.0
CATALOG_POLL_S = 0.05


class PolicyAnnouncement(BaseModel):
    """On the ``control`` topic: every worker serves these policy weights under this version."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    v: Literal[1] = 1
    type: Literal["policy"] = "policy"
    policy_version: str
    weights: list[float] = Field(description="Stochastic policy weights, FEATURES order.")
    announced_at: int = Field(description="Epoch milliseconds.")
    estimate: dict[str, Any] | None = Field(
        None, description="Off-policy estimate of the version before it served (IPS/SNIPS/DR)."
    )
    learner_id: str = Field("", description="The announcing learner (stream/learner_fence.py).")
    learner_started: int = Field(0, description="When that learner process started, epoch ms.")
    rolled_back: bool = Field(False, description="An earlier version served again (a rollback).")

    @field_validator("weights")
    @classmethod
    def _servable(cls, weights: list[float]) -> list[float]:
        """Weights the policy can serve, checked before any worker or learner acts on them:
        the topic is compacted, so one bad announcement would otherwise stand for good."""
        try:
            policy_weights(weights)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return weights


@asynccontextmanager
async def control_reader(
    kafka: KafkaSettings,
) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition]]:
    """A started consumer assigned the control topic's one partition (no group: every reader
    reads all of it); the caller seeks. ``earliest``, so a reset never skips records: with
    ``seek_to_beginning`` a reset to the default "latest" once won a race with it in our tests,
    which is why readers seek to an explicit offset."""
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        tp = TopicPartition(kafka.topics.name("control"), 0)
        consumer.assign([tp])
        yield consumer, tp
    finally:
        await consumer.stop()


def policy_record(
    version: str,
    weights: list[float],
    estimate: dict[str, Any] | None,
    learner: tuple[str, int] = ("", 0),
    rolled_back: bool = False,
) -> bytes:
    """The control record announcing a policy version; ``learner``: its id and start time."""
    record = PolicyAnnouncement(
        policy_version=version,
        weights=weights,
        announced_at=int(time.time() * 1000),
        estimate=estimate,
        learner_id=learner[0],
        learner_started=learner[1],
        rolled_back=rolled_back,
    )
    return encode(record)


async def announce_model(
    kafka: KafkaSettings, checkpoint: Path, model_version: str
) -> ModelAnnouncement:
    """Tell every worker to serve ``checkpoint`` (a folder all workers can read)."""
    record = ModelAnnouncement(
        model_version=model_version,
        checkpoint=str(checkpoint.resolve()),
        announced_at=int(time.time() * 1000),
    )
    control = kafka.topics.name("control")
    # Before any worker made it, the broker would auto-create it with its default partitions
    # and no compaction, and workers read partition 0 only: the announcement could be lost.
    await create_topics(kafka, [spec for spec in topic_specs(kafka) if spec.name == control])
    async with kafka_producer(kafka) as producer:
        await producer.send_and_wait(control, encode(record), key=b"model")
    return record


class ControlListener:
    """Serves the newest announced model at start (the configured checkpoint when none loads),
    then follows announcements."""

    def __init__(
        self,
        kafka: KafkaSettings,
        server: ModelService,
        initial: Path | None,
        catalog: Mapping[str, Item],
        metrics: WorkerMetrics,
        on_policy: Callable[[Any, str, int, bool], None] | None = None,
        kept_context: tuple[str, ...] = (),
        catalog_loaded: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kafka = kafka
        # the first load waits for it: a model loaded with a partial catalog cold-started none
        # of the rest (they arrive while no model serves), nor failed for lacking a projection
        self.catalog_loaded = catalog_loaded
        self.kept_context = kept_context  # state.context_fields: what the user states keep
        # (weights [F], version, announced_at ms, rolled_back): announced policies go here
        self.on_policy = on_policy
        self.policy_version: str | None = None
        self._started_ms = int(time.time() * 1000)  # announcements before it are a backlog
        self.server = server
        self.initial = initial  # encoder.checkpoint: served when no announced model loads
        self.catalog = catalog  # the live catalog (item_id -> Item), read at each load
        self.metrics = metrics
        self.swaps = 0
        self.load_failure: str | None = None  # why the last load failed (until one succeeds)
        self.said_no_model = False
        self.cold_items = 0
        self.cold_last_s: float | None = None
        self._loading = asyncio.Lock()  # one load at a time (start-up's fallback may race)

    async def run(self) -> None:
        fallback = asyncio.create_task(self._initial_after(CATCH_UP_S))
        try:
            async with control_reader(self.kafka) as (consumer, tp):
                end = (await consumer.end_offsets([tp]))[tp]
                consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
                await self.follow(consumer, tp, end)
        except Exception:
            await self._serve_initial()  # the control topic failed: serve what is configured
            raise
        finally:
            fallback.cancel()

    async def _initial_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._serve_initial()

    async def _serve_initial(self) -> None:
        """Serve ``encoder.checkpoint`` unless a model is served (checked once the load lock is
        held, so it never replaces an announced model loaded meanwhile)."""
        if self.initial is None:
            if self.server.model_version is None and not self.said_no_model:
                self.said_no_model = True  # once: the fallback and the backlog both get here
                warn_no_model(self.kafka.topics.name("control"))
            return
        async with self._loading:
            if self.server.model_version is None:
                await self._load_now(self.initial)

    async def follow(self, consumer: Any, tp: TopicPartition, end: int) -> None:
        """Act on every record from the consumer's position on. Of the model announcements
        before ``end`` (the backlog a starting worker reads) only the newest is loaded:
        loading each in turn cost a load per announcement ever made, and the trainer prunes
        old checkpoints, whose loads failed and counted as failed swaps at every restart. When
        the newest cannot load, the one before it is tried, and so on (newest first)."""
        backlog: deque[ModelAnnouncement] = deque(maxlen=BACKLOG_MODELS)
        caught_up = await consumer.position(tp) >= end
        if caught_up:  # nothing announced before: the configured checkpoint
            await self._serve_first(backlog)
        while True:
            for record in (await consumer.getmany(timeout_ms=500)).get(tp, []):
                raw = record.value or b""
                announced = None if caught_up else _parse_model(raw)
                if announced is not None:
                    backlog.append(announced)
                else:
                    await self.on_record(raw)
            if not caught_up and await consumer.position(tp) >= end:
                caught_up = True
                await self._serve_first(backlog)

    async def _serve_first(self, backlog: deque[ModelAnnouncement]) -> None:
        """Serve the newest announced model that loads, else ``encoder.checkpoint``, once the
        catalog is read (at most ``CATCH_UP_S``). (Loading the configured checkpoint first cost
        a restarted worker seconds of loading a model it swapped out as soon as it had read the
        backlog.)"""
        waited = 0.0
        while not self.catalog_loaded() and waited < CATCH_UP_S:
            await asyncio.sleep(CATALOG_POLL_S)
            waited += CATALOG_POLL_S
        for announced in reversed(backlog):
            if await self._serve(announced):
                return
        await self._serve_initial()

    async def on_record(self, raw: bytes) -> None:
        """Act on one control record: load the announced model unless it is served already,
        or serve an announced policy."""
        if is_policy_record(raw):
            self._policy(raw)
            return
        try:
            announcement = ModelAnnouncement.model_validate_json(raw)
        except ValueError as exc:
            log.error("ignoring malformed control record: %s", exc)
            return
        await self._serve(announcement)

    async def _serve(self, announcement: ModelAnnouncement) -> bool:
        """Serve the announced model (loading it unless it is served already); False when
        its checkpoint cannot load."""
        if announcement.model_version == self.server.model_version:
            return True
        return await self._load(Path(announcement.checkpoint))

    def _policy(self, raw: bytes) -> None:
        a = parse_policy(raw)
        if a is None:
            self.metrics.policy_announcements_rejected.inc()
            return
        if self.on_policy is None or a.policy_version == self.policy_version:
            return
        try:
            self.on_policy(np.asarray(a.weights), a.policy_version, a.announced_at, a.rolled_back)
        except StreamrecError as exc:
            self.metrics.policy_announcements_rejected.inc()
            log.error("cannot serve policy %s: %s", a.policy_version, exc)
            return
        # one line for the first and for each live one, not one per backlog version at start
        backlog = self.policy_version is not None and a.announced_at < self._started_ms
        self.policy_version = a.policy_version
        log.log(logging.DEBUG if backlog else logging.INFO, "serving policy %s", a.policy_version)

    async def _load(self, checkpoint: Path) -> bool:
        """Serve ``checkpoint``; False (the served model kept) when it cannot load."""
        async with self._loading:
            return await self._load_now(checkpoint)

    async def _load_now(self, checkpoint: Path) -> bool:
        server = self.server
        started = time.perf_counter()
        catalog = dict(self.catalog)
        try:
            version = await asyncio.to_thread(server.load, checkpoint, catalog)
        except Exception as exc:  # an announced checkpoint is outside input: a damaged file
            # raises whatever its parser raises (safetensors, transformers), and the worker must
            # keep serving its model, not crash on every restart while the announcement stands.
            self.metrics.model_swap_failures.inc()
            # the checkpoint in the template: the log limiter (stream/logs.py) keys on it, and
            # two different failed checkpoints must both be told
            named = str(checkpoint).replace("%", "%%")
            kept = server.model_version or "no model yet"
            log.error(f"cannot serve checkpoint {named}, keeping %s: %r", kept, exc)
            self.load_failure = f"{checkpoint}: {exc}"[:300]
            return False
        self.swaps += 1
        self.load_failure = None
        warn_unkept_context(checkpoint, self.kept_context)
        # off the loop: a catalog of millions of ids takes a moment to compare
        await asyncio.to_thread(warn_unknown_catalog, version, checkpoint, list(self.catalog))
        self.metrics.model_version.clear()
        self.metrics.model_version.labels(version).set(1)
        self.metrics.index_items.set(server.index_size or 0)
        log.info("serving model %s (loaded in %.2f s)", version, time.perf_counter() - started)
        # records read during the load: on_items skipped them while no model served
        late = [item for item_id, item in list(self.catalog.items()) if item_id not in catalog]
        if late:
            await self.on_items(late, int(time.time() * 1000))
        return True

    async def on_items(self, items: list[Item], record_ts_ms: int) -> None:
        """Catalog listener: cold-start items the serving index lacks; records how long from
        the oldest record's timestamp until the items were searchable."""
        server = self.server
        if server.model_version is None:
            return
        try:
            added = await asyncio.to_thread(server.add_items, items)
        except Exception as exc:  # e.g. a model without a text projection: the catalog task
            # (and with it the worker) must outlive it; the items stay out of the index
            self.metrics.cold_start_failures.inc()
            log.error(
                "cannot add %d catalog items to model %s: %r", len(items), server.model_version, exc
            )
            return
        if added:
            self.cold_items += added
            self.cold_last_s = max(0.0, time.time() - record_ts_ms / 1000)
            self.metrics.index_items.set(server.index_size or 0)
            log.info("%d new items searchable %.3f s after their record", added, self.cold_last_s)


def parse_policy(raw: bytes) -> PolicyAnnouncement | None:
    """The policy announcement in a control record, if it holds a valid one (an invalid one
    is logged: workers keep their policy, a learner neither adopts it nor is fenced by it)."""
    if not is_policy_record(raw):
        return None
    try:
        return PolicyAnnouncement.model_validate_json(raw)
    except ValidationError as exc:
        version = str(json.loads(raw).get("policy_version", "?"))[:80]  # a dict: checked above
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        log.error("ignoring policy announcement %r: %s", version, problems)
        return None


@dataclass(frozen=True)
class LastAnnouncements:
    """What the control topic says now: its newest valid model announcements (oldest first, at
    most ``BACKLOG_MODELS``) and its newest policy announcement."""

    models: tuple[ModelAnnouncement, ...]
    policy: PolicyAnnouncement | None
    end: int  # the topic's end offset when read: follow from here for what comes next


async def last_announcements(kafka: KafkaSettings) -> LastAnnouncements:
    """Read the control topic to its end (a learner and a trainer start from what it says)."""
    async with control_reader(kafka) as (consumer, tp):
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        models: deque[ModelAnnouncement] = deque(maxlen=BACKLOG_MODELS)
        policy: PolicyAnnouncement | None = None
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                raw = record.value or b""
                if is_policy_record(raw):
                    policy = parse_policy(raw) or policy
                elif (model := _parse_model(raw)) is not None:
                    models.append(model)
        return LastAnnouncements(tuple(models), policy, end)


def _parse_model(raw: bytes) -> ModelAnnouncement | None:
    try:
        return ModelAnnouncement.model_validate_json(raw)
    except ValueError:
        return None


def is_policy_record(raw: bytes) -> bool:
    """A control record that announces a policy (the others announce models)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # deep nesting: anyone can write to control
        return False
    return isinstance(data, dict) and data.get("type") == "policy"
