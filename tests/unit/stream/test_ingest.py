"""Ingest with in-memory doubles: validate, apply once, count item statistics, hand on."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from stream_doubles import (
    BROKER_S,
    Deltas,
    Record,
    Sent,
    item_stats,
    metrics,
    record,
    value_of,
)

from streamrec.errors import BrokerError
from streamrec.settings import Settings
from streamrec.stream.contract import DEAD_LETTER_ORIGINAL_BYTES, Event, encode
from streamrec.stream.deadletter import DeadLetters
from streamrec.stream.ingest import STATE_CODEC, Ingest
from streamrec.stream.routing import FORWARDED, Router, home_partition
from streamrec.stream.state import UserState
from streamrec.stream.write_behind import CachedTable


class Downstream:
    def __init__(self) -> None:
        self.responses: list[str] = []
        self.skips: list[str] = []
        self.received: list[float | None] = []
        self.ticks: list[tuple[int, float | None]] = []  # (partition, append time)
        self.marked: list[tuple[str, int, int]] = []  # (event id, partition, user event count)

    def on_response(self, event: Event, partition: int, received: float | None) -> None:
        self.responses.append(event.event_id)
        self.received.append(received)

    def on_skip(self, event: Event, partition: int, received: float | None) -> None:
        self.skips.append(event.event_id)

    def tick(self, partition: int, received: float | None) -> None:
        self.ticks.append((partition, received))

    def mark(self, event: Event, partition: int, ts: float | None, state: UserState) -> None:
        self.marked.append((event.event_id, partition, state.count))


class Forwards:
    """The events topic's ``send`` to a partition, keeping what it was given."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, int]] = []
        self.headers: list[Any] = []

    async def __call__(self, key: bytes, value: bytes, partition: int, headers: Any) -> Any:
        self.records.append((key, value, partition))
        self.headers.append(headers)
        return _Sent(self.refused)

    refused: Exception | None = None  # what Kafka answers each forward with (None: acked)


class _Sent:
    """A forward's acknowledgement as faust hands it back: awaited before the next commit."""

    def __init__(self, refused: Exception | None) -> None:
        self.refused = refused

    def __await__(self) -> Any:
        if self.refused is not None:
            raise self.refused
        return iter(())


def _ingest(
    owned: set[int] | None = None,
    partitions: int | None = None,
    forwards: Forwards | None = None,
    settings: Settings | None = None,
) -> tuple[Ingest, Downstream, Sent, list[Record], Deltas]:
    """An ingest over in-memory doubles; ``partitions``: the events topic's count (None:
    nothing is forwarded)."""
    settings = settings or Settings()
    down, sent, remembered = Downstream(), Sent(), []
    m = metrics()
    deltas = Deltas(item_stats(settings))
    ingest = Ingest(
        settings.state,
        CachedTable({}, 1000, STATE_CODEC),
        deltas.publish,
        lambda: owned if owned is not None else {0, 1},
        remembered.append,
        DeadLetters(sent, m, "items").reject,
        down,
        down.mark,
        m,
        Router(partitions, forwards or Forwards(), m.events_forwarded),
    )
    return ingest, down, sent, remembered, deltas


def _event(n: int, user: str = "u1", item: str | None = None, **extra: object) -> Event:
    return Event.model_validate(
        {"event_id": f"e{n}", "user_id": user, "item_id": item or f"i{n}", "type": "click",
         "ts": 1_700_000_000_000 + n, **extra}
    )  # fmt: skip


def _run(ingest: Ingest, *records: Record) -> None:
    async def main() -> None:
        for r in records:
            await ingest.handle(r)

    asyncio.run(main())


def test_each_event_is_applied_once_and_marks_its_user() -> None:
    ingest, down, _, remembered, _ = _ingest()
    first, second = record(_event(1), 0, 10), record(_event(2), 0, 11)
    _run(ingest, first, second, first)  # the first one redelivered
    assert down.marked == [("e1", 0, 1), ("e2", 0, 2)]
    assert ingest.counts.accepted == 2 and ingest.counts.duplicates == 1
    assert ingest.counts.users == 1 and len(remembered) == 3
    state = ingest.user_state.get("u1", 0)
    assert state is not None and state.history() == ["i1", "i2"]


