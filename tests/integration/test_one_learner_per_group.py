"""One learner per consumer group, on the real broker: a fresh learner adopts the policy the
workers serve instead of announcing its start weights (a rollback); a learner whose state
another learner's announcements have overtaken is refused; a second learner on one data dir is
refused; a running learner gives way to an older one announcing for the group."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from streamrec.errors import BrokerError, ConfigError
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.compat import assign_all
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.control import policy_record
from streamrec.stream.learner_fence import ControlWatch
from streamrec.stream.learner_process import open_service, run_learner
from streamrec.stream.producer import kafka_producer
from streamrec.stream.topics import create_topics

WEIGHTS = [0.5, 0.1, 0.0, 1.0, 0.2]


async def _announce(kafka: KafkaSettings, version: str, learner: tuple[str, int]) -> None:
    async with kafka_producer(kafka) as producer:
        record = policy_record(version, WEIGHTS, None, learner)
        await producer.send_and_wait(kafka.topics.name("control"), record, key=b"policy")


async def _policies(kafka: KafkaSettings) -> list[str]:
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await assign_all(consumer, kafka.topics.name("control"))
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        got: list[str] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(json.loads(r.value)["policy_version"] for r in records)
        return got
    finally:
        await consumer.stop()


def _after_polls(n: int, started: asyncio.Event | None = None) -> Callable[[], bool]:
    """A stop predicate that ends the learner after ``n`` turns of its read loop."""
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        if started is not None:
            started.set()
        return calls > n

    return stop


def test_one_learner_per_group(
    kafka_settings: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(create_topics(kafka_settings))
    settings = Settings(kafka=kafka_settings)
    stale = open_service(settings, tmp_path / "stale")
    stale.save()  # a learner that ran before the other one took the group
    asyncio.run(_announce(kafka_settings, "pl-bbbb2222-9", ("bbbb2222", 1)))

    with (
        caplog.at_level(logging.INFO, logger="streamrec.stream.learner_process"),
        caplog.at_level(logging.INFO, logger="streamrec.stream.rewind"),  # where it reads from
    ):
        fresh = asyncio.run(run_learner(settings, tmp_path / "fresh", _after_polls(2)))
    # ops can tell from the log what a learner started from (it said nothing before)
    assert "starts from the announced policy at policy pl-bbbb2222-9" in caplog.text
    assert "experience read from offsets {0: '0 (beginning)'" in caplog.text
    assert fresh.learner.version == "pl-bbbb2222-9"
    assert fresh.learner.weights.tolist() == WEIGHTS
    assert asyncio.run(_policies(kafka_settings)) == ["pl-bbbb2222-9"]  # no pl-0 went out

    with pytest.raises(ConfigError, match="another learner holds the group"):
        asyncio.run(run_learner(settings, tmp_path / "stale", _after_polls(2)))

    async def displaced() -> None:
        started = asyncio.Event()
        young = asyncio.create_task(
            run_learner(settings, tmp_path / "fresh", _after_polls(10**6, started))
        )
        await asyncio.wait_for(started.wait(), 60)
        with pytest.raises(ConfigError, match="in use by another learner"):
            await run_learner(settings, tmp_path / "fresh", _after_polls(2))
        await _announce(kafka_settings, "pl-cccc3333-4", ("cccc3333", 2))  # an older learner
        with pytest.raises(ConfigError, match=r"learner cccc3333 .* started before this learner"):
            await asyncio.wait_for(young, 60)

    asyncio.run(displaced())


def test_an_announcement_of_unusable_weights_neither_fences_nor_is_adopted(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Before, after one announcement of 3 weights a learner with state was refused ("another
    learner holds the group") and a fresh one too ("has 3 weights, this learner 5"), for good:
    control is compacted under the key ``policy``."""
    asyncio.run(create_topics(kafka_settings))
    settings = Settings(kafka=kafka_settings)
    own = asyncio.run(run_learner(settings, tmp_path / "own", _after_polls(2)))  # announces
    evil = {"type": "policy", "policy_version": "evil-dims3", "weights": [1, 2, 3],
            "announced_at": 1, "learner_id": "bbbb2222", "learner_started": 1}  # fmt: skip

    async def send() -> None:
        async with kafka_producer(kafka_settings) as producer:
            control = kafka_settings.topics.name("control")
            await producer.send_and_wait(control, json.dumps(evil).encode(), key=b"policy")

    asyncio.run(send())
    again = asyncio.run(run_learner(settings, tmp_path / "own", _after_polls(2)))
    assert again.learner.version == own.learner.version
    fresh = asyncio.run(run_learner(settings, tmp_path / "fresh", _after_polls(2)))
    assert fresh.learner.version == own.learner.version  # adopted the last valid one
    assert fresh.learner.weights.tolist() == own.learner.weights.tolist()


def test_a_learner_whose_control_watch_fails_stops_rather_than_run_unfenced(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(create_topics(kafka_settings))

    async def broken(self: ControlWatch) -> None:
        raise RuntimeError("control topic gone")

    monkeypatch.setattr(ControlWatch, "run", broken)
    settings = Settings(kafka=kafka_settings)
    with pytest.raises(BrokerError, match=r"control-topic watch failed.*control topic gone"):
        asyncio.run(run_learner(settings, tmp_path / "l", _after_polls(10**6)))
