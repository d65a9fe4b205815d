"""The topics streamrec uses, their configuration, and creating them with the admin client.

Topics are created explicitly, never by auto-creation on first produce: the worker's tables
require every co-partitioned topic to have the same partition count, and an auto-created topic
gets the broker default instead. faust checks this only when a table is first written from an
event of a topic, so a worker with a mismatch starts, reports ready and then crashes on that
event with PartitionsMismatch, at every restart; ``check_copartitioned`` refuses it at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long an admin call is retried on retriable errors: a dead broker is fenced by the
# controller after broker.session.timeout.ms (9 s by default).
ADMIN_RETRY_S = 20.0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    internal: bool = False  # written and read by workers only: no published schema


# The worker's faust tables; each has a changelog topic (stream/app.py).
USER_STATE, IMPRESSIONS = "user_state", "impressions"
WORKER_TABLES = (USER_STATE, IMPRESSIONS)


def worker_app_id(kafka: KafkaSettings) -> str:
    """The worker's faust app id: its consumer group and the prefix of its changelog topics.
    Derived from the topic prefix, so deployments (and tests) sharing a cluster stay apart."""
    return f"{kafka.topics.prefix}worker"


def changelog_topic(kafka: KafkaSettings, table: str) -> str:
    """The name faust gives ``table``'s changelog topic."""
    return f"{worker_app_id(kafka)}-{table}-changelog"


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    """Every topic streamrec needs, named with the configured prefix."""
    t = kafka.topics
    week_ms = str(7 * 24 * 3600 * 1000)
    # Created here rather than by faust at start-up: a changelog topic faust created after its
    # consumer had fetched metadata was unknown to it until the next refresh (5 minutes), and
    # every write to that table failed with PartitionsMismatch meanwhile (seen in CI).
    changelogs = [
        TopicSpec(changelog_topic(kafka, table), t.partitions, {"cleanup.policy": "compact"}, True)
        for table in WORKER_TABLES
    ]
    return [
        *changelogs,
        # The worker's event-to-slate latency starts at the record's Kafka timestamp: the
        # broker's append time, not a producer's (backfills set it to the event's own time).
        TopicSpec(t.name("events"), t.partitions, {"message.timestamp.type": "LogAppendTime"}),
        # The catalog is a table keyed by item_id: compaction keeps the latest record per item.
        TopicSpec(t.name("items"), t.partitions, {"cleanup.policy": "compact"}),
        TopicSpec(t.name("recommendations"), t.partitions),
        TopicSpec(t.name("deadletter"), t.partitions, {"retention.ms": week_ms}),
        # One partition keeps version announcements totally ordered for every worker. Compacted,
        # not time-retained: the last model and policy announcements (keys "model", "policy")
        # must outlive any quiet week, or a restarted worker or learner would forget them.
        TopicSpec(t.name("control"), 1, {"cleanup.policy": "compact"}),
        # Every worker replays it from its last snapshot (stream/item_updates.py).
        TopicSpec(t.name("item_updates"), t.partitions, {"retention.ms": week_ms}, internal=True),
        # Read by the learner process from its committed offset (stream/experience.py).
        TopicSpec(t.name("experience"), t.partitions, {"retention.ms": week_ms}, internal=True),
    ]


async def create_topics(
    kafka: KafkaSettings, specs: list[TopicSpec] | None = None, *, warn_counts: bool = False
) -> dict[str, bool]:
    """Create missing topics; returns name -> True when created now, False when it existed.
    ConfigError when Kafka refuses one (its reason), or when missing changelogs would get
    another partition count than an existing events topic (the worker could never start).
    ``warn_counts`` (``topics create``): warn of existing topics of another partition count
    (a worker refuses the counts it cannot run on with its own error instead)."""
    specs = specs if specs is not None else topic_specs(kafka)
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(kafka))
    await admin.start()
    try:
        existing = set(await retried(admin.list_topics))
        missing = [spec for spec in specs if spec.name not in existing]
        await _check_new_changelogs(kafka, admin, missing)
        if missing:
            await warn_unreplicated(kafka, admin)
        created = {spec.name: False for spec in specs}
        for spec in missing:
            created[spec.name] = await create_topic(kafka, admin, spec)
        # Judged after creating: a topic made a moment ago may be missing from the listing
        # (the broker's metadata lags its controller) and found to exist only on creation.
        found = [spec for spec in specs if not created[spec.name]]
        events = kafka.topics.name("events")
        if events in {spec.name for spec in found}:
            await warn_create_time(admin, events)
        if warn_counts:
            await warn_other_counts(admin, found)
        return created
    finally:
        await admin.close()


