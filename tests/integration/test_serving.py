"""Model serving end to end on the real broker: slates from encoder + FAISS, cold start within a
second, and hot swap under a steady stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.models.encoder.checkpoint import InferenceEncoder
from streamrec.settings import KafkaSettings
from streamrec.stream.contract import Event, Item, Recommendation
from streamrec.stream.control import announce_model
from streamrec.stream.producer import dataset_items, publish
from streamrec.stream.testing import WorkerProcess, read_topic, wait_until
from streamrec.stream.topics import create_topics

pytestmark = pytest.mark.slow
TS = 1_700_000_000_000


def _version(checkpoint: Path) -> str:
    return str(json.loads((checkpoint / "config.json").read_text())["model_version"])


def _start(kafka: KafkaSettings, tmp: Path, checkpoint: Path, **env: str) -> WorkerProcess:
    extra = {
        "STREAMREC_SERVING__MODE": "model",
        "STREAMREC_ENCODER__CHECKPOINT": str(checkpoint),
        "STREAMREC_SERVING__MAX_WAIT_MS": "20",
        **env,
    }
    worker = WorkerProcess(kafka, tmp / f"w{free_port()}", free_port(), extra).start()
    wait_until(
        lambda: (worker.stats() or {}).get("model_version") == _version(checkpoint),
        180,
        "the worker to serve the checkpoint",
    )
    return worker


def _event(n: int, user: str, item: str, kind: str = "click") -> Event:
    return Event(event_id=f"s{n}", user_id=user, item_id=item, type=kind, ts=TS + n)  # type: ignore[arg-type]


async def _slates(kafka: KafkaSettings, want: int) -> list[Recommendation]:
    records = await read_topic(kafka, kafka.topics.name("recommendations"), want, timeout_s=120)
    return [Recommendation.model_validate_json(r.value) for r in records]


def test_event_gets_a_model_slate_that_excludes_seen_items_and_follows_clicks(
    kafka_settings: KafkaSettings, tmp_path: Path, checkpoints: list[Path]
) -> None:
    asyncio.run(create_topics(kafka_settings))
    dataset = load_dataset(None)
    asyncio.run(
        publish(
            kafka_settings,
            dataset_items(dataset),
            kafka_settings.topics.name("items"),
            progress=False,
        )
    )
    worker = _start(kafka_settings, tmp_path, checkpoints[0])
    events_topic = kafka_settings.topics.name("events")
    try:
        asyncio.run(
            publish(
                kafka_settings,
                [_event(1, "alice", "1"), _event(2, "alice", "50")],
                events_topic,
                progress=False,
            )
        )
        first = asyncio.run(_slates(kafka_settings, 1))[-1]
        wait_until(lambda: worker.get("/recommendations/alice")[0] == 200, 30, "pull access")
        asyncio.run(
            publish(kafka_settings, [_event(3, "alice", "181")], events_topic, progress=False)
        )
        slates = asyncio.run(_slates(kafka_settings, 2 if len(first.trigger_event_ids) == 2 else 3))
        status, missing = worker.get("/recommendations/nobody")
    finally:
        worker.stop()
    assert status == 404 and missing["error"] == "unknown_user"
    assert all(s.model_version == _version(checkpoints[0]) for s in slates)
    before, after = slates[-2], slates[-1]
    assert after.trigger_event_ids == ["s3"]
    assert len(after.items) == 10 and all(0 < i.propensity <= 1 for i in after.items)
    assert not {"1", "50", "181"} & {i.item_id for i in after.items}, "seen items are excluded"
    assert [i.item_id for i in before.items] != [i.item_id for i in after.items]
    assert {"encode_ms", "search_ms", "rerank_ms", "queue_ms"} <= after.timing_ms.keys()
    assert all(i.reason.startswith(("item:", "source:")) for i in after.items)


def test_new_catalog_item_is_indexed_and_recommended_to_a_matching_user(
    kafka_settings: KafkaSettings, tmp_path: Path, checkpoints: list[Path]
) -> None:
    """A user whose history sits next to a new item's projected vector gets it recommended."""
    asyncio.run(create_topics(kafka_settings))
    new, history = _matching_item(checkpoints[0])
    worker = _start(
        kafka_settings, tmp_path, checkpoints[0], STREAMREC_POLICY__RERANKER="relevance"
    )
    try:
        asyncio.run(
            publish(kafka_settings, [new], kafka_settings.topics.name("items"), progress=False)
        )
        published = time.monotonic()
        wait_until(
            lambda: (worker.stats() or {})["cold_start"]["items_added"] >= 1,
            10,
            "the new item to be indexed",
        )
        indexed_after = time.monotonic() - published
        user_events = [_event(100 + n, "carol", item) for n, item in enumerate(history)]
        asyncio.run(
            publish(
                kafka_settings, user_events, kafka_settings.topics.name("events"), progress=False
            )
        )
        wait_until(lambda: worker.get("/recommendations/carol")[0] == 200, 30, "carol's slate")
        body = worker.get("/recommendations/carol")[1]
        stats = worker.stats() or {}
    finally:
        worker.stop()
    assert "new-42" in [i["item_id"] for i in body["items"]], body
    # The latency is measured and reported, never asserted (timings vary with the machine).
    assert stats["cold_start"]["last_seconds"] is not None
    print(
        f"cold start: searchable {stats['cold_start']['last_seconds']:.3f} s after the record "
        f"(worker clock); seen indexed by the test after {indexed_after:.3f} s"
    )


