"""What the `train`, `evaluate` and `coldstart` commands do, callable without the CLI.

Presets:

* ``demo`` (default): the encoder and train settings (``EncoderSettings``/``TrainSettings``),
  tuned to beat the reference on ML-100K and train in minutes on a 2-core CPU.
* ``reference``: SASRec as RecBole 1.2.1 configures it (item ids only, hidden 64, 2 layers,
  2 heads, inner 256, dropout 0.5 on hidden and attention, max_len 50, full cross-entropy, Adam
  lr 1e-3, batch 2048, every prefix an example, early stopping with patience 10), run under our
  split.

Every command reads the dataset as the event log the worker would have read
(``event_log.py``) and replays it into user states (``windows.py``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from streamrec.console import err_console
from streamrec.datasets import Dataset, load_dataset
from streamrec.models.config import EncoderSettings
from streamrec.models.encoder.checkpoint import (
    InferenceEncoder,
    load_projection,
    save_checkpoint,
    trained_until,
)
from streamrec.models.encoder.coldstart import evaluate_cold_start, fit_projection
from streamrec.models.encoder.evaluation import catalog_order, evaluate_scorer, popularity_scorer
from streamrec.models.encoder.event_log import EventLog, load_event_log
from streamrec.models.encoder.inputs import Featurizer, TokenInputs
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.training import TrainConfig, model_scorer, pick_device, train
from streamrec.models.encoder.warm_start import warm_config, warm_state
from streamrec.models.encoder.windows import WindowSplit, build_split, new_item_rows
from streamrec.settings import Settings

__all__ = [
    "prepare_split",
    "preset_configs",
    "run_cold_start",
    "run_evaluation",
    "run_training",
    "test_metrics",
]

Preset = Literal["demo", "reference"]

# RecBole's SASRec defaults (sasrec.yaml), which differ from ours in dropout.
REFERENCE_ENCODER = EncoderSettings(
    hidden_size=64,
    layers=2,
    heads=2,
    inner_size=256,
    dropout=0.5,
    attn_dropout=0.5,
    max_len=50,
    event_types=False,
    time_gaps=False,
    summary_tokens=0,
)
# RecBole feeds every prefix as its own example (batch 2048 prefixes). With a causal encoder and
# positions counted from the window start, a window of 50 items yields exactly the same
# (context, target) pairs for every prefix inside it, so the reference runs the equivalent
# all-position form: 40 windows of <= 50 targets ~ 2,000 targets per step, as in RecBole. The
# literal prefix form (scheme="prefix") costs ~50x more per epoch and cannot converge in a
# session on a 2-core CPU.
REFERENCE_TRAIN = TrainConfig(
    epochs=300,
    batch_size=40,
    lr=1e-3,
    weight_decay=0.0,
    loss="ce",
    scheme="window",
    mask_history=False,  # RecBole's SASRec keeps every item in the training softmax
    shuffle_ties=False,  # and trains on the log's order
    patience=10,
    seed=2020,
    time_budget_s=None,
)


def preset_configs(
    settings: Settings,
    preset: Preset,
    n_items: int,
    epochs: int | None = None,
    time_budget_s: float | None = None,
) -> tuple[EncoderConfig, TrainConfig]:
    """Encoder and training configs of ``preset`` for a catalog of ``n_items``."""
    if preset == "reference":
        enc = EncoderConfig.from_settings(REFERENCE_ENCODER, n_items)
        # The reference has no budget unless one is given; then it counts on the same clock.
        tc = TrainConfig(
            **{**REFERENCE_TRAIN.__dict__, "budget_clock": settings.train.budget_clock}
        )
    else:
        enc = EncoderConfig.from_settings(settings.encoder, n_items)
        tc = TrainConfig.from_settings(settings.train)
        if settings.state.repeatable_types:
            # Slates may then show an item again, so the model must learn to rank seen ones.
            tc = TrainConfig(**{**tc.__dict__, "mask_history": False})
    if epochs is not None:
        tc = TrainConfig(**{**tc.__dict__, "epochs": epochs})
    if time_budget_s is not None:
        tc = TrainConfig(**{**tc.__dict__, "time_budget_s": time_budget_s})
    return enc, tc


def prepare_split(
    settings: Settings,
    log: EventLog,
    encoder: EncoderConfig,
    train_config: TrainConfig,
    item_ids: list[str] | None = None,
) -> WindowSplit:
    """Replay ``log`` into the leave-one-out split, featurized for ``encoder.inputs``."""
    ids = item_ids if item_ids is not None else catalog_order(log.dataset)
    index = {item: i + 1 for i, item in enumerate(ids)}
    featurizer = Featurizer(index, encoder.inputs, encoder.max_len)
    return build_split(log.events, ids, featurizer, settings.state, train_config.scheme)


def test_metrics(
    model: SequenceEncoder, split: WindowSplit, device: torch.device, exclude_history: bool
) -> dict[str, dict[str, float]]:
    """Test metrics@10 of the model and of popularity under one history rule."""
    targets, n = split.test_targets, split.n_items
    history = split.test_history
    return {
        "model": evaluate_scorer(
            model_scorer(model, device), split.test_windows, targets, n, exclude_history,
            history=history,
        ),
        "popularity": evaluate_scorer(
            popularity_scorer(split.train, n), split.test_windows, targets, n, exclude_history,
            history=history,
        ),
    }  # fmt: skip


def new_item_metrics(
    model: SequenceEncoder,
    split: WindowSplit,
    device: torch.device,
    excluded: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Test metrics@10, history excluded, over the users whose test item is new to them: the
    only targets a slate can hold, since serving shows no user what they had (unless
    ``state.repeatable_types`` lets it). A click right after its view is a repeat target that
    ``history_excluded`` still ranks (RecBole's rule), which on a shop's bursts of view, click
    and cart made up most of its figure. ``excluded``: those figures, which equal these when
    no target repeats (no third ranking pass then, at every continual-training cycle too)."""
    keep = new_item_rows(split.test_targets, split.test_history)
    if not keep:
        return {"users": 0, "repeat_targets": len(split.test_targets)}
    if len(keep) == len(split.test_targets):
        return {"users": len(keep), "repeat_targets": 0, **excluded}
    subset = replace(
        split,
        test_windows=[split.test_windows[n] for n in keep],
        test_history=[split.test_history[n] for n in keep],
        test_targets=[split.test_targets[n] for n in keep],
    )
    figures = test_metrics(model, subset, device, exclude_history=True)
    return {"users": len(keep), "repeat_targets": len(split.test_targets) - len(keep), **figures}


