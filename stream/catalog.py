"""The catalog: every worker reads the whole compacted ``items`` topic into memory.

Why not a partitioned faust table: events and items are partitioned by different keys, so a
worker owning events partition 3 would see only a quarter of the catalog; every worker needs
all of it to describe and cold-start items. The compacted topic already *is* the catalog's
changelog (latest record per item_id), so each worker assigns itself every partition, reads
from the beginning, and follows the tail. ``loaded`` turns true once the start-up read reached
the end offsets seen at start. Bad records go to the dead-letter topic like bad events, once
per worker (stream/catalog_rejects.py), not at every start.

``newest`` lists the newest active items, which fill a heuristic slate its sources leave short
(``catalog_fill``): on a fresh deployment, before any traffic, co-visitation and trending are
empty and every slate would be.

Items whose latest record says ``active: false``, or whose key's latest record is a tombstone
(a null value, how a compacted topic deletes a key), are kept in ``inactive``: no slate of
either path lists them (``excluding``), whatever co-visitation, trending or the index hold.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Container, Sequence
from pathlib import Path
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.errors import ContractError
from streamrec.settings import KafkaSettings
from streamrec.stream.catalog_rejects import Record, RejectedRecords
from streamrec.stream.compat import READ_COMMITTED, assign_all
from streamrec.stream.config import ServingSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Item, SlateItem, parse_item
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.routing import check_key, home_partition

log = logging.getLogger(__name__)
KEY_RULE = "items must be keyed by item_id so compaction keeps each item's latest record"
# DeadLetters.reject: (raw, key, error, topic, partition, offset) -> the send's result
RejectFn = Callable[[bytes, bytes | None, ContractError, str, int, int], Awaitable[object]]
# Called with the new records and the oldest record timestamp among them (epoch ms).
ItemListener = Callable[[list[Item], int], Awaitable[None]]
# A catalog that changes all the time (prices, stock) must not be re-sorted for every short slate.
NEWEST_REFRESH_S = 10.0
CATALOG_REJECTS = "catalog_rejects.json"


class Catalog:
    """item_id -> latest active Item, fed by the compacted items topic."""

    def __init__(
        self,
        kafka: KafkaSettings,
        metrics: WorkerMetrics,
        reject: RejectFn,
        serving: ServingSettings,
        data_dir: Path | None = None,
    ) -> None:
        self.kafka = kafka
        self.listed_only = serving.catalog_only
        self.metrics = metrics
        self.reject = reject
        self.items: dict[str, Item] = {}
        self.inactive: set[str] = set()  # deactivated or deleted items: never recommended
        self.loaded = False
        self.listeners: list[ItemListener] = []
        # told what no slate may show whenever it changes (the model process keeps a copy)
        self.on_unservable: list[Callable[[Unservable], None]] = []
        self._inactive_changes = 0
        self.newest_kept = serving.catalog_fill
        self._newest: tuple[str, ...] = ()
        self._newest_at = -NEWEST_REFRESH_S  # monotonic time of the last sort
        self._newest_stale = False
        self.partitions = 0  # of the items topic, once read: where each key belongs
        # refused records this worker dead-lettered on an earlier run (stream/catalog_rejects.py)
        self.rejected = RejectedRecords(data_dir / CATALOG_REJECTS) if data_dir else None
        self.repeats = 0  # refused records read again and not dead-lettered again
        self._unsaved: list[tuple[object, Record]] = []  # (the send's result, the record)
        for outcome in ("accepted", "rejected"):  # exported at 0 before the first record
            metrics.items_consumed.labels(outcome)

    def unservable(self) -> Unservable:
        """What no slate may show now (see ``Unservable``), read live."""
        return Unservable(self.inactive, self.items if self._listed_only() else None)

    def _listed_only(self) -> bool:
        """Whether slates keep to listed items: with ``catalog_only`` true, and with "auto"
        once the catalog lists any item (a news model trained on an export holding embargoed
        articles recommended them before they were published: a new-user pass)."""
        return self.listed_only is True or (self.listed_only == "auto" and bool(self.items))

    def newest(self) -> Sequence[str]:
        """Up to ``newest_kept`` active items, the newest ``created_at`` first (items without one
        last, in the order first listed): what fills a slate its sources leave short. Re-sorted
        at most every ``NEWEST_REFRESH_S`` after an item was added, re-dated, deactivated or
        listed again (not for other changes: price or stock feeds rewrite records all day); a
        deactivated item may linger that long, which ``excluding`` at slate time covers."""
        now = time.monotonic()
        if self._newest_stale and now - self._newest_at >= NEWEST_REFRESH_S:
            items = self.items.values()
            top = heapq.nlargest(self.newest_kept, items, key=lambda i: i.created_at or 0)
            self._newest = tuple(item.item_id for item in top)
            self._newest_at, self._newest_stale = now, False
        return self._newest

    async def save_rejects(self) -> None:
        """Remember the records dead-lettered since the last call, once the broker has them: a
        crash before that sends them again at the next start, never leaves one unsent."""
        unsaved, self._unsaved = self._unsaved, []
        for sent, record in unsaved:
            try:
                if inspect.isawaitable(sent):  # faust's send gives a future of the delivery
                    await sent
            except Exception as exc:  # not delivered: it is sent again at the next start
                log.warning("dead letter of catalog record %s not acknowledged: %r", record, exc)
                continue
            if self.rejected is not None:
                self.rejected.note(*record)
        if self.rejected is not None:
            self.rejected.save()

    def _tell(self, inactive_changed: bool, fresh: bool, loaded_now: bool) -> None:
        """Send listeners a frozen copy of what no slate may show, when it changed: the
        inactive set, and with ``listed_only`` the listed ids (new records, and the load's end,
        so a catalog with no record at all is told too)."""
        if not (inactive_changed or (self._listed_only() and (fresh or loaded_now))):
            return
        listed = frozenset(self.items) if self._listed_only() else None
        frozen = Unservable(frozenset(self.inactive), listed)
        for tell in self.on_unservable:
            tell(frozen)

    async def run(self) -> None:
        """Read the topic from the beginning, then follow it; runs for the worker's lifetime."""
        topic = self.kafka.topics.name("items")
        consumer = AIOKafkaConsumer(  # aborted transactions' records are not the catalog
            **aiokafka_kwargs(self.kafka),
            enable_auto_commit=False,
            group_id=None,
            isolation_level=READ_COMMITTED,
        )
        await consumer.start()
        try:
            partitions = await assign_all(consumer, topic)
            self.partitions = len(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                fresh: list[Item] = []
                oldest_ms = int(time.time() * 1000)
                changes = self._inactive_changes
                for tp, records in batch.items():
                    for record in records:
                        item = await self.accept(
                            record.value, record.key, tp.partition, record.offset, record.timestamp
                        )
                        if item is not None:
                            fresh.append(item)
                            oldest_ms = min(oldest_ms, record.timestamp)
                await self.save_rejects()
                loaded_now = not self.loaded and all(await _at_least(consumer, end))
                self._tell(changes != self._inactive_changes, bool(fresh), loaded_now)
                if fresh:
                    for listener in self.listeners:
                        await listener(fresh, oldest_ms)
                if loaded_now:
                    self.loaded = True
                    log.info("catalog loaded: %d items", len(self.items))
                    if self.repeats:
                        log.info(
                            "%d refused catalog records were dead-lettered on an earlier run "
                            "and not again (publish a tombstone for their keys to clear them)",
                            self.repeats,
                        )
        finally:
            await consumer.stop()

    async def accept(
        self,
        raw: bytes | None,
        key: bytes | None,
        partition: int,
        offset: int,
        timestamp_ms: int = 0,
    ) -> Item | None:
        """Apply one record of the items topic; the item when it is a valid record."""
        if key and self.partitions and home_partition(key, self.partitions) != partition:
            _warn_misplaced(key, partition, home_partition(key, self.partitions))
        if raw is None and key:  # a tombstone: the compacted topic deletes its item
            self._set_active(key.decode("utf-8", "replace"), False)
            return None
        raw = raw or b""
        try:
            item = parse_item(raw)
            # compaction keeps the latest record per key: under another key an item is never
            # replaced by its later records or deleted by its tombstone
            check_key(key, item.item_id, "catalog record", KEY_RULE)
        except ContractError as exc:
            self.metrics.items_consumed.labels("rejected").inc()
            if self.rejected is not None and self.rejected.known(partition, offset, timestamp_ms):
                self.repeats += 1
                return None
            topic = self.kafka.topics.name("items")
            sent = await self.reject(raw, key, exc, topic, partition, offset)
            self._unsaved.append((sent, (partition, offset, timestamp_ms)))
            return None
        self.metrics.items_consumed.labels("accepted").inc()
        before = self.items.get(item.item_id)
        if before is None or before.created_at != item.created_at:  # not for a price change
            self._newest_stale = self.newest_kept > 0
        if item.active:
            self.items[item.item_id] = item
        self._set_active(item.item_id, item.active)
        return item

    def _set_active(self, item_id: str, active: bool) -> None:
        if active == (item_id not in self.inactive):
            return
        if active:
            self.inactive.discard(item_id)
        else:
            self.items.pop(item_id, None)
            self.inactive.add(item_id)
        self._inactive_changes += 1
        self._newest_stale = self.newest_kept > 0


def _warn_misplaced(key: bytes, partition: int, home: int) -> None:
    # Not repairable by the reader: every worker reads the whole topic at start, in no order
    # across partitions, and compaction works per partition.
    log.warning(
        "catalog record of item %r is on items partition %s, but Kafka's default partitioner "
        "(murmur2 of the key) puts it on %s: compaction works per partition, so this record "
        "and the item's records there never replace each other (a deletion or change may not "
        "hold after a restart, and workers can disagree). Publish items with the default "
        "partitioner (librdkafka: partitioner=murmur2_random; kafka-go: Balancer: "
        "&kafka.Murmur2Balancer{}).",
        key[:64].decode("utf-8", "replace"),
        partition,
        home,
    )


class CatalogView(Protocol):
    """What a heuristic slate reads from the catalog: ``Catalog``, or ``NO_CATALOG``."""

    def unservable(self) -> Container[str]:
        """Items no slate may show."""

    def newest(self) -> Sequence[str]:
        """Items to fill a short slate from, best first."""


class _NoCatalog:
    """No catalog: nothing unservable, nothing to fill a slate with (tests, the offline replay)."""

    def unservable(self) -> Container[str]:
        return frozenset()

    def newest(self) -> Sequence[str]:
        return ()


NO_CATALOG = _NoCatalog()
FILL_REASON = "source:catalog"


def catalog_fill(
    newest: Sequence[str], exclude: Container[str], taken: Sequence[SlateItem], missing: int
) -> list[SlateItem]:
    """Up to ``missing`` items of ``newest`` not excluded nor already ``taken``, in order."""
    listed = {item.item_id for item in taken}
    fill: list[SlateItem] = []
    for item_id in newest:
        if len(fill) >= missing:
            break
        if item_id in exclude or item_id in listed:
            continue
        fill.append(
            SlateItem.model_construct(
                item_id=item_id, score=0.0, propensity=1.0, reason=FILL_REASON
            )
        )
    return fill


def excluding(seen: Container[str], unservable: Container[str]) -> Container[str]:
    """What a user's slate must leave out: ``seen`` and the items no slate may show. ``seen``
    itself (often a dict, tested at C speed) while there are none."""
    return _Either(seen, unservable) if unservable else seen


class Unservable(Container[str]):
    """Items no slate may show: the deactivated ones and, when ``listed`` is given
    (``serving.catalog_only``), every item not in it (the ids of active catalog records)."""

    def __init__(self, inactive: Collection[str], listed: Container[str] | None) -> None:
        self.inactive, self.listed = inactive, listed

    def __contains__(self, item: object) -> bool:
        return item in self.inactive or (self.listed is not None and item not in self.listed)

    def __bool__(self) -> bool:
        return bool(self.inactive) or self.listed is not None


class _Either(Container[str]):
    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self.first, self.second = first, second

    def __contains__(self, value: object) -> bool:
        return value in self.first or value in self.second


async def _at_least(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> list[bool]:
    return [await consumer.position(tp) >= offset for tp, offset in end.items()]
