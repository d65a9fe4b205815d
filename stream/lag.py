"""Consumer lag per events partition, and the repairs the worker makes on a stalled one.

Both need faust consumer internals (read offsets, flow-control sets) that have no public API;
stream/compat.py touches them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faust.types import TP

from streamrec.stream.compat import committed_offset, is_fetching, read_offset, resume
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.resume_hold import ResumeHold

log = logging.getLogger(__name__)

# Looks (one per ``observe``, every 5 s) without progress before a partition faust says it
# fetches is sought again: far longer than a fetch or a rebalance, far shorter than the group's
# max poll interval.
STUCK_LOOKS = 6
# faust's recovery waits up to broker_request_timeout (90 s by default) for the seek before it
# ends a rebalance; a resume held longer than this belongs to a recovery that stopped.
STALE_HOLD_S = 120.0


class LagWatch:
    """Sets ``consumer_lag`` per partition; resumes a partition stalled with lag."""

    def __init__(
        self,
        consumer: Callable[[], Any],
        events_topic: str,
        recovering: Callable[[], bool],
        metrics: WorkerMetrics,
    ) -> None:
        self.consumer = consumer  # faust's consumer, once the app has one
        self.events_topic = events_topic
        self.recovering = recovering  # true while tables are being restored
        self.metrics = metrics
        self._last_read: dict[TP, int | None] = {}
        self._stuck: dict[TP, int] = {}
        self._exported: set[str] = set()  # partitions with a lag series

    def reset(self) -> None:
        """Forget progress seen so far (a new assignment starts over)."""
        self._last_read = {}
        self._stuck = {}

    async def check(self) -> None:
        consumer = self.consumer()
        owned = [tp for tp in consumer.assignment() if tp.topic == self.events_topic]
        self._drop_series({str(tp.partition) for tp in owned})
        for tp in owned:
            read = read_offset(consumer, tp)
            highwater = consumer.highwater(tp)
            # read: the last offset read (None before the first): next to read is read + 1
            lag = None if highwater is None else highwater - (-1 if read is None else read) - 1
            if lag is not None:
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(lag, 0))
                self._exported.add(str(tp.partition))
            await self._unstick(consumer, tp, read, lag)

    def _drop_series(self, owned: set[str]) -> None:
        """Remove the lag of partitions a rebalance took away: its last value would stay
        exported for good (and a lag alert firing) while another worker drains it."""
        for partition in self._exported - owned:
            self.metrics.consumer_lag.remove(partition)
        self._exported &= owned

    async def _unstick(self, consumer: Any, tp: TP, read: int | None, lag: int | None) -> None:
        """Resume a partition that is not fetched and made no progress since the last look,
        with lag or never fetched at all (``lag`` None: its high watermark is still unknown).

        faust's flow control drops a partition from the fetch set when its stream buffer fills
        and re-adds it when the buffer drains; across a rebalance the re-add can be lost, and
        the partition then stalls with lag forever (seen in the three-worker test: 26 events
        left unread, commits stuck). A partition assigned by a rebalance can also end recovery
        outside the fetch set before its first fetch: with no partition to fetch, faust stops
        polling altogether, so no high watermark ever arrives, and the group expels the worker
        at its max poll interval (a joining third worker idle for 5 minutes in CI). Never
        during table recovery, which pauses event partitions on purpose; after it, re-fetching
        is idempotent here, so resuming is safe.

        A partition faust says it fetches that still makes no progress for ``STUCK_LOOKS``
        looks is sought to its committed offset (``_refetch``).
        """
        previous = self._last_read.get(tp, -2)
        self._last_read[tp] = read
        stalled = (lag is None or lag > 0) and previous == read
        if self.recovering() or not stalled:
            self._stuck.pop(tp, None)
            return
        if not is_fetching(consumer, tp):
            hold = ResumeHold.of(consumer)
            if hold is not None and tp in hold.held:
                self._release(hold, tp)
                return
            log.warning("partition %s stalled at offset %s (lag %s); resuming it", tp, read, lag)
            resume(consumer, tp)
            self.metrics.partition_resumes.inc()
            return
        self._stuck[tp] = self._stuck.get(tp, 0) + 1
        if self._stuck[tp] >= STUCK_LOOKS:
            self._stuck[tp] = 0
            await self._refetch(consumer, tp, read, lag)

    def _release(self, hold: ResumeHold, tp: TP) -> None:
        """A held partition is resumed by its rebalance's end; one held for longer than faust
        waits for the seek before it (``STALE_HOLD_S``) belongs to a recovery that stopped, and
        would stay paused until the next rebalance (stream/resume_hold.py)."""
        if not hold.holds(tp, STALE_HOLD_S):
            return
        log.warning("partition %s held since a rebalance whose recovery never ended; resuming", tp)
        hold.release()
        self.metrics.partition_resumes.inc()

    async def _refetch(self, consumer: Any, tp: TP, read: int | None, lag: int | None) -> None:
        """Seek ``tp`` to its committed offset (never committed: its read offset) and let
        faust's flow run. Seen once in CI: after a third worker joined, a worker logged
        "Worker ready" for a newly assigned partition that was in faust's fetch set, then
        neither fetched nor committed it for 300 s. The same stall reproduced under load had
        its records waiting in aiokafka's buffer behind a larger result of another partition
        that every poll drained alone, which ``compat.fetch_round_robin`` now prevents; this
        stays the safety net for any other cause: a seek makes aiokafka fetch from a fresh
        position whatever it held. Re-reading is idempotent here.

        Not ``read + 1``: after a seek (faust's to the committed offset at the end of recovery,
        or this one) faust's read offset is the next offset to read, not one read, so each
        such seek skipped a record nobody had applied (seen on a loaded machine: offsets
        213-215 of a stalled partition skipped by three seeks, and its commits stuck at 213
        for good; with one seek, faust would have committed past the skipped record). Without
        a commit, the read offset itself: whichever of the two it means, nothing is skipped."""
        committed = committed_offset(consumer, tp)
        target = committed if committed is not None else read
        log.warning(
            "partition %s is fetched but made no progress in %d looks (read %s, lag %s, "
            "flow active %s); seeking it to %s",
            tp,
            STUCK_LOOKS,
            read,
            lag,
            consumer.flow_active,
            target,
        )
        if not consumer.flow_active:
            consumer.resume_flow()
        if target is not None:
            await consumer.seek(tp, target)
        self.metrics.partition_resumes.inc()
