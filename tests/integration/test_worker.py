"""The streaming worker against the real broker: reference state, kill -9 recovery, consumer
group scaling, and malformed input."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.settings import KafkaSettings
from streamrec.stream.config import StateSettings
from streamrec.stream.connection import topic_reader
from streamrec.stream.contract import Event, Item, encode
from streamrec.stream.producer import dataset_events, kafka_producer, publish
from streamrec.stream.testing import (
    WorkerProcess,
    group_caught_up,
    read_changelog,
    read_topic,
    reference_item_stats,
    reference_state,
    saved_item_stats,
    wait_until,
)
from streamrec.stream.topics import create_topics, worker_app_id

pytestmark = pytest.mark.slow


def _group(kafka: KafkaSettings) -> str:
    return worker_app_id(kafka)


def _wait_caught_up(kafka: KafkaSettings, workers: list[WorkerProcess], timeout_s: float) -> None:
    topic = kafka.topics.name("events")

    def done() -> bool:
        for w in workers:
            assert w.alive(), f"worker died:\n{w.log_tail()}"
        return asyncio.run(group_caught_up(kafka, _group(kafka), topic))

    wait_until(done, timeout_s, "the worker group to commit every event", interval_s=2.0)


# Neighbour lists never cut: where a cut falls depends on arrival order, so only uncut lists can
# equal the single-process reference exactly.
UNCUT = StateSettings(covisit_top_k=5000)
UNCUT_ENV = {"STREAMREC_STATE__COVISIT_TOP_K": str(UNCUT.covisit_top_k)}


def _start_workers(kafka: KafkaSettings, tmp_path: Path, n: int) -> list[WorkerProcess]:
    """``n`` worker processes of one group, each serving its web pages."""
    workers = [
        WorkerProcess(kafka, tmp_path / f"w{i}", free_port(), UNCUT_ENV).start() for i in range(n)
    ]
    for w in workers:
        wait_until(lambda w=w: w.stats() is not None, 90, "worker web servers")
    return workers


def _wait_all_own_partitions(workers: list[WorkerProcess], timeout_s: float = 120) -> None:
    """Until every worker owns events partitions: the group has settled with all of them in.

    Publishing earlier lets the first worker apply a whole backlog before the next one joins.
    """
    wait_until(
        lambda: all((w.stats() or {}).get("partitions") for w in workers),
        timeout_s,
        "every worker to own partitions",
    )


def _stats(worker: WorkerProcess) -> dict[str, Any]:
    """The worker's /stats; the page can miss its 2 s timeout while a rebalance runs."""
    seen: list[dict[str, Any] | None] = []
    wait_until(lambda: seen.append(worker.stats()) or seen[-1] is not None, 60, "worker stats")
    return seen[-1] or {}


def _scrape(worker: WorkerProcess) -> dict[str, float]:
    """The worker's /metrics as ``{'name{label="value"}': value}``."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def _final_state(kafka: KafkaSettings) -> dict[str, dict[str, object]]:
    """user_state from its changelog, without the record position (the reference has none)."""
    table = asyncio.run(read_changelog(kafka, f"{_group(kafka)}-user_state-changelog"))
    return {user: {k: v for k, v in s.items() if k != "o"} for user, s in table.items()}


def _wait_item_stats(workers: list[WorkerProcess], deltas: int) -> None:
    """Until every worker's replica has applied ``deltas`` deltas (it trails the commits)."""
    wait_until(
        lambda: all(
            (w.stats() or {}).get("item_stats", {}).get("deltas_applied", 0) >= deltas
            for w in workers
        ),
        120,
        f"every worker's item statistics to hold {deltas} events",
    )


def _assert_item_stats(workers: list[WorkerProcess], events: list[Event]) -> None:
    """Every stopped worker's replica equals the single-process reference: all traffic's."""
    expected = reference_item_stats(events, UNCUT)
    for w in workers:
        got = saved_item_stats(w.data_dir, UNCUT)
        assert got.covisit == expected.covisit
        assert got.trending_scores.keys() == expected.trending_scores.keys()
        for item, (score, last) in expected.trending_scores.items():
            assert got.trending_scores[item] == pytest.approx([score, last], rel=1e-9)


def _events(limit: int | None = None) -> list[Event]:
    events = dataset_events(load_dataset(None))
    return list(itertools.islice(events, limit) if limit else events)


