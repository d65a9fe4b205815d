"""The topics streamrec creates before a worker starts include its tables' changelogs, named,
partitioned and compacted as faust declares them (a changelog faust had to create itself was
unknown to its consumer for minutes: every write to that table failed meanwhile); a changelog
whose partition count differs from the events topic's is refused with the ways out."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import InvalidReplicationFactorError, NodeNotReadyError
from prometheus_client import CollectorRegistry

from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings, Settings, TopicSettings
from streamrec.stream.app import create_app
from streamrec.stream.config import StateSettings
from streamrec.stream.topics import (
    IMPRESSIONS,
    USER_STATE,
    WORKER_TABLES,
    TopicSpec,
    create_topic,
    partitions_problem,
    retried,
    topic_specs,
    warn_create_time,
    warn_other_counts,
    warn_unreplicated,
)


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


def test_the_groups_session_timeout_is_the_setting() -> None:
    # How long a killed worker's partitions wait for another: 60 s of stalled events is
    # faust's default, and ops could not shorten it.
    kafka = KafkaSettings(session_timeout_s=20)
    settings = Settings(kafka=kafka, state=StateSettings(store_url="memory://"))
    assert create_app(settings, CollectorRegistry()).app.conf.broker_session_timeout == 20


def test_the_control_topic_keeps_the_last_announcements_however_old() -> None:
    """Time retention would delete a quiet week's last model and policy announcements: a
    restarted worker would then serve its configured model, a fresh learner the start weights."""
    specs = {spec.name: spec for spec in topic_specs(KafkaSettings())}
    control = specs[KafkaSettings().topics.name("control")]
    assert control.partitions == 1 and control.config == {"cleanup.policy": "compact"}


KAFKA = KafkaSettings(topics=TopicSettings(prefix="t1."))


def test_equal_counts_and_changelogs_not_created_yet_are_fine() -> None:
    assert partitions_problem(KAFKA, 4, {USER_STATE: 4, IMPRESSIONS: 4}) is None
    assert partitions_problem(KAFKA, 4, {USER_STATE: None, IMPRESSIONS: None}) is None
    assert partitions_problem(KAFKA, 2, {USER_STATE: 2, IMPRESSIONS: None}) is None


def test_events_grown_past_its_changelogs_is_refused_with_both_ways_out() -> None:
    """Events raised from 4 to 6 partitions with create_partitions, changelogs still at 4."""
    problem = partitions_problem(KAFKA, 6, {USER_STATE: 4, IMPRESSIONS: 4})
    assert problem == (
        "events topic t1.events has 6 partitions but its table changelogs have "
        "4 (user_state, impressions): a topic's partition count is fixed after the first start "
        "(changelog partition n holds the state of events partition n); delete those "
        "changelogs and each worker's <data dir>/v1/tables, then start with "
        "STREAMREC_KAFKA__TOPICS__PARTITIONS=6 (losing their table state), or point the "
        "workers at a new events topic with 4 partitions (STREAMREC_KAFKA__TOPICS__EVENTS)"
    )


def test_only_the_changelogs_that_differ_are_named() -> None:
    problem = partitions_problem(KAFKA, 2, {USER_STATE: 4, IMPRESSIONS: 2})
    assert problem is not None
    assert "changelogs have 4 (user_state):" in problem and "impressions" not in problem


def test_changelogs_that_disagree_among_themselves_leave_no_events_count_to_move_to() -> None:
    problem = partitions_problem(KAFKA, 6, {USER_STATE: 4, IMPRESSIONS: 8})
    assert problem is not None
    assert "changelogs have 4 (user_state), 8 (impressions):" in problem
    assert "new events topic" not in problem and "PARTITIONS=6" in problem


def test_a_topic_a_broker_does_not_know_yet_is_left_out_not_counted_as_0_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamrec.stream import topics

    class Admin:
        def __init__(self, **kwargs: object) -> None:
            pass

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return ["events", "fresh"]

        async def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
            return [
                {"topic": "events", "error_code": 0, "partitions": [{}, {}]},
                {"topic": "fresh", "error_code": 3, "partitions": []},  # unknown to this node
            ]

    monkeypatch.setattr(topics, "AIOKafkaAdminClient", Admin)
    assert asyncio.run(topics.describe_topics(KafkaSettings())) == {"events": 2}


class _Flaky:
    """An admin call that fails ``times`` times with ``error`` first."""

    def __init__(self, times: int, error: Exception) -> None:
        self.times, self.error, self.calls = times, error, 0

    async def __call__(self) -> list[str]:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return ["t"]


def test_admin_calls_are_retried_while_kafka_says_the_error_is_retriable() -> None:
    # Just after a broker dies the admin client still sends to it: NodeNotReadyError for
    # about 9 s made `topics list` and a restarting worker fail with a traceback.
    flaky = _Flaky(2, NodeNotReadyError("node 3"))
    assert asyncio.run(retried(flaky)) == ["t"] and flaky.calls == 3
    refused = _Flaky(1, InvalidReplicationFactorError("3 brokers"))
    with pytest.raises(InvalidReplicationFactorError):
        asyncio.run(retried(refused))
    assert refused.calls == 1, "an answer that will not change is not asked again"
    endless = _Flaky(10**6, NodeNotReadyError("gone"))
    with pytest.raises(NodeNotReadyError):
        asyncio.run(retried(endless, for_s=0.6))


class _Cluster:
    def __init__(self, brokers: int) -> None:
        self.brokers = brokers

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}


@pytest.mark.parametrize(("brokers", "factor", "warned"), [(3, 1, True), (3, 3, False),
                                                          (1, 1, False), (5, 2, True)])  # fmt: skip
def test_topics_with_fewer_replicas_than_the_cluster_could_keep_are_warned_of(
    brokers: int, factor: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaSettings(topics=TopicSettings(replication_factor=factor))
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        asyncio.run(warn_unreplicated(kafka, cast(Any, _Cluster(brokers))))
    assert ("REPLICATION_FACTOR" in caplog.text) == warned, caplog.text


class _Admin:
    """An admin client whose CreateTopics answers come from ``codes`` (one per call), and whose
    DescribeConfigs answer is ``described``."""

    def __init__(self, codes: list[int], described: list[Any] | None = None) -> None:
        self.codes, self.calls, self.described = codes, 0, described or []

    async def create_topics(self, topics: list[Any]) -> Any:
        code = self.codes[self.calls]
        self.calls += 1
        return SimpleNamespace(topic_errors=[(topics[0].name, code, None)])

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        return [SimpleNamespace(resources=self.described)]


def test_a_retriable_error_for_one_topic_is_asked_again_not_a_refusal() -> None:
    # REQUEST_TIMED_OUT (7) inside the answer: the first start crashed, the next one worked.
    kafka = KafkaSettings()
    spec = TopicSpec("t.events", 4)
    admin = _Admin([7, 36])  # timed out, but made: the second answer says it exists
    assert asyncio.run(create_topic(kafka, cast(Any, admin), spec)) is False
    assert admin.calls == 2
    with pytest.raises(ConfigError, match=r"refused to create topic t.events: .*\(error 38\)"):
        asyncio.run(create_topic(kafka, cast(Any, _Admin([38])), spec))


def test_the_create_time_warning_needs_the_topics_config_not_its_absence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_create = (0, None, 2, "t.events", [("message.timestamp.type", "CreateTime", 0, 0, 0)])
    denied = (29, "Topic authorization failed", 2, "t.events", [])  # no DescribeConfigs right
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        asyncio.run(warn_create_time(cast(Any, _Admin([], [denied])), "t.events"))
        assert caplog.text == ""
        asyncio.run(warn_create_time(cast(Any, _Admin([], [on_create])), "t.events"))
    assert "LogAppendTime" in caplog.text


def test_an_existing_topic_of_another_partition_count_than_the_settings_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Described:
        async def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
            counts = {"t.events": 4, "t.recommendations": 8, "t.fresh": 0}
            return [{"topic": n, "error_code": 0, "partitions": [{}] * counts[n]} for n in names]

    specs = [TopicSpec("t.events", 8), TopicSpec("t.recommendations", 8), TopicSpec("t.fresh", 8)]
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        asyncio.run(warn_other_counts(cast(Any, Described()), specs))
    assert len(caplog.records) == 1  # the same count, and a topic not known yet, say nothing
    assert "t.events exists with 4 partitions, not the 8" in caplog.records[0].getMessage()


def test_an_events_topic_found_only_on_creation_is_still_judged_for_its_timestamps(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic created a moment before may be missing from the broker's listing: it was then
    taken for missing, found to exist on creation, and never warned of (a test's flake)."""
    from streamrec.stream import topics

    on_create = (0, None, 2, "streamrec.events", [("message.timestamp.type", "CreateTime", 0)])

    class StaleAdmin(_Admin):
        def __init__(self, **kwargs: object) -> None:
            super().__init__([], [on_create])

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return []  # the listing has not caught up with the events topic

        async def describe_cluster(self) -> dict[str, list[object]]:
            return {"brokers": [{}]}

        async def create_topics(self, new: list[Any]) -> Any:
            code = 36 if new[0].name == "streamrec.events" else 0  # TOPIC_ALREADY_EXISTS
            return SimpleNamespace(topic_errors=[(new[0].name, code, None)])

    monkeypatch.setattr(topics, "AIOKafkaAdminClient", StaleAdmin)
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.topics"):
        created = asyncio.run(topics.create_topics(KafkaSettings()))
    assert created["streamrec.events"] is False and all(
        made for name, made in created.items() if name != "streamrec.events"
    )
    assert "LogAppendTime" in caplog.text
