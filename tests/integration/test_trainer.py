"""The continual trainer on the real broker: it trains on the stream's window, announces its
candidate, and a model-mode worker under load swaps to it; a model published beside it is the
one it judges and fine-tunes next."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.errors import ConfigError
from streamrec.models.config import EncoderSettings, TrainSettings
from streamrec.models.encoder.checkpoint import trained_until
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.config import TrainerSettings
from streamrec.stream.contract import Event, Item
from streamrec.stream.control import announce_model
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.testing import WorkerProcess, wait_until
from streamrec.stream.topics import create_topics
from streamrec.stream.trainer import ContinualTrainer
from streamrec.stream.trainer_process import (
    announced_model,
    announcer,
    next_item_ndcg,
    run_trainer,
    served_model,
    train_on_window,
)


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


def test_a_model_published_beside_the_trainer_is_the_one_its_next_cycle_judges_and_fine_tunes(
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    checkpoints: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once, the trainer read the control topic only at its start: after a publish-model it
    still judged and fine-tuned its own model, and its candidate overrode the publish."""
    asyncio.run(create_topics(kafka_settings))
    own, published = (c.resolve() for c in checkpoints)
    asyncio.run(announce_model(kafka_settings, own, _version(own)))
    settings = Settings(
        kafka=kafka_settings,
        trainer=TrainerSettings(window_events=3_000, holdout_events=300, tolerance=0.99),
    )
    starts: list[Path | None] = []

    def train(
        events: Sequence[Event], catalog: Sequence[Item], out: Path, start: Path | None
    ) -> Path | None:
        """The start's weights as the candidate: which model a cycle starts from is checked
        here, not what training makes of it (the first test trains)."""
        starts.append(start)
        assert start is not None
        return Path(shutil.copytree(start, out / "model"))

    trainer = ContinualTrainer(
        settings.trainer,
        train,
        next_item_ndcg,
        announcer(settings),
        tmp_path / "trainer",
        served=asyncio.run(served_model(settings)),
        newest=lambda served: announced_model(kafka_settings, served),
    )
    trainer.folder.mkdir()
    assert trainer.served == own
    # `streamrec publish-model`, then an announcement whose folder is gone (workers skip it)
    asyncio.run(announce_model(kafka_settings, published, _version(published)))
    asyncio.run(announce_model(kafka_settings, tmp_path / "gone", "enc-gone"))
    events = list(itertools.islice(dataset_events(load_dataset(None)), 3_000))
    for event in events:
        trainer.add(event)
    with caplog.at_level(logging.INFO, logger="streamrec.stream.trainer"):
        first = asyncio.run(trainer.cycle())
        candidate = trainer.served
        second = asyncio.run(trainer.cycle())  # its own announcement is no switch
    assert first.announced is not None and second.announced is not None
    assert starts == [published, candidate]
    assert first.served_ndcg == next_item_ndcg(published, events[:2_700], events[2_700:])
    switches = [r.getMessage() for r in caplog.records if "not by this trainer" in r.msg]
    assert len(switches) == 1 and str(published) in switches[0]


def test_a_trainer_given_no_checkpoint_stops_before_making_its_folder(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    asyncio.run(create_topics(kafka_settings))
    folder = tmp_path / "trainer"
    settings = Settings(
        kafka=kafka_settings,
        encoder=EncoderSettings(checkpoint=tmp_path / "no-such-model"),
        trainer=TrainerSettings(folder=folder),
    )
    with pytest.raises(ConfigError, match="is not a checkpoint folder"):
        asyncio.run(run_trainer(settings))
    assert not folder.exists()  # a mistyped path leaves nothing behind
