"""``streamrec bench quality``: the slates users get from the recommendations topic, scored live.

1. Load the dataset in its stable time order (``limit``: its first N events); the first
   ``split`` of the events is the training part, the rest is scored.
2. Model modes: train an encoder on the training part alone (written as RecBole atomic files,
   default training settings), or take ``--checkpoint`` as given: no event the model learned
   from is ever scored.
3. Per system (heuristic, model, or both one after the other, each on fresh topics): publish the
   catalog, start a worker and wait until it is ready, replay every event in time order at
   ``rate`` events/s, wait until every event it accepted is listed in some slate's
   ``trigger_event_ids`` (at most ``ANSWER_TIMEOUT_S`` after the replay), read the slates and
   the events' record timestamps back, stop the worker.
4. Score prequentially with ``stream/tools/quality.py`` (protocol in its docstring) beside
   popularity and last-item co-visitation on the same events; plot NDCG@10 over stream time.

Nothing here asserts a quality figure; it reports.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.console import err_console
from streamrec.datasets import Dataset
from streamrec.errors import ConfigError, DataError, StreamrecError
from streamrec.models.encoder.event_log import load_event_log
from streamrec.settings import KafkaSettings, Settings, TopicSettings
from streamrec.stream.config import TrainerSettings
from streamrec.stream.connection import topic_reader
from streamrec.stream.contract import Event
from streamrec.stream.producer import dataset_items, publish
from streamrec.stream.testing import WorkerProcess, read_topic, wait_until
from streamrec.stream.tools import quality
from streamrec.stream.tools.quality_report import SystemRun, score_runs
from streamrec.stream.topics import create_topics
from streamrec.stream.trainer_process import spawn_trainer
from streamrec.stream.training_data import write_atomic

Mode = Literal["heuristic", "model", "both"]
MODES: tuple[str, ...] = ("heuristic", "model", "both")
# A worker starts in seconds; loading a model and its index, or a slow shared machine, takes
# longer. Past this it is not going to start.
READY_TIMEOUT_S = 300.0
# At 1,000 events/s the worker keeps up, so its backlog after the replay is seconds of work; a
# model-mode worker on a busy CPU may trail by minutes. Past this it is stuck: score what came.
ANSWER_TIMEOUT_S = 600.0
STATS_EVERY_S = 2.0  # how often the answer wait asks the worker what it has accepted
# The replay's scored half lasts about a minute at 1,000 events/s. For candidates to land while
# events are scored, the trainer beside the worker fine-tunes every 10,000 events on the last
# 50,000 for at most 2 epochs (about 8 s a cycle on a quiet CPU). Replayed offline with each swap
# at its cycle's end, that took the model path from 1.066x to 1.082x the heuristic (all events
# so far, 3 / 10 epochs: 1.09x / 1.10x, at two to four times the cycle; the last 20,000 events
# every 5,000: 1.053x; session 8, README).
BENCH_TRAINER = TrainerSettings(
    window_events=50_000, every_events=10_000, time_budget_s=30.0, epochs=2
)
# In production the trainer has its own machine; here it shares the worker's cores, and at equal
# priority its training held the model worker seconds behind the replay (p50 1.5-3.2 s, measured).
TRAINER_NICENESS = 5


@dataclass(frozen=True)
class QualityOptions:
    """What one ``bench quality`` run does; ``out`` is the run folder."""

    mode: Mode
    rate: float
    split: float
    out: Path
    plot: Path
    dataset: Path | None = None
    limit: int | None = None
    checkpoint: Path | None = None
    epochs: int | None = None
    trainer: bool = True  # model mode: the continual trainer runs beside the worker
    lag: int | None = None  # offline (stream/tools/offline.py): the events a slate trails by
    progress: bool = True  # bars on stderr (off for logs and scripts)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 0.0 < self.split < 1.0:
            raise ConfigError(f"--split {self.split}: give the training share, between 0 and 1")
        if self.rate <= 0:
            raise ConfigError(f"--rate {self.rate}: events per second must be positive")


def run_quality_bench(settings: Settings, options: QualityOptions) -> dict[str, Any]:
    """``measure_quality`` on a private broker (started here, its data removed at the end);
    the figures also go to ``figures.json`` in the run folder."""
    options.out.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedKafka(
        settings.broker.version,
        settings.data.cache_dir,
        options.out / "broker",
        port=0,
        start_timeout_s=settings.broker.start_timeout_s,
    )
    info = broker.start()
    try:
        figures = {
            "kafka": broker.version,
            **measure_quality(settings, options, info.bootstrap_servers),
        }
    finally:
        broker.stop()
        shutil.rmtree(options.out / "broker", ignore_errors=True)
    (options.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def measure_quality(settings: Settings, options: QualityOptions, bootstrap: str) -> dict[str, Any]:
    """Train or take a model, run each system on the broker at ``bootstrap`` (fresh topics under
    the settings' prefix), score; returns the figures."""
    started = time.perf_counter()
    log = load_event_log(options.dataset, settings.data.cache_dir)
    dataset = log.dataset
    events = list(itertools.islice(log.events, options.limit))
    first_scored = int(len(events) * options.split)
    options.out.mkdir(parents=True, exist_ok=True)
    encoder: dict[str, Any] = {}
    if options.mode != "heuristic":
        encoder = encoder_for(settings, dataset, events[:first_scored], options)
    systems = ["heuristic", "model"] if options.mode == "both" else [options.mode]
    runs: dict[str, SystemRun] = {}
    for name in systems:
        env = {"STREAMREC_SERVING__MODE": name}
        if name == "model":
            env["STREAMREC_ENCODER__CHECKPOINT"] = str(encoder["checkpoint"])
        kafka = _fresh_kafka(settings, bootstrap, name)
        runs[name] = _run_system(name, kafka, dataset, events, env, options)
    seen = settings.state.marks_seen
    scored = score_runs(dataset, events, first_scored, runs, options.split, options.plot, seen)
    figures = {"encoder": encoder or None, **scored}
    figures.update(rate_events_per_s=options.rate, run_folder=str(options.out))
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


def encoder_for(
    settings: Settings, dataset: Dataset, training: Sequence[Event], options: QualityOptions
) -> dict[str, Any]:
    """The checkpoint to serve: ``options.checkpoint`` as given, or one trained on
    ``training`` (the events before the split) alone."""
    if options.checkpoint is not None:
        return {"checkpoint": str(options.checkpoint), "trained_on": "given (--checkpoint)"}
    from streamrec.models.encoder.pipeline import run_training

    if not training:
        raise DataError(
            f"the split at {options.split} leaves no event before it to train the encoder on; "
            "use a larger dataset or --split, or serve a model with --checkpoint"
        )
    inter = write_atomic(
        training, list(dataset_items(dataset)), options.out / "train", f"{dataset.name}-train"
    )
    err_console.print(f"training the encoder on the {len(training)} events before the split")
    trained = run_training(
        settings,
        dataset=inter,
        out=options.out / "model",
        epochs=options.epochs,
        progress=options.progress,
    )
    return {
        "checkpoint": trained["checkpoint"],
        "trained_on": f"the first {len(training)} events",
        "train_seconds": trained["train_seconds"],
        "epochs_run": trained["epochs_run"],
        "valid": trained["valid"],
    }


def _fresh_kafka(settings: Settings, bootstrap: str, system: str) -> KafkaSettings:
    prefix = f"{settings.kafka.topics.prefix}quality-{system}-{uuid.uuid4().hex[:6]}."
    topics = TopicSettings(**{**settings.kafka.topics.model_dump(), "prefix": prefix})
    return KafkaSettings(
        **{**settings.kafka.model_dump(), "bootstrap_servers": bootstrap, "topics": topics}
    )


def _run_system(
    name: str,
    kafka: KafkaSettings,
    dataset: Dataset,
    events: list[Event],
    env: dict[str, str],
    options: QualityOptions,
) -> SystemRun:
    err_console.print(f"[bold]{name}[/]: {len(events)} events at {options.rate:.0f}/s")
    asyncio.run(create_topics(kafka))
    catalog = asyncio.run(
        publish(kafka, dataset_items(dataset), kafka.topics.name("items"), progress=False)
    ).accepted
    data_dir = options.out / f"worker-{name}"
    worker = WorkerProcess(kafka, data_dir, free_port(), env).start()
    trainer = (
        spawn_trainer(
            kafka,
            env,
            BENCH_TRAINER.model_copy(update={"folder": options.out / "trainer"}),
            TRAINER_NICENESS,
        )
        if name == "model" and options.trainer
        else None
    )
    # What is alive now lives all run; the replay's own full collections (80 ms with the
    # dataset in memory) would otherwise release paced events as bursts.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    try:
        wait_until(
            lambda: _ready(worker, catalog, name == "model"), READY_TIMEOUT_S, f"the {name} worker"
        )
        topic = kafka.topics.name("events")
        replayed = publish(
            kafka, events, topic, rate=options.rate, total=len(events), progress=options.progress
        )
        asyncio.run(replayed)
        slates, answered = asyncio.run(_read_slates(kafka, events, worker, options.progress))
    finally:
        worker.stop()
        if trainer is not None:
            trainer.terminate()
            trainer.wait(60)
        gc.unfreeze()
        shutil.rmtree(data_dir, ignore_errors=True)  # RocksDB; the log beside it stays
    seconds = time.perf_counter() - started
    records = asyncio.run(read_topic(kafka, kafka.topics.name("events"), len(events), 300))
    event_ms = {json.loads(r.value)["event_id"]: int(r.timestamp) for r in records}
    return SystemRun(slates, event_ms, answered, seconds)


def _alive(worker: WorkerProcess) -> WorkerProcess:
    if not worker.alive():
        raise StreamrecError(f"the worker exited; its log ends with:\n{worker.log_tail()}")
    return worker


def _ready(worker: WorkerProcess, catalog: int, model: bool) -> bool:
    """Owning every events partition with its tables recovered, the whole catalog read, and in
    model mode the model loaded (until then the worker answers with the heuristic). The web
    port answers seconds before that: events replayed earlier would wait for the group join and
    the recovery, then be answered late and coalesced."""
    stats = _alive(worker).stats()
    if stats is None or stats.get("items_in_catalog", 0) < catalog:
        return False
    owned = len(stats.get("partitions", ())) == worker.kafka.topics.partitions
    if not owned or stats.get("last_recovery_s") is None:
        return False
    return not model or stats.get("model_version") is not None


async def _read_slates(
    kafka: KafkaSettings, events: list[Event], worker: WorkerProcess, progress: bool
) -> tuple[list[quality.Slate], int]:
    """Every slate of the run, read until each accepted event is answered (or the timeout)."""
    wanted = {e.event_id for e in events}
    consumer = topic_reader(kafka, kafka.topics.name("recommendations"))
    await consumer.start()
    slates: list[quality.Slate] = []
    answered: set[str] = set()
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    next_stats = time.monotonic()
    bar = tqdm(total=len(wanted), desc="events answered", unit="ev", disable=not progress)
    try:
        while len(answered) < len(wanted) and time.monotonic() < deadline:
            batch = (await consumer.getmany(timeout_ms=500)).values()
            new = [_slate(r.value, r.timestamp) for records in batch for r in records]
            slates.extend(new)
            before = len(answered)
            answered.update(i for s in new for i in s.trigger_event_ids if i in wanted)
            bar.update(len(answered) - before)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_EVERY_S
                if _all_accepted_answered(_alive(worker), len(answered), len(wanted)):
                    break
    finally:
        bar.close()
        await consumer.stop()
    return slates, len(answered)


def _all_accepted_answered(worker: WorkerProcess, answered: int, published: int) -> bool:
    """Every published event consumed, and as many answered as the worker accepted (it drops
    producer duplicates and dead-letters bad records, which no slate answers)."""
    stats = worker.stats() or {}
    consumed = int(stats.get("events_consumed", 0))
    return consumed >= published and answered >= int(stats.get("events_accepted", published))


def _slate(value: bytes, timestamp: int) -> quality.Slate:
    # Plain JSON: a full contract validation of 100,000 slates costs more than the scoring.
    body = json.loads(value)
    return quality.Slate(
        user_id=body["user_id"],
        items=tuple(i["item_id"] for i in body["items"]),
        trigger_event_ids=tuple(body["trigger_event_ids"]),
        published_ms=int(timestamp),
        model_version=str(body.get("model_version", "")),
    )
