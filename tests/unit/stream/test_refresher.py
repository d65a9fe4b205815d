"""The refresher with in-memory doubles: coalescing, one slate per user, the two paths, retries."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass

from stream_doubles import Sent, item_stats, metrics

from streamrec.index.candidates import (
    COVISITATION,
    TRENDING,
    Ranked,
    covisitation_candidates,
    explain,
    fuse,
)
from streamrec.models.policy.rewards import Impression
from streamrec.settings import Settings
from streamrec.stream.catalog import Unservable
from streamrec.stream.contract import Event, SlateItem
from streamrec.stream.fusion import FusionLearner
from streamrec.stream.item_stats import ItemDelta, ItemStats, Neighbours
from streamrec.stream.refresh import (
    BuiltBatch,
    HeuristicBuilder,
    Pending,
    Refresher,
    RefreshInput,
    SlateBuilder,
    refresh_input,
)
from streamrec.stream.state import UserState, apply_event
from streamrec.stream.tools.synthetic import Workload, synthetic_events


class FixedBuilder:
    """A model path that answers every user with the same items, failing the first N calls."""

    def __init__(self, items: list[str], failures: int = 0) -> None:
        self.items, self.failures, self.calls = items, failures, 0
        self.observed: list[tuple[str, str]] = []

    def build(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("model failed")
        slate = [SlateItem(item_id=i, score=1.0, propensity=0.5, reason="m") for i in self.items]
        return BuiltBatch([slate[:slate_size] for _ in batch], "m-1", "p-1", {"encode_ms": 1.0})

    def observe(self, user_id: str, item_id: str) -> None:
        self.observed.append((user_id, item_id))


@dataclass
class FakeCatalog:
    """What the heuristic path reads from the catalog: what no slate may show, newest items."""

    unservable_items: Container[str] = frozenset()
    newest_items: Sequence[str] = ()

    def unservable(self) -> Container[str]:
        return self.unservable_items

    def newest(self) -> Sequence[str]:
        return self.newest_items


def _refresher(
    model: SlateBuilder | None = None,
    unservable: Container[str] = frozenset(),
    newest: Sequence[str] = (),
) -> tuple[Refresher, Sent, list[Impression]]:
    settings = Settings()
    stats = item_stats(settings)
    sent, stored = Sent(), []

    def store(impression: Impression, partition: int) -> bool:
        stored.append(impression)
        return True

    fusion = FusionLearner(settings.serving.fusion, settings.serving.slate_size)
    catalog = FakeCatalog(unservable, newest)
    refresher = Refresher(
        settings.serving, stats, lambda: model, sent, store, fusion, metrics(), catalog
    )
    return refresher, sent, stored


OFFSETS = itertools.count()  # each delta its own source offset, as ingest gives them


def _mark(refresher: Refresher, user: str, n: int, item: str) -> None:
    event = Event(
        event_id=f"{user}-{n}", user_id=user, item_id=item, type="view", ts=1_700_000_000_000 + n
    )
    state = UserState()
    apply_event(state, event, Settings().state)
    assert isinstance(refresher.stats, ItemStats)
    refresher.stats.apply(ItemDelta(item, (), event.ts, 1.0, (0, next(OFFSETS))))
    refresher.mark(event, 0, None, state)


def _answer(refresher: Refresher, slates: int) -> None:
    """Run the batch loop until ``slates`` slates are out and nobody waits (or 10 s pass)."""

    async def main() -> None:
        task = asyncio.create_task(refresher.run())
        deadline = time.monotonic() + 10
        while (refresher.published < slates or refresher.dirty) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(main())


def test_events_of_one_user_before_their_batch_leaves_get_one_slate_listing_them_all() -> None:
    refresher, sent, stored = _refresher()
    _mark(refresher, "u1", 1, "a")
    _mark(refresher, "u1", 2, "b")
    _mark(refresher, "u2", 1, "a")
    _answer(refresher, 2)
    slates = {json.loads(v)["user_id"]: json.loads(v) for _, v in sent.records}
    assert slates["u1"]["trigger_event_ids"] == ["u1-1", "u1-2"]
    assert slates["u2"]["trigger_event_ids"] == ["u2-1"]
    assert len(sent.records) == 2 and len(stored) == 2
    assert {i.rec_id for i in stored} == {s["rec_id"] for s in slates.values()}


def test_the_heuristic_path_never_recommends_what_the_user_has_seen() -> None:
    refresher, sent, _ = _refresher()
    for n, item in enumerate(["a", "b", "c"]):
        _mark(refresher, f"v{n}", 1, item)  # three users make a, b and c trend
    _answer(refresher, 3)
    first = json.loads(sent.records[0][1])
    assert first["model_version"] == "none"
    assert "a" not in [i["item_id"] for i in first["items"]]


def test_the_heuristic_path_never_recommends_an_inactive_item() -> None:
    listed = []
    for inactive in (frozenset(), frozenset({"b"})):
        refresher, sent, _ = _refresher(unservable=inactive)
        for n, item in enumerate(["a", "b", "c", "b"]):
            _mark(refresher, f"v{n}", 1, item)  # b trends most
        _answer(refresher, 4)
        listed.append({i["item_id"] for _, b in sent.records for i in json.loads(b)["items"]})
    assert "b" in listed[0]  # it would be recommended
    assert listed[1] and "b" not in listed[1]


def test_with_catalog_only_the_heuristic_path_shows_only_listed_items() -> None:
    refresher, sent, _ = _refresher(unservable=Unservable(frozenset(), {"a", "c"}))
    for n, item in enumerate(["a", "b", "c", "b", "d"]):
        _mark(refresher, f"v{n}", 1, item)  # b trends most
    _answer(refresher, 5)
    shown = {i["item_id"] for _, b in sent.records for i in json.loads(b)["items"]}
    assert shown and shown <= {"a", "c"}


def test_a_short_heuristic_slate_is_filled_with_the_newest_unseen_servable_catalog_items() -> None:
    newest = ["n1", "a", "n2", "b", "n3", *[f"m{k}" for k in range(20)]]
    refresher, sent, stored = _refresher(unservable={"n2"}, newest=newest)
    _mark(refresher, "first", 1, "a")  # a fresh deployment: the only trending item is seen
    _mark(refresher, "second", 1, "b")
    _answer(refresher, 2)
    slates = {json.loads(v)["user_id"]: json.loads(v)["items"] for _, v in sent.records}
    first = [i["item_id"] for i in slates["first"]]
    assert first[0] == "b" and slates["first"][0]["reason"] == "source:trending"
    assert first[1:] == ["n1", "n3", *[f"m{k}" for k in range(7)]]  # b not twice, a seen
    assert all(i["reason"] == "source:catalog" for i in slates["first"][1:])
    assert [i["item_id"] for i in slates["second"]][:4] == ["a", "n1", "n3", "m0"]
    assert all(len(items) == 10 for items in slates.values()) and len(stored) == 2

    refresher, sent, stored = _refresher()  # no catalog: the slate stays short, never padded
    _mark(refresher, "first", 1, "a")
    _answer(refresher, 1)
    assert json.loads(sent.records[0][1])["items"] == []
    assert stored == []  # an empty slate answers its event but keeps no impression


def test_the_model_path_is_used_once_a_model_is_loaded() -> None:
    builder = FixedBuilder(["x", "y"])
    refresher, sent, stored = _refresher(builder)
    _mark(refresher, "u1", 1, "a")
    _answer(refresher, 1)
    slate = json.loads(sent.records[0][1])
    assert [i["item_id"] for i in slate["items"]] == ["x", "y"]
    assert slate["model_version"] == "m-1" and stored[0].propensities == [0.5, 0.5]
    assert builder.observed == [("u1", "a")]  # every event reaches a builder that learns


def test_stats_name_the_versions_the_newest_slate_was_built_with() -> None:
    """/stats ``feedback.policy_version`` names the learner's version, which only the model
    path serves: a heuristic worker's slates carry another (a new-user pass was misled)."""
    model: list[SlateBuilder] = []
    refresher, sent, _ = _refresher()
    refresher.model = lambda: model[0] if model else None
    _mark(refresher, "u1", 1, "a")
    _answer(refresher, 1)
    carried = json.loads(sent.records[0][1])
    assert refresher.versions == {
        "model_version": carried["model_version"],
        "policy_version": carried["policy_version"],
    }
    assert refresher.versions["policy_version"] == "heuristic-1"
    model.append(FixedBuilder(["x"]))
    _mark(refresher, "u1", 2, "b")
    _answer(refresher, 2)
    assert refresher.versions == {"model_version": "m-1", "policy_version": "p-1"}


