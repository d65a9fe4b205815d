"""What ops and client applications rely on, against a real broker: the worker's web server
listens on the address it was given, its /metrics exports every series the Grafana dashboard and
the alert rules read, and the client helpers publish valid keyed events and answer slates."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamrec.broker import free_port
from streamrec.errors import ContractError
from streamrec.settings import KafkaSettings
from streamrec.stream.client import EventPublisher, read_slates, response
from streamrec.stream.contract import Event, Recommendation, SlateItem, encode
from streamrec.stream.producer import kafka_producer
from streamrec.stream.testing import WorkerProcess, read_topic, wait_until
from streamrec.stream.topics import create_topics

ROOT = Path(__file__).resolve().parents[2]
# Any loopback address other than 127.0.0.1: not the CLI default, and it stays on this machine.
BIND = "127.0.0.2"
TS_ISO = "2023-11-14T22:13:20Z"  # 1,700,000,000,000 ms
# Series names each metric type exposes (prometheus_client also adds `_created`).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def _scrape(host: str, port: int) -> str | None:
    """The /metrics text at host:port, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as response:
            text: str = response.read().decode()
            return text
    except (urllib.error.URLError, ConnectionError):
        return None


def _ready(host: str, port: int) -> dict[str, object]:
    """The /ready answer (its body), 200 or 503."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as refused:  # 503: not ready, with the reason
        assert refused.code == 503
        return dict(json.loads(refused.read()))


def _sample(text: str, name: str) -> float:
    """Sum of a metric's samples (all labels) in an exposition text; 0 when absent."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _series_read_by_dashboard_and_alerts() -> set[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/streamrec.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    # the worker's group; the learner's are checked against its collector (tests/unit)
    queries += [r["expr"] for g in rules["groups"] if g["name"] == "streamrec" for r in g["rules"]]
    return {name for q in queries for name in re.findall(r"\bstreamrec_[a-z0-9_]+", q)}


def _bindable(address: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
        return True


async def _publish_good_and_bad(kafka: KafkaSettings) -> None:
    event = Event(event_id="e1", user_id="u1", item_id="i1", type="click", ts=1_700_000_000_000)
    async with kafka_producer(kafka) as producer:
        topic = kafka.topics.name("events")
        await producer.send_and_wait(topic, encode(event), key=b"u1")
        await producer.send_and_wait(topic, b"not json", key=b"u2")


def test_worker_listens_where_told_and_exports_what_dashboard_and_alerts_read(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    if not _bindable(BIND):
        pytest.skip(f"{BIND} is not a local address here (Linux routes all of 127/8 to lo)")
    port = free_port()
    worker = WorkerProcess(
        kafka_settings,
        tmp_path / "worker",
        port,
        {"STREAMREC_SERVING__WEB_BIND": BIND, "STREAMREC_STATE__STORE_URL": "memory://"},
    ).start()
    try:

        def serving() -> bool:
            assert worker.alive(), worker.log_tail()
            return _scrape(BIND, port) is not None

        wait_until(serving, 120, f"the worker's web server on {BIND}:{port}")
        assert _scrape("127.0.0.1", port) is None, "the worker also listens on 127.0.0.1"

        # Samples for the labelled and event-driven series, as a running system has them.
        asyncio.run(_publish_good_and_bad(kafka_settings))

        def answered() -> bool:
            text = _scrape(BIND, port) or ""
            return (
                _sample(text, "streamrec_events_dead_lettered_total") >= 1
                and _sample(text, "streamrec_recommendations_published_total") >= 1
            )

        wait_until(answered, 120, "one dead-lettered record and one published slate")
        text = _scrape(BIND, port)
        assert text is not None
        # ready once its tables are recovered and its catalog read: what Kubernetes probes
        wait_until(lambda: _ready(BIND, port) == {"ready": True}, 60, "/ready to answer 200")
    finally:
        worker.stop()

    exported = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }
    read = _series_read_by_dashboard_and_alerts()
    assert len(read) > 10
    assert read <= exported, f"read but not exported: {sorted(read - exported)}"
    # The event that was answered left samples in the latency histogram the dashboard plots.
    assert _sample(text, "streamrec_event_to_recommendation_seconds_count") >= 1
    assert _sample(text, "streamrec_events_rejected_total") >= 1


async def _client_round_trip(kafka: KafkaSettings) -> None:
    await create_topics(kafka)
    async with EventPublisher(kafka) as events:
        first = await events.send(
            {"event_id": "e1", "user_id": "u7", "item_id": "i1", "type": "click", "ts": TS_ISO}
        )
        with pytest.raises(ContractError) as rejected:
            await events.send({**first.model_dump(), "event_id": "e2", "type": "like"})
        assert rejected.value.code == "unknown_event_type"
        await events.send(first.model_copy(update={"event_id": "e3"}))
    records = await read_topic(kafka, kafka.topics.name("events"), 2)
    assert [(r.key, json.loads(r.value)["event_id"]) for r in records] == [
        (b"u7", "e1"),
        (b"u7", "e3"),
    ], "keyed by user_id, in order, and the rejected event never sent"
    assert json.loads(records[0].value)["ts"] == first.ts == 1_700_000_000_000

    slate = Recommendation(
        rec_id="r1",
        user_id="u7",
        items=[
            SlateItem(item_id=f"i{n}", score=1.0 / n, propensity=0.5, reason="source:trending")
            for n in (1, 2)
        ],
        model_version="heuristic",
        policy_version="relevance",
        trigger_event_ids=["e1"],
        created_at=1_700_000_000_500,
        timing_ms={"gather_ms": 0.1},
    )
    slates = read_slates(kafka, f"{kafka.topics.prefix}app", from_beginning=True)
    async with kafka_producer(kafka) as producer:
        await producer.send_and_wait(kafka.topics.name("recommendations"), encode(slate), key=b"u7")
    async with asyncio.timeout(60):
        received = await anext(slates)
    await slates.aclose()
    assert received == slate
    answer = response(received, 1, "click", dwell_ms=1200)
    assert (answer.user_id, answer.item_id, answer.rec_id, answer.position) == ("u7", "i2", "r1", 1)
    assert answer.dwell_ms == 1200


def test_client_helpers_publish_keyed_valid_events_and_answer_slates(
    kafka_settings: KafkaSettings,
) -> None:
    asyncio.run(_client_round_trip(kafka_settings))
