"""Publishing validated records: files (JSONL or CSV) for ``streamrec produce``, and datasets
replayed in time order for ``streamrec replay``.

Every row is validated against the contract before it is sent; a bad row is reported with its
line number, stable error code and message, and never stops the good rows around it. The
producer is idempotent with ``acks=all``, so retries neither duplicate nor reorder records of one
key (user_id for events), which the worker's per-user ordering relies on. A broker outage is
waited out for ``max_outage_s`` (``stream/delivery.py``: a spent producer is replaced and what it
had not delivered is re-sent in order); past that, ``DeliveryError`` names where to resume.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError
from tqdm import tqdm

from streamrec.datasets import Dataset
from streamrec.errors import ContractError, DataError, DeliveryError
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
from streamrec.stream.delivery import DeliveryReport, OrderedPublisher, Record

# How long a publishing tool waits for a broker that acknowledges nothing before it gives up:
# long enough for a broker restart or a leader election, short enough to notice a dead cluster.
DEFAULT_MAX_OUTAGE_S = 300.0

RecordKind = Literal["events", "items"]
# CSV cells are text; these fields are numbers in the JSON contract.
_CSV_INTS = {"ts", "dwell_ms", "position", "v", "created_at"}
_CSV_FLOATS = {"value"}
_CSV_BOOLS = {"active"}
_BOOL_CELLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
# Columns named context_<field> fill the event's context, in produce's CSV and a RecBole .inter.
CONTEXT_COLUMN_PREFIX = "context_"


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
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

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
            "resent_after_outage": self.delivery.resent,
            "producer_restarts": self.delivery.restarts,
        }


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    context: dict[str, str] = {}
    for key, cell in row.items():
        if key is None or cell is None or cell == "":
            continue  # an empty cell means "absent", as in the JSON contract
        if key in _CSV_INTS or key in _CSV_FLOATS:
            obj[key] = _number(cell, whole=key in _CSV_INTS)
        elif key in _CSV_BOOLS:  # the text, when it spells none, for the contract to refuse
            if cell.strip():
                obj[key] = _BOOL_CELLS.get(cell.strip().lower(), cell)
        elif key == "categories":
            obj[key] = [c for c in cell.split("|") if c]
        elif key.startswith(CONTEXT_COLUMN_PREFIX):  # as a RecBole .inter names context columns
            context[key.removeprefix(CONTEXT_COLUMN_PREFIX)] = cell
        else:
            obj[key] = cell
    if context:
        # next to a `context` column too: the contract then refuses the row (context must be
        # an object), rather than one of the two being dropped unseen
        obj["context"] = context if "context" not in obj else [obj["context"], context]
    return obj


def _number(cell: str, whole: bool) -> int | float | str:
    """A cell as the JSON number it spells (an int where ``whole`` and it has no fraction, as
    the contract reads 5300.0); else the text, for the contract to refuse with its message."""
    try:
        value = int(cell) if whole and cell.lstrip("-").isdigit() else float(cell)
    except ValueError:
        return cell
    return value


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


def new_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """An idempotent, ordered producer (acks=all), not started."""
    return AIOKafkaProducer(
        **aiokafka_kwargs(kafka), enable_idempotence=True, acks="all", linger_ms=5
    )


@asynccontextmanager
async def kafka_producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent, ordered producer (acks=all) that is flushed and closed on exit."""
    producer = new_producer(kafka)
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
    kafka: KafkaSettings,
    path: Path,
    kind: RecordKind,
    progress: bool = True,
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
    resume_from_line: int = 0,
) -> ProduceReport:
    """Validate and publish every row of ``path`` from line ``resume_from_line`` on; bad rows
    are reported, good rows all sent. ``DeliveryError`` (with the line to resume from) when the
    broker acknowledges nothing for ``max_outage_s``."""
    report = ProduceReport(topic=kafka.topics.name(kind))

    def good_rows() -> Iterator[Record]:
        rows = read_records(path, kind)
        for line, record in tqdm(
            rows, desc=f"produce {path.name}", unit="row", disable=not progress
        ):
            if line < resume_from_line:
                continue
            if isinstance(record, Rejection):
                report.rejected.append(record)
                continue
            yield Record(line, _key(record), encode(record))

    started = time.perf_counter()
    publisher = OrderedPublisher(lambda: new_producer(kafka), report.topic, max_outage_s)
    try:
        report.delivery = await publisher.publish(good_rows())
    except DeliveryError as exc:
        raise DeliveryError(
            f"{exc}; the index is a line of {path}: continue with `streamrec produce {path} "
            f"--resume-from-line {exc.resume_from}`",
            exc.resume_from,
        ) from None
    report.accepted = report.delivery.acknowledged
    report.seconds = time.perf_counter() - started
    return report


def dataset_events(dataset: Dataset) -> Iterator[Event]:
    """The dataset's interactions as contract events, in its stable time order.

    Event ids derive from the position in that order, so replaying the same file twice yields
    the same ids and the worker's deduplication makes the second replay a no-op.
    """
    for n, it in enumerate(dataset.interactions):
        try:
            event = Event(
                event_id=f"{dataset.name}-{n}",
                user_id=it.user_id,
                item_id=it.item_id,
                type="rating",
                ts=it.ts * 1000,
                value=float(it.rating),
            )
        except ValidationError as exc:
            # A file the dataset readers take can still break the event contract (an id with
            # a tab, a time in the future): say which row, not pydantic's traceback.
            reason = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
            raise DataError(
                f"dataset {dataset.name!r}: event {n} in time order (user {it.user_id!r}, item "
                f"{it.item_id!r}, ts {it.ts}) breaks the event contract: {reason}"
            ) from None
        yield event


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(map(str, loc)) or "event"


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
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
    resume_from: int = 0,
) -> ProduceReport:
    """Publish records in order, at ``rate`` records/s (None: as fast as possible), skipping
    the first ``resume_from``. ``DeliveryError`` (with the index to resume from, counted in
    ``records``) when the broker acknowledges nothing for ``max_outage_s``."""
    report = ProduceReport(topic=topic)
    indexed = enumerate(itertools.islice(records, resume_from, None), start=resume_from)
    bar = tqdm(
        desc=f"replay -> {topic}",
        unit="rec",
        total=total,
        initial=resume_from,
        disable=not progress,
    )
    publisher = OrderedPublisher(lambda: new_producer(kafka), topic, max_outage_s)
    started = time.perf_counter()
    try:
        report.delivery = await publisher.publish(
            (Record(n, _key(r), encode(r)) for n, r in indexed), rate, on_sent=bar.update
        )
    finally:
        bar.close()
    report.accepted = report.delivery.acknowledged
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
