"""Agent crash counting (on a real faust agent) and the broker watch (a scripted probe and a
controllable clock): the metrics, the few log lines of an outage, and the stop at the limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from streamrec.errors import BrokerError
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.app import create_app
from streamrec.stream.compat import on_agent_error
from streamrec.stream.config import StateSettings
from streamrec.stream.health import BrokerWatch, MetadataProbe, count_agent_crashes
from streamrec.stream.metrics import WorkerMetrics


def _sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_a_crashing_faust_agent_is_counted_by_its_on_error_hook() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    app = faust.App("crash-test", store="memory://")

    async def fragile(stream: AsyncIterator[bytes]) -> None:
        async for value in stream:
            if value == b"boom":
                raise RuntimeError("a bug reached the agent")

    on_agent_error(app, count_agent_crashes(metrics, ["ingest"]))
    agent = app.agent(name="ingest")(fragile)
    assert _sample(metrics, "streamrec_agent_crashes_total", agent="ingest") == 0.0

    async def scenario() -> None:
        # faust's test wrapper calls the agent's own on_error (the app's, wrapped by the hook)
        # and then re-raises the crash here.
        async with agent.test_context(on_error=agent.info()["on_error"]) as running:
            await running.put(b"fine")
            with pytest.raises(RuntimeError):
                await running.put(b"boom")

    asyncio.run(scenario())
    assert _sample(metrics, "streamrec_agent_crashes_total", agent="ingest") == 1.0


def test_the_worker_counts_crashes_of_its_ingest_agent() -> None:
    settings = Settings(state=StateSettings(store_url="memory://"))
    worker = create_app(settings, CollectorRegistry())
    agent = worker.app.agents["ingest"]
    asyncio.run(agent.info()["on_error"](agent, RuntimeError("a bug")))
    assert _sample(worker.metrics, "streamrec_agent_crashes_total", agent="ingest") == 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class ScriptedProbe:
    """Answers while ``up``; raises what aiokafka raises on a refused connection otherwise."""

    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> None:
        if not self.up:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9, 'IPv4')]")


def _watch(limit_s: float) -> tuple[BrokerWatch, ScriptedProbe, Clock, list[BrokerError]]:
    probe, clock, stops = ScriptedProbe(), Clock(), []

    async def stop(exc: BrokerError) -> None:
        stops.append(exc)

    metrics = WorkerMetrics(CollectorRegistry())
    return BrokerWatch(probe, metrics, limit_s, stop, clock=clock), probe, clock, stops


def test_an_outage_shows_on_the_gauges_and_logs_its_start_a_reminder_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch, probe, clock, stops = _watch(limit_s=600)
    m = watch.metrics
    caplog.set_level(logging.INFO, "streamrec.stream.health")

    async def scenario() -> None:
        assert await watch.check() is False
        probe.up = False
        for _ in range(45):  # 90 s of failed probes, one every 2 s
            clock.now += 2
            assert await watch.check() is False
            assert _sample(m, "streamrec_broker_up") == 0.0
        assert _sample(m, "streamrec_broker_unreachable_seconds") == 90.0
        probe.up = True
        clock.now += 2
        assert await watch.check() is False

    asyncio.run(scenario())
    assert _sample(m, "streamrec_broker_up") == 1.0
    assert _sample(m, "streamrec_broker_unreachable_seconds") == 0.0
    assert _sample(m, "streamrec_broker_outage_limit_seconds") == 600.0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("broker unreachable (KafkaConnectionError")
    assert "at most 600 s (kafka.outage_limit_s)" in lines[0]
    assert lines[1] == "broker still unreachable after 62 s (the worker stops at 600 s)"
    assert lines[2] == "broker reachable again after 92 s; offset commits resume"
    assert stops == []


def test_past_the_limit_the_watch_stops_the_worker_with_one_critical_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch, probe, clock, stops = _watch(limit_s=15)
    probe.up = False

    async def scenario() -> None:
        async def tick() -> None:  # the probe interval passes on the scripted clock
            clock.now += 2

        watch.interval_s = 0.0
        task = asyncio.create_task(watch.run())
        while not task.done():
            await tick()
            await asyncio.sleep(0)
        await task

    asyncio.run(scenario())
    assert len(stops) == 1 and "past kafka.outage_limit_s = 15 s" in str(stops[0])
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "a restart" in critical[0].getMessage()


def test_the_metadata_probe_raises_a_kafka_error_when_nothing_listens() -> None:
    from streamrec.broker import free_port

    probe = MetadataProbe(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), "events")

    async def scenario() -> None:
        with pytest.raises(KafkaConnectionError):
            await probe()
        await probe.close()

    asyncio.run(scenario())
