"""A dataset as the event log the worker would have read: contract ``Event``s in time order.

Every dataset ``load_dataset`` reads becomes the events ``streamrec replay`` publishes
(``stream.producer.dataset_events``: type ``rating``, the rating as value, ids
``<dataset>-<n>``). A log whose clock starts before 1990 (relative timestamps, which the
event contract rejects) is shifted as a whole to start on 2000-01-01: gaps are unchanged.

A RecBole ``.inter`` file may carry extra columns that fill in more of the event (what
``behaviour_world.py`` writes)::

    user_id:token  item_id:token  timestamp:float  type:token  value:float  context_device:token

``type`` must be an event type of the contract (``view``, ``click``, ``add_to_cart``,
``purchase``, ``dwell``, ``rating``); ``value`` is the numeric payload (empty: none);
``context_<name>`` columns become the event's ``context`` (empty values left out).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from streamrec.datasets import Dataset, load_dataset
from streamrec.errors import DataError
from streamrec.stream.contract import EVENT_TYPES, Event
from streamrec.stream.producer import CONTEXT_COLUMN_PREFIX, dataset_events

__all__ = ["EventLog", "dataset_as_events", "load_event_log", "stream_event_log"]

_EARLIEST_S = 631_152_000  # 1990-01-01, the contract's lower bound
_SHIFTED_START_S = 946_684_800  # 2000-01-01


@dataclass(frozen=True)
class EventLog:
    """The dataset (catalog, protocol order) and its events, aligned one to one."""

    dataset: Dataset
    events: list[Event]
    context_fields: tuple[str, ...]


def load_event_log(path: Path | None, cache_dir: Path | None = None) -> EventLog:
    """Load ``path`` (None: MovieLens-100K) and its events, with extra columns when present."""
    dataset, events, fields = _read(path, cache_dir)
    return EventLog(dataset, list(events), fields)


def stream_event_log(
    path: Path | None, cache_dir: Path | None = None
) -> tuple[Dataset, Iterator[Event]]:
    """The events of ``load_event_log``, made one at a time: a replay of tens of millions of
    ratings must not hold them all as event records."""
    dataset, events, _ = _read(path, cache_dir)
    return dataset, events


def _read(
    path: Path | None, cache_dir: Path | None
) -> tuple[Dataset, Iterator[Event], tuple[str, ...]]:
    dataset = load_dataset(path, cache_dir)
    events = dataset_as_events(dataset)
    inter = _inter_file(path)
    if inter is None:
        return dataset, events, ()
    rows, fields = _extra_columns(inter)
    if not rows:
        return dataset, events, ()
    # load_dataset orders interactions with a stable sort on whole seconds; do the same here.
    rows.sort(key=lambda r: r[0])
    if len(rows) != len(dataset.interactions):
        raise DataError(
            f"{inter}: {len(rows)} rows with extra columns for {len(dataset.interactions)} events"
        )
    return dataset, _merged(inter, events, rows), fields


def _merged(
    inter: Path, events: Iterator[Event], rows: list[tuple[int, str, str, dict[str, object]]]
) -> Iterator[Event]:
    for event, (_, user, item, update) in zip(events, rows, strict=True):
        if (event.user_id, event.item_id) != (user, item):
            raise DataError(f"{inter}: rows out of step with the dataset at event {event.event_id}")
        yield event.model_copy(update=update)


def dataset_as_events(dataset: Dataset) -> Iterator[Event]:
    """``dataset_events(dataset)``, shifted in time when its clock starts before 1990."""
    first = min((it.ts for it in dataset.interactions), default=_EARLIEST_S)
    if first >= _EARLIEST_S:
        return dataset_events(dataset)
    shift = _SHIFTED_START_S - first
    moved = [replace(it, ts=it.ts + shift) for it in dataset.interactions]
    return dataset_events(replace(dataset, interactions=moved))


def _inter_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".inter" else None
    inters = sorted(path.glob("*.inter"))
    return inters[0] if len(inters) == 1 else None


def _extra_columns(
    inter: Path,
) -> tuple[list[tuple[int, str, str, dict[str, object]]], tuple[str, ...]]:
    """(ts, user, item, event fields) per row in file order, and the context field names;
    no rows when the file has no extra columns."""
    with open(inter, encoding="utf-8") as f:
        header = [c.partition(":")[0] for c in f.readline().rstrip("\r\n").split("\t")]
        fields = tuple(
            c[len(CONTEXT_COLUMN_PREFIX) :] for c in header if c.startswith(CONTEXT_COLUMN_PREFIX)
        )
        if "type" not in header and "value" not in header and not fields:
            return [], ()
        rows = []
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            row = dict(zip(header, line.rstrip("\r\n").split("\t"), strict=False))
            rows.append(_row(inter, lineno, row, fields))
    return rows, fields


def _row(
    inter: Path, lineno: int, row: dict[str, str], fields: tuple[str, ...]
) -> tuple[int, str, str, dict[str, object]]:
    update: dict[str, object] = {}
    kind = row.get("type", "").strip()
    if kind:
        if kind not in EVENT_TYPES:
            raise DataError(f"{inter}:{lineno}: type {kind!r} is not one of {list(EVENT_TYPES)}")
        update["type"] = kind
    raw = row.get("value", "").strip()
    if "value" in row:
        try:
            value = float(raw) if raw else None
        except ValueError:
            raise DataError(f"{inter}:{lineno}: value {raw!r} is not a number") from None
        if value is not None and not math.isfinite(value):
            raise DataError(f"{inter}:{lineno}: value {raw!r} is not finite")
        update["value"] = value
    context = {
        f: row[CONTEXT_COLUMN_PREFIX + f] for f in fields if row.get(CONTEXT_COLUMN_PREFIX + f)
    }
    if context:
        update["context"] = context
    ts = int(float(row["timestamp"]))
    return ts, row["user_id"].strip(), row["item_id"].strip(), update
