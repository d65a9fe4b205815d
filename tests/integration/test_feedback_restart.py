"""Impressions open when a worker is killed (-9) are not lost: the restarted worker rebuilds
their expiry queue from the impressions table (Feedback.reopen), joins the clicks that answer
slates published before the crash, and closes them into the online learner. What the fusion
learner and the learned ranker fitted before the kill is where the restarted worker goes on."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.settings import KafkaSettings
from streamrec.stream.contract import Event
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.testing import WorkerProcess, group_caught_up, read_topic, wait_until
from streamrec.stream.topics import create_topics, worker_app_id

pytestmark = pytest.mark.slow

# The attribution window must outlast the kill and the restart: the restarted worker joins the
# group only once the killed member's session has timed out (faust's default: 60 s).
WINDOW_S = 100


def _feedback(worker: WorkerProcess) -> dict[str, Any]:
    return dict((worker.stats() or {}).get("feedback") or {})


def test_rewards_of_slates_published_before_a_kill_reach_the_learner_after_it(
    kafka_settings: KafkaSettings, tmp_path: Path, checkpoints: list[Path]
) -> None:
    asyncio.run(create_topics(kafka_settings))
    dataset = load_dataset(None)
    topic = kafka_settings.topics.name("events")
    asyncio.run(publish(kafka_settings, dataset_items(dataset), kafka_settings.topics.name("items"),
                        progress=False))  # fmt: skip
    env = {
        "STREAMREC_SERVING__MODE": "model",
        "STREAMREC_ENCODER__CHECKPOINT": str(checkpoints[0]),
        "STREAMREC_POLICY__RERANKER": "stochastic",
        "STREAMREC_LEARNER__BATCH_SIZE": "4",
        "STREAMREC_LEARNER__ATTRIBUTION_WINDOW_S": str(WINDOW_S),
        "STREAMREC_SERVING__LEARNED_SNAPSHOT_S": "0.5",
    }
    version = json.loads((checkpoints[0] / "config.json").read_text())["model_version"]
    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port(), env).start()
    try:
        wait_until(lambda: (worker.stats() or {}).get("model_version") == version, 180, "the model")
        seeds = list(itertools.islice(dataset_events(dataset), 40))
        asyncio.run(publish(kafka_settings, seeds, topic, progress=False))
        answered = _slates(kafka_settings, {e.event_id for e in seeds})
        # Each user then views the top item of their latest slate: a next event the learned
        # ranker learns from (it was a candidate) before the kill.
        latest = {slate["user_id"]: slate for slate in answered}
        views = [_response(n, slate, "view") for n, slate in enumerate(latest.values())]
        asyncio.run(publish(kafka_settings, views, topic, progress=False))
        slates = _slates(kafka_settings, {e.event_id for e in [*seeds, *views]})
        wait_until(lambda: _feedback(worker).get("open_impressions") == len(slates), 60,
                   "every slate's impression stored")  # fmt: skip
        # Committed offsets mean the impressions' table writes are in Kafka (the worker flushes
        # them before every commit); an uncommitted slate is answered again after a restart.
        group = worker_app_id(kafka_settings)
        wait_until(lambda: asyncio.run(group_caught_up(kafka_settings, group, topic)), 60,
                   "the seed events committed")  # fmt: skip
        learned = _learned_saved(worker, tmp_path / "w" / "serving_learned.json")
        worker.kill()
        worker.start()
        wait_until(lambda: (worker.stats() or {}).get("model_version") == version, 180, "restart")
        # The fusion learner and the learned ranker continue from what was saved before the kill.
        stats = worker.stats() or {}
        assert stats["fusion"]["observations"] >= learned["fusion"]["observations"] > 0, stats
        assert stats["ranker"]["updates"] >= learned["ranker"]["updates"] > 0, stats
        wait_until(lambda: _feedback(worker).get("open_impressions") == len(slates), 60,
                   "the expiry queue rebuilt from the impressions table")  # fmt: skip
        clicks = [_response(n, body, "click") for n, body in enumerate(slates)]
        asyncio.run(publish(kafka_settings, clicks, topic, progress=False))
        wait_until(lambda: _feedback(worker).get("rewards_joined") == len(clicks), 60,
                   f"the clicks joined to the old impressions: {worker.stats()}")  # fmt: skip
        # Past the window, each partition's next event closes its expired impressions: the old
        # slates' impressions (the later events' own close a window after them) reach the
        # learner, whose batch of 4 then makes an update.
        later = iter(itertools.islice(dataset_events(dataset), 40, 4000))

        def updated() -> bool:
            batch = list(itertools.islice(later, 20))
            asyncio.run(publish(kafka_settings, batch, topic, progress=False))
            return int(_feedback(worker).get("policy_updates") or 0) > 0

        wait_until(updated, WINDOW_S + 60, f"a policy update from them: {_feedback(worker)}", 3.0)
        feedback = _feedback(worker)
    finally:
        worker.stop()
    assert float(feedback["reward_value"]) > 0 and not feedback["responses_dropped"], feedback


def _learned_saved(worker: WorkerProcess, path: Path) -> dict[str, Any]:
    """The learned serving figures once the worker's file holds what its /stats shows, with
    next events learned by both the fusion learner and the ranker."""
    seen: dict[str, Any] = {"saved": {}, "stats": {}}

    def current() -> bool:
        seen["stats"] = stats = worker.stats() or {}
        if not path.is_file() or not stats.get("ranker"):
            return False
        seen["saved"] = saved = json.loads(path.read_text())
        ranker = saved.get("ranker") or {}
        return bool(
            saved["fusion"]["observations"] == stats["fusion"]["observations"] > 0
            and ranker.get("updates") == stats["ranker"]["updates"] > 0
        )

    try:
        wait_until(current, 60, "the learned figures in the worker's file")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}") from None
    return dict(seen["saved"])


def _response(n: int, slate: dict[str, Any], kind: str) -> Event:
    """A click on the first item of ``slate``, now; a view of it is not a response (no
    ``rec_id``): the learner's reward join leaves it out."""
    click = kind == "click"
    return Event(
        event_id=f"{kind}-{n}",
        user_id=slate["user_id"],
        item_id=slate["items"][0]["item_id"],
        type=kind,
        ts=int(time.time() * 1000),
        rec_id=slate["rec_id"] if click else None,
        position=0 if click else None,
    )


def _slates(kafka: KafkaSettings, events: set[str]) -> list[dict[str, Any]]:
    """Every slate answering ``events`` (each event is answered by exactly one)."""
    topic = kafka.topics.name("recommendations")
    answered: set[str] = set()
    slates: list[dict[str, Any]] = []
    want = 1
    while answered < events:
        records = asyncio.run(read_topic(kafka, topic, want, timeout_s=120))
        slates = [json.loads(r.value) for r in records]
        answered = {i for s in slates for i in s["trigger_event_ids"]}
        want = len(records) + 1
    return slates