async def retried(call: Callable[[], Awaitable[T]], for_s: float = ADMIN_RETRY_S) -> T:
    """``call()``, again while Kafka answers with a retriable error: just after a broker dies
    the admin client still picks it (NodeNotReadyError) until the controller fences it."""
    deadline = time.monotonic() + for_s
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def create_topic(kafka: KafkaSettings, admin: AIOKafkaAdminClient, spec: TopicSpec) -> bool:
    """Create one topic: True when created, False when another process won the race."""
    new = NewTopic(
        spec.name, spec.partitions, kafka.topics.replication_factor, topic_configs=spec.config
    )

    async def attempt() -> bool:
        response = await admin.create_topics([new])
        for name, code, *rest in getattr(response, "topic_errors", []):
            if name != spec.name or code == 0:
                continue
            error = for_code(code)
            if error.retriable:  # a timeout or a moved controller: ``retried`` asks again
                raise error(rest[0] if rest else None)
            if code == TopicAlreadyExistsError.errno:
                return False
            reason = (rest[0] if rest else None) or error.__name__
            raise ConfigError(f"Kafka refused to create topic {spec.name}: {reason} (error {code})")
        return True

    try:
        return await retried(attempt)
    except TopicAlreadyExistsError:
        return False


async def _check_new_changelogs(
    kafka: KafkaSettings, admin: AIOKafkaAdminClient, missing: list[TopicSpec]
) -> None:
    """ConfigError before the changelogs are first created with another partition count than
    an events topic that already exists (a shop's own tooling may have created it). Where a
    changelog exists already, ``check_copartitioned`` names every count and the ways out."""
    changelogs = {changelog_topic(kafka, table) for table in WORKER_TABLES}
    new = [spec for spec in missing if spec.name in changelogs]
    events = kafka.topics.name("events")
    if len(new) < len(changelogs) or events in {spec.name for spec in missing}:
        return
    described = await retried(lambda: admin.describe_topics([events]))
    count = next((len(d["partitions"]) for d in described if d.get("error_code", 0) == 0), 0)
    if count and any(spec.partitions != count for spec in new):
        raise ConfigError(
            f"events topic {events} exists with {count} partitions, but its table changelogs "
            f"would be created with {new[0].partitions} (a worker could then never start): "
            f"set STREAMREC_KAFKA__TOPICS__PARTITIONS={count}"
        )


async def warn_unreplicated(kafka: KafkaSettings, admin: AIOKafkaAdminClient) -> None:
    """One warning when topics are about to be created with fewer replicas than the cluster
    could keep: a changelog on one broker loses the workers' table state with that broker."""
    cluster = await retried(admin.describe_cluster)
    brokers = len(cluster.get("brokers", []))
    factor = kafka.topics.replication_factor
    if factor < min(brokers, 3):
        log.warning(
            "creating topics with replication factor %d on a cluster of %d brokers: losing one "
            "broker loses their records, the workers' table state included; set "
            "STREAMREC_KAFKA__TOPICS__REPLICATION_FACTOR (3 is usual)",
            factor,
            brokers,
        )


async def warn_other_counts(admin: AIOKafkaAdminClient, existing: list[TopicSpec]) -> None:
    """A warning per existing topic whose partition count is not the settings': ``topics
    create`` reported it as existing and nothing else (a new user's report), while the worker
    goes by the topic's own count."""
    if not existing:
        return
    described = await retried(lambda: admin.describe_topics([spec.name for spec in existing]))
    counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}
    for spec in existing:
        count = counts.get(spec.name)
        if count and count != spec.partitions:
            log.warning(
                "topic %s exists with %d partitions, not the %d the settings give "
                "(STREAMREC_KAFKA__TOPICS__PARTITIONS): it keeps its count (README, Known "
                "issues: partitions cannot be added to events after the first start)",
                spec.name,
                count,
                spec.partitions,
            )


