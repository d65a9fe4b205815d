"""`streamrec learner`: the one learner of a consumer group of workers (``learner.mode = shared``).

It reads the experience topic (stream/experience.py) in a consumer group of its own
(``<prefix>learner``), feeds every closed impression to the learner of ``learner.algorithm``
(REINFORCE or actor-critic, with their guardrails), and after each update: estimates the new
version off-policy on the latest ``ope_window`` impressions (IPS, SNIPS and doubly robust with
the critic as reward model, models/policy/dr.py); withdraws it (a rollback) when the doubly
robust interval lies wholly below the logged policies' observed value; saves its state; commits
its offsets; and announces the version it now holds on ``control``, which every worker serves.

Restart contract. The state file (safetensors) holds everything the learner has taken in: its
weights, critic, buffered batch and open trajectories, the recent rec_ids it dedupes on, and
the experience offsets it has read up to (the estimates' window is read again:
``rewind.resume``). It is written before the offsets are committed, and on start the learner
seeks each partition to its saved offset (the group's committed one when it has no state), so a
kill at any point loses no experience and learns from none twice.

One learner per group: its data dir is locked, and what it does when another learner has
announced for the group is stream/learner_fence.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer

from streamrec.errors import BrokerError, ConfigError, ContractError, DataError, ModelError
from streamrec.models.policy.actor_critic import ActorCriticLearner, load_learner, make_learner
from streamrec.models.policy.dr import doubly_robust
from streamrec.models.policy.learner import OnlineLearner, Sample
from streamrec.models.policy.rewards import Impression, Reward, position_rewards
from streamrec.models.policy.slate import FloatArray
from streamrec.settings import Settings
from streamrec.stream import logs
from streamrec.stream.compat import assign_all
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.control import PolicyAnnouncement, last_announcements, policy_record
from streamrec.stream.data_dir import lock_data_dir
from streamrec.stream.experience import decode_experience
from streamrec.stream.learner_fence import (
    ControlWatch,
    Heartbeat,
    LearnerIdentity,
    new_learner_id,
    on_start,
)
from streamrec.stream.learner_metrics import consumer_lag, serve_metrics
from streamrec.stream.producer import kafka_producer
from streamrec.stream.rewind import resume

log = logging.getLogger(__name__)
DEDUPE = 10_000  # recent rec_ids remembered: far more than a crash can re-publish
OUTCOMES = ("observed", "bad", "dup", "refilled")  # of an experience record read (metrics)


@dataclass
class LearnerService:
    """The learning side without Kafka: records in, versions to announce out."""

    learner: OnlineLearner
    path: Path
    ope_window: int
    fresh: bool = True  # no saved state: nothing learned yet
    legacy: bool = False  # state saved before learners had ids
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    recent: deque[tuple[Sample, FloatArray]] = field(default_factory=deque)
    seen: deque[str] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    announcements: list[dict[str, Any]] = field(default_factory=list)
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records behind, last poll
    polled_at: float = field(default_factory=time.monotonic)  # the read loop's last poll

    def __post_init__(self) -> None:
        meta = self.learner.loaded_meta
        self.positions = {int(p): int(o) for p, o in json.loads(meta.get("offsets", "{}")).items()}
        self.seen.extend(json.loads(meta.get("seen", "[]")))
        self._seen = set(self.seen)
        self._refilled: set[str] = set()  # rec_ids read again since the start

    def handle(self, partition: int, offset: int, raw: bytes) -> None:
        """Take in one experience record; an update queues an announcement. A record before
        the partition's saved position was learned before a restart: it only refills the
        estimates' window, which the saved state does not hold (``rewind.resume``)."""
        if offset < self.positions.get(partition, 0):
            self._refill(raw)
            return
        self.positions[partition] = offset + 1
        try:
            impression, rewards = decode_experience(raw)
        except ContractError as exc:
            self.counts["bad"] += 1
            log.error("experience partition %d offset %d skipped: %s", partition, offset, exc)
            return
        if impression.rec_id in self._seen:
            self.counts["dup"] += 1  # re-published after a worker crash
            return
        self._remember(impression.rec_id)
        self.learner.observe(impression, rewards)
        self.counts["observed"] += 1
        self._estimate_on(impression, rewards)
        if self.learner.ready():
            self._update()

    def _refill(self, raw: bytes) -> None:
        try:
            impression, rewards = decode_experience(raw)
        except ContractError:
            return  # counted and logged as bad when it was first read
        if impression.rec_id in self._refilled:
            return  # a copy a worker re-published, skipped as a dup when first read
        self._refilled.add(impression.rec_id)
        self.counts["refilled"] += 1
        self._estimate_on(impression, rewards)

    def _estimate_on(self, impression: Impression, rewards: list[Reward]) -> None:
        sample = Sample.of(impression, position_rewards(impression, rewards))
        if sample is not None:
            state = impression.state if impression.state is not None else np.ones(1)
            self.recent.append((sample, state))
            while len(self.recent) > self.ope_window:
                self.recent.popleft()

    def _remember(self, rec_id: str) -> None:
        self.seen.append(rec_id)
        self._seen.add(rec_id)
        if len(self.seen) > DEDUPE:
            self._seen.discard(self.seen.popleft())

    def _update(self) -> None:
        result = self.learner.update()
        if result.rolled_back:
            log.warning("policy rolled back to %s: the trial's mean reward fell to %.4f; holding"
                        " updates", result.version, result.mean_reward)  # fmt: skip
        estimate = self.estimate() if result.applied else None
        if estimate is not None and estimate["dr"]["high"] < estimate["logged_policy"]["low"]:
            log.warning("policy %s withdrawn before serving: %s", self.learner.version, estimate)
            self.learner.withdraw()
        self.announcements.append(  # a withdrawn version never served: no rollback to announce
            {"version": self.learner.version, "weights": self.learner.weights.tolist(),
             "estimate": estimate, "rolled_back": result.rolled_back}
        )  # fmt: skip

    def estimate(self) -> dict[str, Any] | None:
        """IPS / SNIPS / DR of the current weights on the latest impressions."""
        if not self.recent:
            return None
        samples = [s for s, _ in self.recent]
        states = [st for _, st in self.recent]
        learner = self.learner
        if isinstance(learner, ActorCriticLearner):
            model: Callable[[FloatArray], FloatArray] = learner.critic.now
        else:
            mean = float(np.mean([s.rewards.sum() for s in samples]))
            model = lambda st: np.full(len(st), mean)  # noqa: E731  (no critic: the mean)
        try:
            result = doubly_robust(
                samples, states, learner.weights, model, learner.settings.weight_clip
            )
        except DataError:
            return None
        figures = result.as_dict()
        log.info(
            "policy %s doubly robust %.3f [%.3f, %.3f] reward/slate (logged %.3f) on %d slates",
            learner.version, result.dr.value, result.dr.low, result.dr.high,
            result.logged.value, result.slates,
        )  # fmt: skip
        return figures

    def adopt(self, announcement: PolicyAnnouncement) -> None:
        """Start from the policy another learner left the workers serving, not the defaults."""
        self.learner.adopt(np.asarray(announcement.weights), announcement.policy_version)
        log.info(
            "adopting policy %s announced by learner %s",
            announcement.policy_version,
            announcement.learner_id or "?",
        )

    def save(self) -> None:
        extra = {"offsets": json.dumps(self.positions), "seen": json.dumps(list(self.seen))}
        self.learner.save(self.path, extra)


