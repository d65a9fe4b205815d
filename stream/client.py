"""Thin helpers for applications that talk to streamrec through Kafka.

The schemas in ``deploy/schemas/`` are the contract; these save an application the Kafka details
that the contract implies:

- ``EventPublisher`` validates each event before it is sent (a bad one raises ``ContractError``
  with the stable code the worker would dead-letter it under), keys it by ``user_id`` so one
  user's events stay in order in one partition, and sends with the idempotent ``acks=all``
  producer that ``streamrec produce`` uses.
- ``read_slates`` yields the recommendations topic as typed ``Recommendation`` records, in a
  consumer group of the application's own (never the worker's).
- ``response`` builds the event that answers one item of a slate: it carries the slate's
  ``rec_id`` and the item's ``position``, which is how the worker credits the reward to the slate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.errors import ContractError
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import (
    Event,
    EventType,
    Recommendation,
    encode,
    validate_event,
)
from streamrec.stream.producer import kafka_producer


class EventPublisher:
    """``async with EventPublisher(kafka) as events: await events.send({...})``."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = kafka.topics.name("events")
        self._context: AbstractAsyncContextManager[AIOKafkaProducer] = kafka_producer(kafka)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> EventPublisher:
        self._producer = await self._context.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._producer = None
        await self._context.__aexit__(exc_type, exc, tb)

    async def send(self, event: Event | Mapping[str, Any]) -> Event:
        """Validate ``event``, publish it keyed by its user_id and wait for the broker's ack.

        Returns the validated event; raises ``ContractError`` (nothing sent) for a bad one.
        """
        if self._producer is None:
            raise RuntimeError("use EventPublisher inside `async with`")
        valid = event if isinstance(event, Event) else validate_event(dict(event))
        await self._producer.send_and_wait(self.topic, encode(valid), key=valid.user_id.encode())
        return valid


async def read_slates(
    kafka: KafkaSettings, group_id: str, from_beginning: bool = False
) -> AsyncIterator[Recommendation]:
    """Slates from the recommendations topic, as the worker published them, until cancelled.

    ``group_id`` names the application's consumer group (offsets are committed automatically);
    ``from_beginning`` reads a new group's topic from the start instead of only new slates.
    """
    consumer = AIOKafkaConsumer(
        kafka.topics.name("recommendations"),
        **aiokafka_kwargs(kafka),
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    try:
        async for record in consumer:
            yield Recommendation.model_validate_json(record.value)
    finally:
        await consumer.stop()


def response(slate: Recommendation, position: int, kind: EventType, **fields: Any) -> Event:
    """The event of the slate's user answering the item at ``position`` (0-based) of ``slate``.

    ``fields`` adds optional event fields (``dwell_ms``, ``value``, ``context``). ContractError
    (``bad_value``) for a position the slate does not have.
    """
    if not 0 <= position < len(slate.items):
        raise ContractError(
            "bad_value", f"position {position} is not in the slate of {len(slate.items)} items"
        )
    return validate_event(
        {
            "event_id": uuid.uuid4().hex,
            "user_id": slate.user_id,
            "item_id": slate.items[position].item_id,
            "type": kind,
            "ts": int(time.time() * 1000),
            "rec_id": slate.rec_id,
            "position": position,
            **fields,
        }
    )
