"""The figures of a quality run: each system's slates scored on the scoreable events beside the
baselines (stream/tools/quality.py), a plot of NDCG@10 over stream time, and the report.

Shared by the live bench (stream/tools/quality_bench.py) and the offline replay
(stream/tools/offline.py), so both report the same figures the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.console import print_rows, report
from streamrec.datasets import Dataset
from streamrec.stream.contract import Event
from streamrec.stream.tools import quality

K = 10  # slates are cut to 10 items, the metrics' depth
PLOT_WINDOWS = 25  # points per line: windows of equal numbers of scoreable events


@dataclass(frozen=True)
class SystemRun:
    """What came back from one system: its slates and every event's record timestamp (ms)."""

    slates: list[quality.Slate]
    event_ms: dict[str, int]
    answered: int
    seconds: float


def score_runs(
    dataset: Dataset,
    events: list[Event],
    first_scored: int,
    runs: dict[str, SystemRun],
    split: float,
    plot: Path,
    marks_seen: Callable[[Event], bool],
) -> dict[str, Any]:
    """The figures of every system and baseline on the scoreable events; writes the plot.
    ``marks_seen``: whether an event puts its item in the user's seen set (the worker's rule,
    ``StateSettings.marks_seen``)."""
    scoreable = quality.scoreable_events(events, first_scored, marks_seen)
    catalog = len(dataset.items)
    baselines = quality.baseline_ranks(events, scoreable, dataset.items, K)
    figures: dict[str, Any] = {
        "dataset": dataset.name,
        "events": len(events),
        "split": split,
        "first_scored_event": first_scored,
        "catalog_items": catalog,
        "scoreable": len(scoreable),
        "repeats_not_scored": scoreable.repeats,
        "baselines_on_all_scoreable": {
            name: quality.metric_means(ranks, K) for name, ranks in baselines.items()
        },
    }
    systems: dict[str, quality.SystemRanks] = {}
    for name, run in runs.items():
        systems[name], scored = quality.score_system(
            events, scoreable, baselines, run.slates, run.event_ms, K, catalog
        )
        figures[name] = {
            "slates": len(run.slates),
            "answered_events": run.answered,
            "run_seconds": round(run.seconds, 1),
            **scored,
        }
        versions = covered_by_version(events, scoreable, run.slates)
        if set(versions) - {""}:
            figures[name]["covered_by_model_version"] = versions
    if len(systems) == 2:
        pair = (("model", systems["model"]), ("heuristic", systems["heuristic"]))
        figures["model_vs_heuristic"] = quality.head_to_head(*pair, K)
    figures["plot"] = _plot(plot, events, scoreable, systems, baselines)
    return figures


def covered_by_version(
    events: list[Event], scoreable: quality.Scoreable, slates: list[quality.Slate]
) -> dict[str, int]:
    """Covered events by the model version of the slate they were scored on, in the order each
    version first served: whether the continual trainer's candidates reached the scored part
    at all (on a 2-core VM at 1,000 events/s its first cycle can outlast the replay)."""
    by_trigger = quality.slates_by_trigger(slates, quality.positions(events))
    served = (by_trigger.get(int(p)) for p in scoreable.previous)
    ordered = sorted((s for s in served if s is not None), key=lambda s: s.published_ms)
    return dict(Counter(s.model_version for s in ordered))


def _plot(
    path: Path,
    events: list[Event],
    scoreable: quality.Scoreable,
    systems: dict[str, quality.SystemRanks],
    baselines: dict[str, quality.Ranks],
) -> str | None:
    """NDCG@10 per window of scoreable events over event time, the two ways the figures are
    reported: on all scoreable events (a missing slate is a miss), and on each system's covered
    events beside co-visitation on the same events. None when nothing was scoreable."""
    if len(scoreable) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    bounds = quality.windows(len(scoreable), PLOT_WINDOWS)
    # Dataset event time of each window's last event, as datetimes for the axis.
    ends = [events[int(scoreable.events[stop - 1])].ts for _, stop in bounds]
    times = np.asarray(ends, dtype="datetime64[ms]")
    covisit = quality.ndcg(baselines["covisit"])
    fig, (every, covered) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for name, system in systems.items():
        gains = quality.ndcg(system.ranks)
        every.plot(times, quality.windowed_means(gains, bounds), "-", marker=".", label=name)
        mine = quality.windowed_means(gains, bounds, system.covered)
        (line,) = covered.plot(times, mine, "-", marker=".", label=name)
        on_same = quality.windowed_means(covisit, bounds, system.covered)
        covered.plot(times, on_same, "--", color=line.get_color(), label=f"covisit on {name}'s")
    for name, ranks in baselines.items():
        values = quality.windowed_means(quality.ndcg(ranks), bounds)
        every.plot(times, values, ":", marker=".", label=f"{name} (baseline)")
    every.set_title(f"NDCG@{K} on all scoreable events (a missing slate is a miss)")
    covered.set_title(f"NDCG@{K} on each system's covered events")
    for ax in (every, covered):
        ax.set_ylabel(f"NDCG@{K}")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    covered.set_xlabel(f"event time (end of each of {len(bounds)} windows of scoreable events)")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def report_quality(figures: dict[str, Any], as_json: bool) -> None:
    """The figures as JSON, or a comparison table followed by every figure."""
    if not as_json:
        print_rows(f"bench quality @{K}", quality.comparison_rows(figures))
    report("bench quality", figures, as_json)