def open_service(settings: Settings, data_dir: Path) -> LearnerService:
    """The service with the learner saved in ``data_dir`` (or a fresh one)."""
    path = data_dir / "learner.safetensors"
    learner: OnlineLearner
    fresh = not path.exists()
    if fresh:
        learner = make_learner(settings.learner, settings.policy)
    else:
        try:
            learner = load_learner(path, settings.learner, settings.policy)
        except ModelError as exc:
            raise ModelError(f"learner process: {exc}") from exc
    legacy = not fresh and not learner.lineage
    learner.lineage = learner.lineage or new_learner_id()  # the learner's id, kept in its file
    if fresh:  # even its start version names its lineage: "pl-0" is every fresh learner's
        learner.version = learner.version_name(0)
    return LearnerService(learner, path, settings.learner.ope_window, fresh, legacy)


async def run_learner(
    settings: Settings, data_dir: Path, stop: Callable[[], bool] = lambda: False
) -> LearnerService:
    """Learn from the experience topic until ``stop()``; returns the service (for tests).
    ConfigError when another learner holds the data dir or the group."""
    kafka = settings.kafka
    with lock_data_dir(data_dir, "learner"):
        service = open_service(settings, data_dir)
        if settings.learner.metrics_port is not None:
            serve_metrics(service, settings.learner.metrics_port)
        me = LearnerIdentity(service.learner.lineage, int(time.time() * 1000))
        told = await last_announcements(kafka)
        last, end = told.policy, told.end
        held = None if service.fresh else service.learner.version
        start = on_start(last, me, held, service.legacy)
        if start == "adopt" and last is not None:
            service.adopt(last)
        log.info(
            "learner %s starts %s at policy %s",
            me.learner_id,
            "from the announced policy"
            if start == "adopt"
            else "afresh"
            if held is None
            else "from its saved state",
            service.learner.version,
        )
        watch = ControlWatch(kafka, me, end)
        task = asyncio.create_task(watch.run())

        def fenced() -> bool:  # displaced, or the watch died: learning on would be unfenced
            return watch.displaced_by is not None or task.done()

        try:
            await _learn(settings, service, me, start == "carry_on", stop, fenced)
        finally:
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise BrokerError(f"learner stopped: its control-topic watch failed: {outcome!r}")
        if watch.displaced_by is not None:
            raise ConfigError(
                f"learner {watch.displaced_by.learner_id} announced policy "
                f"{watch.displaced_by.policy_version} for this group and started before this "
                f"learner ({me.learner_id}), which stops: one learner per group"
            )
    return service


