"""``streamrec worker``: ensure the topics exist, build the app, run faust's worker."""

from __future__ import annotations

import asyncio
import gc
import logging

import faust

from streamrec.settings import Settings
from streamrec.stream.app import create_app
from streamrec.stream.topics import create_topics


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until it is stopped (SIGTERM/SIGINT); blocks."""
    # Topics first, with the configured partitions: faust's tables refuse to start when a
    # source topic and its changelog disagree (which auto-creation would cause).
    asyncio.run(create_topics(settings.kafka))
    settings.state.data_dir.mkdir(parents=True, exist_ok=True)
    worker_app = create_app(settings)
    gc.freeze()  # what is alive now lives all run long (see StreamrecApp._on_recovered)
    logging.getLogger("faust").setLevel(loglevel.upper())
    worker = faust.Worker(worker_app.app, loglevel=loglevel)
    worker.execute_from_commandline()
