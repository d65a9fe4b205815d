"""The topics streamrec creates before a worker starts include its tables' changelogs, named,
partitioned and compacted as faust declares them (a changelog faust had to create itself was
unknown to its consumer for minutes: every write to that table failed meanwhile)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streamrec.settings import KafkaSettings, Settings, TopicSettings
from streamrec.stream.app import create_app
from streamrec.stream.config import StateSettings
from streamrec.stream.topics import WORKER_TABLES, topic_specs


def test_every_worker_table_changelog_is_created_as_faust_declares_it() -> None:
    kafka = KafkaSettings(topics=TopicSettings(prefix="t1.", partitions=3))
    settings = Settings(kafka=kafka, state=StateSettings(store_url="memory://"))
    worker = create_app(settings, CollectorRegistry())
    specs = {spec.name: spec for spec in topic_specs(kafka)}
    assert sorted(worker.app.tables) == sorted(WORKER_TABLES)
    for table in worker.app.tables.values():
        declared = table.changelog_topic
        spec = specs[declared.get_topic_name()]
        assert spec.internal and spec.partitions == declared.partitions == 3
        assert declared.compacting and spec.config["cleanup.policy"] == "compact"


def test_the_control_topic_keeps_the_last_announcements_however_old() -> None:
    """Time retention would delete a quiet week's last model and policy announcements: a
    restarted worker would then serve its configured model, a fresh learner the start weights."""
    specs = {spec.name: spec for spec in topic_specs(KafkaSettings())}
    control = specs[KafkaSettings().topics.name("control")]
    assert control.partitions == 1 and control.config == {"cleanup.policy": "compact"}