def test_a_failed_batch_is_answered_later_with_every_event_it_held() -> None:
    builder = FixedBuilder(["x"], failures=1)
    refresher, sent, _ = _refresher(builder)
    _mark(refresher, "u1", 1, "a")
    _answer(refresher, 1)
    assert builder.calls == 2
    assert json.loads(sent.records[0][1])["trigger_event_ids"] == ["u1-1"]


def test_the_next_event_of_a_user_credits_the_sources_of_their_last_slate() -> None:
    refresher, _, _ = _refresher()
    for n, item in enumerate(["a", "b", "c"]):
        _mark(refresher, f"v{n}", 1, item)
    _answer(refresher, 3)
    shown = refresher.fusion.pending["v0"]
    assert set(shown) == {"covisitation", "trending"} and "a" not in shown["trending"]
    _mark(refresher, "v0", 2, next(iter(shown["trending"])))
    assert refresher.fusion.observations == 1 and "v0" not in refresher.fusion.pending


def test_each_slate_tells_how_long_it_waited_before_and_after_its_batch_was_built() -> None:
    refresher, sent, _ = _refresher(FixedBuilder(["x"]))
    for n in range(5):
        _mark(refresher, f"w{n}", 1, "a")
    time.sleep(0.02)  # marked well before the batch starts: the wait is at least this
    _answer(refresher, 5)
    timings = [json.loads(v)["timing_ms"] for _, v in sent.records]
    assert all(t["wait_ms"] >= 20 for t in timings)
    published = [t["publish_ms"] for t in timings]
    assert published == sorted(published) and published[0] < published[-1]
    assert all(t["queue_ms"] >= t["wait_ms"] + t["publish_ms"] for t in timings)