async def warn_create_time(admin: AIOKafkaAdminClient, events: str) -> None:
    """One warning when an existing events topic stamps records with the producer's time: the
    event-to-slate latency starts there, and a backfill's day-old stamps read as a day."""
    resource = ConfigResource(ConfigResourceType.TOPIC, events)
    responses = await retried(lambda: admin.describe_configs([resource]))
    entries = [
        (entry[0], entry[1])
        for response in responses
        for found in response.resources
        if found[0] == 0  # without DescribeConfigs rights there is nothing to tell
        for entry in found[4]
    ]
    if dict(entries).get("message.timestamp.type") == "CreateTime":
        log.warning(
            "events topic %s stamps records with their producer's time (CreateTime), so the "
            "worker's event-to-slate latency starts there: a backfill or a producer that sets "
            "event times reads as hours of latency. Switch it: kafka-configs --alter "
            "--entity-type topics --entity-name %s --add-config "
            "message.timestamp.type=LogAppendTime",
            events,
            events,
        )


async def describe_topics(kafka: KafkaSettings, only: list[str] | None = None) -> dict[str, int]:
    """Topic name -> partition count for every topic on the cluster (those of ``only`` that
    exist, when given)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(kafka))
    await admin.start()
    try:
        names = await retried(admin.list_topics)
        if only is not None:
            names = [name for name in names if name in only]
        described = await retried(lambda: admin.describe_topics(names))
        # A broker that has not learned of a topic created a moment ago answers with an error
        # code and no partitions: not known yet, rather than a topic of 0 partitions.
        return {
            d["topic"]: len(d["partitions"])
            for d in described
            if d.get("error_code", 0) == 0 and d["partitions"]
        }
    finally:
        await admin.close()


def partitions_problem(
    kafka: KafkaSettings, events: int, changelogs: Mapping[str, int | None]
) -> str | None:
    """Why the worker's tables cannot run on these topics, or None when they can.

    ``events`` is the events topic's partition count; ``changelogs`` maps each table to its
    changelog topic's count, None where that topic does not exist yet (it will be created).
    """
    differing = {table: n for table, n in changelogs.items() if n is not None and n != events}
    if not differing:
        return None
    counts = sorted(set(differing.values()))
    have = ", ".join(
        f"{n} ({', '.join(t for t, m in differing.items() if m == n)})" for n in counts
    )
    # Deleted changelogs come back with the configured count, so the fix names the setting.
    fix = (
        "delete those changelogs and each worker's <data dir>/v1/tables, then start with "
        f"STREAMREC_KAFKA__TOPICS__PARTITIONS={events} (losing their table state)"
    )
    if len(counts) == 1:
        fix += (
            f", or point the workers at a new events topic with {counts[0]} partitions "
            "(STREAMREC_KAFKA__TOPICS__EVENTS)"
        )
    return (
        f"events topic {kafka.topics.name('events')} has {events} partitions but its table "
        f"changelogs have {have}: a topic's partition count is fixed after the first start "
        f"(changelog partition n holds the state of events partition n); {fix}"
    )


async def check_copartitioned(kafka: KafkaSettings) -> int:
    """The events topic's partition count; ConfigError when it and an existing table changelog
    differ in partition count (faust would crash on the first event of a partition the
    changelog lacks)."""
    events = kafka.topics.name("events")
    tables = {table: changelog_topic(kafka, table) for table in WORKER_TABLES}
    counts = await describe_topics(kafka, [events, *tables.values()])
    if events not in counts:  # deleted since create_topics: faust creates it with the setting's
        return kafka.topics.partitions
    problem = partitions_problem(
        kafka, counts[events], {table: counts.get(name) for table, name in tables.items()}
    )
    if problem is not None:
        raise ConfigError(problem)
    return counts[events]
