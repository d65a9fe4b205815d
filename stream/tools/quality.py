"""Prequential scoring of published slates against each user's next event (no Kafka here).

Vocabulary; positions index the replay order, which is the dataset's stable time order:

    scoreable event e  an event at or after the first scored position whose user has an earlier
                       event, of an item not seen before e (no system shows a user what they
                       had, so a repeat, a click after its view, say, is a miss for all and
                       only dilutes the figures); p is that user's event just before e
    slate for p        the slate whose newest trigger event (by position) is p: it was built from
                       the user's state up to p, so it is what the user had in front of them when
                       e happened. A slate that answered p together with later events of the
                       user (coalesced) is the slate for its newest trigger only, so p then has
                       no slate of its own
    covered            e whose slate for p came back; it is scored on e's item
    seen before e      the items of the user's events up to and including p, as the worker's
                       seen set holds them (``StateSettings.marks_seen``): events of
                       ``state.repeatable_types`` mark nothing seen, so with a music service's
                       plays repeatable a replayed track is scoreable, and a slate that offered
                       it scores (a new-user pass found every replay left out, and the bench
                       unable to judge such a service)

Metrics at k: HR (a hit), NDCG (1 / log2(rank + 1)) and MRR (1 / rank), where rank is the
1-based position of e's item in the first k items, and 0 (a miss) when it is not among them.

Baselines are computed prequentially on the same events from every event before e, of all users:

    popularity  items by their number of earlier events, most first
    covisit     the followers of p's item: how often item b came directly after item a in one
                user's time-ordered sequence, most first

Both exclude the items seen before e; ties go to the smaller item id (string order). Counts are
kept sorted as they change, so a rank walks only the first k unseen candidates and a pass over
100,000 events takes seconds, not a sort per event.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.stream.contract import Event

Ranks = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
BOOTSTRAP = 2_000  # resamples of a ratio's interval
BOOTSTRAP_SEED = 7
BOOTSTRAP_CELLS = 4_000_000  # event draws held at once (32 MB)


@dataclass(frozen=True, slots=True)
class Slate:
    """A published slate as read back: items in rank order, its record timestamp in ms, the
    model that built it ("" when not known: the offline replay)."""

    user_id: str
    items: tuple[str, ...]
    trigger_event_ids: tuple[str, ...]
    published_ms: int
    model_version: str = ""


@dataclass(frozen=True)
class Scoreable:
    """The scoreable events: ``events[n]`` is the position of e, ``previous[n]`` that of p."""

    events: Ranks
    previous: Ranks
    repeats: int = 0  # events in the scored part of an item seen before them: not scored
    # whether an event puts its item among the user's seen items (``StateSettings.marks_seen``)
    marks_seen: Callable[[Event], bool] = lambda event: True

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class SystemRanks:
    """What one system's slates did on the scoreable events (arrays aligned with them)."""

    covered: Mask
    ranks: Ranks
    slate_items: int  # items in the scored slates, each slate cut to k
    seen_items: int  # of those, items the user had seen before e
    distinct_items: int  # distinct items in the scored slates


def scoreable_events(
    events: Sequence[Event],
    first_scored: int,
    marks_seen: Callable[[Event], bool] = lambda event: True,
) -> Scoreable:
    """Positions of the scoreable events at or after ``first_scored`` and of their p; an event
    puts its item among the user's seen items when ``marks_seen`` says so."""
    last: dict[str, int] = {}
    had: dict[str, set[str]] = {}
    at: list[int] = []
    previous: list[int] = []
    repeats = 0
    for pos, event in enumerate(events):
        before = last.get(event.user_id)
        items = had.setdefault(event.user_id, set())
        if pos >= first_scored and before is not None:
            if event.item_id in items:
                repeats += 1
            else:
                at.append(pos)
                previous.append(before)
        last[event.user_id] = pos
        if marks_seen(event):
            items.add(event.item_id)
    positions_of_e, positions_of_p = np.asarray(at, np.int64), np.asarray(previous, np.int64)
    return Scoreable(positions_of_e, positions_of_p, repeats, marks_seen)


