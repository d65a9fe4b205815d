"""Training windows are the worker's states: a property test over random event streams."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamrec.errors import DataError
from streamrec.models.encoder.inputs import Featurizer, TokenInputs, Window
from streamrec.models.encoder.windows import Example, _applied, build_split, tie_shuffled
from streamrec.stream.config import StateSettings
from streamrec.stream.contract import EVENT_TYPES, Event
from streamrec.stream.state import UserState, apply_event

BASE_MS = 1_700_000_000_000
ITEMS = [str(i) for i in range(1, 17)]
# Small bounds so that short streams already spill into the summary, merge slices and truncate.
STATE = StateSettings(recent_length=4, summary_slices=2, summary_items=3, summary_slice_s=20)
# The worker keeps the context field the model reads; build_split is given STATE and must keep
# it by itself.
WORKER = STATE.model_copy(update={"context_fields": ("device",)})
INPUTS = TokenInputs(
    types=True, values=True, gaps=True, summary_tokens=2, context_fields=("device",)
)

_event = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(ITEMS),
    st.sampled_from(EVENT_TYPES),
    st.integers(0, 120),  # seconds: ties and late (out-of-order) events happen
    st.integers(0, 40),  # event id number: repeats are producer duplicates
    st.sampled_from([None, 1.0, 4.0, 30.0]),
    st.sampled_from([None, "tv", "ios"]),
)


def _log(raw: list[tuple[str, str, str, int, int, float | None, str | None]]) -> list[Event]:
    return [
        Event(
            event_id=f"{user}-e{n}",
            user_id=user,
            item_id=item,
            type=kind,  # type: ignore[arg-type]  # drawn from EVENT_TYPES
            ts=BASE_MS + s * 1000,
            value=value,
            context={"device": device} if device else None,
        )
        for user, item, kind, s, n, value, device in raw
    ]


def _worker(log: list[Event], featurizer: Featurizer) -> tuple[dict[str, Window], dict[str, list]]:
    """What the worker holds: each record applied at its offset to the state it stored (JSON),
    every record redelivered once after the next; the window after each applied event."""
    table: dict[str, str] = {}
    windows: dict[str, Window] = {}
    applied: dict[str, list[Event]] = {}
    for offset in range(len(log)):
        deliveries = [offset] if offset == 0 else [offset, offset - 1]  # a redelivery too
        for position in deliveries:
            record = log[position]
            state = UserState.from_json(json.loads(table.get(record.user_id, "null")))
            if apply_event(state, record, WORKER, (0, position)):
                applied.setdefault(record.user_id, []).append(record)
                windows[record.event_id] = featurizer.window(state)
            table[record.user_id] = json.dumps(state.to_json())
    return windows, applied


@settings(max_examples=60, deadline=None)
@given(st.lists(_event, min_size=1, max_size=60), st.sampled_from([3, 4]))
# Found by this test: events sharing (item, time, type) share one extras entry, and the
# training windows once read it with the context of a later event than the worker had seen.
@example([("u1", "1", "view", 0, n, None, "tv" if n == 1 else None) for n in range(3)], 3)
def test_training_windows_equal_the_worker_states(raw: list, length: int) -> None:
    log = _log(raw)
    featurizer = Featurizer({item: i + 1 for i, item in enumerate(ITEMS)}, INPUTS, length)
    worker, applied = _worker(log, featurizer)
    if not any(len(events) >= 3 for events in applied.values()):
        return  # no user to evaluate: build_split refuses such a log (tested elsewhere)
    split = build_split(log, ITEMS, featurizer, STATE, "prefix")
    # Every training row is the worker's window after the event it names.
    for row in split.examples:
        assert row.window == worker[row.after_event]
    # Validation and test inputs are the states before each user's last two applied events
    # of items new to them (their last two events when they have fewer than three such).
    evaluated = [u for u in split.users if len(applied[u]) >= 3]
    for k, user in enumerate(evaluated):
        events = applied[user]
        valid, test = _last_two_new(events)
        assert split.valid_windows[k] == worker[events[valid - 1].event_id]
        assert split.test_windows[k] == worker[events[test - 1].event_id]
        assert split.test_targets[k] == ITEMS.index(events[test].item_id)
        assert split.train[split.users.index(user)] == [int(e.item_id) for e in events[:valid]]


def _last_two_new(events: list[Event]) -> tuple[int, int]:
    new = [n for n, e in enumerate(events) if e.item_id not in {x.item_id for x in events[:n]}]
    return (new[-2], new[-1]) if len(new) >= 3 else (len(events) - 2, len(events) - 1)


def test_a_burst_of_events_on_one_item_is_not_a_validation_or_test_target() -> None:
    """A shop's last events are a view, a dwell and a click of one item: as targets they made
    validation reward ranking the last item first (a new-user pass: training stopped after
    one epoch at validation NDCG@10 0.999)."""
    kinds = ["view", "click", "view", "dwell", "click", "view", "dwell", "click"]
    items = ["1", "1", "2", "2", "2", "3", "3", "3"]
    rows = enumerate(zip(items, kinds, strict=True))
    log = _log([("u1", i, k, n * 10, n, None, None) for n, (i, k) in rows])
    featurizer = Featurizer({item: i + 1 for i, item in enumerate(ITEMS)}, INPUTS, 4)
    split = build_split(log, ITEMS, featurizer, STATE, "prefix")
    assert split.train == [[1, 1]]  # the events before the validation target
    assert split.valid_history == [[1, 1]] and split.valid_targets == [1]  # item "2"
    assert split.test_history == [[1, 1, 2, 2, 2]] and split.test_targets == [2]  # item "3"
    # Views do not mark their item seen: the dwell after the view of "3" may still be shown.
    repeatable = STATE.model_copy(update={"repeatable_types": frozenset({"view"})})
    split = build_split(log, ITEMS, featurizer, repeatable, "prefix")
    assert split.valid_history == [[1, 1, 2, 2, 2]] and split.valid_targets == [2]
    assert split.test_history == [[1, 1, 2, 2, 2, 3]] and split.test_targets == [2]


def test_window_scheme_takes_one_state_every_length_events() -> None:
    log = _log([("u1", ITEMS[n], "view", n * 30, n, None, None) for n in range(12)])
    featurizer = Featurizer({item: i + 1 for i, item in enumerate(ITEMS)}, INPUTS, 4)
    split = build_split(log, ITEMS, featurizer, STATE, "window")
    # 10 training events: states after events 8, 4 and 0, each predicting its next events.
    assert [e.after_event for e in split.examples] == ["u1-e0", "u1-e4", "u1-e8"]
    assert [len(e.targets) for e in split.examples] == [1, 4, 4]
    assert split.examples[-1].targets == [7, 8, 9, 10]  # items of events 6..9 (1-based ids)
    assert len(split.examples[-1].window.summary) == 2  # older events live in the summary


def test_a_log_of_items_the_model_does_not_know_says_so() -> None:
    log = [
        Event(event_id=f"e{n}", user_id="u1", item_id=f"other-{n}", type="view", ts=BASE_MS + n)
        for n in range(5)
    ]
    featurizer = Featurizer({item: n + 1 for n, item in enumerate(ITEMS)}, INPUTS, 4)
    with pytest.raises(DataError, match="5 of the 5 events are of items the model does not know"):
        build_split(log, ITEMS, featurizer, STATE, "window")


def test_events_of_unknown_items_left_out_are_counted_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = _log([("u1", ITEMS[n % 8], "view", n * 30, n, None, None) for n in range(12)])
    log += [
        Event(event_id=f"x{n}", user_id="u1", item_id=f"new-{n}", type="view", ts=BASE_MS + n)
        for n in range(4)
    ]
    featurizer = Featurizer({item: i + 1 for i, item in enumerate(ITEMS)}, INPUTS, 4)
    with caplog.at_level("WARNING"):
        build_split(log, ITEMS, featurizer, STATE, "window")
    assert "4 of the 16 events are of items the model does not know" in caplog.text


def test_window_examples_record_when_each_event_and_the_last_target_happened() -> None:
    seconds = [0, 0, 5, 5, 5, 9, 9, 12, 20, 30, 40, 50]
    log = _log([("u1", ITEMS[n], "view", s, n, None, None) for n, s in enumerate(seconds)])
    featurizer = Featurizer({item: i + 1 for i, item in enumerate(ITEMS)}, INPUTS, 4)
    split = build_split(log, ITEMS, featurizer, STATE, "window")
    last = split.examples[-1]  # the state after event 8: events 5..8, then event 9's item
    assert last.ties == [BASE_MS + s * 1000 for s in seconds[5:10]]
    prefixes = build_split(log, ITEMS, featurizer, STATE, "prefix").examples
    assert prefixes and all(e.ties == [] for e in prefixes)  # one target each: nothing to move


def _tied_example(side_inputs: bool) -> Example:
    items = [1, 2, 3, 4, 5]
    window = Window(
        items=items,
        types=[10, 20, 30, 40, 50] if side_inputs else [],
        gaps=[7, 0, 0, 3, 0],
    )
    # events 2-3 share a time, and 4-5 with the target 6
    return Example(window, [2, 3, 4, 5, 6], "e", [1, 2, 2, 4, 4, 4])


def test_tie_shuffle_reorders_events_of_one_time_only_and_keeps_targets_next() -> None:
    rng = random.Random(0)
    orders = set()
    for _ in range(200):
        moved = tie_shuffled(_tied_example(side_inputs=False), rng)
        seq = [*moved.window.items, moved.targets[-1]]
        assert moved.targets == seq[1:]  # every position still predicts the next event
        assert seq[0] == 1 and sorted(seq[1:3]) == [2, 3] and sorted(seq[3:]) == [4, 5, 6]
        assert moved.window.gaps == [7, 0, 0, 3, 0]  # gaps belong to positions
        orders.add(tuple(seq))
    assert len(orders) == 2 * 6  # every order within each tie was drawn


def test_tie_shuffle_moves_side_inputs_with_their_items_and_not_the_last_target() -> None:
    rng = random.Random(1)
    for _ in range(50):
        moved = tie_shuffled(_tied_example(side_inputs=True), rng)
        assert moved.targets[-1] == 6  # its type is not in the window: it stays last
        assert moved.window.types == [10 * item for item in moved.window.items]
        assert sorted(moved.window.items[3:]) == [4, 5]


def test_tie_shuffle_leaves_examples_without_times_alone() -> None:
    prefix = Example(Window(items=[1, 2]), [3], "e")
    assert tie_shuffled(prefix, random.Random(0)) is prefix


def test_duplicates_are_decided_as_the_worker_does_past_the_exact_id_set() -> None:
    """Past 256 ids a user's id set is Bloom filters: the split's id-set check must still agree
    with a full replay of the worker's state, duplicates and all."""
    rng = random.Random(5)
    ids = [f"e{n}" for n in range(900)]
    ids += rng.sample(ids, 300)  # re-sent events, early and late
    log = _log([("u1", rng.choice(ITEMS), "view", n, 0, None, None) for n in range(len(ids))])
    log = [e.model_copy(update={"event_id": i}) for e, i in zip(log, ids, strict=True)]
    replay = UserState()
    assert _applied(log, STATE) == [apply_event(replay, e, STATE) for e in log]
    assert sum(_applied(log, STATE)) == 900