def test_kill_dash_9_mid_replay_recovers_to_the_reference_state(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Full MovieLens-100K replay; the worker is SIGKILLed part way and restarted.

    The restart's recovery is where one partition used to lose up to 500 records and its
    commits for good (stream/durability.py, the fetch fix): every offset must be committed."""
    events = _events()
    asyncio.run(create_topics(kafka_settings))
    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port(), UNCUT_ENV).start()
    try:
        wait_until(lambda: worker.stats() is not None, 90, "the worker web server")
        asyncio.run(
            publish(kafka_settings, events, kafka_settings.topics.name("events"), progress=False)
        )
        wait_until(
            lambda: (worker.stats() or {}).get("events_accepted", 0) >= 30_000,
            300,
            "30,000 events applied before the kill",
        )
        worker.kill()
        worker.start()
        _wait_caught_up(kafka_settings, [worker], 300)
        stats = worker.stats() or {}
        print(
            f"recovery after kill -9: {stats.get('last_recovery_s')} s; the restarted worker "
            f"applied {stats.get('events_accepted')} events and dropped "
            f"{stats.get('duplicates_dropped')} duplicates"
        )
        assert stats.get("last_recovery_s") is not None, "recovery time must be logged"
        _wait_item_stats([worker], len(events))
    finally:
        worker.stop()
    _assert_item_stats([worker], events)
    final = _final_state(kafka_settings)
    expected = reference_state(events, StateSettings())
    assert final.keys() == expected.keys()
    mismatched = [u for u in expected if final[u] != expected[u]]
    assert not mismatched, f"{len(mismatched)} users differ, e.g. {mismatched[:3]}"
    # Nothing lost, nothing twice: every user's count equals their events in the file.
    per_user = {u: 0 for u in expected}
    for e in events:
        per_user[e.user_id] += 1
    assert {u: s["n"] for u, s in final.items()} == per_user


def test_two_workers_split_the_partitions_and_reach_the_reference(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    events = _events(20_000)
    asyncio.run(create_topics(kafka_settings))
    workers = _start_workers(kafka_settings, tmp_path, 2)
    try:
        _wait_all_own_partitions(workers)
        asyncio.run(
            publish(kafka_settings, events, kafka_settings.topics.name("events"), progress=False)
        )
        _wait_caught_up(kafka_settings, workers, 400)
        accepted = [(w.stats() or {}).get("events_accepted", 0) for w in workers]
        _wait_item_stats(workers, len(events))
    finally:
        for w in workers:
            w.stop()
    assert all(a > 0 for a in accepted), f"one worker got no partition: {accepted}"
    _assert_equal_states(_final_state(kafka_settings), reference_state(events, StateSettings()))
    _assert_item_stats(workers, events)


def test_a_third_worker_joining_mid_stream_loses_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    events = _events(30_000)
    asyncio.run(create_topics(kafka_settings))
    workers = _start_workers(kafka_settings, tmp_path, 2)
    try:
        topic = kafka_settings.topics.name("events")
        _wait_all_own_partitions(workers)
        asyncio.run(publish(kafka_settings, events[:15_000], topic, progress=False))
        wait_until(
            lambda: all((w.stats() or {}).get("events_accepted", 0) > 0 for w in workers),
            120,
            "both workers to apply events (partitions split)",
        )
        # The rest arrives over 15 s, while the third worker joins (a join takes about 5 s).
        rest = events[15_000:]
        stream = threading.Thread(
            target=lambda: asyncio.run(
                publish(kafka_settings, rest, topic, rate=1000, progress=False)
            )
        )
        stream.start()
        workers.append(WorkerProcess(kafka_settings, tmp_path / "w2", free_port()).start())
        _wait_all_own_partitions(workers)
        stream.join()
        _wait_caught_up(kafka_settings, workers, 300)
        # Consumed, not accepted: what it reads first may all be events its partitions' previous
        # owner applied after its last commit (duplicates, rightly skipped).
        joined = _stats(workers[2]).get("events_consumed", 0)
    finally:
        for w in workers:
            w.stop()
    assert joined > 0, "the third worker read no events: no rebalance was tested"
    _assert_equal_states(_final_state(kafka_settings), reference_state(events, StateSettings()))


def _assert_equal_states(
    final: dict[str, dict[str, object]], expected: dict[str, dict[str, object]]
) -> None:
    assert final.keys() == expected.keys()
    differing = {u: (final[u]["n"], expected[u]["n"]) for u in expected if final[u] != expected[u]}
    assert not differing, f"{len(differing)} users differ; (count, expected count): {differing}"


def _malformed(n: int, rng: random.Random) -> list[tuple[bytes | None, bytes]]:
    ok = {
        "event_id": "x",
        "user_id": "u1",
        "item_id": "1",
        "type": "click",
        "ts": 1_700_000_000_000,
    }
    makers = [
        lambda i: b"{broken json " + str(i).encode(),
        lambda i: json.dumps({**ok, "event_id": f"bad{i}", "ts": "not-a-time"}).encode(),
        lambda i: json.dumps({**ok, "event_id": f"bad{i}", "item_id": i}).encode(),
        lambda i: json.dumps({k: v for k, v in ok.items() if k != "item_id"}).encode(),
        lambda i: json.dumps({**ok, "event_id": f"bad{i}", "type": "wormhole"}).encode(),
        lambda i: json.dumps({**ok, "event_id": f"bad{i}", "pad": "x" * 20_000}).encode(),
        lambda i: json.dumps({**ok, "event_id": f"bad{i}", "ts": 123}).encode(),
        lambda i: bytes(rng.randrange(256) for _ in range(64)),
        lambda i: json.dumps([1, 2, i]).encode(),
        lambda i: b"",
    ]
    return [(b"u1", makers[i % len(makers)](i)) for i in range(n)]


def test_malformed_records_all_dead_lettered_good_ones_all_applied(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rng = random.Random(3)
    good = _events(2_000)
    bad = _malformed(1_000, rng)
    stream: list[tuple[bytes | None, bytes, bool]] = [
        (e.user_id.encode(), encode(e), True) for e in good
    ]
    for key, value in bad:
        stream.insert(rng.randrange(len(stream) + 1), (key, value, False))
    asyncio.run(create_topics(kafka_settings))

    async def send_raw() -> None:
        async with kafka_producer(kafka_settings) as producer:
            for key, value, _ in stream:
                await producer.send(kafka_settings.topics.name("events"), value, key=key)

    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port()).start()
    try:
        asyncio.run(send_raw())
        _wait_caught_up(kafka_settings, [worker], 300)
        assert worker.alive()
        stats = worker.stats() or {}
        assert stats["dead_lettered"] == 1_000 and stats["events_accepted"] == 2_000
        metrics = _scrape(worker)
        assert metrics["streamrec_events_dead_lettered_total"] == 1_000
        assert metrics["streamrec_events_accepted_total"] == 2_000
        assert metrics["streamrec_table_writes_flushed_total"] > 0
        # Every commit flushes first, so once all is committed nothing waits.
        assert metrics['streamrec_table_writes_pending{table="user_state"}'] == 0
    finally:
        worker.stop()
    letters = asyncio.run(
        read_topic(kafka_settings, kafka_settings.topics.name("deadletter"), 1_000)
    )
    bodies = [json.loads(r.value) for r in letters]
    assert sorted(base64.b64decode(b["original_b64"]) for b in bodies) == sorted(v for _, v in bad)
    assert all(b["error_code"] and b["error_message"] and b["offset"] >= 0 for b in bodies)
    codes = {b["error_code"] for b in bodies}
    assert {
        "invalid_json",
        "bad_timestamp",
        "wrong_type",
        "missing_field",
        "unknown_event_type",
        "too_large",
        "not_an_object",
    } <= codes
    assert _final_state(kafka_settings) == reference_state(good, StateSettings())


def test_a_fresh_worker_fills_first_slates_from_the_catalog_and_dead_letters_a_bad_item_once(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Before any traffic co-visitation and trending are empty: the first user's slate comes
    from the catalog's newest items. A refused catalog record is dead-lettered at the first
    start and not again when the worker restarts on its data dir."""
    asyncio.run(create_topics(kafka_settings))
    topics = kafka_settings.topics
    day, base = 86_400_000, 1_700_000_000_000
    items = [Item(item_id=f"c{n}", title=f"Item {n}", created_at=base + n * day) for n in range(15)]
    gone = Item(item_id="c99", title="Withdrawn", created_at=base + 99 * day, active=False)
    asyncio.run(publish(kafka_settings, [*items, gone], topics.name("items"), progress=False))

    async def send_bad_item() -> None:
        async with kafka_producer(kafka_settings) as producer:
            await producer.send(topics.name("items"), b"{not json", key=b"broken")

    asyncio.run(send_bad_item())
    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port()).start()
    try:
        wait_until(lambda: (worker.stats() or {}).get("catalog_loaded"), 60, "the catalog")
        first = Event(event_id="e1", user_id="first", item_id="c14", type="view", ts=base)
        asyncio.run(publish(kafka_settings, [first], topics.name("events"), progress=False))
        wait_until(lambda: worker.get("/recommendations/first")[0] == 200, 60, "the first slate")
        slate = worker.get("/recommendations/first")[1]
        assert (worker.stats() or {})["items_rejected_by_code"] == {"invalid_json": 1}
    finally:
        worker.stop()
    # c14 is seen, c99 withdrawn: the next ten newest, newest first
    assert [i["item_id"] for i in slate["items"]] == [f"c{n}" for n in range(13, 3, -1)]
    assert {i["reason"] for i in slate["items"]} == {"source:catalog"}

    again = WorkerProcess(kafka_settings, tmp_path / "w", free_port()).start()
    try:
        wait_until(lambda: (again.stats() or {}).get("catalog_loaded"), 60, "the catalog again")
        stats = again.stats() or {}
        assert stats["items_rejected_by_code"] == {} and stats["items_rejected_before"] == 1
    finally:
        again.stop()
    assert asyncio.run(_records_in(kafka_settings, topics.name("deadletter"))) == 1


async def _records_in(kafka: KafkaSettings, topic: str) -> int:
    consumer = topic_reader(kafka, topic)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
