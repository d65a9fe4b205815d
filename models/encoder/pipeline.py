"""What the `train`, `evaluate` and `coldstart` commands do, callable without the CLI.

Presets:

* ``demo`` (default): the encoder and train settings (``EncoderSettings``/``TrainSettings``),
  tuned to beat the reference on ML-100K and train in minutes on a 2-core CPU.
* ``reference``: SASRec as RecBole 1.2.1 configures it (hidden 64, 2 layers, 2 heads, inner
  256, dropout 0.5 on hidden and attention, max_len 50, full cross-entropy, Adam lr 1e-3,
  batch 2048, every prefix an example, early stopping with patience 10), run under our split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from streamrec.datasets import Dataset, load_dataset
from streamrec.models.config import EncoderSettings
from streamrec.models.encoder.checkpoint import InferenceEncoder, save_checkpoint
from streamrec.models.encoder.coldstart import evaluate_cold_start, fit_projection
from streamrec.models.encoder.evaluation import (
    Split,
    evaluate_scorer,
    leave_one_out,
    popularity_scorer,
)
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.training import TrainConfig, model_scorer, pick_device, train
from streamrec.settings import Settings

__all__ = ["preset_configs", "run_cold_start", "run_evaluation", "run_training", "test_metrics"]

Preset = Literal["demo", "reference"]

# RecBole's SASRec defaults (sasrec.yaml), which differ from ours in dropout.
REFERENCE_ENCODER = EncoderSettings(
    hidden_size=64, layers=2, heads=2, inner_size=256, dropout=0.5, attn_dropout=0.5, max_len=50
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
        tc = REFERENCE_TRAIN
    else:
        enc = EncoderConfig.from_settings(settings.encoder, n_items)
        tc = TrainConfig.from_settings(settings.train)
    if epochs is not None:
        tc = TrainConfig(**{**tc.__dict__, "epochs": epochs})
    if time_budget_s is not None:
        tc = TrainConfig(**{**tc.__dict__, "time_budget_s": time_budget_s})
    return enc, tc


def test_metrics(
    model: SequenceEncoder, split: Split, device: torch.device, exclude_history: bool
) -> dict[str, dict[str, float]]:
    """Test metrics@10 of the model and of popularity under one history rule."""
    args = (split.test_inputs, split.test_targets, split.n_items, exclude_history)
    return {
        "model": evaluate_scorer(model_scorer(model, device), *args),
        "popularity": evaluate_scorer(popularity_scorer(split.train, split.n_items), *args),
    }


def _load(settings: Settings, dataset: Path | None) -> Dataset:
    return load_dataset(dataset, cache_dir=settings.data.cache_dir)


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
) -> dict[str, Any]:
    """Train, evaluate on the test items (history excluded and included), save a checkpoint."""
    dev = pick_device(device or settings.encoder.device)
    ds = _load(settings, dataset)
    split = leave_one_out(ds)
    enc, tc = preset_configs(settings, preset, split.n_items, epochs, time_budget_s)
    result = train(split, enc, tc, dev, progress)
    model = result.model
    test = {
        "history_excluded": test_metrics(model, split, dev, exclude_history=True),
        "history_included": test_metrics(model, split, dev, exclude_history=False),
    }
    projection = None
    text_seconds = 0.0
    if fit_text:
        from streamrec.models.encoder.text import cached_text_vectors

        started = time.perf_counter()
        texts = [ds.items[i].text for i in split.item_ids]
        vecs = cached_text_vectors(texts, settings.data.cache_dir)
        projection = fit_projection(model, split.train, vecs)
        text_seconds = time.perf_counter() - started
    fallback = _mean_user(model, split, dev)
    metrics = {
        "dataset": ds.name,
        "dataset_path": str(Path(dataset).resolve()) if dataset else None,
        "preset": preset,
        "device": str(dev),
        "train_seconds": round(result.seconds, 1),
        "text_projection_seconds": round(text_seconds, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
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
def _mean_user(model: SequenceEncoder, split: Split, device: torch.device) -> torch.Tensor:
    """Mean user vector over every user's full known history: the empty-history fallback."""
    scorer_free = InferenceEncoder(
        model, split.item_ids, "tmp", torch.zeros(model.config.hidden_size)
    )
    vecs = scorer_free.encode_indices(split.test_inputs or split.train)
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
    split = leave_one_out(_load(settings, dataset), enc.item_ids)
    metrics = test_metrics(enc.model, split, enc.device, exclude_history)
    return {
        "checkpoint": str(checkpoint),
        "model_version": enc.model_version,
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