class _RankedCounts:
    """Counts per key, kept in (-count, key) order: a rank is a walk from the top that stops at
    the target or after k unseen keys, so it costs k plus the seen keys above the target."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.count = dict.fromkeys(keys, 0)
        self.order = sorted((0, key) for key in self.count)

    def add(self, key: str) -> None:
        old = self.count.get(key)
        if old is not None:
            del self.order[bisect_left(self.order, (-old, key))]
        new = (old or 0) + 1
        self.count[key] = new
        insort(self.order, (-new, key))

    def rank(self, target: str, seen: set[str], k: int) -> int:
        """1-based rank of ``target`` among the keys not in ``seen``; 0 beyond ``k``."""
        n = 0
        for _, key in self.order:
            if key in seen:
                continue
            n += 1
            if key == target:
                return n
            if n == k:
                return 0
        return 0


def baseline_ranks(
    events: Sequence[Event], scoreable: Scoreable, catalog: Iterable[str], k: int
) -> dict[str, Ranks]:
    """Ranks (0 = a miss) of popularity and covisit on the scoreable events."""
    popularity = _RankedCounts({*catalog, *(e.item_id for e in events)})
    followers: dict[str, _RankedCounts] = {}  # item a -> counts of the items right after a
    target_of = {int(pos): n for n, pos in enumerate(scoreable.events)}
    ranks = {
        "popularity": np.zeros(len(scoreable), dtype=np.int64),
        "covisit": np.zeros(len(scoreable), dtype=np.int64),
    }
    last_item: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    for pos, event in enumerate(events):
        user_seen = seen.setdefault(event.user_id, set())
        before = last_item.get(event.user_id)
        n = target_of.get(pos)
        if n is not None and before is not None:  # every scoreable event has a p
            ranks["popularity"][n] = popularity.rank(event.item_id, user_seen, k)
            after = followers.get(before)
            ranks["covisit"][n] = after.rank(event.item_id, user_seen, k) if after else 0
        popularity.add(event.item_id)
        if before is not None:
            followers.setdefault(before, _RankedCounts()).add(event.item_id)
        last_item[event.user_id] = event.item_id
        if scoreable.marks_seen(event):
            user_seen.add(event.item_id)
    return ranks


def positions(events: Sequence[Event]) -> dict[str, int]:
    """event_id -> position in the replay order."""
    return {e.event_id: pos for pos, e in enumerate(events)}


def newest_trigger(slate: Slate, position: Mapping[str, int]) -> int | None:
    """Position of the slate's newest trigger event, or None when it answers none of ours."""
    known = [position[i] for i in slate.trigger_event_ids if i in position]
    return max(known) if known else None


def slates_by_trigger(slates: Iterable[Slate], position: Mapping[str, int]) -> dict[int, Slate]:
    """Position of the newest trigger -> the slate; the first one read wins (a redelivered
    event answered twice after a crash leaves the user's first slate in place)."""
    out: dict[int, Slate] = {}
    for slate in slates:
        newest = newest_trigger(slate, position)
        if newest is not None:
            out.setdefault(newest, slate)
    return out


def system_ranks(
    events: Sequence[Event], scoreable: Scoreable, by_trigger: Mapping[int, Slate], k: int
) -> SystemRanks:
    """Score each scoreable e on the slate for its p (cut to ``k``); missing slates stay 0."""
    target_of = {int(pos): n for n, pos in enumerate(scoreable.events)}
    covered = np.zeros(len(scoreable), dtype=np.bool_)
    ranks = np.zeros(len(scoreable), dtype=np.int64)
    slate_items = seen_items = 0
    distinct: set[str] = set()
    seen: dict[str, set[str]] = {}
    for pos, event in enumerate(events):
        user_seen = seen.setdefault(event.user_id, set())
        n = target_of.get(pos)
        slate = by_trigger.get(int(scoreable.previous[n])) if n is not None else None
        if n is not None and slate is not None:
            items = slate.items[:k]
            covered[n] = True
            ranks[n] = items.index(event.item_id) + 1 if event.item_id in items else 0
            slate_items += len(items)
            seen_items += sum(item in user_seen for item in items)
            distinct.update(items)
        if scoreable.marks_seen(event):
            user_seen.add(event.item_id)
    return SystemRanks(covered, ranks, slate_items, seen_items, len(distinct))