async def _learn(
    settings: Settings,
    service: LearnerService,
    me: LearnerIdentity,
    reannounce: bool,
    stop: Callable[[], bool],
    fenced: Callable[[], bool],
) -> None:
    kafka = settings.kafka
    topic = kafka.topics.name("experience")
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(kafka),
        group_id=f"{kafka.topics.prefix}learner",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = await assign_all(consumer, topic)
        again = await resume(consumer, tps, service.positions, service.ope_window, service.handle)
        if again:
            log.info("estimates' window read again from %s: %d impressions",
                     {tp.partition: o for tp, o in again.items()}, len(service.recent))  # fmt: skip
        async with kafka_producer(kafka) as producer:
            control = kafka.topics.name("control")

            async def announce(
                version: str, weights: list[float], estimate: Any, rolled_back: bool
            ) -> None:
                who = (me.learner_id, me.started)
                record = policy_record(version, weights, estimate, who, rolled_back)
                await producer.send_and_wait(control, record, key=b"policy")

            def held() -> tuple[str, list[float]]:
                return service.learner.version, service.learner.weights.tolist()

            if reannounce:  # what it holds (workers skip a version they serve already)
                await announce(*held(), None, False)
            heartbeat = Heartbeat(settings.learner.reannounce_s, announce, held)
            await _loop(consumer, service, heartbeat.announce, stop, fenced, heartbeat.beat)
    finally:
        await consumer.stop()


async def _loop(
    consumer: AIOKafkaConsumer,
    service: LearnerService,
    announce: Callable[[str, list[float], Any, bool], Awaitable[None]],
    stop: Callable[[], bool],
    fenced: Callable[[], bool] = lambda: False,
    idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Read, learn, checkpoint and announce until ``stop()``. Once ``fenced()`` (another
    learner holds the group) nothing more is saved, committed or announced: this learner's
    commits would move the group past what the other one has learned."""
    kept = dict(service.positions)
    while not stop() and not fenced():
        batch = await consumer.getmany(timeout_ms=500, max_records=500)
        for tp, records in batch.items():
            for record in records:
                service.handle(tp.partition, record.offset, record.value or b"")
        service.lag, service.polled_at = await consumer_lag(consumer), time.monotonic()
        if fenced():
            return
        if service.announcements:
            await _checkpoint(consumer, service)
            for a in service.announcements:
                await announce(a["version"], a["weights"], a["estimate"], a["rolled_back"])
            service.announcements = []
            kept = dict(service.positions)
        elif not batch and service.positions != kept:
            # Idle with records read since the last update: keep them (pending batch included),
            # so the group's lag reads 0 once everything is read, not only at an update.
            await _checkpoint(consumer, service)
            kept = dict(service.positions)
        if idle is not None:
            await idle()
    if not fenced():
        await _checkpoint(consumer, service)  # a graceful stop keeps what followed the last update


async def _checkpoint(consumer: AIOKafkaConsumer, service: LearnerService) -> None:
    """State first, then offsets (then the caller's news): a crash in between replays, never
    skips, and the saved offsets stop a replay from counting a record twice."""
    await asyncio.to_thread(service.save)
    offsets = {
        tp: service.positions[tp.partition]
        for tp in consumer.assignment()
        if tp.partition in service.positions
    }
    if offsets:
        await consumer.commit(offsets)


def main(settings: Settings, data_dir: Path) -> None:
    """Run until SIGTERM or SIGINT, then stop after the current batch (state saved, offsets
    committed at the last update)."""
    import signal

    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # each version's estimate is what an operator reads before trusting it: printed at INFO
    # even when the CLI logs only warnings; and a clean stop says so (else it reads as a crash)
    log.setLevel(logging.INFO)
    logs.install(settings.logs.repeat_interval_s)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    service = asyncio.run(run_learner(settings, data_dir, lambda: stopping))
    log.info("stopped at %s, state saved at offsets %s", service.learner.version, service.positions)
