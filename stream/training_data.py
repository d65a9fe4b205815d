"""Training data from the stream: events and catalog records written as RecBole atomic files,
the input ``streamrec train`` and the encoder pipeline read (streamrec/dataset_files.py).

Item rows carry the catalog's title and categories, so the text an item is embedded from in
training (``models/encoder/item_text.py``) is the one serving embeds it from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from streamrec.stream.contract import Event, Item
from streamrec.stream.state import event_extra

# A context key that can head a column (``context_<key>:token``): no whitespace, control
# character or colon. Other keys are left out of the file; no model can be told to read them.
_COLUMN_NAME = re.compile(r"[^\s:\x00-\x1f\x7f]+")
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def write_atomic(events: Iterable[Event], items: Iterable[Item], folder: Path, name: str) -> Path:
    """``<folder>/<name>.inter`` and ``.item``; returns the .inter path. Timestamps are written
    in seconds, as RecBole's files have them. Each event's type, value (a dwell's seconds when
    it has no value: what the user state keeps) and context fields go in the extra columns
    ``models/encoder/event_log.py`` reads, so a model trained on the file sees the inputs the
    worker serves it from."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = folder / f"{name}.inter"
    events = list(events)
    fields = sorted({f for e in events for f in e.context or {} if _COLUMN_NAME.fullmatch(f)})
    header = [INTER_HEADER, "type:token", "value:float", *(f"context_{f}:token" for f in fields)]
    lines = ["\t".join(header)]
    lines += ["\t".join(_row(e, fields)) for e in events]
    inter.write_text("\n".join(lines) + "\n")
    rows = [ITEM_HEADER]
    rows += [  # a tab inside a title would shift the columns; categories are space-separated
        f"{i.item_id}\t{_field(i.title)}\t\t"
        + " ".join(_field(c).replace(" ", "_") for c in i.categories)
        for i in items
    ]
    inter.with_suffix(".item").write_text("\n".join(rows) + "\n")
    return inter


def _row(event: Event, fields: list[str]) -> list[str]:
    extra = event_extra(event, ())  # the value the state keeps: a dwell's seconds if no value
    value = extra[0] if extra is not None else None
    context = event.context or {}
    return [
        event.user_id,
        event.item_id,
        str(event.value or 1.0),
        str(event.ts // 1000),
        event.type,
        "" if value is None else repr(value),
        *(_field(str(context[f])) if f in context else "" for f in fields),
    ]


def _field(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a column