def ndcg(ranks: Ranks) -> Floats:
    """Per-event NDCG: 1 / log2(rank + 1) for a hit, 0 for a miss."""
    gain = np.zeros(len(ranks), dtype=np.float64)
    hit = ranks > 0
    gain[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return gain


def metric_means(ranks: Ranks, k: int) -> dict[str, float | None]:
    """Mean HR, NDCG and MRR at ``k`` over ``ranks``; None for no events."""
    names = (f"hr@{k}", f"ndcg@{k}", f"mrr@{k}")
    if len(ranks) == 0:
        return dict.fromkeys(names)
    hit = ranks > 0
    reciprocal = np.zeros(len(ranks), dtype=np.float64)
    reciprocal[hit] = 1.0 / ranks[hit]
    values = (hit.mean(), ndcg(ranks).mean(), reciprocal.mean())
    return {name: round(float(v), 4) for name, v in zip(names, values, strict=True)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def ratio_interval(
    numerator: Floats, denominator: Floats, level: float = 0.95, resamples: int = BOOTSTRAP
) -> list[float] | None:
    """A paired bootstrap interval of ``numerator.mean() / denominator.mean()`` over the same
    events (resampled together, seeded): a ratio on a thousand events moves by several percent
    between runs, and the interval says how much. None with fewer than two events or a zero
    denominator mean in the data."""
    n = len(numerator)
    if n < 2 or not denominator.sum():
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ratios = np.empty(resamples)
    chunk = max(1, BOOTSTRAP_CELLS // n)  # resamples per step: bounded memory on long runs
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        below = denominator[rows].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start : start + len(rows)] = numerator[rows].sum(axis=1) / below
    finite = ratios[np.isfinite(ratios)]
    if not len(finite):
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [round(float(low), 3), round(float(high), 3)]


def latencies_ms(
    slates: Iterable[Slate], position: Mapping[str, int], event_ms: Mapping[str, int]
) -> list[float]:
    """Per slate: its record timestamp minus its newest trigger event's record timestamp."""
    ids = {pos: event_id for event_id, pos in position.items()}
    out: list[float] = []
    for slate in slates:
        newest = newest_trigger(slate, position)
        sent = event_ms.get(ids[newest]) if newest is not None else None
        if sent is not None:
            out.append(float(slate.published_ms - sent))
    return out


def windows(size: int, count: int) -> list[tuple[int, int]]:
    """(start, stop) of at most ``count`` consecutive windows covering ``size`` values, with
    lengths that differ by at most one (no short last window to plot as noise)."""
    bounds = np.linspace(0, size, min(count, size) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in pairwise(bounds)]


def windowed_means(
    values: Floats, bounds: Sequence[tuple[int, int]], mask: Mask | None = None
) -> Floats:
    """Mean of ``values`` in each window (only where ``mask``); NaN for a window with none."""
    means = np.full(len(bounds), np.nan, dtype=np.float64)
    for n, (start, stop) in enumerate(bounds):
        chosen = values[start:stop] if mask is None else values[start:stop][mask[start:stop]]
        if len(chosen):
            means[n] = chosen.mean()
    return means


def system_figures(
    system: SystemRanks,
    baselines: Mapping[str, Ranks],
    k: int,
    catalog_size: int,
    latencies: Sequence[float],
) -> dict[str, object]:
    """One system's report: coverage, metrics two ways, baselines on its covered events and
    its NDCG ratio to covisit there, seen-item share, catalog coverage and latency."""
    covered = system.covered
    on_covered = metric_means(system.ranks[covered], k)
    covisit = metric_means(baselines["covisit"][covered], k)
    lat = np.asarray(latencies, dtype=np.float64)
    return {
        "scoreable": len(covered),
        "covered": int(covered.sum()),
        "slate_coverage": ratio(float(covered.sum()), float(len(covered))),
        "covered_events": on_covered,
        "all_scoreable": metric_means(system.ranks, k),
        "covisit_on_covered": covisit,
        "popularity_on_covered": metric_means(baselines["popularity"][covered], k),
        f"ndcg@{k}_ratio_to_covisit": ratio(on_covered[f"ndcg@{k}"], covisit[f"ndcg@{k}"]),
        f"ndcg@{k}_ratio_to_covisit_95ci": ratio_interval(
            ndcg(system.ranks[covered]), ndcg(baselines["covisit"][covered])
        ),
        "seen_share": ratio(float(system.seen_items), float(system.slate_items)),
        "catalog_coverage": ratio(float(system.distinct_items), float(catalog_size)),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
    }


def score_system(
    events: Sequence[Event],
    scoreable: Scoreable,
    baselines: Mapping[str, Ranks],
    slates: Sequence[Slate],
    event_ms: Mapping[str, int],
    k: int,
    catalog_size: int,
) -> tuple[SystemRanks, dict[str, object]]:
    """One system's ranks on the scoreable events and its figures (``system_figures``) from
    the slates it published and the events' record timestamps."""
    position = positions(events)
    ranks = system_ranks(events, scoreable, slates_by_trigger(slates, position), k)
    latencies = latencies_ms(slates, position, event_ms)
    return ranks, system_figures(ranks, baselines, k, catalog_size, latencies)


def head_to_head(
    first: tuple[str, SystemRanks], second: tuple[str, SystemRanks], k: int
) -> dict[str, object]:
    """Two named systems on the events both covered, and the first's NDCG ratio to the second's."""
    (name_a, a), (name_b, b) = first, second
    both = a.covered & b.covered
    figures_a = metric_means(a.ranks[both], k)
    figures_b = metric_means(b.ranks[both], k)
    return {
        "events": int(both.sum()),
        name_a: figures_a,
        name_b: figures_b,
        f"ndcg@{k}_ratio": ratio(figures_a[f"ndcg@{k}"], figures_b[f"ndcg@{k}"]),
        f"ndcg@{k}_ratio_95ci": ratio_interval(ndcg(a.ranks[both]), ndcg(b.ranks[both])),
    }


def comparison_rows(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A bench report's metrics as table rows: each system on its covered events beside both
    baselines on the same events, then on all scoreable events beside the baselines there."""
    rows: list[dict[str, Any]] = []
    for name in ("heuristic", "model"):
        system = figures.get(name)
        if system is None:
            continue
        for label, on, block in (
            (name, "covered", "covered_events"),
            ("covisit", f"{name} covered", "covisit_on_covered"),
            ("popularity", f"{name} covered", "popularity_on_covered"),
            (name, "all scoreable", "all_scoreable"),
        ):
            rows.append({"system": label, "events": on, **system[block]})
    for name, block in figures["baselines_on_all_scoreable"].items():
        rows.append({"system": name, "events": "all scoreable", **block})
    return rows
