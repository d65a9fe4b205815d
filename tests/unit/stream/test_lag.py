"""The lag watch's repairs: resuming an events partition faust stopped fetching, seeking one it
fetches without progress."""

from __future__ import annotations

import asyncio

from faust.types import TP
from stream_doubles import metrics, value_of

from streamrec.stream.lag import STALE_HOLD_S, STUCK_LOOKS, LagWatch

EVENTS = TP("events", 0)


class Consumer:
    """The parts of faust's consumer the watch reads and repairs."""

    def __init__(self, highwater: int | None, fetching: bool, read: int | None) -> None:
        self._highwater = highwater
        self._read_offset = {EVENTS: read}
        self._active = {EVENTS} if fetching else set()
        self._buffered_partitions = {EVENTS}
        self._committed_offset: dict[TP, int] = {}
        self.resumed: list[TP] = []
        self.sought: list[tuple[TP, int]] = []
        self.flow_active = True
        self.owned = {EVENTS, TP("user_state-changelog", 0)}

    def assignment(self) -> set[TP]:
        return self.owned

    def highwater(self, tp: TP) -> int | None:
        return self._highwater

    def _get_active_partitions(self) -> set[TP]:
        return self._active

    def resume_partitions(self, tps: set[TP]) -> None:
        self._active |= tps
        self.resumed += sorted(tps)

    def resume_flow(self) -> None:
        self.flow_active = True

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


def _watch(consumer: Consumer, recovering: bool = False) -> LagWatch:
    return LagWatch(lambda: consumer, "events", lambda: recovering, metrics())


def _look(watch: LagWatch, times: int = 1) -> None:
    for _ in range(times):
        asyncio.run(watch.check())


def test_a_partition_left_unfetched_with_lag_is_resumed_at_the_second_look() -> None:
    consumer = Consumer(highwater=100, fetching=False, read=40)
    watch = _watch(consumer)
    _look(watch)  # one look cannot tell a stall from progress
    assert consumer.resumed == [] and value_of(watch.metrics.consumer_lag, "0") == 59
    _look(watch)
    assert consumer.resumed == [EVENTS] and not consumer._buffered_partitions
    assert value_of(watch.metrics.partition_resumes) == 1


def test_a_partition_never_fetched_after_recovery_is_resumed() -> None:
    """No high watermark yet: faust fetched nothing, so nothing says there is lag."""
    consumer = Consumer(highwater=None, fetching=False, read=None)
    watch = _watch(consumer)
    _look(watch, 2)
    assert consumer.resumed == [EVENTS]


def test_fetching_caught_up_or_recovering_partitions_are_left_alone() -> None:
    cases = [
        (Consumer(highwater=None, fetching=True, read=None), False),  # first fetch pending
        (Consumer(highwater=41, fetching=False, read=40), False),  # nothing left to read
        (Consumer(highwater=None, fetching=False, read=None), True),  # paused by recovery
    ]
    for consumer, recovering in cases:
        watch = _watch(consumer, recovering)
        _look(watch, 2)
        assert consumer.resumed == []


def test_a_partition_never_committed_is_sought_to_its_read_offset_never_past_it() -> None:
    consumer = Consumer(highwater=100, fetching=True, read=40)
    consumer.flow_active = False  # a rebalance that never resumed faust's flow
    watch = _watch(consumer)
    _look(watch, STUCK_LOOKS)  # the first look only notes the offset
    assert consumer.sought == [] and consumer.resumed == []
    _look(watch)
    # 40 is the last record read, or the next to read after a seek: re-reading it is harmless.
    assert consumer.sought == [(EVENTS, 40)] and consumer.flow_active
    assert value_of(watch.metrics.partition_resumes) == 1
    _look(watch, STUCK_LOOKS - 1)  # still stuck: sought again only after as many looks
    assert len(consumer.sought) == 1
    _look(watch)
    assert len(consumer.sought) == 2


def test_a_stalled_partition_is_sought_to_its_committed_offset_never_past_it() -> None:
    """After faust's seek at the end of recovery its read offset is the committed offset, the
    next one to read: seeking to the one after it skipped a record nobody had applied."""
    consumer = Consumer(highwater=7_000, fetching=True, read=213)
    consumer._committed_offset[EVENTS] = 213
    watch = _watch(consumer)
    _look(watch, 2 * STUCK_LOOKS + 1)
    assert consumer.sought == [(EVENTS, 213), (EVENTS, 213)]


def test_a_fetched_partition_never_read_is_sought_to_its_committed_offset() -> None:
    consumer = Consumer(highwater=None, fetching=True, read=None)
    consumer._committed_offset[EVENTS] = 17
    watch = _watch(consumer)
    _look(watch, STUCK_LOOKS + 1)
    assert consumer.sought == [(EVENTS, 17)]


def test_progress_between_looks_restarts_the_count() -> None:
    consumer = Consumer(highwater=100, fetching=True, read=40)
    watch = _watch(consumer)
    for read in range(40, 40 + 3 * STUCK_LOOKS):
        consumer._read_offset[EVENTS] = read // 2  # progress every other look
        _look(watch)
    assert consumer.sought == []


def test_the_lag_of_a_partition_taken_away_by_a_rebalance_is_no_longer_exported() -> None:
    consumer = Consumer(highwater=100, fetching=True, read=40)
    watch = _watch(consumer)
    _look(watch)
    assert _lag_series(watch) == {"0": 59.0}
    consumer.owned = {TP("user_state-changelog", 0)}
    _look(watch)
    assert _lag_series(watch) == {}


def _lag_series(watch: LagWatch) -> dict[str, float]:
    samples = watch.metrics.consumer_lag.collect()[0].samples
    return {s.labels["partition"]: s.value for s in samples}


def test_lag_after_reading_offset_0_counts_the_records_after_it() -> None:
    consumer = Consumer(highwater=10, fetching=True, read=0)
    watch = _watch(consumer)
    _look(watch)
    assert _lag_series(watch) == {"0": 9.0}  # offsets 1-9 unread


class HeldConsumer(Consumer):
    """A consumer whose events partition a rebalance's hold keeps paused
    (stream/resume_hold.py): a held resume is not a fetch."""

    def __init__(self, held_for_s: float) -> None:
        super().__init__(highwater=100, fetching=False, read=40)
        consumer = self

        class Hold:
            def __init__(self) -> None:
                self.held = {EVENTS}

            def holds(self, tp: TP, stale_after_s: float) -> bool:
                return held_for_s > stale_after_s

            def release(self) -> None:
                consumer._active.add(EVENTS)
                consumer.resumed.append(EVENTS)

        def held_resume(tps: set[TP]) -> None:
            pass  # held until the rebalance ends

        held_resume.hold = Hold()  # type: ignore[attr-defined]
        self.resume_partitions = held_resume  # type: ignore[method-assign]


def test_a_held_partition_is_released_only_when_its_recovery_never_ended() -> None:
    recent = HeldConsumer(held_for_s=5)
    _look(_watch(recent), 3)
    assert recent.resumed == []  # its rebalance's end resumes it
    stale = HeldConsumer(held_for_s=STALE_HOLD_S + 1)
    watch = _watch(stale)
    _look(watch, 2)
    assert stale.resumed == [EVENTS] and value_of(watch.metrics.partition_resumes) == 1
