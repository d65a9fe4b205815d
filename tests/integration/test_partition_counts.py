"""A worker whose events topic and table changelogs differ in partition count is refused at
start, with one line and exit code 2, against the real broker. faust alone starts it, reports
it ready, and crashes on the first event of a partition the changelogs lack, at every restart."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from streamrec.broker import free_port
from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.testing import WorkerProcess
from streamrec.stream.topics import (
    WORKER_TABLES,
    TopicSpec,
    changelog_topic,
    create_topics,
    describe_topics,
    topic_specs,
)

# Start-up until the refusal is a few seconds (imports, two admin round trips); a worker that
# was not refused would run on and meet this instead.
EXIT_WITHIN_S = 60


def _refusal(kafka: KafkaSettings, tmp_path: Path) -> tuple[int | None, list[str]]:
    """Run a worker to its end: (exit code, its log's lines)."""
    worker = WorkerProcess(kafka, tmp_path / "w0", free_port()).start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(EXIT_WITHIN_S)
    finally:
        worker.stop(timeout_s=5)
    return code, worker.log_path.read_text(errors="replace").splitlines()


async def _grow(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(kafka))
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(partitions)})
    finally:
        await admin.close()


def test_events_grown_with_create_partitions_is_refused_at_start(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """The ordinary way to scale out Kafka, after a first start made the topics with 4."""
    asyncio.run(create_topics(kafka_settings))
    events = kafka_settings.topics.name("events")
    asyncio.run(_grow(kafka_settings, events, 6))
    code, lines = _refusal(kafka_settings, tmp_path)
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, "\n".join(lines[-40:])
    assert errors == [
        f"error: events topic {events} has 6 partitions but its table changelogs have "
        "4 (user_state, impressions): a topic's partition count is fixed after the first start "
        "(changelog partition n holds the state of events partition n); delete those "
        "changelogs and each worker's <data dir>/v1/tables, then start with "
        "STREAMREC_KAFKA__TOPICS__PARTITIONS=6 (losing their table state), or point the "
        "workers at a new events topic with 4 partitions (STREAMREC_KAFKA__TOPICS__EVENTS)"
    ], "\n".join(lines[-40:])
    assert len(lines) == 1, "the refusal is the worker's only output"


def test_events_created_apart_from_its_changelogs_is_refused_naming_the_created_ones(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Events pre-created with 2 partitions and one changelog with 4; the worker creates the
    missing changelog with the configured 4 and is refused over both, before it runs."""
    events = kafka_settings.topics.name("events")
    user_state = changelog_topic(kafka_settings, "user_state")
    on_append_time = {"message.timestamp.type": "LogAppendTime"}  # else one more line: a warning
    specs = [
        TopicSpec(events, 2, on_append_time),
        TopicSpec(user_state, 4, {"cleanup.policy": "compact"}),
    ]
    asyncio.run(create_topics(kafka_settings, specs))
    code, lines = _refusal(kafka_settings, tmp_path)
    assert code == 2, "\n".join(lines[-40:])
    assert len(lines) == 1 and lines[0].startswith(
        f"error: events topic {events} has 2 partitions but its table changelogs have "
        "4 (user_state, impressions):"
    ), "\n".join(lines[-40:])


def test_topics_kafka_refuses_are_an_error_not_created(kafka_settings: KafkaSettings) -> None:
    """A replication factor the cluster cannot meet: Kafka answers each topic with error 38.
    ``topics create`` printed "created" and exited 0 with no topic made."""
    topics = kafka_settings.topics.model_copy(update={"replication_factor": 5})
    kafka = kafka_settings.model_copy(update={"topics": topics})
    with pytest.raises(ConfigError, match=r"Kafka refused to create topic .*\(error 38\)"):
        asyncio.run(create_topics(kafka))
    assert not set(asyncio.run(describe_topics(kafka))) & {s.name for s in topic_specs(kafka)}


def test_changelogs_are_not_created_beside_an_events_topic_of_another_count(
    kafka_settings: KafkaSettings,
) -> None:
    """A shop's tooling made the events topic with 12 partitions; the changelogs would have
    been created with the configured 4 and every worker refused from then on."""
    events = kafka_settings.topics.name("events")
    asyncio.run(create_topics(kafka_settings, [TopicSpec(events, 12)]))
    with pytest.raises(ConfigError, match="set STREAMREC_KAFKA__TOPICS__PARTITIONS=12"):
        asyncio.run(create_topics(kafka_settings))
    changelogs = {changelog_topic(kafka_settings, table) for table in WORKER_TABLES}
    assert not set(asyncio.run(describe_topics(kafka_settings))) & changelogs


def test_an_existing_events_topic_on_producer_time_is_warned_of(
    kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Made before the events topic was created with LogAppendTime, or by a shop's tooling:
    `topics create` said "exists" and latency kept starting at producers' timestamps."""
    events = kafka_settings.topics.name("events")
    asyncio.run(create_topics(kafka_settings, [TopicSpec(events, 4)]))
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        asyncio.run(create_topics(kafka_settings))
    assert "message.timestamp.type=LogAppendTime" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        asyncio.run(create_topics(kafka_settings.model_copy()))  # everything exists, as made
    assert "CreateTime" in caplog.text, "still on producer time: warned at each run"