def _matching_item(checkpoint: Path) -> tuple[Item, list[str]]:
    """A new catalog item (a film's title and genres under a new id) and a one-item history
    whose user vector, by the checkpoint's own encoder, ranks the item's projected text among
    its top 5 unseen items: a user it matches. Projected vectors score on the trained items'
    scale (models/encoder/coldstart.py), so this one-epoch encoder ranks most texts mid-table
    for everyone (before, a new item topped everyone's list, and any film would have done);
    the film is one whose text it ranks high for someone."""
    from streamrec.models.encoder.text import TextEncoder
    from streamrec.stream.cold_start import item_text_of

    encoder = InferenceEncoder.load(checkpoint, device="cpu")
    known = set(encoder.item_ids)
    films = [f for f in dataset_items(load_dataset(None)) if f.item_id in known][:400]
    texts = TextEncoder().embed([item_text_of(f) for f in films])
    projected = encoder.text_vectors_to_item_space(texts)  # [films, D]
    vectors = encoder.item_vectors()
    users = encoder.encode([[item] for item in encoder.item_ids])  # row h: history [item h]
    scores = users @ vectors.T
    np.fill_diagonal(scores, -np.inf)  # the history's own item is seen
    fifth = -np.sort(-scores, axis=1)[:, 4]
    margin = users @ projected.T - fifth[:, None]  # > 0: the film's text in that top 5
    history, film = np.unravel_index(int(np.argmax(margin)), margin.shape)
    assert margin[history, film] > 0, "no film's text ranks in any one-item history's top 5"
    return films[film].model_copy(update={"item_id": "new-42"}), [encoder.item_ids[history]]


def test_hot_swap_under_a_steady_stream_answers_every_event_once_with_one_version(
    kafka_settings: KafkaSettings, tmp_path: Path, checkpoints: list[Path]
) -> None:
    asyncio.run(create_topics(kafka_settings))
    dataset = load_dataset(None)
    items = list(dataset.items)
    events = [_event(n, f"user{n % 50}", items[(n * 7) % len(items)]) for n in range(3_000)]
    worker = _start(kafka_settings, tmp_path, checkpoints[0])
    topic = kafka_settings.topics.name("events")
    try:

        async def stream_and_swap() -> None:
            sender = asyncio.create_task(
                publish(kafka_settings, events, topic, rate=300, progress=False)
            )
            # Swap mid-stream: once the first model has answered a sixth of the events.
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(_answered, worker) < len(events) // 6:
                assert time.monotonic() < deadline, "the first model answered too few events"
                await asyncio.sleep(0.1)
            await announce_model(kafka_settings, checkpoints[1], _version(checkpoints[1]))
            await sender

        asyncio.run(stream_and_swap())
        wait_until(lambda: _answered(worker) >= len(events), 120, "every event answered")
        records = asyncio.run(
            read_topic(
                kafka_settings,
                kafka_settings.topics.name("recommendations"),
                (worker.stats() or {})["recommendations_published"],
            )
        )
    finally:
        worker.stop()
    slates = [Recommendation.model_validate_json(r.value) for r in records]
    answered = Counter(i for s in slates for i in s.trigger_event_ids)
    assert set(answered) == {e.event_id for e in events}
    assert max(answered.values()) == 1, "an event was answered twice"
    versions = [s.model_version for s in sorted(slates, key=lambda s: s.created_at)]
    assert set(versions) == {_version(c) for c in checkpoints}
    switch = versions.index(_version(checkpoints[1]))
    assert all(v == _version(checkpoints[1]) for v in versions[switch:]), (
        "no return to the old model"
    )


def _answered(worker: WorkerProcess) -> int:
    stats: dict[str, Any] = worker.stats() or {}
    return int(stats.get("latency", {}).get("samples") or 0)
