"""``streamrec simulate``: simulated users answer the recommendations topic through Kafka.

The simulator (models/sim/simulator.py: latent preferences fitted on MovieLens-100K, position bias,
satiation) reads every published slate, decides which items the user clicks, dwells on, adds to
cart and buys, and publishes those responses on ``events`` with the slate's ``rec_id`` and the
item's position. The worker applies them like any behaviour event, joins them to the slate as
rewards, and publishes the user's next slate, which the simulator answers in turn: a closed loop.

Seeded and repeatable for a given order of slates; event ids carry a per-run nonce so a second
run against the same topics is not mistaken for duplicates.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.datasets import load_dataset
from streamrec.errors import BrokerError, ContractError
from streamrec.models.sim.simulator import Simulator, SimulatorConfig
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Recommendation, encode, validate_event
from streamrec.stream.producer import kafka_producer

JOIN_TIMEOUT_S = 60.0


@dataclass
class SimulationReport:
    slates: int = 0
    impressions: int = 0
    responses: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    skipped_users: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        clicks = self.by_type.get("click", 0)
        return {
            "slates_answered": self.slates,
            "responses_published": self.responses,
            "responses_by_type": self.by_type,
            "ctr": round(clicks / self.impressions, 4) if self.impressions else None,
            "unknown_users_skipped": self.skipped_users,
            "seconds": round(self.seconds, 1),
        }


async def simulate(
    settings: Settings,
    kafka: KafkaSettings,
    seed: int,
    duration_s: float,
    max_slates: int | None,
    ready: asyncio.Event | None = None,
) -> SimulationReport:
    """Answer slates until ``duration_s`` passes or ``max_slates`` were answered.

    ``ready`` is set once the consumer owns its partitions and knows where it reads from:
    slates published after that are all answered (the consumer starts at the end of the topic).
    """
    dataset = load_dataset(None, settings.data.cache_dir)
    sim = Simulator.from_dataset(dataset, SimulatorConfig(seed=seed))
    nonce = uuid.uuid4().hex[:6]
    report = SimulationReport()
    async with slates_from_now(kafka, "simulator") as consumer:
        if ready is not None:
            ready.set()
        started = time.monotonic()
        async with kafka_producer(kafka) as producer:
            while time.monotonic() - started < duration_s:
                if max_slates is not None and report.slates >= max_slates:
                    break
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        await _answer(sim, record.value, nonce, producer, kafka, report)
    report.seconds = time.monotonic() - started
    return report


@asynccontextmanager
async def slates_from_now(kafka: KafkaSettings, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of the recommendations topic (group ``<prefix><group>``) positioned at its
    end: every slate published after it is yielded gets read."""
    consumer = AIOKafkaConsumer(
        kafka.topics.name("recommendations"), **aiokafka_kwargs(kafka),
        group_id=f"{kafka.topics.prefix}{group}", auto_offset_reset="latest",
    )  # fmt: skip
    await consumer.start()
    try:
        await _positioned(consumer)
        yield consumer
    finally:
        await consumer.stop()


async def _positioned(consumer: AIOKafkaConsumer) -> None:
    """Wait for the group assignment, then resolve each partition's start offset.

    aiokafka resolves ``auto_offset_reset="latest"`` lazily on the first fetch; a slate
    published between joining and that fetch would be skipped, so resolve it now.
    """
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the simulator's consumer got no partitions of the recommendations topic "
                f"within {JOIN_TIMEOUT_S:.0f} s; is the broker up and the topic created?"
            )
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():
        await consumer.position(tp)


async def _answer(sim: Simulator, raw: bytes, nonce: str, producer: Any, kafka: KafkaSettings,
                  report: SimulationReport) -> None:  # fmt: skip
    rec = Recommendation.model_validate_json(raw)
    try:
        responses = sim.respond(
            rec.user_id, rec.rec_id, [i.item_id for i in rec.items], time.time()
        )
    except ContractError:
        report.skipped_users += 1  # a user the simulator has no preferences for
        return
    report.slates += 1
    report.impressions += len(rec.items)
    for obj in responses:
        fixed = {"event_id": f"{nonce}-{obj['event_id']}", "ts": int(obj["ts"] * 1000)}
        if "dwell_ms" in obj:
            fixed["dwell_ms"] = int(obj["dwell_ms"])
        event = validate_event({**obj, **fixed})  # fmt: skip
        await producer.send(kafka.topics.name("events"), encode(event), key=event.user_id.encode())
        report.responses += 1
        report.by_type[event.type] = report.by_type.get(event.type, 0) + 1
