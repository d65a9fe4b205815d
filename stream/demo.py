"""``streamrec demo``: the whole pipeline on the embedded broker, from a fresh start.

Steps: start a private Kafka broker on a free loopback port (its own data folder, wiped first so
every run starts alike), create the topics, start a worker process, replay MovieLens-100K
through the broker, wait until the worker has committed every event, and print a summary with
example slates. Worker and broker are stopped at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.console import err_console
from streamrec.datasets import load_dataset
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.replay import replay_dataset
from streamrec.stream.testing import WorkerProcess, group_caught_up, wait_until
from streamrec.stream.topics import create_topics

EXAMPLE_SLATES = 3


def run_demo(settings: Settings, limit: int | None, rate: float | None) -> dict[str, Any]:
    """Run the demo; returns the summary figures."""
    workdir = settings.data.cache_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    broker = EmbeddedKafka(
        settings.broker.version,
        settings.data.cache_dir,
        workdir / "broker",
        port=0,
        start_timeout_s=settings.broker.start_timeout_s,
    )
    err_console.print(f"[bold]1/4[/] Apache Kafka {broker.version} on {broker.bootstrap_servers}")
    info = broker.start()
    worker: WorkerProcess | None = None
    try:
        kafka = KafkaSettings(
            **{**settings.kafka.model_dump(), "bootstrap_servers": info.bootstrap_servers}
        )
        demo_settings = settings.model_copy(update={"kafka": kafka})
        asyncio.run(create_topics(kafka))
        err_console.print("[bold]2/4[/] starting a worker")
        worker = WorkerProcess(kafka, workdir / "worker", free_port()).start()
        wait_until(lambda: _ready(worker), 120, "the worker to start")
        err_console.print("[bold]3/4[/] replaying MovieLens-100K through Kafka")
        figures = asyncio.run(replay_dataset(demo_settings, None, rate, limit, with_items=True))
        err_console.print("[bold]4/4[/] waiting for the worker to apply every event")
        topic = kafka.topics.name("events")
        group = f"{kafka.topics.prefix}worker"
        wait_until(
            lambda: _ready(worker) and asyncio.run(group_caught_up(kafka, group, topic)),
            1800,
            "the worker to catch up",
            interval_s=2.0,
        )
        titles = {
            i.item_id: i.title for i in load_dataset(None, settings.data.cache_dir).items.values()
        }
        return {
            "kafka": f"{broker.version} at {info.bootstrap_servers}",
            **figures,
            "worker": _summary(worker, titles),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def _ready(worker: WorkerProcess) -> bool:
    if not worker.alive():
        raise RuntimeError(f"the demo worker exited; its log ends with:\n{worker.log_tail()}")
    return worker.stats() is not None


def _summary(worker: WorkerProcess, titles: dict[str, str]) -> dict[str, Any]:
    stats = worker.stats() or {}
    summary = {
        key: stats.get(key)
        for key in (
            "users_in_state",
            "items_in_catalog",
            "events_accepted",
            "dead_lettered",
            "duplicates_dropped",
            "recommendations_published",
        )
    }
    latency = stats.get("latency") or {}
    summary["event_to_recommendation_p50_ms"] = latency.get("p50_ms")
    summary["event_to_recommendation_p99_ms"] = latency.get("p99_ms")
    summary["example_slates"] = _examples(worker, titles)
    return summary


def _examples(worker: WorkerProcess, titles: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for user in ("1", "2", "3")[:EXAMPLE_SLATES]:
        status, body = worker.get(f"/recommendations/{user}")
        if status != 200:
            continue
        for rank, item in enumerate(body["items"][:4], start=1):
            reason = item["reason"]
            if reason.startswith("item:"):
                reason = f"like {titles.get(reason[5:], reason[5:])}"
            rows.append(
                {
                    "user": user,
                    "rank": rank,
                    "title": titles.get(item["item_id"], item["item_id"]),
                    "score": round(item["score"], 4),
                    "reason": reason,
                    "model": body["model_version"],
                }
            )
    return rows
