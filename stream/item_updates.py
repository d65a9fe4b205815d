"""The ``item-updates`` topic: ingest publishes each applied event's ``ItemDelta`` there, and
every worker follows the whole topic into its ``ItemStats`` replica (stream/item_stats.py).

Publishing (``DeltaPublisher``): the deltas of one events partition are gathered for at most
``DELTA_LINGER_S`` (or ``DELTA_BATCH`` deltas) and sent as one record, a JSON list, keyed by
that partition, so one partition's deltas stay in offset order (sends are serialised). One
record per event cost a faust send, an aiokafka record and a follower's decode per event in
every worker: the heuristic worker drained 0.72x the passthrough with it (README, bench
pipeline). Offset commits and the write-behind flush both wait for ``DeltaPublisher.acked``,
which sends what is gathered and waits for every send's acknowledgement, before a user's state
reaches RocksDB or an offset is committed: a restarted worker trusts its RocksDB and does not
publish again for the events it finds applied, so their deltas must already be in Kafka.

Following (``DeltaFollower``): a consumer outside the group (every worker reads every
partition), from a local snapshot's positions when there is one, else from the beginning. The
snapshot (``<data_dir>/item_stats.json``: the replica plus the positions it has read) is
written every ``state.item_stats_snapshot_s`` and at shutdown, atomically (written aside, then
renamed), so a restart replays only what came after it. The topic keeps a week of deltas; a
worker whose snapshot is older than that starts from the oldest delta kept (trending decays
within hours anyway; co-visitation then forgets the lost days).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.settings import KafkaSettings
from streamrec.stream.compat import assign_all
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.snapshot_file import write_json_atomic

log = logging.getLogger(__name__)
ITEM_UPDATES_WAIT_MS = 20  # longest a fetch waits for new deltas: the replica's staleness bound
# A fetch returns once this much is waiting (or after the wait above). With the default of one
# byte the follower fetched again as soon as anything was new, hundreds of requests a second
# on the event loop under load; the replica tolerates 20 ms, the event path does not.
ITEM_UPDATES_MIN_BYTES = 64 * 1024
DELTA_LINGER_S = 0.005  # longest a delta waits for others of its partition before it is sent
DELTA_BATCH = 500  # most deltas in one record
SendFn = Callable[[bytes, bytes], Awaitable[Any]]


class DeltaPublisher:
    """Gathers deltas per events partition and sends them in batches (module docstring)."""

    def __init__(
        self, send: SendFn, linger_s: float = DELTA_LINGER_S, batch: int = DELTA_BATCH
    ) -> None:
        self.send = send  # (key, value) -> a future resolved on the broker's ack
        self.linger_s = linger_s
        self.batch = batch
        self.gathered: dict[int, list[list[Any]]] = {}  # events partition -> unsent deltas
        self.pending: list[Any] = []  # sent, acknowledgement not yet awaited
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one send at a time: records leave in offset order

    async def publish(self, delta: ItemDelta) -> None:
        rows = self.gathered.setdefault(delta.source[0], [])
        rows.append(delta.to_json())
        if len(rows) >= self.batch:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._linger_over)

    async def flush(self) -> None:
        """Send every gathered delta now."""
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batches, self.gathered = list(self.gathered.items()), {}
            for n, (partition, rows) in enumerate(batches):
                try:
                    body = json.dumps(rows).encode()
                    self.pending.append(await self.send(str(partition).encode(), body))
                except BaseException:
                    # Put back what did not leave, ahead of what was gathered meanwhile: the
                    # next flush (acked() before any commit) sends it, in order.
                    for p, unsent in batches[n:]:
                        self.gathered[p] = unsent + self.gathered.get(p, [])
                    raise

    async def acked(self) -> None:
        """Send what is gathered, then wait until every delta so far is in Kafka."""
        await self.flush()
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)

    def _linger_over(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)  # a reference, so the task is not collected mid-send
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("item deltas not sent yet, kept for the next flush: %s", task.exception())


class DeltaFollower:
    """Applies every partition's deltas to ``stats``; snapshots it to ``path``."""

    def __init__(
        self, kafka: KafkaSettings, stats: ItemStats, path: Path, snapshot_s: float
    ) -> None:
        self.kafka = kafka
        self.stats = stats
        self.path = path
        self.snapshot_s = snapshot_s
        self.positions: dict[int, int] = {}  # item-updates partition -> next offset to read

    def load(self) -> None:
        """Start from the local snapshot, if there is a readable one."""
        if not self.path.is_file():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.stats.load_json(raw["stats"])
            self.positions = {int(p): int(o) for p, o in raw["positions"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "item statistics snapshot %s unusable, reading from the start: %s", self.path, exc
            )
            self.positions = {}

    def save(self) -> None:
        """Write the replica and the positions it has read, atomically (call on the loop)."""
        write_json_atomic(self.path, self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """A copy of the replica and positions, safe to serialise while deltas keep coming."""
        stats = self.stats.to_json()
        return {
            "stats": {
                "trending": {k: list(v) for k, v in stats["trending"].items()},
                "covisit": {k: dict(v) for k, v in stats["covisit"].items()},
                "applied": dict(stats["applied"]),
                "deltas": stats["deltas"],
            },
            "positions": {str(p): o for p, o in self.positions.items()},
        }

    async def run(self) -> None:
        """Follow the topic for the worker's lifetime."""
        topic = self.kafka.topics.name("item_updates")
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=ITEM_UPDATES_WAIT_MS,
            fetch_min_bytes=ITEM_UPDATES_MIN_BYTES,
        )
        await consumer.start()
        try:
            await self._assign(consumer, topic)
            saved_at = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        self._apply(record.value or b"")
                    self.positions[tp.partition] = records[-1].offset + 1
                if time.monotonic() - saved_at >= self.snapshot_s:
                    # Copied on the loop (tens of ms for ML-100K), written in a thread.
                    await asyncio.to_thread(write_json_atomic, self.path, self.snapshot())
                    saved_at = time.monotonic()
        finally:
            with contextlib.suppress(OSError):
                self.save()
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        for tp in await assign_all(consumer, topic):
            if tp.partition in self.positions:
                consumer.seek(tp, self.positions[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)

    def _apply(self, raw: bytes) -> None:
        try:
            deltas = _deltas(json.loads(raw))
        except (ValueError, TypeError, RecursionError) as exc:  # only workers write here
            log.error("ignoring malformed item-updates record: %s", exc)
            return
        for delta in deltas:
            self.stats.apply(delta)


def _deltas(body: list[Any]) -> list[ItemDelta]:
    """A record's deltas: a list of them, or (records written before batching) one delta."""
    if not isinstance(body, list):
        raise TypeError(f"expected a JSON list, got {type(body).__name__}")
    if body and isinstance(body[0], list):
        return [ItemDelta.from_json(row) for row in body]
    return [ItemDelta.from_json(body)]
