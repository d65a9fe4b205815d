"""The trainer process around ``ContinualTrainer`` (stream/trainer.py): its Kafka side and the
default parts it trains, scores and announces with."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer

from streamrec.errors import ConfigError, ContractError, ModelError
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.compat import READ_COMMITTED, assign_all
from streamrec.stream.config import TrainerSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Event, Item, parse_event, parse_item
from streamrec.stream.control import announce_model, last_announcements
from streamrec.stream.rewind import rewind
from streamrec.stream.testing import worker_env
from streamrec.stream.trainer import AnnounceFn, ContinualTrainer, TrainFn
from streamrec.stream.trainer_metrics import serve_trainer_metrics
from streamrec.stream.training_data import write_atomic

log = logging.getLogger(__name__)
TOP_K = 10
READ_BATCH = 5_000  # events per read; a full read means the trainer is behind the stream


def train_on_window(settings: Settings) -> TrainFn:
    """Train the configured encoder on a window of events (RecBole files, then the pipeline)."""
    # Imported now, at the trainer's start, not in its first cycle: seconds of torch and
    # transformers that would delay the first candidate.
    from streamrec.models.encoder.pipeline import run_training

    def train(
        events: Sequence[Event], catalog: Sequence[Item], out: Path, start: Path | None
    ) -> Path | None:
        inter = write_atomic(events, catalog, out / "data", "window")

        def run(init: Path | None) -> Path | None:
            trained = run_training(
                settings,
                dataset=inter,
                out=out,
                epochs=settings.trainer.epochs,
                progress=False,
                time_budget_s=settings.trainer.time_budget_s,
                init=init,
                explain_inputs=False,
            )
            if init is not None and trained["best_epoch"] == 0:
                return None  # no epoch beat the served weights: nothing new to offer
            return Path(trained["checkpoint"])

        try:
            return run(start)
        except ModelError as exc:  # e.g. the served checkpoint cannot be read any more
            if start is None:
                raise
            log.warning("training from scratch: %s", exc)
            return run(None)

    return train


def next_item_ndcg(
    checkpoint: Path, history: Sequence[Event], held: Sequence[Event]
) -> float | None:
    """NDCG@10 of each held-out event's item given its user's items before it (``history``
    then the held-out events before it), seen items excluded; events of users with no earlier
    event, and repeats of an item the user had, are not scored. None when nothing can be."""
    from streamrec.models.encoder.checkpoint import InferenceEncoder

    encoder = InferenceEncoder.load(checkpoint, device="cpu")
    index = {item: row for row, item in enumerate(encoder.item_ids)}
    past: dict[str, list[str]] = {}
    for event in history:
        past.setdefault(event.user_id, []).append(event.item_id)
    queries: list[list[str]] = []
    targets: list[str] = []
    for event in held:
        before = past.setdefault(event.user_id, [])
        # a repeat (view, cart, purchase of one item) cannot be ranked with seen items excluded
        if before and event.item_id not in before:
            queries.append(list(before))
            targets.append(event.item_id)
        before.append(event.item_id)
    if not queries:
        return None
    scores = encoder.encode(queries) @ encoder.item_vectors().T  # [B, N]
    gains = [
        _gain(row, index, seen, target)
        for row, seen, target in zip(scores, queries, targets, strict=True)
    ]
    return float(np.mean(gains))


def _gain(scores: np.ndarray, index: dict[str, int], seen: list[str], target: str) -> float:
    """1 / log2(2 + rank) of ``target`` among unseen items when in the top 10, else 0."""
    row = index.get(target)
    if row is None:
        return 0.0  # an item the model does not know cannot be ranked
    scores = scores.copy()
    scores[[index[i] for i in set(seen) if i in index]] = -np.inf
    rank = int((scores > scores[row]).sum())
    return 1.0 / math.log2(rank + 2) if rank < TOP_K else 0.0


def announcer(settings: Settings) -> AnnounceFn:
    """Announce a checkpoint on ``control`` under the version its config names."""

    async def announce(checkpoint: Path) -> str:
        version = str(json.loads((checkpoint / "config.json").read_text())["model_version"])
        await announce_model(settings.kafka, checkpoint, version)
        return version

    return announce


async def run_trainer(settings: Settings) -> None:
    """Follow events and the catalog; run a cycle whenever one is due. Runs until stopped."""
    from streamrec.models.encoder.checkpoint import trained_until  # torch, not for every command

    served = await served_model(settings)  # a wrong checkpoint is refused before any folder
    folder = settings.trainer.folder or settings.data.cache_dir / "trainer"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"trainer.folder {folder} is not a usable folder ({exc})") from None
    trainer = ContinualTrainer(
        settings.trainer,
        train_on_window(settings),
        next_item_ndcg,
        announcer(settings),
        folder,
        served=served,
        horizon_of=trained_until,
        newest=lambda served: announced_model(settings.kafka, served),
    )
    if settings.trainer.metrics_port is not None:
        serve_trainer_metrics(trainer, settings.trainer.metrics_port)
    kafka, topics = settings.kafka, settings.kafka.topics
    committed = {**aiokafka_kwargs(kafka), "isolation_level": READ_COMMITTED}
    events = AIOKafkaConsumer(
        **committed, group_id=f"{topics.prefix}trainer", enable_auto_commit=True
    )
    items = AIOKafkaConsumer(**committed, group_id=None, enable_auto_commit=False)
    await events.start()
    await items.start()
    try:
        await _rewind(events, topics.name("events"), settings.trainer.window_events)
        for tp in await assign_all(items, topics.name("items")):
            await items.seek_to_beginning(tp)
        last = time.monotonic()
        while True:
            while await _read(items, events, trainer) >= READ_BATCH:
                pass  # more is waiting: a cycle must train on the newest events, not a backlog
            if trainer.due(time.monotonic() - last):
                await trainer.cycle()
                last = time.monotonic()
    finally:
        await events.stop()
        await items.stop()


async def served_model(settings: Settings) -> Path | None:
    """What the workers serve when the trainer starts: ``announced_model`` (a restarted
    trainer must judge and fine-tune what they serve, not the model it started with), else
    ``encoder.checkpoint``. ConfigError when that setting names no checkpoint."""
    announced = await announced_model(settings.kafka)
    if announced is not None:
        return announced
    configured = settings.encoder.checkpoint
    if configured is not None and not (configured / "config.json").is_file():
        raise ConfigError(
            f"encoder.checkpoint (STREAMREC_ENCODER__CHECKPOINT) {configured} is not a "
            "checkpoint folder (no config.json); run `streamrec train` or fix the path"
        )
    return configured


async def announced_model(kafka: KafkaSettings, served: Path | None = None) -> Path | None:
    """The newest model announced on the control topic whose checkpoint loads (workers fall
    back the same way: stream/control.py); None when none does. Read at the trainer's start
    and at each cycle's, so a model published meanwhile is the one judged and fine-tuned.
    ``served`` (the trainer's model, which its cycle loads anyway) is not loaded to check it."""
    from streamrec.models.encoder.checkpoint import verify_checkpoint

    for announced in reversed((await last_announcements(kafka)).models):
        checkpoint = Path(announced.checkpoint)
        if served is not None and checkpoint.resolve() == served.resolve():
            return checkpoint
        try:
            await asyncio.to_thread(verify_checkpoint, checkpoint)
        except ModelError as exc:
            log.warning("announced model %s does not load: %s", announced.model_version, exc)
            continue
        return checkpoint
    return None


async def _rewind(consumer: AIOKafkaConsumer, topic: str, window: int) -> None:
    """Start each partition far enough back that the window fills from what Kafka holds."""
    partitions = await assign_all(consumer, topic)
    await rewind(consumer, await consumer.end_offsets(partitions), window)


async def _read(
    items: AIOKafkaConsumer, events: AIOKafkaConsumer, trainer: ContinualTrainer
) -> int:
    """Add what the consumers have fetched to ``trainer``; the number of events read."""
    for records in (await items.getmany(timeout_ms=50)).values():
        for record in records:
            try:
                item = parse_item(record.value or b"")
            except ContractError:
                continue  # the worker dead-letters bad catalog records; the trainer skips them
            trainer.catalog[item.item_id] = item
    batch = await events.getmany(timeout_ms=500, max_records=READ_BATCH)
    trainer.polled_at = time.monotonic()
    for records in batch.values():
        for record in records:
            try:
                trainer.add(parse_event(record.value or b""))
            except ContractError:
                continue  # dead-lettered by the worker
    await asyncio.sleep(0)
    return sum(map(len, batch.values()))


def spawn_trainer(
    kafka: KafkaSettings, env: dict[str, str], trainer: TrainerSettings, niceness: int = 0
) -> subprocess.Popen[bytes]:
    """``streamrec trainer`` as a subprocess on ``kafka`` with ``env`` and the cycle of
    ``trainer`` (its log, ``trainer.log``, in ``trainer.folder``), ``niceness`` below this
    process's CPU priority: what the quality bench runs beside a model-mode worker."""
    if trainer.folder is None:
        raise ValueError("spawn_trainer needs trainer.folder: where the log and candidates go")
    trainer.folder.mkdir(parents=True, exist_ok=True)
    trainer_env = {
        **env,
        **{
            f"STREAMREC_TRAINER__{name.upper()}": str(value)
            for name, value in trainer.model_dump(exclude_none=True).items()
        },
    }
    with (trainer.folder / "trainer.log").open("ab") as log:
        return subprocess.Popen(
            ["nice", "-n", str(niceness), sys.executable, "-m", "streamrec", "trainer"],
            env=worker_env(kafka, trainer_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
