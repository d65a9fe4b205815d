"""The events partitions' resume is held until faust's rebalance has ended
(stream/resume_hold.py), driven through faust's own recovery completion."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from streamrec.stream import resume_hold
from streamrec.stream.compat import is_fetching
from streamrec.stream.resume_hold import ResumeHold


def _recovering_app(assigned: set[TP]) -> Any:
    """A faust app (not started) in a rebalance that assigned ``assigned``: what faust's
    ``Recovery.on_recovery_completed`` reads, with the seek and the fetcher's start stubbed."""
    app = faust.App("compat-recovery", broker="kafka://127.0.0.1:9", store="memory://")
    consumer = app.consumer
    consumer._active_partitions = set()  # type: ignore[attr-defined]  # paused at assignment
    consumer.assignment = lambda: set(assigned)  # type: ignore[method-assign]

    async def started() -> None:
        pass

    app._fetcher.maybe_start = started  # type: ignore[attr-defined]
    app.on_rebalance_start()
    return app


def test_no_events_partition_is_fetched_before_recovery_empties_the_stream_buffers() -> None:
    """faust resumed the events partitions, then awaited the seek to their committed offsets
    with its flow running, then resumed flow control, which empties the stream buffers: records
    fetched meanwhile were thrown away unhandled, and committed over (seen under load)."""
    events = TP("events", 0)
    fetched: dict[str, bool] = {}

    async def recover() -> bool:
        app = _recovering_app({events})  # in the loop: faust's services bind to it
        consumer = app.consumer

        async def perform_seek() -> None:
            fetched["while seeking"] = is_fetching(consumer, events)

        consumer.perform_seek = perform_seek
        resume_flow = app.flow_control.resume

        def resume() -> None:  # faust's own empties every stream buffer, then resumes
            fetched["when the buffers empty"] = is_fetching(consumer, events)
            resume_flow()

        app.flow_control.resume = resume
        ResumeHold.install(app, lambda tp: tp.topic == "events").assigned()
        await app.tables.recovery.on_recovery_completed(app.consumer_generation_id)
        return is_fetching(consumer, events)

    assert asyncio.run(recover()), "fetched once the rebalance has ended"
    assert fetched == {"while seeking": False, "when the buffers empty": False}


def test_only_a_still_assigned_events_partition_is_resumed_and_others_at_once() -> None:
    kept, revoked, changelog = TP("events", 0), TP("events", 1), TP("user_state-changelog", 0)
    assigned = {kept, changelog}
    app = _recovering_app(assigned)
    consumer = app.consumer
    ResumeHold.install(app, lambda tp: tp.topic == "events").assigned()
    installed = consumer.resume_partitions
    ResumeHold.install(app, lambda tp: tp.topic == "events").assigned()
    assert consumer.resume_partitions is installed, "wrapped twice"

    consumer.resume_partitions({kept, revoked, changelog})
    assert is_fetching(consumer, changelog), "a changelog recovers during the rebalance"
    assert not is_fetching(consumer, kept) and not is_fetching(consumer, revoked)
    app.on_rebalance_end()
    assert is_fetching(consumer, kept) and not is_fetching(consumer, revoked)

    consumer.pause_partitions({kept})  # the lag watch resumes a stalled one outside rebalances
    consumer.resume_partitions({kept})
    assert is_fetching(consumer, kept)


def test_an_older_rebalances_end_during_a_newer_one_keeps_the_hold() -> None:
    """faust sets ``app.rebalancing`` when a rebalance starts, from the consumer's thread; the
    end of an older one's recovery, still seeking, cleared it while the newer one ran, and the
    newer recovery's resume then went through before its own seek."""
    events = TP("events", 0)

    async def recover() -> dict[str, bool]:
        app = _recovering_app({events})
        consumer = app.consumer
        hold = ResumeHold.install(app, lambda tp: tp.topic == "events")
        hold.assigned()
        seen: dict[str, bool] = {}

        async def perform_seek() -> None:
            app.on_rebalance_start()  # the next rebalance starts while this one seeks

        consumer.perform_seek = perform_seek
        await app.tables.recovery.on_recovery_completed(app.consumer_generation_id)
        seen["flag kept"] = app.rebalancing
        consumer.resume_partitions({events})  # the newer recovery resumes before its seek
        seen["fetched before the newer end"] = is_fetching(consumer, events)
        hold.assigned()  # the newer rebalance's assignment
        app.on_rebalance_end()
        seen["fetched after it"] = is_fetching(consumer, events)
        return seen

    assert asyncio.run(recover()) == {
        "flag kept": True,
        "fetched before the newer end": False,
        "fetched after it": True,
    }


def test_a_hold_is_stale_only_after_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    events = TP("events", 0)
    app = _recovering_app({events})
    hold = ResumeHold.install(app, lambda tp: tp.topic == "events")
    hold.assigned()
    now = [1000.0]
    monkeypatch.setattr(resume_hold.time, "monotonic", lambda: now[0])
    app.consumer.resume_partitions({events})
    assert ResumeHold.of(app.consumer) is hold and events in hold.held
    now[0] += 100
    assert not hold.holds(events, 120.0)
    now[0] += 30
    assert hold.holds(events, 120.0)
    hold.release()  # what the lag watch does with a stale one
    assert is_fetching(app.consumer, events) and not hold.held
