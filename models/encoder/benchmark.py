"""`streamrec bench encoder`: user vectors per second by batch size and device, int8 vs fp32.

Each measurement encodes sequences of ``max_len`` items (the worst case the serving path sees)
for at least ``min_seconds`` after one warm-up batch; figures are sequences (user vectors) per
second of wall time. With a checkpoint, int8's accuracy is its test HR@10/NDCG@10 beside fp32's
(ML-100K protocol) and the agreement of its user vectors and top-10 lists with fp32's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.models.encoder.checkpoint import InferenceEncoder
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.quantize import agreement, quantize_int8
from streamrec.models.encoder.training import pick_device
from streamrec.settings import Settings

__all__ = ["newest_checkpoint", "run_bench", "throughput"]


def newest_checkpoint(cache_dir: Path) -> Path | None:
    """Most recently written checkpoint folder under ``<cache>/models``, if any."""
    root = cache_dir / "models"
    found = [p for p in root.glob("*/config.json")] if root.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def throughput(enc: InferenceEncoder, batch: int, min_seconds: float = 1.0) -> float:
    """User vectors per second for batches of ``batch`` full-length random sequences."""
    cfg = enc.model.config
    rng = np.random.default_rng(0)
    seqs = rng.integers(1, cfg.n_items + 1, size=(batch, cfg.max_len)).tolist()
    enc.encode_indices(seqs)  # warm-up: allocations, kernel selection
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while True:
        enc.encode_indices(seqs)
        done += batch
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def _random_encoder(settings: Settings, device: torch.device) -> InferenceEncoder:
    e = settings.encoder
    cfg = EncoderConfig(
        n_items=1682,
        hidden_size=e.hidden_size,
        layers=e.layers,
        heads=e.heads,
        inner_size=e.inner_size,
        dropout=e.dropout,
        attn_dropout=e.attn_dropout,
        max_len=e.max_len,
    )
    torch.manual_seed(0)
    model = SequenceEncoder(cfg).to(device)
    ids = [str(i) for i in range(1, cfg.n_items + 1)]
    return InferenceEncoder(model, ids, "untrained", torch.zeros(cfg.hidden_size, device=device))


def run_bench(
    settings: Settings,
    checkpoint: Path | None,
    device: str | None,
    batch_sizes: list[int],
    int8: bool,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    """Throughput rows (device, precision, batch, vectors/s) and the int8 trade-off."""
    checkpoint = checkpoint or newest_checkpoint(settings.data.cache_dir)
    devices = [pick_device(device or settings.encoder.device)]
    if devices[0].type == "cuda":
        devices.append(torch.device("cpu"))
    torch_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    encoders: dict[str, InferenceEncoder] = {}
    for dev in devices:
        enc = (
            InferenceEncoder.load(checkpoint, str(dev))
            if checkpoint
            else _random_encoder(settings, dev)
        )
        encoders[f"{dev.type}-fp32"] = enc
        if dev.type == "cpu" and int8:
            q = quantize_int8(enc.model)
            encoders["cpu-int8"] = InferenceEncoder(
                q, enc.item_ids, enc.model_version, enc._fallback
            )
    for name, enc in encoders.items():
        dev_name, precision = name.split("-")
        for b in batch_sizes:
            rate = throughput(enc, b, min_seconds)
            rows.append(
                {
                    "device": dev_name,
                    "precision": precision,
                    "batch": b,
                    "user_vectors_per_s": round(rate, 1),
                }
            )
    figures: dict[str, Any] = {
        "checkpoint": str(checkpoint) if checkpoint else "none (untrained weights, speed only)",
        "max_len": next(iter(encoders.values())).model.config.max_len,
        "cpu_threads": torch_threads,
        "throughput": rows,
    }
    if "cpu-int8" in encoders:
        figures["int8_vs_fp32"] = _int8_tradeoff(settings, encoders, checkpoint)
    return figures


def _int8_tradeoff(
    settings: Settings, encoders: dict[str, InferenceEncoder], checkpoint: Path | None
) -> dict[str, Any]:
    fp32, q = encoders["cpu-fp32"], encoders["cpu-int8"]
    out: dict[str, Any] = {}
    if checkpoint is not None:
        from streamrec.models.encoder.event_log import load_event_log
        from streamrec.models.encoder.pipeline import prepare_split, test_metrics
        from streamrec.models.encoder.training import TrainConfig

        meta = json.loads((checkpoint / "metrics.json").read_text(encoding="utf-8"))
        path = meta.get("dataset_path")  # the data the checkpoint was trained on
        log = load_event_log(Path(path) if path else None, settings.data.cache_dir)
        split = prepare_split(settings, log, fp32.model.config, TrainConfig(), fp32.item_ids)
        for name, enc in (("fp32", fp32), ("int8", q)):
            m = test_metrics(enc.model, split, enc.device, exclude_history=True)["model"]
            out[f"{name}_test_hr@10"] = m["hr@10"]
            out[f"{name}_test_ndcg@10"] = m["ndcg@10"]
        vectors = (fp32.encode_windows(split.test_windows), q.encode_windows(split.test_windows))
    else:
        rng = np.random.default_rng(1)
        cfg = fp32.model.config
        seqs = rng.integers(1, cfg.n_items + 1, size=(512, cfg.max_len)).tolist()
        vectors = (fp32.encode_indices(seqs), q.encode_indices(seqs))
    out.update(agreement(*vectors, fp32.item_vectors()))
    return out
