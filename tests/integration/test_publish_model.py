"""`streamrec publish-model` on a cluster where no worker has run yet: the control topic it
announces on is created as workers read it (one partition, compacted), not auto-created by the
broker with its default partitions, where the announcement could land beyond partition 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamrec.settings import KafkaSettings
from streamrec.stream.control import announce_model, last_announcements
from streamrec.stream.topics import describe_topics


def test_an_announcement_before_any_worker_creates_the_control_topic_as_workers_read_it(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    asyncio.run(announce_model(kafka_settings, tmp_path, "enc-first"))
    control = kafka_settings.topics.name("control")
    assert asyncio.run(describe_topics(kafka_settings, [control])) == {control: 1}
    announced = asyncio.run(last_announcements(kafka_settings)).models
    assert [a.model_version for a in announced] == ["enc-first"]