def test_each_applied_event_publishes_its_item_delta_once() -> None:
    ingest, _, _, _, deltas = _ingest()
    first = record(_event(1), 0, 1)
    _run(ingest, first, record(_event(2), 0, 2), first)
    assert [(d.item, d.previous, d.source) for d in deltas.published] == [
        ("i1", (), (0, 1)),
        ("i2", ("i1",), (0, 2)),
    ]
    assert deltas.stats.covisits(["i1"])["i1"][0][0] == "i2"
    assert {item for item, _ in deltas.stats.trending()} == {"i1", "i2"}


def test_co_visitation_pairs_an_event_with_the_items_before_it_not_the_events() -> None:
    ingest, _, _, _, deltas = _ingest()
    # x, y, then a view, click and dwell of a, then b: b follows x, y and a (a window of 3
    # items); counted in events, the window held a three times and b was paired with a alone.
    items = ["x", "y", "a", "a", "a", "b"]
    _run(ingest, *(record(_event(n, item=item), 0, n) for n, item in enumerate(items)))
    previous = {d.item: d.previous for d in deltas.published}
    assert previous["b"] == ("x", "y", "a")
    assert [d.previous for d in deltas.published if d.item == "a"][1:] == [("x", "y")] * 2
    assert {n for n, _ in deltas.stats.covisits(["x"])["x"]} == {"y", "a", "b"}


def test_bad_input_is_dead_lettered_with_its_code_and_good_events_still_apply() -> None:
    ingest, down, sent, _, _ = _ingest()
    bad = Record(b"u1", b"{not json", record(_event(1), 0, 5).message)
    wrong_key = record(_event(2), 0, 6, key=b"someone-else")
    no_key = Record(None, record(_event(4), 0, 8).value, record(_event(4), 0, 8).message)
    _run(ingest, bad, wrong_key, record(_event(3), 0, 7), no_key)
    letters = [json.loads(value) for _, value in sent.records]
    assert [letter["error_code"] for letter in letters] == ["invalid_json", "bad_key", "bad_key"]
    assert "has no key" in letters[2]["error_message"]
    assert down.marked == [("e3", 0, 1)]
    assert value_of(ingest.metrics.dead_lettered) == 3


def test_a_record_larger_than_a_producer_request_is_dead_lettered_within_the_limits() -> None:
    # The broker accepts records of about 1 MiB; the dead letter of one (base64 value, key and a
    # message quoting the key) must still fit the producer's 1 MiB request, or the send fails
    # and the agent crashes with the record neither applied nor dead-lettered.
    ingest, down, sent, _, _ = _ingest()
    huge = Record(b"u1", b"x" * 1_000_000, record(_event(1), 0, 5).message)
    good = record(_event(2), 0, 6)
    long_key = record(_event(3), 0, 7, key=b"K" * 600_000)
    _run(ingest, huge, good, long_key)
    (k1, v1), (k2, v2) = sent.records
    assert len(k1 or b"") + len(v1) < 200_000 and len(k2 or b"") + len(v2) < 200_000
    letters = [json.loads(v1), json.loads(v2)]
    assert [letter["error_code"] for letter in letters] == ["too_large", "bad_key"]
    assert [letter["original_size"] for letter in letters] == [1_000_000, len(long_key.value)]
    assert base64.b64decode(letters[0]["original_b64"]) == b"x" * DEAD_LETTER_ORIGINAL_BYTES
    assert base64.b64decode(letters[1]["original_b64"]) == long_key.value  # kept whole
    assert "(600000 bytes)" in letters[1]["error_message"]
    assert down.marked == [("e2", 0, 1)]


