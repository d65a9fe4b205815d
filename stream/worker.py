"""``streamrec worker``: ensure the topics exist and fit the tables, build the app, run faust's
worker."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any, cast

import faust

from streamrec.errors import BrokerError
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream import logs
from streamrec.stream.app import create_app
from streamrec.stream.data_dir import lock_data_dir
from streamrec.stream.health import BrokerWatch, MetadataProbe, hard_exit_after
from streamrec.stream.topics import check_copartitioned, create_topics

# How long a worker that gives up on the broker lets faust's shutdown try to flush and commit
# (through the broker it gave up on) before it exits anyway.
SHUTDOWN_GRACE_S = 30.0


class _Worker(faust.Worker):
    """faust's worker with our log filter on the handlers it sets up at start."""

    def __init__(self, app: faust.App, loglevel: str, repeat_interval_s: float) -> None:
        super().__init__(app, loglevel=loglevel)
        self.repeat_interval_s = repeat_interval_s

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # mode's documented hook, called right after it replaced the root handlers: a filter put
        # on them any earlier would be thrown away with them.
        super().on_setup_root_logger(logger, level)
        logs.install(self.repeat_interval_s, logger.handlers)


async def _freeze(sender: Any, **kwargs: Any) -> None:
    gc.freeze()


async def _prepare_topics(kafka: KafkaSettings) -> int:
    """The events topic's partition count, once every topic exists and fits (see below)."""
    await create_topics(kafka)
    return await check_copartitioned(kafka)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until it is stopped (SIGTERM/SIGINT); blocks."""
    lock = lock_data_dir(settings.state.data_dir)  # held until the process ends, kill -9 too
    # Topics first, with the configured partitions (auto-creation would give the broker's
    # default). faust checks a table's changelog against its source topic only when an event
    # first writes the table: a mismatch (events grown with create_partitions, or created apart
    # from its changelogs) would start, report ready, then crash on that event at every
    # restart. So it is refused here, before anything runs.
    events_partitions = asyncio.run(_prepare_topics(settings.kafka))
    if settings.serving.mode == "model" and not settings.serving.model_process:
        import torch

        torch.set_num_threads(settings.serving.model_threads)
    worker_app = create_app(settings, events_partitions=events_partitions)
    # Modules, models and the catalog live as long as the process: 520,000 objects that each
    # full collection would scan again, and faust collects four times per rebalance (200 ms
    # each, measured). Frozen after start-up and after each recovery, they are left out of
    # every later collection.
    gc.freeze()
    cast(Any, worker_app.app.on_rebalance_complete.connect)(_freeze)
    logging.getLogger("faust").setLevel(loglevel.upper())
    worker = _Worker(worker_app.app, loglevel, settings.logs.repeat_interval_s)

    async def give_up(exc: BrokerError) -> None:
        hard_exit_after(SHUTDOWN_GRACE_S)
        await worker.crash(exc)  # mode's worker re-raises the crash: exit code 1

    watch = BrokerWatch(
        MetadataProbe(settings.kafka, settings.kafka.topics.name("events")),
        worker_app.metrics,
        settings.kafka.outage_limit_s,
        give_up,
    )
    worker_app.app.task(watch.run)
    try:
        worker.execute_from_commandline()
    finally:
        lock.close()
