"""The lag watch's one repair: resuming an events partition faust stopped fetching."""

from __future__ import annotations

from faust.types import TP
from stream_doubles import metrics, value_of

from streamrec.stream.lag import LagWatch

EVENTS = TP("events", 0)


class Consumer:
    """The parts of faust's consumer the watch reads and repairs."""

    def __init__(self, highwater: int | None, fetching: bool, read: int | None) -> None:
        self._highwater = highwater
        self._read_offset = {EVENTS: read}
        self._active = {EVENTS} if fetching else set()
        self._buffered_partitions = {EVENTS}
        self.resumed: list[TP] = []

    def assignment(self) -> set[TP]:
        return {EVENTS, TP("user_state-changelog", 0)}

    def highwater(self, tp: TP) -> int | None:
        return self._highwater

    def _get_active_partitions(self) -> set[TP]:
        return self._active

    def resume_partitions(self, tps: set[TP]) -> None:
        self._active |= tps
        self.resumed += sorted(tps)


def _watch(consumer: Consumer, recovering: bool = False) -> LagWatch:
    return LagWatch(lambda: consumer, "events", lambda: recovering, metrics())


def test_a_partition_left_unfetched_with_lag_is_resumed_at_the_second_look() -> None:
    consumer = Consumer(highwater=100, fetching=False, read=40)
    watch = _watch(consumer)
    watch.check()  # one look cannot tell a stall from progress
    assert consumer.resumed == [] and value_of(watch.metrics.consumer_lag, "0") == 59
    watch.check()
    assert consumer.resumed == [EVENTS] and not consumer._buffered_partitions
    assert value_of(watch.metrics.partition_resumes) == 1


def test_a_partition_never_fetched_after_recovery_is_resumed() -> None:
    """No high watermark yet: faust fetched nothing, so nothing says there is lag."""
    consumer = Consumer(highwater=None, fetching=False, read=None)
    watch = _watch(consumer)
    watch.check()
    watch.check()
    assert consumer.resumed == [EVENTS]


def test_fetching_caught_up_or_recovering_partitions_are_left_alone() -> None:
    cases = [
        (Consumer(highwater=None, fetching=True, read=None), False),  # first fetch pending
        (Consumer(highwater=41, fetching=False, read=40), False),  # nothing left to read
        (Consumer(highwater=None, fetching=False, read=None), True),  # paused by recovery
    ]
    for consumer, recovering in cases:
        watch = _watch(consumer, recovering)
        watch.check()
        watch.check()
        assert consumer.resumed == []
