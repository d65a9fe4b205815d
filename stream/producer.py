"""Publishing validated records: files (JSONL or CSV) for ``streamrec produce``, and datasets
replayed in time order for ``streamrec replay``.

Every row is validated against the contract before it is sent; a bad row is reported with its
line number, stable error code and message, and never stops the good rows around it. The
producer is idempotent with ``acks=all``, so retries neither duplicate nor reorder records of one
key (user_id for events), which the worker's per-user ordering relies on.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from streamrec.datasets import Dataset
from streamrec.errors import ContractError, DataError
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import (
    MAX_EVENT_BYTES,
    MAX_ITEM_BYTES,
    Event,
    Item,
    encode,
    parse_event,
    parse_item,
    validate_event,
    validate_item,
)

RecordKind = Literal["events", "items"]
# CSV cells are text; these fields are numbers in the JSON contract.
_CSV_INTS = {"ts", "dwell_ms", "position", "v", "created_at"}
_CSV_FLOATS = {"value"}


@dataclass(frozen=True)
class Rejection:
    """One row the contract refused: 1-based line number in the input file."""

    line: int
    code: str
    message: str


@dataclass
class ProduceReport:
    topic: str
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for r in self.rejected:
            by_code[r.code] = by_code.get(r.code, 0) + 1
        return {
            "topic": self.topic,
            "accepted": self.accepted,
            "rejected": len(self.rejected),
            "rejected_by_code": by_code,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.accepted / self.seconds, 1) if self.seconds else None,
        }


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, cell in row.items():
        if key is None or cell is None or cell == "":
            continue  # an empty cell means "absent", as in the JSON contract
        if key in _CSV_INTS and cell.lstrip("-").isdigit():
            obj[key] = int(cell)
        elif key in _CSV_FLOATS:
            try:
                obj[key] = float(cell)
            except ValueError:
                obj[key] = cell  # left for the contract to reject with its own message
        elif key == "categories":
            obj[key] = [c for c in cell.split("|") if c]
        else:
            obj[key] = cell
    return obj


def read_records(path: Path, kind: RecordKind) -> Iterator[tuple[int, Event | Item | Rejection]]:
    """Validate each row of a ``.jsonl``/``.json`` or ``.csv`` file: (line, record or rejection)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path, kind)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        yield from _read_jsonl(path, kind)
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .jsonl or .csv")


def _read_jsonl(path: Path, kind: RecordKind) -> Iterator[tuple[int, Event | Item | Rejection]]:
    parse = parse_event if kind == "events" else parse_item
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield line_no, parse(raw)
            except ContractError as exc:
                yield line_no, Rejection(line_no, exc.code, exc.message)


def _read_csv(path: Path, kind: RecordKind) -> Iterator[tuple[int, Event | Item | Rejection]]:
    validate = validate_event if kind == "events" else validate_item
    limit = MAX_EVENT_BYTES if kind == "events" else MAX_ITEM_BYTES
    with path.open(newline="", encoding="utf-8", errors="strict") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            line_no = reader.line_num
            try:
                if sum(len(c or "") for c in row.values() if isinstance(c, str)) > limit:
                    raise ContractError("too_large", f"row is longer than {limit} bytes")
                yield line_no, validate(_csv_row(row))
            except ContractError as exc:
                yield line_no, Rejection(line_no, exc.code, exc.message)


@asynccontextmanager
async def kafka_producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent, ordered producer (acks=all) that is flushed and closed on exit."""
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(kafka), enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.flush()
        await producer.stop()


def _key(record: Event | Item) -> bytes:
    key: str = record.user_id if isinstance(record, Event) else record.item_id
    return key.encode()


async def produce_file(
    kafka: KafkaSettings, path: Path, kind: RecordKind, progress: bool = True
) -> ProduceReport:
    """Validate and publish every row of ``path``; bad rows are reported, good rows all sent."""
    report = ProduceReport(topic=kafka.topics.name(kind))
    started = time.perf_counter()
    async with kafka_producer(kafka) as producer:
        pending: list[asyncio.Future[Any]] = []
        for _, record in tqdm(
            read_records(path, kind), desc=f"produce {path.name}", unit="row", disable=not progress
        ):
            if isinstance(record, Rejection):
                report.rejected.append(record)
                continue
            pending.append(await producer.send(report.topic, encode(record), key=_key(record)))
            report.accepted += 1
        await asyncio.gather(*pending)  # raises if any record was not acknowledged
    report.seconds = time.perf_counter() - started
    return report


def dataset_events(dataset: Dataset) -> Iterator[Event]:
    """The dataset's interactions as contract events, in its stable time order.

    Event ids derive from the position in that order, so replaying the same file twice yields
    the same ids and the worker's deduplication makes the second replay a no-op.
    """
    for n, it in enumerate(dataset.interactions):
        yield Event(
            event_id=f"{dataset.name}-{n}",
            user_id=it.user_id,
            item_id=it.item_id,
            type="rating",
            ts=it.ts * 1000,
            value=float(it.rating),
        )


def dataset_items(dataset: Dataset) -> Iterator[Item]:
    """The dataset's catalog as contract items."""
    for item in dataset.items.values():
        yield Item(item_id=item.item_id, title=item.display_title, categories=list(item.genres))


async def publish(
    kafka: KafkaSettings,
    records: Iterable[Event | Item],
    topic: str,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
) -> ProduceReport:
    """Publish records in order, at ``rate`` records/s (None: as fast as possible)."""
    report = ProduceReport(topic=topic)
    async with kafka_producer(kafka) as producer:
        # The clock starts once the producer is connected: started before, the pacing would
        # owe the connection time and send the first records in one burst to catch up.
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for n, record in enumerate(
            tqdm(records, desc=f"replay -> {topic}", unit="rec", total=total, disable=not progress)
        ):
            if rate:
                # Pace against the start time, not per record, so sleeps do not drift.
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, encode(record), key=_key(record)))
            report.accepted += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    report.seconds = time.perf_counter() - started
    return report


def write_jsonl(path: Path, records: Iterable[Event | Item | dict[str, Any]]) -> int:
    """Write records as JSONL (helper for examples and tests); returns the count."""
    n = 0
    with path.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record) if isinstance(record, dict) else encode(record).decode())
            fh.write("\n")
            n += 1
    return n
