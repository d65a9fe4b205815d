"""``streamrec bench quality --offline``: the quality bench's replay in one process, no broker.

The live bench (stream/tools/quality_bench.py) takes minutes per system; this replays the same
events in time order through the worker's own pieces, so a change to slate building can be
measured in seconds to a few minutes:

    user state       ``apply_event`` on a ``UserState`` per user (stream/state.py)
    item statistics  one ``ItemStats`` replica fed an ``ItemDelta`` per applied event
                     (stream/item_stats.py), as ingest publishes them
    fusion weights   a ``FusionLearner`` credited on each event, told each slate's source lists
    slates           the worker's builders: ``HeuristicBuilder`` or ``ModelBuilder``, with the
                     inputs ``refresh_input`` reads on the worker's event loop

Coalescing, which decides which events the live bench can score, is emulated by a lag: dirty
users wait and are answered together every ``lag`` events (in batches of
``serving.batch_size``); an event of a user who is still waiting joins that user's pending
slate, as ``Refresher.mark`` does. A lag of 1 answers every event before the next one arrives.
The live worker's lag is its event-to-slate latency times the replay rate (seconds at 1,000
events/s on a loaded 2-core machine, so thousands of events); the README gives the lag that
reproduces the live coverage and ratios.

Nothing here trains on an event before it is scored: the encoder is served as given (trained
before the split), and whatever learns on the stream (fusion weights, the model path's ranker)
learns from an event only after the slate that event scores was built.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streamrec.errors import ConfigError, DataError
from streamrec.index.swap import SnapshotHolder
from streamrec.models.encoder.event_log import load_event_log
from streamrec.settings import Settings
from streamrec.stream.contract import Event
from streamrec.stream.fusion import FusionLearner
from streamrec.stream.item_stats import ItemDelta, ItemStats
from streamrec.stream.refresh import HeuristicBuilder, Pending, SlateBuilder, refresh_input
from streamrec.stream.state import UserState, apply_event
from streamrec.stream.tools import quality
from streamrec.stream.tools.quality_bench import QualityOptions, encoder_for
from streamrec.stream.tools.quality_report import SystemRun, score_runs

# Offline at lag 20 the model path trails the heuristic as it does live (0.98x, 0.85-0.89x
# live) with 9 % of the scoreable events covered: enough to tell changes of a few percent apart
# (README, bench quality, session 7).
DEFAULT_LAG = 20
# (the fusion learner the builder's weights come from) -> the builder of one system
BuilderFactory = Callable[[FusionLearner], SlateBuilder]


def replay(
    events: Sequence[Event],
    settings: Settings,
    make_builder: BuilderFactory,
    lag: int,
    progress: bool = True,
) -> list[quality.Slate]:
    """The slates one system publishes for ``events`` (module docstring), in publish order."""
    if lag < 1:
        raise ConfigError(f"--lag {lag}: answer dirty users every 1 or more events")
    state_settings, serving = settings.state, settings.serving
    fusion = FusionLearner(serving.fusion, serving.slate_size)
    builder = make_builder(fusion)
    stats = ItemStats(state_settings)
    states: dict[str, UserState] = {}
    dirty: OrderedDict[str, Pending] = OrderedDict()
    slates: list[quality.Slate] = []

    def answer() -> None:
        while dirty:
            batch = [
                dirty.popitem(last=False)[1] for _ in range(min(len(dirty), serving.batch_size))
            ]
            inputs = [refresh_input(p, stats, serving) for p in batch]
            built = builder.build(inputs, serving.slate_size)
            for entry, lists in zip(inputs, built.sources or [], strict=False):
                fusion.remember(entry.pending.user_id, lists)
            for pending, items in zip(batch, built.slates, strict=True):
                ids = tuple(i.item_id for i in items)
                slates.append(quality.Slate(pending.user_id, ids, tuple(pending.trigger_ids), 0))

    bar = tqdm(events, desc="offline replay", unit="ev", leave=False, mininterval=2.0,
               disable=not progress)  # fmt: skip
    for n, event in enumerate(bar):
        state = states.setdefault(event.user_id, UserState())
        previous = state.covisit_previous(event.item_id, state_settings.covisit_window)
        if apply_event(state, event, state_settings, (0, n)):
            weight = state_settings.weight_of(event)
            stats.apply(ItemDelta(event.item_id, previous, event.ts, weight, (0, n)))
            fusion.observe(event.user_id, event.item_id)  # what Refresher.mark does first
            builder.observe(event.user_id, event.item_id)
            pending = dirty.get(event.user_id)
            if pending is None:
                pending = dirty[event.user_id] = Pending(event.user_id, 0, state)
            pending.trigger_ids.append(event.event_id)
        if (n + 1) % lag == 0:
            answer()
    answer()
    return slates


def heuristic_factory(settings: Settings) -> BuilderFactory:
    """The heuristic worker's builder (stream/refresh.py)."""
    depth = settings.serving.fusion.depth
    return lambda fusion: HeuristicBuilder(
        lambda: fusion.weights, depth, settings.serving.covisit_decay
    )


