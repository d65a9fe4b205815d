"""`streamrec evaluate --ablations`: what each encoder input adds, on one split and set of seeds.

Variants, each adding to the one before (the encoder and training settings otherwise as
configured; ``--seeds`` seeds each, the same seeds for every variant):

    ids         item ids only (SASRec's input)
    +types/values   event type, bucketed value
    +gaps       time gap to the previous event
    +summary    the long-term summary slices as tokens
    +context    the event context fields of the log (only when the log has context columns)

and, with ``reference``, the SASRec reference preset (``pipeline.REFERENCE_*``) on the same seeds.
Values and context are read from the event log here; the worker's state does not keep them yet,
so these two rows measure what they would add, not what a served model can use today.
Every row is leave-one-out by time with full ranking and history excluded (README protocol);
the table gives mean ± sample sd over seeds and the NDCG@10 ratio to the reference when run.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path
from typing import Any

from streamrec.console import err_console
from streamrec.models.encoder.event_log import load_event_log
from streamrec.models.encoder.inputs import TokenInputs
from streamrec.models.encoder.pipeline import prepare_split, preset_configs, test_metrics
from streamrec.models.encoder.training import pick_device, train
from streamrec.settings import Settings

__all__ = ["ablation_variants", "run_ablations"]

_METRICS = ("hr@10", "ndcg@10", "mrr@10")


def ablation_variants(
    summary_tokens: int, context: tuple[str, ...]
) -> list[tuple[str, TokenInputs]]:
    """The cumulative variants of the module doc; +context only when ``context`` names fields."""
    ids = TokenInputs()
    typed = dataclasses.replace(ids, types=True, values=True)
    gaps = dataclasses.replace(typed, gaps=True)
    summary = dataclasses.replace(gaps, summary_tokens=summary_tokens)
    rows = [("ids", ids), ("+types/values", typed), ("+gaps", gaps), ("+summary", summary)]
    if context:
        rows.append(("+context", dataclasses.replace(summary, context_fields=context)))
    return rows


def run_ablations(
    settings: Settings,
    dataset: Path | None,
    seeds: list[int],
    device: str | None = None,
    reference: bool = True,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    progress: bool = False,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Train and test every variant (and the reference) on every seed; the table and runs.
    ``only`` keeps the variants of those labels (e.g. ``["ids", "+context"]``)."""
    dev = pick_device(device or settings.encoder.device)
    log = load_event_log(dataset, settings.data.cache_dir)
    n_items = len(log.dataset.items)
    enc, tc = preset_configs(settings, "demo", n_items, epochs, time_budget_s)
    summary = settings.encoder.summary_tokens or settings.state.summary_slices
    plans = [
        (label, dataclasses.replace(enc, inputs=inputs), tc)
        for label, inputs in ablation_variants(summary, log.context_fields)
    ]
    if reference:
        ref_enc, ref_tc = preset_configs(settings, "reference", n_items, epochs, time_budget_s)
        plans.append(("SASRec reference", ref_enc, ref_tc))
    if only is not None:
        unknown = set(only) - {p[0] for p in plans}
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {[p[0] for p in plans]}")
        plans = [p for p in plans if p[0] in only]
    runs: list[dict[str, Any]] = []
    for label, encoder, train_config in plans:
        split = prepare_split(settings, log, encoder, train_config)
        for seed in seeds:
            seeded = dataclasses.replace(train_config, seed=seed)
            err_console.print(f"ablation {label} ({encoder.inputs.describe()}), seed {seed}")
            result = train(split, encoder, seeded, dev, progress)
            metrics = test_metrics(result.model, split, dev, exclude_history=True)["model"]
            runs.append(
                {"variant": label, "seed": seed, "seconds": round(result.seconds, 1)}
                | {"cpu_seconds": round(result.cpu_seconds, 1)}
                | {m: round(metrics[m], 4) for m in _METRICS}
                | {"epochs": len(result.history), "best_epoch": result.best_epoch}
                | {"stopped": result.stopped}
                # The CPU is shared: the load says whether a time-budget stop was contention.
                | {"load_1min": round(os.getloadavg()[0], 1)}
            )
            # Each run as it ends: a long table is not lost when the command is interrupted.
            err_console.print(runs[-1])
    return {
        "dataset": log.dataset.name,
        "protocol": "leave-one-out by time, full ranking, history excluded, @10",
        "seeds": seeds,
        "device": str(dev),
        "table": _table(runs, [p[0] for p in plans], reference),
        "runs": runs,
    }


def _table(runs: list[dict[str, Any]], labels: list[str], reference: bool) -> list[dict[str, Any]]:
    ref_ndcg = _mean([r["ndcg@10"] for r in runs if r["variant"] == "SASRec reference"])
    rows = []
    for label in labels:
        mine = [r for r in runs if r["variant"] == label]
        row: dict[str, Any] = {"variant": label}
        for metric in (*_METRICS, "seconds"):
            row[metric] = _mean_sd([r[metric] for r in mine])
        if reference and ref_ndcg:
            row["ndcg@10 / reference"] = round(_mean([r["ndcg@10"] for r in mine]) / ref_ndcg, 3)
        rows.append(row)
    return rows


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{_mean(values):.4f} ± {sd:.4f}"
