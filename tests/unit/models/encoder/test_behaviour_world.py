"""The generated world carries each signal its module doc promises, and only at its strength."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from streamrec.models.encoder.behaviour_world import Row, WorldConfig, generate, write_world
from streamrec.models.encoder.event_log import EventLog, load_event_log
from streamrec.models.encoder.inputs import TokenInputs
from streamrec.models.encoder.pipeline import unread_columns
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

    # No listings, so only the device decides the turn. Detours (from and to a random item) and
    # used-up families take about 40% either way.
    walking = dataclasses.replace(WORLD, list_strength=0.0)
    assert _share_next(walking, tv_view, turned_up) > 0.5
    blind = dataclasses.replace(walking, context_strength=0.0)
    assert 0.2 < _share_next(blind, tv_view, turned_up) < 0.4


def _sessions(config: WorldConfig) -> list[tuple[int, list[Row], list[Row]]]:
    """Each session after a user's first: (the gap before its landing in s, the previous
    session's events, its own events, landing first)."""
    out = []
    for rows in _by_user(config):
        starts = [0] + [k for k in range(1, len(rows)) if rows[k][2] - rows[k - 1][2] >= SESSION_S]
        bounds = [*starts, len(rows)]
        for s in range(1, len(starts)):
            gap = rows[starts[s]][2] - rows[starts[s] - 1][2]
            out.append((gap, rows[bounds[s - 1] : bounds[s]], rows[bounds[s] : bounds[s + 1]]))
    return out


def _is_return(config: WorldConfig, gap_s: int) -> bool:
    return gap_s >= config.return_days * 86_400


def test_absences_are_visits_or_returns_that_the_gap_tells_apart() -> None:
    """Visits are at most ``return_days / 2`` apart, returns at least ``return_days``, and
    about ``return_share`` of sessions are returns."""
    gaps = [gap for gap, _, _ in _sessions(WORLD)]
    returns = [g for g in gaps if _is_return(WORLD, g)]
    assert all(g <= WORLD.return_days * 86_400 / 2 for g in gaps if not _is_return(WORLD, g))
    assert abs(len(returns) / len(gaps) - WORLD.return_share) < 0.05


def test_after_a_return_users_come_back_to_their_lifelong_tastes() -> None:
    """The item after a return's landing is in a family the user also went to after another of
    their returns (their tastes); the item after a visit's landing seldom is."""

    def share_in_tastes(config: WorldConfig, returning: bool) -> float:
        inside = total = 0
        for rows in _by_user(config):
            firsts = [
                (_is_return(config, a[2] - p[2]), _family(config, b))
                for p, a, b in zip(rows, rows[1:], rows[2:], strict=False)
                if a[2] - p[2] >= SESSION_S and b[2] - a[2] < SESSION_S
            ]
            after_returns = Counter(f for back, f in firsts if back)
            for back, f in firsts:
                if back == returning:
                    total += 1
                    inside += after_returns[f] > (1 if returning else 0)  # another return's
        assert total > 100
        return inside / total

    assert share_in_tastes(WORLD, returning=True) > 0.5  # 0.59: a lone return has no other
    # A visit may resume a return that stayed in its taste.
    assert share_in_tastes(WORLD, returning=False) < 0.3
    no_tastes = dataclasses.replace(WORLD, taste_strength=0.0)
    assert share_in_tastes(no_tastes, returning=True) < 0.2


def _stay_share(config: WorldConfig, from_listing: bool) -> float:
    """Share of in-session views reached in 5-20 s (``from_listing``) or in 40-120 s after an
    in-session event, followed in session by an item of their own family."""
    stays = total = 0
    for rows in _by_user(config):
        for p, a, b in zip(rows, rows[1:], rows[2:], strict=False):
            reached = a[2] - p[2]
            if a[3] == "add_to_cart" or max(reached, b[2] - a[2]) >= SESSION_S or 20 < reached < 40:
                continue
            if (reached <= 20) == from_listing:
                total += 1
                stays += _family(config, a) == _family(config, b)
    assert total > 100
    return stays / total


def test_the_gap_before_a_view_says_whether_the_next_item_stays_in_its_family() -> None:
    assert _stay_share(WORLD, from_listing=True) > 0.6  # detours take most of the rest
    assert _stay_share(WORLD, from_listing=False) < 0.1  # used-up families fall back in the topic
    no_lists = dataclasses.replace(WORLD, list_strength=0.0)
    assert _stay_share(no_lists, from_listing=True) < 0.1


def test_a_visit_picks_up_where_the_previous_session_left_off() -> None:
    """After a visit's landing the next item is next to the previous session's last item (its
    family, either turn or its accessory), which a landing's random item is not."""

    def near(config: WorldConfig, a: Row, b: Row) -> bool:
        f = _family(config, a)
        return _family(config, b) in {f, config.turn(f, 1), config.turn(f, -1), config.accessory(f)}

    visits = [(prev, rows) for gap, prev, rows in _sessions(WORLD) if not _is_return(WORLD, gap)]
    resumed = [near(WORLD, prev[-1], rows[1]) for prev, rows in visits if len(rows) > 1]
    assert len(resumed) > 100
    assert sum(resumed) / len(resumed) > 0.6


def test_training_names_the_columns_an_encoder_would_leave_unread(tmp_path: Path) -> None:
    log = load_event_log(write_world(tmp_path, dataclasses.replace(WORLD, users=20)))
    hint = unread_columns(log, TokenInputs())
    assert hint is not None
    assert "STREAMREC_ENCODER__EVENT_TYPES=true" in hint
    assert "STREAMREC_ENCODER__CONTEXT_FIELDS='[\"device\"]'" in hint
    assert "STREAMREC_ENCODER__EVENT_VALUES=true" in hint
    read_all = TokenInputs(types=True, values=True, context_fields=("device",))
    assert unread_columns(log, read_all) is None
    ml = EventLog(log.dataset, [e.model_copy(update={"type": "rating"}) for e in log.events], ())
    assert unread_columns(ml, TokenInputs()) is None  # one type, no context: nothing unread