def test_a_response_goes_to_the_reward_join_and_every_event_ticks_its_partition() -> None:
    ingest, down, _, _, _ = _ingest()
    _run(ingest, record(_event(1, rec_id="r1", position=0), 1, 1), record(_event(2), 1, 2))
    assert down.responses == ["e1"]
    assert down.ticks == [(1, BROKER_S), (1, BROKER_S)]


def test_a_skip_earns_no_reward_adds_no_statistics_and_keeps_its_item_out_of_slates() -> None:
    """A music service: plays and dwells repeat, and a dwell under 10 s is a skip."""
    music = {"min_dwell_ms": 10_000, "repeatable_types": ["view", "dwell"]}
    ingest, down, _, _, deltas = _ingest(settings=Settings.model_validate({"state": music}))
    play = _event(1, item="a", type="view")
    skip = _event(2, item="b", type="dwell", dwell_ms=3_000, rec_id="r1", position=0)
    listened = _event(3, item="c", type="dwell", dwell_ms=200_000, rec_id="r1", position=1)
    _run(ingest, record(play, 0, 1), record(skip, 0, 2), record(listened, 0, 3))
    assert down.responses == ["e3"]  # the skipped slate item earns no reward
    assert down.skips == ["e2"]  # but is joined as a skip (a penalty when one is set)
    assert [d.weight for d in deltas.published] == [1.0, 0.0, 1.5]
    assert [n for n, _ in deltas.stats.covisits(["a"])["a"]] == ["c"]  # a -> b not learnt
    assert {item for item, _ in deltas.stats.trending()} == {"a", "c"}
    state = ingest.user_state.get("u1", 0)
    assert state is not None and state.history() == ["a", "b", "c"]
    assert [item in state.seen for item in "abc"] == [False, True, False]


def test_a_record_of_a_revoked_partition_is_skipped_untouched() -> None:
    ingest, down, _, remembered, _ = _ingest(owned={0})
    _run(ingest, record(_event(1), 3, 1))
    assert down.marked == [] and remembered == [] and ingest.counts.consumed == 0
    assert value_of(ingest.metrics.revoked_skipped) == 1


def test_an_event_on_another_partition_than_its_keys_is_forwarded_not_applied() -> None:
    # librdkafka's default partitioner (CRC32) puts most keys elsewhere than murmur2 does: such
    # an event applied where it landed split the user's state and lost their rewards.
    forwards = Forwards()
    ingest, down, sent, _, _ = _ingest(owned={0, 1, 2, 3}, partitions=4, forwards=forwards)
    home = home_partition(b"u1", 4)
    away = (home + 1) % 4
    misplaced = record(_event(1), away, 7)
    misplaced.message.headers = [("trace-id", b"t-1")]
    _run(ingest, misplaced, record(_event(2), home, 3))
    assert forwards.records == [(b"u1", encode(_event(1)), home)]
    assert forwards.headers == [[("trace-id", b"t-1"), (FORWARDED, b"1")]], "headers kept"
    assert down.marked == [("e2", home, 1)], "only the event on its home partition is applied"
    assert ingest.router.count == 1 and ingest.counts.accepted == 1 and sent.records == []
    assert ingest.user_state.get("u1", away) is None
    assert ingest.metrics.events_forwarded._value.get() == 1


def test_nothing_is_forwarded_without_a_partition_count_or_for_bad_records() -> None:
    forwards = Forwards()
    ingest, down, _, _, _ = _ingest(owned={0, 1, 2, 3}, forwards=forwards)
    away = (home_partition(b"u1", 4) + 1) % 4
    _run(ingest, record(_event(1), away, 7))
    assert down.marked == [("e1", away, 1)] and forwards.records == []
    ingest, _, sent, _, _ = _ingest(owned={0, 1, 2, 3}, partitions=4, forwards=forwards)
    _run(ingest, record(_event(2), away, 8, key=b"someone-else"))
    assert forwards.records == [] and len(sent.records) == 1, "a bad key is dead-lettered"