def test_heuristic_slates_are_those_of_fusing_the_whole_trending_list() -> None:
    """Fixed input (a synthetic shop's first 20,000 events): the slates and source lists the
    heuristic path builds with its prepared trending list equal those of fusing every trending
    item for every slate, as it did before (a plain list takes that path)."""
    settings = Settings()
    stats = ItemStats(settings.state)
    states: dict[str, UserState] = {}
    for offset, event in enumerate(synthetic_events(Workload(2_000, 5_000, 20_000))):
        state = states.setdefault(event.user_id, UserState())
        previous = state.covisit_previous(event.item_id, settings.state.covisit_window)
        apply_event(state, event, settings.state, (0, offset))
        stats.apply(ItemDelta(event.item_id, previous, event.ts, 1.0, (0, offset)))
    weights = {COVISITATION: 0.7, TRENDING: 0.2}
    builder = HeuristicBuilder(
        lambda: weights, settings.serving.fusion.depth, settings.serving.covisit_decay
    )
    inputs = [
        refresh_input(Pending(user, 0, state), stats, settings.serving)
        for user, state in itertools.islice(states.items(), 500)
    ]
    assert isinstance(inputs[0].trending, Ranked) and len(inputs[0].trending) == 200
    whole = [RefreshInput(i.pending, i.state, i.covisits, list(i.trending)) for i in inputs]
    fast, reference = builder.build(inputs, 10), builder.build(whole, 10)
    assert fast.slates == reference.slates and fast.sources == reference.sources
    assert sum(len(slate) for slate in fast.slates) == 5_000
    depth = settings.serving.fusion.depth
    assert fast.slates == [_explained(entry, weights, depth) for entry in whole]


def _explained(entry: RefreshInput, weights: dict[str, float], depth: int) -> list[SlateItem]:
    """A heuristic slate as the path built it before it skipped candidates: validated items,
    each with ``explain``'s reason (no item vectors)."""
    history = entry.state.history()
    seen = entry.state.seen.probe()
    covisited = covisitation_candidates(
        entry.covisits, entry.state.distinct_history(), depth, exclude=seen
    )
    sources = {COVISITATION: covisited, TRENDING: list(entry.trending)}
    fused = fuse(sources, 10, weights=weights, exclude=seen)
    reasons = explain(fused, history, None)
    return [
        SlateItem(
            item_id=c.item_id,
            score=round(c.score, 6),
            propensity=1.0,
            reason=reasons[c.item_id].label,
        )
        for c in fused
    ]


