"""The continual trainer on the real broker: it trains on the stream's window, announces its
candidate, and a model-mode worker under load swaps to it."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from pathlib import Path

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.models.config import EncoderSettings, TrainSettings
from streamrec.models.encoder.checkpoint import trained_until
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.config import TrainerSettings
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.testing import WorkerProcess, wait_until
from streamrec.stream.topics import create_topics
from streamrec.stream.trainer import ContinualTrainer
from streamrec.stream.trainer_process import announcer, next_item_ndcg, train_on_window


def _version(checkpoint: Path) -> str:
    return str(json.loads((checkpoint / "config.json").read_text())["model_version"])


def test_the_trainers_candidate_is_announced_and_served_under_load(
    kafka_settings: KafkaSettings, tmp_path: Path, checkpoints: list[Path]
) -> None:
    asyncio.run(create_topics(kafka_settings))
    dataset = load_dataset(None)
    asyncio.run(publish(kafka_settings, dataset_items(dataset), kafka_settings.topics.name("items"),
                        progress=False))  # fmt: skip
    served = checkpoints[0]
    worker = WorkerProcess(
        kafka_settings,
        tmp_path / "w",
        free_port(),
        {"STREAMREC_SERVING__MODE": "model", "STREAMREC_ENCODER__CHECKPOINT": str(served)},
    ).start()
    settings = Settings(
        kafka=kafka_settings,
        encoder=EncoderSettings(hidden_size=32, layers=1, heads=1, max_len=20),
        train=TrainSettings(epochs=1, seed=3),
        # A tolerance this wide announces any working candidate: what is checked here is the
        # path from the window to every worker; which candidates regress is a unit test's job.
        trainer=TrainerSettings(window_events=3_000, holdout_events=300, tolerance=0.99),
    )
    window_training = train_on_window(settings)
    trainer = ContinualTrainer(
        settings.trainer,
        # From scratch: a warm start whose one epoch does not beat the served weights offers no
        # candidate at all (a unit test's case); this test follows a candidate to the workers.
        lambda events, catalog, out, start: window_training(events, catalog, out, None),
        next_item_ndcg,
        announcer(settings),
        tmp_path / "trainer",
        served=served,
    )
    trainer.folder.mkdir()
    events = list(itertools.islice(dataset_events(dataset), 6_000))
    for event in events[:3_000]:  # the window the trainer read from the events topic
        trainer.add(event)
    trainer.catalog = {i.item_id: i for i in dataset_items(dataset)}
    topic = kafka_settings.topics.name("events")
    load = threading.Thread(
        target=lambda: asyncio.run(publish(kafka_settings, events, topic, rate=300, progress=False))
    )
    try:
        wait_until(lambda: (worker.stats() or {}).get("model_version") == _version(served), 180,
                   "the worker to serve the first model")  # fmt: skip
        load.start()
        result = asyncio.run(trainer.cycle())
        print(f"trainer cycle: {result}")
        assert result.announced is not None and result.served_ndcg is not None
        # What the next cycle counts new events from: the newest trained event, to the second
        # (the RecBole files carry seconds).
        assert trainer.served is not None and trainer.served != served
        newest = max(e.ts for e in events[: 3_000 - 300])
        assert trained_until(trainer.served) == newest // 1000 * 1000
        wait_until(
            lambda: (worker.stats() or {}).get("model_version") == result.announced,
            180,
            "the worker to swap to the trainer's candidate",
        )
        load.join()
        assert (worker.stats() or {}).get("events_accepted", 0) > 0
    finally:
        worker.stop()
