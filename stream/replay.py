"""``streamrec replay``: publish a dataset through Kafka in timestamp order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from streamrec.datasets import load_dataset
from streamrec.settings import Settings
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.topics import create_topics


async def replay_dataset(
    settings: Settings,
    path: Path | None,
    rate: float | None,
    limit: int | None,
    with_items: bool,
    progress: bool = True,
) -> dict[str, Any]:
    """Create topics, publish the catalog (optional) then the events; returns the figures."""
    dataset = load_dataset(path, settings.data.cache_dir)
    kafka = settings.kafka
    await create_topics(kafka)
    figures: dict[str, Any] = {"dataset": dataset.name}
    if with_items:
        items = await publish(
            kafka,
            dataset_items(dataset),
            kafka.topics.name("items"),
            total=len(dataset.items),
            progress=progress,
        )
        figures["items"] = items.figures()
    total = min(limit, len(dataset.interactions)) if limit else len(dataset.interactions)
    events = itertools.islice(dataset_events(dataset), total)
    sent = await publish(
        kafka, events, kafka.topics.name("events"), rate=rate, total=total, progress=progress
    )
    figures["events"] = sent.figures()
    return figures