def model_factory(settings: Settings, checkpoint: Path) -> BuilderFactory:
    """The model worker's builder serving ``checkpoint`` (stream/serving.py); torch on one
    thread, as the worker runs it by default."""
    import torch

    from streamrec.stream.ranker import make_ranker
    from streamrec.stream.served_model import load_snapshot
    from streamrec.stream.serving import ModelBuilder

    torch.set_num_threads(settings.serving.model_threads)
    snapshot = load_snapshot(checkpoint, settings.index, settings.encoder.device)
    holder = SnapshotHolder(snapshot)
    serving = settings.serving

    def make(fusion: FusionLearner) -> SlateBuilder:
        weights = lambda: fusion.weights  # noqa: E731 - read at every batch, as the worker does
        return ModelBuilder(holder, serving, settings.policy, weights, ranker=make_ranker(serving))

    return make


def run_offline(settings: Settings, options: QualityOptions) -> dict[str, Any]:
    """``bench quality --offline``: the systems of ``options.mode`` replayed in this process
    and scored as the live bench scores them (same figures, also written to figures.json)."""
    started = time.perf_counter()
    lag = options.lag or DEFAULT_LAG
    options.out.mkdir(parents=True, exist_ok=True)
    log = load_event_log(options.dataset, settings.data.cache_dir)
    data = log.dataset
    events = list(itertools.islice(log.events, options.limit))
    first_scored = int(len(events) * options.split)
    if len(events) - first_scored <= lag:
        raise DataError(
            f"{len(events)} events, {len(events) - first_scored} of them after the split at "
            f"{options.split}: offline, a slate answers its event {lag} events later (--lag, "
            f"default {DEFAULT_LAG}), so nothing "
            "would be scored; use more events (--limit, --dataset), a smaller --lag or --split"
        )
    encoder: dict[str, Any] = {}
    systems: dict[str, BuilderFactory] = {}
    if options.mode != "model":
        systems["heuristic"] = heuristic_factory(settings)
    if options.mode != "heuristic":
        encoder = encoder_for(settings, data, events[:first_scored], options)
        systems["model"] = model_factory(settings, Path(encoder["checkpoint"]))
    runs: dict[str, SystemRun] = {}
    for name, factory in systems.items():
        began = time.perf_counter()
        slates = replay(events, settings, factory, lag, options.progress)
        answered = sum(len(s.trigger_event_ids) for s in slates)
        runs[name] = SystemRun(slates, {}, answered, time.perf_counter() - began)
    seen = settings.state.marks_seen
    scored = score_runs(data, events, first_scored, runs, options.split, options.plot, seen)
    figures = {"encoder": encoder or None, **scored, "offline_lag_events": lag}
    figures.update(run_folder=str(options.out), seconds=round(time.perf_counter() - started, 1))
    (options.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
