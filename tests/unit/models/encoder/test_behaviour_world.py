"""The generated world carries each signal its module doc promises, and only at its strength."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from streamrec.models.encoder.behaviour_world import Row, WorldConfig, generate, write_world
from streamrec.models.encoder.event_log import load_event_log
from streamrec.stream.contract import EVENT_TYPES

WORLD = WorldConfig(users=150, seed=3)
SESSION_S = 3_600  # gaps at least this long open a session; in-session gaps are <= 120 s


def _by_user(config: WorldConfig) -> list[list[Row]]:
    users: dict[str, list[Row]] = defaultdict(list)
    for row in generate(config):
        users[row[0]].append(row)
    return list(users.values())


def _share_next(
    config: WorldConfig, when: Callable[[Row, Row], bool], hit: Callable[..., bool]
) -> float:
    """Share of in-session successors ``b`` of events ``a`` with ``when(a, b)`` where ``hit``."""
    hits = total = 0
    for rows in _by_user(config):
        for a, b in itertools.pairwise(rows):
            if b[2] - a[2] < SESSION_S and when(a, b):
                total += 1
                hits += hit(config, a, b)
    assert total > 100
    return hits / total


def _family(config: WorldConfig, row: Row) -> int:
    return config.family_of(int(row[1]))


def test_world_is_seeded_never_repeats_an_item_and_is_read_with_its_columns(
    tmp_path: Path,
) -> None:
    small = dataclasses.replace(WORLD, users=20)
    rows = generate(small)
    assert rows == generate(small)
    assert {r[3] for r in rows} <= set(EVENT_TYPES)
    for user in _by_user(small):
        assert len({r[1] for r in user}) == len(user)
        assert small.min_events <= len(user) <= small.max_events
    log = load_event_log(write_world(tmp_path, small))
    assert log.context_fields == ("device",)
    assert len(log.events) == len(rows)
    assert {e.context["device"] for e in log.events if e.context} == {"tv", "mobile"}
    assert {e.type for e in log.events} == {"view", "click", "add_to_cart"}


def test_a_cart_is_followed_by_its_accessory_family_far_more_often_than_chance() -> None:
    def cart(a: Row, b: Row) -> bool:
        return a[3] == "add_to_cart"

    def accessory(c: WorldConfig, a: Row, b: Row) -> bool:
        return _family(c, b) == c.accessory(_family(c, a))

    chance = 1 / (WORLD.topics * WORLD.families)
    assert _share_next(WORLD, cart, accessory) > 0.75  # detours take the rest
    no_intent = dataclasses.replace(WORLD, intent_strength=0.0)
    assert _share_next(no_intent, cart, accessory) < 5 * chance


def test_the_device_decides_which_way_a_view_turns() -> None:
    def tv_view(a: Row, b: Row) -> bool:
        return a[3] != "add_to_cart" and a[4] == "tv"

    def turned_up(c: WorldConfig, a: Row, b: Row) -> bool:
        return _family(c, b) == c.turn(_family(c, a), 1)

    # Detours (from and to a random item) and used-up families take about 40% either way.
    assert _share_next(WORLD, tv_view, turned_up) > 0.5
    blind = dataclasses.replace(WORLD, context_strength=0.0)
    assert 0.2 < _share_next(blind, tv_view, turned_up) < 0.4


def test_after_a_long_gap_users_return_to_their_lifelong_tastes() -> None:
    """The item after a landing (the first event after a gap of an hour or more) sits in the
    user's ``tastes`` most frequent landing families; after a short gap it does not."""

    def share_in_tastes(config: WorldConfig, long_gap: bool) -> float:
        inside = total = 0
        for rows in _by_user(config):
            landings = [
                (a, b)
                for p, a, b in zip(rows, rows[1:], rows[2:], strict=False)
                if (a[2] - p[2] >= SESSION_S) == long_gap and b[2] - a[2] < SESSION_S
            ]
            returns = Counter(_family(config, b) for _, b in landings)
            tastes = {f for f, _ in returns.most_common(config.tastes)}
            inside += sum(_family(config, b) in tastes for _, b in landings)
            total += len(landings)
        return inside / total

    assert share_in_tastes(WORLD, long_gap=True) > 0.75
    assert share_in_tastes(WORLD, long_gap=False) < 0.4
    no_tastes = dataclasses.replace(WORLD, taste_strength=0.0)
    assert share_in_tastes(no_tastes, long_gap=True) < 0.4
