"""Proves the pinned Apache Kafka version works with aiokafka and faust-streaming's use of it:
topic creation, consumer-group join, produce, fetch and offset commit, and a restart that resumes
from the committed offset."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.settings import KafkaSettings
from streamrec.stream.compat import fetch_topic_metadata
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.health import MetadataProbe
from streamrec.stream.producer import kafka_producer
from streamrec.stream.topics import TopicSpec, create_topics, describe_topics


async def _consume(kafka: KafkaSettings, topic: str, group: str, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_kwargs(kafka),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < want:
                batch = await consumer.getmany(timeout_ms=500)
                got += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
        await consumer.commit()
        assignment = consumer.assignment()
        assert len(assignment) == 3, "the lone group member must own every partition"
    finally:
        await consumer.stop()
    return got


def test_group_produce_fetch_commit_resume(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topics.name("events")

    async def scenario() -> None:
        created = await create_topics(kafka_settings, [TopicSpec(topic, 3)])
        assert created == {topic: True}
        assert (await describe_topics(kafka_settings))[topic] == 3
        async with kafka_producer(kafka_settings) as producer:
            for i in range(300):
                await producer.send(topic, f"m{i}".encode(), key=f"k{i % 11}".encode())
        first = await _consume(kafka_settings, topic, "g-compat", 300)
        assert sorted(first) == sorted(f"m{i}".encode() for i in range(300))

        async with kafka_producer(kafka_settings) as producer:
            for i in range(300, 350):
                await producer.send(topic, f"m{i}".encode(), key=b"k0")
        # A new member of the same group resumes after the committed offsets.
        second = await _consume(kafka_settings, topic, "g-compat", 50)
        assert second == [f"m{i}".encode() for i in range(300, 350)]

        consumer = AIOKafkaConsumer(**aiokafka_kwargs(kafka_settings), group_id="g-compat")
        await consumer.start()
        try:
            committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
        finally:
            await consumer.stop()
        assert sum(c or 0 for c in committed) == 350

    asyncio.run(scenario())


def test_the_health_probe_reads_one_topics_metadata_from_the_real_broker(
    kafka_settings: KafkaSettings,
) -> None:
    """The worker's broker probe (stream/health.py) asks for the events topic alone, and the
    real broker answers it (tests/unit/stream/test_health.py: no broker, an error)."""
    topic = kafka_settings.topics.name("events") + "-probe"

    async def scenario() -> None:
        await create_topics(kafka_settings, [TopicSpec(topic, 2)])
        probe = MetadataProbe(kafka_settings, topic)
        try:
            await probe()  # connects and bootstraps
            await probe()  # one metadata request for the topic: no error
            assert probe.client is not None
            assert await fetch_topic_metadata(probe.client, topic)
        finally:
            await probe.close()

    asyncio.run(scenario())