def _load(settings: Settings, dataset: Path | None) -> Dataset:
    return load_dataset(dataset, cache_dir=settings.data.cache_dir)


def unread_columns(log: EventLog, inputs: TokenInputs) -> str | None:
    """What the dataset carries that an encoder with ``inputs`` will not read, and how to turn it
    on; None when it reads everything there is. (On the generated behaviour world the types and
    the device took the model path from 0.99x to 1.45x the heuristic: README, bench quality.)"""
    unread = []
    if not inputs.types and len({e.type for e in log.events}) > 1:
        unread.append("event types (STREAMREC_ENCODER__EVENT_TYPES=true)")
    # A rating file's values are its ratings, which the README found worth nothing on ML-100K;
    # values of other events (dwell) are what the shop data this hint is for carries.
    if not inputs.values and any(e.value is not None and e.type != "rating" for e in log.events):
        unread.append("values such as dwell (STREAMREC_ENCODER__EVENT_VALUES=true)")
    fields = [f for f in log.context_fields if f not in inputs.context_fields]
    if fields:
        names = ",".join(f'"{f}"' for f in fields)
        unread.append(
            f"context {', '.join(fields)} (STREAMREC_ENCODER__CONTEXT_FIELDS='[{names}]', and "
            "the same in STREAMREC_STATE__CONTEXT_FIELDS so workers keep them)"
        )
    if not unread:
        return None
    return f"the dataset carries {'; '.join(unread)}, which this encoder does not read"


