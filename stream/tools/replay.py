"""``streamrec replay``: publish a dataset through Kafka in timestamp order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from streamrec.errors import ConfigError, DeliveryError
from streamrec.models.encoder.event_log import stream_event_log
from streamrec.settings import Settings
from streamrec.stream.producer import DEFAULT_MAX_OUTAGE_S, dataset_items, publish
from streamrec.stream.topics import create_topics


async def replay_dataset(
    settings: Settings,
    path: Path | None,
    rate: float | None,
    limit: int | None,
    with_items: bool,
    progress: bool = True,
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
    resume_from: int = 0,
) -> dict[str, Any]:
    """Create topics, publish the catalog (optional) then the events from index ``resume_from``
    (event ids are ``<dataset>-<index>``); returns the figures.

    Raises ``DeliveryError`` whose message says how to continue when the broker acknowledges
    nothing for ``max_outage_s``.
    """
    # With a RecBole file's extra columns; made as they are sent.
    dataset, events = stream_event_log(path, settings.data.cache_dir)
    total = min(limit, len(dataset.interactions)) if limit else len(dataset.interactions)
    if total == 0:
        raise ConfigError(f"dataset {dataset.name} has no events to replay")
    if resume_from >= total:
        raise ConfigError(
            f"--resume-from {resume_from} leaves nothing to send: the replay has {total} events"
            + (f" (--limit {limit})" if limit else "")
        )
    kafka = settings.kafka
    await create_topics(kafka)
    figures: dict[str, Any] = {"dataset": dataset.name}
    if with_items:
        try:
            items = await publish(
                kafka,
                dataset_items(dataset),
                kafka.topics.name("items"),
                total=len(dataset.items),
                progress=progress,
                max_outage_s=max_outage_s,
            )
        except DeliveryError as exc:
            raise DeliveryError(
                f"{exc}; no event was sent yet and the items topic is compacted, so run the same "
                "`streamrec replay` again",
                0,
            ) from None
        figures["items"] = items.figures()
    events = itertools.islice(events, total)
    try:
        sent = await publish(
            kafka,
            events,
            kafka.topics.name("events"),
            rate=rate,
            total=total,
            progress=progress,
            max_outage_s=max_outage_s,
            resume_from=resume_from,
        )
    except DeliveryError as exc:
        raise DeliveryError(
            f"{exc}; the index counts events in time order (event id {dataset.name}-<index>): "
            f"continue with the same options plus `--resume-from {exc.resume_from} --no-items`",
            exc.resume_from,
        ) from None
    figures["events"] = sent.figures()
    return figures
