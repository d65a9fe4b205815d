"""Training and evaluation windows rebuilt from an event log as the worker held its states.

Each user's events are replayed in log order through ``streamrec.stream.state.apply_event`` (the
function the worker's ingest agent calls), so duplicates are dropped, late events land where the
worker puts them, and recent events spill into the long-term summary exactly as they do live.
Every window is ``Featurizer.window(state)`` of the state at some moment: the code that serves a
``UserState`` (``InferenceEncoder.encode_states``) is the code that builds the training rows.

Protocol (README): of each user's applied events ``a_0 .. a_{m-1}`` (m >= 3), the last is the
test target (input: the state after ``a_{m-2}``), the second-last the validation target (input:
the state after ``a_{m-3}``); training uses ``a_0 .. a_{m-3}`` (users with fewer than three
events only train). Events whose item is outside the item map are dropped before the replay.

Targets a slate could hold, though: an event of an item the worker's seen set already holds is
not one (events of ``repeatable_types`` put no item there), and on a shop's bursts (view,
dwell, click of one item) the last two events were such repeats for every user, so validation
rewarded ranking the last item first and stopped training after one epoch (found by a new-user
pass). So the test and validation targets are the user's last two *eligible* events (of an
item not yet seen), the test input the state before the last, validation's before the other;
training uses the events before the validation target, and events after the test target are
left out (a shop's burst around the validation target is then not trained on either). On a log
with one event per user and item (MovieLens) that is the rule above; a user with fewer than
three eligible events keeps the rule above.

Training rows (``scheme``):

* ``window``: the state after training event ``i`` for ``i = n-2, n-2-W, n-2-2W, ...`` (W = the
  window length), with a loss at every event position: position j predicts the next event of
  the state's order, the last position the event after ``i``. Every (state, next event) pair of
  the last position is one the worker held; earlier positions see that state's summary with
  fewer recent events (never anything later), so one causal pass trains W targets.
* ``prefix``: the state after every training event, loss at its last position only (every row
  exact, W times more rows).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from streamrec.errors import DataError
from streamrec.models.encoder.inputs import Featurizer, Window
from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event
from streamrec.stream.state import UserState, apply_event

__all__ = ["Example", "WindowSplit", "build_split"]
logger = logging.getLogger(__name__)  # "log" names a user's events here


@dataclass
class Example:
    """A training row: the window, its 1-based targets (one per event token, PAD-free), and
    the id of the event after which the worker held that state. ``ties`` (window scheme):
    per event of the window and then its last target, the time it happened; events of one
    time are in whatever order the log gave them (``tie_shuffled``)."""

    window: Window
    targets: list[int]
    after_event: str
    ties: list[int] = field(default_factory=list)


@dataclass
class WindowSplit:
    """Leave-one-out split over featurized states. Item ``i`` of ``item_ids`` is index ``i+1``.

    ``train`` holds each user's training item sequence (popularity, sampled-softmax logQ);
    ``valid_*``/``test_*`` one window, history (1-based items before the target, for the
    exclusion rule) and 0-based target per evaluated user.
    """

    item_ids: list[str]
    users: list[str]
    train: list[list[int]]
    examples: list[Example]
    valid_windows: list[Window]
    valid_history: list[list[int]]
    valid_targets: list[int]
    test_windows: list[Window]
    test_history: list[list[int]]
    test_targets: list[int]
    valid_ts: list[int] = field(default_factory=list)  # each validation target's event time

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def new_item_rows(targets: Sequence[int], history: Sequence[Sequence[int]]) -> list[int]:
    """Rows whose 0-based target is not among their 1-based history items: the only targets a
    slate can hold, since serving shows no user what they had (unless ``repeatable_types``)."""
    rows = zip(targets, history, strict=True)
    return [n for n, (target, items) in enumerate(rows) if target + 1 not in items]


def build_split(
    events: Iterable[Event],
    item_ids: Sequence[str],
    featurizer: Featurizer,
    state: StateSettings,
    scheme: Literal["window", "prefix"] = "window",
) -> WindowSplit:
    """Replay ``events`` (log order) per user and cut the split described in the module doc.

    The replay keeps the context fields the featurizer reads, whatever ``state`` names: the
    windows are what a worker keeping them holds (the model's load warns a worker that does
    not)."""
    fields = tuple(dict.fromkeys((*state.context_fields, *featurizer.inputs.context_fields)))
    state = state.model_copy(update={"context_fields": fields})
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    by_user: dict[str, list[Event]] = {}
    unknown = total = 0
    for e in events:
        total += 1
        if e.item_id in index:
            by_user.setdefault(e.user_id, []).append(e)
        else:
            unknown += 1
    if unknown and total > unknown:  # scored on fewer events than it was given: say so
        logger.warning(
            "%s of the %s events are of items the model does not know and are left out "
            "(a checkpoint trained before those items appeared?)",
            f"{unknown:,}",
            f"{total:,}",
        )
    split = WindowSplit(list(item_ids), [], [], [], [], [], [], [], [], [])
    for user, log in by_user.items():
        _add_user(split, user, log, index, featurizer, state, scheme)
    if not split.test_targets:
        known = f"; {unknown:,} of the {total:,} events are of items the model does not know"
        raise DataError(
            "no user has 3 or more events of known items; leave-one-out evaluation needs a "
            "training, a validation and a test event per user"
            + (known + " (a checkpoint trained on another dataset?)" if unknown else "")
        )
    return split


def _applied(log: Sequence[Event], state: StateSettings) -> list[bool]:
    """Which events of the log the worker applies (False: a duplicate it drops). Without a
    record position a duplicate id is ``apply_event``'s only refusal, so the id set alone
    decides, in its exact and Bloom phases alike: a full replay here was 1 s of the continual
    trainer's 13 s cycle (50,000 events, this VM)."""
    ids = UserState().event_ids
    return [ids.add(e.event_id, state.seen_event_ids) for e in log]


