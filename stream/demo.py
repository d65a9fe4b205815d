"""``streamrec demo``: the whole pipeline on the embedded broker, from a fresh start.

Steps: start a private Kafka broker on a free loopback port (its own data folder, wiped first so
every run starts alike), create the topics, replay MovieLens-100K through them, and print a
summary. The broker is stopped at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from streamrec.broker import EmbeddedKafka
from streamrec.console import err_console
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.replay import replay_dataset


def run_demo(settings: Settings, limit: int | None, rate: float | None) -> dict[str, Any]:
    """Run the demo; returns the summary figures."""
    data_dir = settings.data.cache_dir / "demo-broker"
    shutil.rmtree(data_dir, ignore_errors=True)
    broker = EmbeddedKafka(
        settings.broker.version,
        settings.data.cache_dir,
        data_dir,
        port=0,
        start_timeout_s=settings.broker.start_timeout_s,
    )
    err_console.print(
        f"[bold]1/3[/] starting Apache Kafka {broker.version} on {broker.bootstrap_servers}"
    )
    info = broker.start()
    try:
        kafka = KafkaSettings(
            **{**settings.kafka.model_dump(), "bootstrap_servers": info.bootstrap_servers}
        )
        demo_settings = settings.model_copy(update={"kafka": kafka})
        err_console.print("[bold]2/3[/] creating topics and replaying MovieLens-100K")
        figures = asyncio.run(replay_dataset(demo_settings, None, rate, limit, with_items=True))
        err_console.print("[bold]3/3[/] summary")
        return {"broker": info.bootstrap_servers, "kafka_version": broker.version, **figures}
    finally:
        broker.stop()