def test_a_forwarded_copy_or_a_partition_beyond_the_count_is_applied_where_it_lands() -> None:
    # Workers started with different counts (the topic grown while one ran) passed copies back
    # and forth for good.
    forwards = Forwards()
    ingest, down, _, _, _ = _ingest(owned=set(range(8)), partitions=4, forwards=forwards)
    away = (home_partition(b"u1", 4) + 1) % 4
    copy = record(_event(1), away, 7)
    copy.message.headers = [(FORWARDED, b"1")]
    _run(ingest, copy, record(_event(2), 6, 1))
    assert forwards.records == [] and [m[0] for m in down.marked] == ["e1", "e2"]


def test_a_forward_kafka_refused_stops_the_commit() -> None:
    # Forwards are queued, not awaited one by one; one refused (no write access to the events
    # topic) must not let its source offset commit, or the event is applied nowhere.
    forwards = Forwards()
    forwards.refused = RuntimeError("TopicAuthorizationFailedError")
    ingest, _, _, _, _ = _ingest(owned={0, 1, 2, 3}, partitions=4, forwards=forwards)
    away = (home_partition(b"u1", 4) + 1) % 4
    _run(ingest, record(_event(1), away, 7))
    with pytest.raises(BrokerError, match="write access to the events topic"):
        asyncio.run(ingest.router.settle())
    asyncio.run(ingest.router.settle())  # reported once; the restart re-reads the event


def test_a_state_handed_on_for_a_slate_is_never_changed_by_later_events() -> None:
    # The refresher builds a slate from the state it was handed, maybe after later events of
    # the same user were applied (the model path awaits its batch): that state must stay the
    # one its trigger events left.
    kept: list[tuple[UserState, dict[str, Any]]] = []
    ingest, _, _, _, _ = _ingest()
    ingest.mark = lambda event, partition, ts, state: kept.append((state, state.to_json()))
    _run(ingest, *(record(_event(n, item=f"i{n % 3}"), 0, n) for n in range(1, 6)))
    assert [state.count for state, _ in kept] == [1, 2, 3, 4, 5]
    for state, when_handed in kept:
        assert state.to_json() == when_handed


def test_an_event_stamped_after_its_record_counts_at_the_record_time() -> None:
    # One view stamped a day ahead (the contract allows it, for clock skew) put its item first
    # in trending, for every fresh user, for a day.
    ingest, _, _, _, deltas = _ingest()
    record_s = 1_700_000_100.0  # the broker appended both records then
    ahead = _event(1, item="pinned").model_copy(
        update={"ts": int(record_s * 1000) + 23 * 3_600_000}
    )
    behind = _event(2, item="fine")  # stamped before its record: kept as it is
    _run(ingest, record(ahead, 0, 1, broker_s=record_s), record(behind, 0, 2, broker_s=record_s))
    assert [d.ts for d in deltas.published] == [int(record_s * 1000), behind.ts]
    state = ingest.user_state.get("u1", 0)
    assert state is not None and [ts for _, ts, _ in state.recent] == [
        behind.ts,
        int(record_s * 1000),
    ]


def test_a_response_is_joined_with_its_record_time() -> None:
    ingest, down, _, _, _ = _ingest()
    _run(ingest, record(_event(1, rec_id="r1"), 0, 1, broker_s=1_700_000_005.5))
    assert down.responses == ["e1"] and down.received == [1_700_000_005.5]
    assert down.ticks == [(0, 1_700_000_005.5)]  # its impressions close on that time too


def test_a_topic_on_producer_time_bounds_nothing() -> None:
    # CreateTime carries what producers set (an upstream pipeline's original event time, say),
    # not when the record reached Kafka: the event's own time stands.
    ingest, down, _, _, deltas = _ingest()
    ahead = _event(1, rec_id="r1").model_copy(update={"ts": 1_700_000_200_000})
    created = record(ahead, 0, 1, broker_s=1_700_000_100.0)
    created.message.timestamp_type = 0  # CreateTime
    _run(ingest, created)
    assert [d.ts for d in deltas.published] == [ahead.ts] and down.received == [None]
    assert down.ticks == [(0, None)]  # impressions close on the worker's clock there