def _add_user(
    split: WindowSplit,
    user: str,
    log: Sequence[Event],
    index: Mapping[str, int],
    featurizer: Featurizer,
    state: StateSettings,
    scheme: Literal["window", "prefix"],
) -> None:
    applied = [e for e, ok in zip(log, _applied(log, state), strict=True) if ok]
    items = [index[e.item_id] for e in applied]
    targets_at = _evaluated(applied, state)
    n = len(applied) if targets_at is None else targets_at[0]
    split.users.append(user)
    split.train.append(items[:n])
    step = 1 if scheme == "prefix" else featurizer.length
    cuts = set(range(n - 2, -1, -step))  # after these training events, a training row
    # after these events, the validation and the test input
    evaluate = {} if targets_at is None else {n - 1: "valid", targets_at[1] - 1: "test"}
    replay = UserState()
    for i, event in enumerate(applied[: n if targets_at is None else targets_at[1]]):
        apply_event(replay, event, state)
        if i in cuts:
            win = featurizer.window(replay)
            known = featurizer.index  # the items Featurizer.window keeps, so times align
            times = [ts for item, ts, _ in replay.recent[-featurizer.length :] if item in known]
            ties = [*times, applied[i + 1].ts] if scheme == "window" else []
            targets = _targets(win, items[i + 1], scheme)
            split.examples.append(Example(win, targets, event.event_id, ties))
        if i in evaluate:
            windows, history, targets = _role(split, evaluate[i])
            windows.append(featurizer.window(replay))
            history.append(items[: i + 1])
            targets.append(items[i + 1] - 1)
            if evaluate[i] == "valid":
                split.valid_ts.append(applied[i + 1].ts)


def _evaluated(applied: Sequence[Event], state: StateSettings) -> tuple[int, int] | None:
    """Where the validation and test targets are (module docstring), or None: train only."""
    if len(applied) < 3:
        return None
    seen: set[str] = set()  # as the worker's seen set has them (stream/state.py apply_event)
    eligible = []
    for i, event in enumerate(applied):
        if event.item_id not in seen:
            eligible.append(i)
        if state.marks_seen(event):
            seen.add(event.item_id)
    if len(eligible) < 3:
        return len(applied) - 2, len(applied) - 1
    return eligible[-2], eligible[-1]


def _role(split: WindowSplit, role: str) -> tuple[list[Window], list[list[int]], list[int]]:
    if role == "valid":
        return split.valid_windows, split.valid_history, split.valid_targets
    return split.test_windows, split.test_history, split.test_targets


def _targets(win: Window, following: int, scheme: Literal["window", "prefix"]) -> list[int]:
    """Next item of each event token: the state's next event, then the log's next event."""
    if scheme == "prefix":
        return [following]
    return [*win.items[1:], following]


def tie_shuffled(example: Example, rng: random.Random) -> Example:
    """``example`` with the events that share a time in a random order (window scheme).

    Coarse clocks (MovieLens: seconds, half of a user's consecutive ratings share one) leave
    such events in the log's order, which says nothing, yet the window's targets are that
    order. Items move together with their types, values and context; gaps stay with their
    positions (a tie's events after its first all have a zero gap, the first keeps the gap to
    the event before the tie, wherever its item moved). The last target has no side inputs in
    the window, so it moves only in a window without them."""
    win = example.window
    seq = [*win.items, example.targets[-1]]
    if len(example.ties) != len(seq):
        return example
    movable = len(seq) if not (win.types or win.values or win.context) else len(seq) - 1
    order = list(range(len(seq)))
    start = 0
    while start < movable:
        end = start + 1
        while end < movable and example.ties[end] == example.ties[start]:
            end += 1
        if end - start > 1:
            group = order[start:end]
            rng.shuffle(group)
            order[start:end] = group
        start = end
    if order == sorted(order):
        return example
    items = [seq[j] for j in order]
    inputs = order[: len(win.items)]
    moved = replace(
        win,
        items=items[:-1],
        types=[win.types[j] for j in inputs] if win.types else [],
        values=[win.values[j] for j in inputs] if win.values else [],
        context=[win.context[j] for j in inputs] if win.context else [],
    )
    return replace(example, window=moved, targets=items[1:])