def run_training(
    settings: Settings,
    dataset: Path | None = None,
    out: Path | None = None,
    epochs: int | None = None,
    device: str | None = None,
    preset: Preset = "demo",
    fit_text: bool = True,
    progress: bool = True,
    time_budget_s: float | None = None,
    init: Path | None = None,
    explain_inputs: bool = True,
) -> dict[str, Any]:
    """Train (from the checkpoint ``init`` when given, with the architecture and inputs it
    records: models/encoder/warm_start.py), evaluate on the test items (history excluded and
    included, and new items only: ``new_item_metrics``), save a checkpoint. ``explain_inputs``:
    say which of the dataset's columns the encoder leaves unread (once per command, not at every
    cycle of the continual trainer)."""
    dev = pick_device(device or settings.encoder.device)
    log = load_event_log(dataset, settings.data.cache_dir)
    ds = log.dataset
    enc, tc = preset_configs(settings, preset, len(ds.items), epochs, time_budget_s)
    if init is not None:
        enc = warm_config(init, enc, settings.encoder)
    hint = unread_columns(log, enc.inputs) if explain_inputs else None
    if hint is not None:
        err_console.print(f"[yellow]{hint}[/]")
    split = prepare_split(settings, log, enc, tc)
    start = partial(warm_state, init, item_ids=split.item_ids) if init is not None else None
    fresh_after = trained_until(init) if init is not None else None
    result = train(split, enc, tc, dev, progress, start, fresh_after)
    model = result.model
    excluded = test_metrics(model, split, dev, exclude_history=True)
    test = {
        "history_excluded": excluded,
        "history_included": test_metrics(model, split, dev, exclude_history=False),
        "new_items": new_item_metrics(model, split, dev, excluded),
    }
    projection = None
    text_seconds = 0.0
    if fit_text:
        from streamrec.models.encoder.text import cached_text_vectors

        started = time.perf_counter()
        texts = [ds.items[i].text for i in split.item_ids]
        vecs = cached_text_vectors(texts, settings.data.cache_dir)
        served = load_projection(init, dev) if init is not None else None
        projection = fit_projection(model, split.examples, vecs, start=served)
        text_seconds = time.perf_counter() - started
    fallback = _mean_user(model, split)
    metrics = {
        "dataset": ds.name,
        "dataset_path": str(Path(dataset).resolve()) if dataset else None,
        # What the continual trainer counts new events from (stream/trainer.py).
        "trained_until_ms": max((e.ts for e in log.events), default=None),
        "preset": preset,
        "inputs": enc.inputs.describe(),
        "device": str(dev),
        "train_seconds": round(result.seconds, 1),
        "text_projection_seconds": round(text_seconds, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        # a fine-tune's validation: the targets newer than this, when 50 or more were (training.py)
        "valid_after_ms": fresh_after,
        "stopped": result.stopped,
        "valid": result.best_valid,
        "test": test,
        "history": result.history,
    }
    root = settings.data.cache_dir / "models"
    folder = save_checkpoint(
        out, model, split.item_ids, fallback, tc.__dict__, metrics, projection, root=root
    )
    return {k: v for k, v in metrics.items() if k != "history"} | {"checkpoint": str(folder)}


@torch.inference_mode()
def _mean_user(model: SequenceEncoder, split: WindowSplit) -> torch.Tensor:
    """Mean user vector over every user's test-time state: the empty-history fallback."""
    scorer_free = InferenceEncoder(
        model, split.item_ids, "tmp", torch.zeros(model.config.hidden_size)
    )
    vecs = scorer_free.encode_windows(split.test_windows)
    return torch.from_numpy(vecs.mean(axis=0))


def run_evaluation(
    settings: Settings,
    checkpoint: Path,
    dataset: Path | None,
    exclude_history: bool,
    device: str | None = None,
) -> dict[str, Any]:
    """Test metrics of a checkpoint and of popularity, under the chosen history rule."""
    enc = InferenceEncoder.load(checkpoint, device or settings.encoder.device)
    log = load_event_log(dataset, settings.data.cache_dir)
    split = prepare_split(settings, log, enc.model.config, TrainConfig(), enc.item_ids)
    metrics = test_metrics(enc.model, split, enc.device, exclude_history)
    return {
        "checkpoint": str(checkpoint),
        "model_version": enc.model_version,
        "inputs": enc.model.config.inputs.describe(),
        "protocol": "leave-one-out by time, full ranking over all items, @10",
        "history": "excluded" if exclude_history else "included",
        "users": len(split.test_targets),
        "items": split.n_items,
        **metrics,
    }


def run_cold_start(
    settings: Settings,
    dataset: Path | None,
    fraction: float,
    epochs: int | None,
    device: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Hold ``fraction`` of items out, train the demo preset on the rest, score them via text."""
    from streamrec.models.encoder.text import cached_text_vectors

    dev = pick_device(device or settings.encoder.device)
    ds = _load(settings, dataset)
    ids = sorted(ds.items)
    vecs = cached_text_vectors([ds.items[i].text for i in ids], settings.data.cache_dir)
    text_for = {item: np.asarray(v) for item, v in zip(ids, vecs, strict=True)}
    enc, tc = preset_configs(settings, "demo", 1, epochs)
    started = time.perf_counter()
    figures = evaluate_cold_start(ds, text_for, enc, tc, dev, fraction, progress)
    return {
        "dataset": ds.name,
        "fraction": fraction,
        **figures,
        "seconds": round(time.perf_counter() - started, 1),
    }