class _AskedStats:
    """Item statistics that note which items' neighbours a slate asks for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def covisits(self, items: Sequence[str], partition: int) -> dict[str, Neighbours]:
        self.asked = list(items)
        return {}

    def trending(self, partition: int) -> Neighbours:
        return []


def test_a_slate_takes_the_neighbours_of_the_users_last_distinct_items() -> None:
    settings = Settings()
    serving = settings.serving.model_copy(update={"covisit_history": 3})
    state = UserState()
    for n, item in enumerate(["w", "x", "y", "a", "a", "a"]):  # a view, click and dwell of a
        apply_event(state, Event(event_id=f"e{n}", user_id="u", item_id=item, type="view",
                                 ts=1_700_000_000_000 + n), settings.state)  # fmt: skip
    stats = _AskedStats()
    refresh_input(Pending("u", 0, state), stats, serving)
    assert stats.asked == ["x", "y", "a"]  # counted in events, it asked for a alone


class _FixedStats(_AskedStats):
    """a's neighbour x is stronger than b's neighbour y, but b is the newer item."""

    def covisits(self, items: Sequence[str], partition: int) -> dict[str, Neighbours]:
        return {"a": [("x", 1.0)], "b": [("y", 0.9)]}


def test_the_covisit_decay_setting_weighs_older_items_in_heuristic_slates() -> None:
    settings, firsts = Settings(), []
    state = UserState()
    for n, item in enumerate(["a", "b"]):
        apply_event(state, Event(event_id=f"e{n}", user_id="u", item_id=item, type="view",
                                 ts=1_700_000_000_000 + n), settings.state)  # fmt: skip
    entry = refresh_input(Pending("u", 0, state), _FixedStats(), settings.serving)
    for decay in (0.8, 1.0):  # y: 0.9 either way; x: 1.0 times the decay
        builder = HeuristicBuilder(lambda: {COVISITATION: 1.0, TRENDING: 1.0}, 50, decay)
        firsts.append(builder.build([entry], 10).slates[0][0].item_id)
    assert firsts == ["y", "x"]


class _ReplayStats(_AskedStats):
    """The user's two items co-visit each other, and each has one neighbour they never had."""

    def covisits(self, items: Sequence[str], partition: int) -> dict[str, Neighbours]:
        return {"track": [("liked", 1.0), ("x", 0.1)], "liked": [("track", 1.0), ("y", 0.1)]}


def test_heuristic_slates_offer_again_what_only_repeatable_events_touched() -> None:
    """A music service: plays (views) repeat, a like (click) marks the track seen. The played
    track comes back in the heuristic slate, the liked one never (a new-user pass found
    neither did: co-visitation left out every recent item, seen or not)."""
    settings = Settings.model_validate({"state": {"repeatable_types": ["view"]}})
    state = UserState()
    for n, (item, kind) in enumerate([("track", "view"), ("liked", "click"), ("track", "view")]):
        apply_event(state, Event(event_id=f"e{n}", user_id="u", item_id=item, type=kind,
                                 ts=1_700_000_000_000 + n), settings.state)  # fmt: skip
    entry = refresh_input(Pending("u", 0, state), _ReplayStats(), settings.serving)
    builder = HeuristicBuilder(lambda: {COVISITATION: 1.0, TRENDING: 1.0}, 50, 0.8)
    slate = [i.item_id for i in builder.build([entry], 10).slates[0]]
    assert slate[0] == "track" and "liked" not in slate
    plain = UserState()  # the default: every event marks its item seen
    for n, item in enumerate(["track", "liked"]):
        apply_event(plain, Event(event_id=f"p{n}", user_id="u", item_id=item, type="view",
                                 ts=1_700_000_000_000 + n), Settings().state)  # fmt: skip
    entry = refresh_input(Pending("u", 0, plain), _ReplayStats(), Settings().serving)
    assert [i.item_id for i in builder.build([entry], 10).slates[0]] == ["y", "x"]
