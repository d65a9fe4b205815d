"""Holding back the events partitions' resume until faust's rebalance has ended.

faust's recovery resumes the stream partitions, then awaits the seek to their committed offsets
with its flow already running, and only then resumes its flow control, which empties every
stream buffer: records fetched during the seek were dropped from the buffer unhandled, and
committed over (stream/durability.py). ``ResumeHold`` wraps the consumer's
``resume_partitions``: while a rebalance runs, a resume of an events partition is held, and
those still assigned are resumed when the rebalance ends (``app.on_rebalance_end``, which faust
calls after that emptying). Resumes of other partitions (the changelogs being recovered) and
any resume outside a rebalance go through at once.

Which rebalance is running is kept here, not read from ``app.rebalancing`` alone: faust sets
that flag from the consumer's thread when a rebalance starts, and the end of an older one's
recovery, still awaiting its seek, clears it while the newer one runs. So an end counts only
when no rebalance started since the latest assignment (``app.rebalancing_count``, counted at
each start); a stale end leaves the hold in place and sets the flag again.

A recovery that stops without ending the rebalance (faust gives up on a seek after
``broker_request_timeout``, logs, and waits for the next rebalance) would leave the partitions
held for good: the lag watch releases a hold older than ``stale_after_s`` (stream/lag.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP


class ResumeHold:
    """The wrapper's state (module docstring); ``install`` once, ``assigned`` at every
    assignment."""

    def __init__(self, app: Any, is_stream: Callable[[TP], bool]) -> None:
        self.app = app
        self.consumer = app.consumer
        self.is_stream = is_stream
        self.resume = self.consumer.resume_partitions  # faust's own
        self.held: set[TP] = set()
        self.held_since: float | None = None  # monotonic time of the oldest held resume
        self.assigned_at = app.rebalancing_count

    @classmethod
    def of(cls, consumer: Any) -> ResumeHold | None:
        """The hold installed on ``consumer``, if any."""
        hold: ResumeHold | None = getattr(consumer.resume_partitions, "hold", None)
        return hold

    @classmethod
    def install(cls, app: Any, is_stream: Callable[[TP], bool]) -> ResumeHold:
        """The hold of ``app``'s consumer, wrapping it the first time."""
        installed = cls.of(app.consumer)
        if installed is not None:
            return installed
        hold = cls(app, is_stream)
        end = app.on_rebalance_end

        def resume_unless_rebalancing(tps: Iterable[TP]) -> None:
            hold.request(set(tps))

        def end_then_resume() -> None:
            end()
            hold.ended()

        resume_unless_rebalancing.hold = hold  # type: ignore[attr-defined]
        app.consumer.resume_partitions = resume_unless_rebalancing
        app.on_rebalance_end = end_then_resume
        return hold

    def assigned(self) -> None:
        """A rebalance assigned partitions: its end is the one that releases the hold."""
        self.assigned_at = self.app.rebalancing_count

    def rebalancing(self) -> bool:
        return bool(self.app.rebalancing) or self.app.rebalancing_count != self.assigned_at

    def request(self, tps: set[TP]) -> None:
        hold = {tp for tp in tps if self.is_stream(tp)} if self.rebalancing() else set()
        if hold and self.held_since is None:
            self.held_since = time.monotonic()
        self.held |= hold
        if tps - hold:
            self.resume(tps - hold)

    def ended(self) -> None:
        if self.app.rebalancing_count != self.assigned_at:
            self.app.rebalancing = True  # an older rebalance's end: the newer one still runs
            return
        self.release()

    def release(self) -> None:
        """Resume the held partitions still assigned (a revoked one stays with its owner)."""
        ready = self.held & set(self.consumer.assignment())
        self.held, self.held_since = set(), None
        if ready:
            self.resume(ready)

    def holds(self, tp: TP, stale_after_s: float) -> bool:
        """True when ``tp`` has been held for longer than ``stale_after_s``."""
        since = self.held_since
        return tp in self.held and since is not None and time.monotonic() - since > stale_after_s
