"""Helpers for testing against a real broker: run workers as processes, wait for them to catch
up, read a table's final state from its changelog, and compute reference user state.

Shipped in the package because users testing their own deployments need the same tools.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.broker import free_port
from streamrec.settings import KafkaSettings
from streamrec.stream.compat import assign_all
from streamrec.stream.config import StateSettings
from streamrec.stream.connection import aiokafka_kwargs, topic_reader
from streamrec.stream.contract import Event
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.state import UserState, apply_event
from streamrec.stream.topics import create_topics, worker_app_id


def worker_env(kafka: KafkaSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that points a worker process at ``kafka`` and its topic prefix."""
    env = dict(os.environ)
    env.update(
        STREAMREC_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMREC_KAFKA__TOPICS__PREFIX=kafka.topics.prefix,
        STREAMREC_KAFKA__TOPICS__PARTITIONS=str(kafka.topics.partitions),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """One ``streamrec worker`` subprocess with its own data dir, web port and log file."""

    def __init__(
        self,
        kafka: KafkaSettings,
        data_dir: Path,
        web_port: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kafka = kafka
        self.data_dir = data_dir
        self.web_port = web_port
        self.log_path = data_dir.with_suffix(".log")
        self.env = worker_env(kafka, extra_env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        cmd = [
            sys.executable,
            "-m",
            "streamrec",
            "worker",
            "--data-dir",
            str(self.data_dir),
            "--web-port",
            str(self.web_port),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush, no commit."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def stats(self) -> dict[str, Any] | None:
        """The worker's /stats, or None while it is not serving."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/stats", timeout=2) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None

    def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body) of a GET on the worker's web server."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def ready(self) -> bool:
        """Whether its /ready probe answers 200 (False while it is not serving)."""
        try:
            return self.get("/ready")[0] == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# What faust's supervisor writes when an agent dies and when it brings it back.
CRASH_SIGNS = ("Crashed reason=", "Restarting dead")


def through_a_worker(
    kafka: KafkaSettings, data_dir: Path, send: Callable[[], Coroutine[Any, Any, None]]
) -> dict[str, Any]:
    """Start a fresh worker, wait until it is ready (tables recovered, the catalog published
    before it read), run ``send`` (it publishes to the topics), wait until the worker has
    committed every events record, stop it and return its last /stats; AssertionError if it
    died or faust's supervisor ever restarted an agent."""
    events = kafka.topics.name("events")
    asyncio.run(create_topics(kafka))
    worker = WorkerProcess(kafka, data_dir, free_port()).start()
    try:
        wait_until(worker.ready, 90, "the worker to be ready")
        asyncio.run(send())

        def caught_up() -> bool:
            assert worker.alive(), f"worker died:\n{worker.log_tail()}"
            return bool(asyncio.run(group_caught_up(kafka, worker_app_id(kafka), events)))

        wait_until(caught_up, 180, "the worker to commit every record", interval_s=2.0)
        stats = worker.stats() or {}
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    crashes = [line for line in log.splitlines() if any(s in line for s in CRASH_SIGNS)]
    assert crashes == [], "an agent crashed:\n" + "\n".join(crashes[:5])
    return stats


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    """Poll ``predicate()`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def group_caught_up(kafka: KafkaSettings, group: str, topic: str) -> bool:
    """True when ``group`` has committed the end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await assign_all(consumer, topic)
        if not parts:
            return False
        end = await consumer.end_offsets(parts)
        for tp in parts:
            committed = await consumer.committed(tp)
            if (committed or 0) < end[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def read_changelog(kafka: KafkaSettings, topic: str) -> dict[str, Any]:
    """A table's final content: the last value per key of its changelog (JSON keys/values)."""
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await assign_all(consumer, topic)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        table: dict[str, Any] = {}
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for r in records:
                    if r.key is None:
                        continue  # faust never writes a changelog record without a key
                    key = json.loads(r.key)
                    if r.value is None:
                        table.pop(key, None)  # tombstone
                    else:
                        table[key] = json.loads(r.value)
        return table
    finally:
        await consumer.stop()


async def read_topic(
    kafka: KafkaSettings, topic: str, want: int, timeout_s: float = 60.0
) -> list[Any]:
    """The first ``want`` records of ``topic`` (all partitions), as aiokafka records."""
    consumer = topic_reader(kafka, topic)
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
        return got
    finally:
        await consumer.stop()


def reference_item_stats(events: Iterable[Event], settings: StateSettings) -> ItemStats:
    """The item statistics one process computes from ``events`` in order (each user's events in
    their order), without Kafka: what every worker's replica must equal."""
    states: dict[str, UserState] = {}
    stats = ItemStats(settings)
    for n, event in enumerate(events):
        state = states.setdefault(event.user_id, UserState())
        previous = state.covisit_previous(event.item_id, settings.covisit_window)
        if apply_event(state, event, settings):
            weight = settings.weight_of(event)
            stats.apply(ItemDelta(event.item_id, previous, event.ts, weight, (0, n)))
    return stats


def saved_item_stats(data_dir: Path, settings: StateSettings) -> ItemStats:
    """A stopped worker's item-statistics replica, from the snapshot it saved at shutdown."""
    raw = json.loads((data_dir / "item_stats.json").read_text(encoding="utf-8"))
    stats = ItemStats(settings)
    stats.load_json(raw["stats"])
    return stats


def reference_state(events: Iterable[Event], settings: StateSettings) -> dict[str, dict[str, Any]]:
    """user_id -> state JSON without the record position ("o"), computed without Kafka by
    folding events in per-user order."""
    states: dict[str, UserState] = {}
    for event in events:
        apply_event(states.setdefault(event.user_id, UserState()), event, settings)
    return {
        user: {k: v for k, v in state.to_json().items() if k != "o"}
        for user, state in states.items()
    }
