"""Machine-readable contract of the topics: JSON Schema per record type and an AsyncAPI document.

Both are generated from the code, never written by hand: the JSON Schemas from the pydantic
classes of ``stream/contract.py`` (validation mode, so a schema accepts what the worker
accepts), the AsyncAPI document from ``topic_specs`` (names, partitions, topic configuration)
and the table below (keys, producers, consumers). ``streamrec schema`` writes them; the copies
committed under ``deploy/schemas/`` are checked against this module by a test, so they cannot
drift from the code.

Where the classes accept more than JSON Schema can say, the schema shows the canonical form:
``ts`` and ``created_at`` are epoch milliseconds (ISO-8601 strings with a zone are accepted as
well), and ``v`` is 1 (a newer version is rejected with ``unsupported_version``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, RootModel

from streamrec import __version__
from streamrec.settings import KafkaSettings
from streamrec.stream.contract import (
    DeadLetter,
    Event,
    Item,
    ModelAnnouncement,
    Recommendation,
)
from streamrec.stream.control import PolicyAnnouncement
from streamrec.stream.topics import topic_specs

TopicName = Literal["events", "items", "recommendations", "deadletter", "control"]
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.yaml"
# The AsyncAPI Kafka bindings version whose fields (partitions, topicConfiguration, key) we use.
KAFKA_BINDING_VERSION = "0.5.0"


class ControlRecord(
    RootModel[Annotated[ModelAnnouncement | PolicyAnnouncement, Field(discriminator="type")]]
):
    """A control record: a model announcement or a policy announcement (``type`` says which)."""


@dataclass(frozen=True)
class TopicContract:
    """What the AsyncAPI document says about one topic beyond its records' schema."""

    record: type[BaseModel]
    key: str
    description: str
    producers: str
    consumers: str


TOPICS: dict[TopicName, TopicContract] = {
    "events": TopicContract(
        Event,
        "the event's user_id",
        "Behaviour events. One user's events stay in one partition, in order.",
        "your applications (responses to a slate carry its rec_id and the item's position); "
        "`streamrec produce`, `streamrec replay`, `streamrec simulate`",
        "the worker's ingest agent (consumer group `<prefix>worker`)",
    ),
    "items": TopicContract(
        Item,
        "the item's item_id",
        "The catalog, compacted: the latest record per item_id is the item.",
        "your catalog service; `streamrec produce --kind items`, `streamrec replay`",
        "every worker reads the whole topic (each needs every item)",
    ),
    "recommendations": TopicContract(
        Recommendation,
        "the slate's user_id",
        "Published slates, one per refresh of a user; trigger_event_ids names the events "
        "it answers.",
        "the worker's refresher",
        "your applications (show the slate; answer with events carrying its rec_id); "
        "`streamrec simulate`",
    ),
    "deadletter": TopicContract(
        DeadLetter,
        "the key of the rejected record",
        "Records the contract rejected, with their coordinates, a stable error code and the "
        "original bytes.",
        "the worker's ingest agent",
        "operators (inspect, fix the producer, re-publish the original)",
    ),
    "control": TopicContract(
        ControlRecord,
        "`model` or `policy`, as the record's type",
        "Model and policy version announcements, one partition so every worker applies them "
        "in one order; compacted, so the last of each stays.",
        "`streamrec publish-model`, `streamrec trainer` (models); `streamrec learner` (policies)",
        "every model-mode worker, from the beginning of the topic; `streamrec learner` (the last "
        "policy, and policies announced while it runs)",
    ),
}


def schema_file(topic: TopicName) -> str:
    """File name of ``topic``'s record schema, e.g. ``events.schema.json``."""
    return f"{topic}.schema.json"


def record_schema(topic: TopicName) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one record of ``topic``, from its pydantic class."""
    schema = TOPICS[topic].record.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_file(topic), **schema}


def asyncapi_document(kafka: KafkaSettings) -> dict[str, Any]:
    """AsyncAPI 3.0 document of every topic, with names and partitions from ``kafka``."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    specs = {spec.name: spec for spec in topic_specs(kafka)}
    for topic, contract in TOPICS.items():
        spec = specs[kafka.topics.name(topic)]
        channels[topic] = {
            "address": spec.name,
            "description": contract.description,
            "messages": {
                contract.record.__name__: {
                    "name": contract.record.__name__,
                    "contentType": "application/json",
                    "payload": {"$ref": schema_file(topic)},
                    "bindings": {
                        "kafka": {
                            "key": {"type": "string", "description": contract.key},
                            "bindingVersion": KAFKA_BINDING_VERSION,
                        }
                    },
                }
            },
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "replicas": kafka.topics.replication_factor,
                    "topicConfiguration": _topic_configuration(spec.config),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        message = {"$ref": f"#/channels/{topic}/messages/{contract.record.__name__}"}
        for action, who in (("send", contract.producers), ("receive", contract.consumers)):
            operations[f"{action}_{topic}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{topic}"},
                "description": who,
                "messages": [message],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "streamrec topics",
            "version": __version__,
            "description": "The Kafka topics of streamrec. Records are UTF-8 JSON objects "
            "carrying a schema version `v`; unknown fields are ignored. Keys are UTF-8 "
            "strings and partitions follow Kafka's default partitioner (murmur2 of the key), "
            "so every record of one key lands in one partition, in order.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
    }


def _topic_configuration(config: dict[str, str]) -> dict[str, Any]:
    """Topic settings streamrec creates, in the binding's types (the rest: broker defaults)."""
    out: dict[str, Any] = {"cleanup.policy": config.get("cleanup.policy", "delete").split(",")}
    if "retention.ms" in config:
        out["retention.ms"] = int(config["retention.ms"])
    if "message.timestamp.type" in config:
        out["message.timestamp.type"] = config["message.timestamp.type"]
    return out


def render_schemas(kafka: KafkaSettings) -> dict[str, str]:
    """File name -> text of every schema file: one JSON Schema per topic, the AsyncAPI YAML."""
    files = {
        schema_file(topic): json.dumps(record_schema(topic), indent=2) + "\n" for topic in TOPICS
    }
    header = (
        "# Generated by `streamrec schema` from stream/schemas.py and stream/contract.py;\n"
        "# do not edit by hand (a test compares the committed copy with the code).\n"
    )
    files[ASYNCAPI_FILE] = header + yaml.safe_dump(
        asyncapi_document(kafka), sort_keys=False, width=100
    )
    return files


def write_schemas(kafka: KafkaSettings, out: Path) -> list[Path]:
    """Write every schema file into ``out`` (created if missing); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas(kafka).items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths
