"""In-memory doubles for the worker's parts: the faust event and message, a table, a sender.

Each part under test (ingest, refresher, feedback, control) takes only these, so its tests run
in milliseconds without faust, RocksDB or a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from streamrec.settings import Settings
from streamrec.stream.contract import Event, encode
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.metrics import WorkerMetrics


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_type: int = 1  # LogAppendTime, as topics create makes the events topic


@dataclass
class Record:
    """What faust hands the agent: key, value and the message's coordinates."""

    key: bytes | None
    value: bytes
    message: Message


# The broker time (seconds) of every record ``record`` makes: after any event time of the tests
# (ingest applies no event later than its record, stream/ingest.py ``not_after``).
BROKER_S = 1_800_000_000.0


def record(
    event: Event, partition: int, offset: int, key: bytes | None = None, broker_s: float = BROKER_S
) -> Record:
    value = encode(event)
    message = Message("events", partition, offset, broker_s)
    return Record(key or event.user_id.encode(), value, message)


@dataclass
class Sent:
    """A topic's ``send`` that keeps what it was given."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        self.records.append((key, value))


def metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def item_stats(settings: Settings) -> ItemStats:
    return ItemStats(settings.state)


@dataclass
class Deltas:
    """A DeltaPublisher that applies each delta to ``stats`` at once (no topic in between)."""

    stats: ItemStats
    published: list[ItemDelta] = field(default_factory=list)

    async def publish(self, delta: ItemDelta) -> None:
        self.published.append(delta)
        self.stats.apply(delta)


def value_of(counter: Any, *labels: str) -> float:
    """The current value of a prometheus counter or gauge (optionally labelled)."""
    child = counter.labels(*labels) if labels else counter
    return float(child._value.get())
