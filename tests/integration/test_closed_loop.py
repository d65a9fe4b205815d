"""Closed loop through the real broker: simulator <-> worker produce rewards and policy updates."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from streamrec.broker import free_port
from streamrec.datasets import load_dataset
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.testing import WorkerProcess, wait_until
from streamrec.stream.tools.simulate import simulate
from streamrec.stream.topics import create_topics

pytestmark = pytest.mark.slow


def test_simulator_and_worker_close_the_loop(
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
    version = json.loads((checkpoints[0] / "config.json").read_text())["model_version"]
    env = {
        "STREAMREC_SERVING__MODE": "model",
        "STREAMREC_ENCODER__CHECKPOINT": str(checkpoints[0]),
        "STREAMREC_POLICY__RERANKER": "stochastic",
        "STREAMREC_LEARNER__BATCH_SIZE": "16",
        "STREAMREC_LEARNER__ATTRIBUTION_WINDOW_S": "2",
    }
    worker = WorkerProcess(kafka_settings, tmp_path / "w", free_port(), env).start()
    try:
        wait_until(lambda: (worker.stats() or {}).get("model_version") == version, 180, "the model")

        async def loop() -> dict[str, object]:
            ready = asyncio.Event()
            sim = asyncio.create_task(
                simulate(Settings(), kafka_settings, 3, duration_s=45, max_slates=None, ready=ready)
            )
            await asyncio.wait_for(ready.wait(), 60)  # every seed slate will be answered
            seeds = list(itertools.islice(dataset_events(dataset), 400))
            await publish(
                kafka_settings, seeds, kafka_settings.topics.name("events"), rate=50, progress=False
            )
            return (await sim).figures()

        figures = asyncio.run(loop())
        assert figures["slates_answered"] > 50 and figures["responses_published"] > 0, figures
        wait_until(
            lambda: (worker.stats() or {})["feedback"]["policy_updates"] > 0,
            60,
            f"a policy update; simulator: {figures}; worker: {worker.stats()}",
        )
        feedback = (worker.stats() or {})["feedback"]
    finally:
        worker.stop()
    assert feedback["rewards_joined"] > 0 and feedback["reward_value"] > 0
    # Every response answers a slate this worker published: none may be unknown, even when the
    # worker reads the response before the slate's own record.
    assert feedback["responses_dropped"].get("unknown_rec", 0) == 0, feedback
    assert feedback["policy_updates"] > 0
    assert feedback["policy_version"] != "pl-0" or feedback["policy_rollbacks"] > 0
