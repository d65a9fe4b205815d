"""The dead-letter path: a rejected record goes out with its coordinates and reason, counted.

Used by ingest (bad events) and the catalog (bad items). Sending is the only await: the
record's offset is committed after it, so a crash re-reads and re-sends it (at-least-once).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streamrec.errors import ContractError
from streamrec.stream.contract import DEAD_LETTER_KEY_BYTES, ERROR_CODES, dead_letter, encode
from streamrec.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)
# (key, value) -> sent; the worker passes its dead-letter topic's ``send``.
SendFn = Callable[[bytes | None, bytes], Awaitable[Any]]


class DeadLetters:
    """Sends rejected records to the dead-letter topic and counts them by error code, events
    and catalog items apart (a bad catalog feed must not read as bad behaviour events)."""

    def __init__(self, send: SendFn, metrics: WorkerMetrics, items_topic: str) -> None:
        self.send = send
        self.metrics = metrics
        self.items_topic = items_topic  # its rejections are counted apart from the events'
        self.count = 0  # events
        self.by_code: dict[str, int] = {}  # events
        self.items_by_code: dict[str, int] = {}
        for code in ERROR_CODES:  # a series per code from the start: rate() and alerts see 0s
            metrics.events_rejected.labels(code)
            metrics.items_rejected.labels(code)

    async def reject(
        self, raw: bytes, key: Any, error: ContractError, topic: str, partition: int, offset: int
    ) -> Any:
        """Send ``raw`` read at topic/partition/offset, rejected with ``error``; the send's
        result (faust's: a future of the broker's acknowledgement)."""
        record = dead_letter(raw, error, topic, partition, offset)
        # the code in the template: the log limiter keys on it, so a burst of one code does not
        # hide the first record of another (stable identifiers, no '%' in them)
        log.warning(
            f"dead-lettered %s[%s]@%s ({error.code}): %s", topic, partition, offset, error.message
        )
        kept_key = key[:DEAD_LETTER_KEY_BYTES] if isinstance(key, bytes) else None
        sent = await self.send(kept_key, encode(record))
        if topic == self.items_topic:
            self.items_by_code[error.code] = self.items_by_code.get(error.code, 0) + 1
            self.metrics.items_rejected.labels(error.code).inc()
            return sent
        self.count += 1
        self.by_code[error.code] = self.by_code.get(error.code, 0) + 1
        self.metrics.events_rejected.labels(error.code).inc()
        self.metrics.dead_lettered.inc()
        return sent
