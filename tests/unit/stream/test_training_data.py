"""Training files written from the stream keep what the worker's user state keeps."""

from __future__ import annotations

from pathlib import Path

from streamrec.models.encoder.event_log import load_event_log
from streamrec.stream.contract import Event, Item
from streamrec.stream.state import Extra, event_extra
from streamrec.stream.training_data import write_atomic

T0 = 1_700_000_000_000


def _events() -> list[Event]:
    return [
        Event(event_id="a", user_id="u1", item_id="i1", type="view", ts=T0,
              context={"device": "tv", "hour": 7}),
        Event(event_id="b", user_id="u1", item_id="i2", type="dwell", ts=T0 + 5_000,
              dwell_ms=42_000, context={"device": "mobile"}),
        Event(event_id="c", user_id="u2", item_id="i1", type="purchase", ts=T0 + 9_000,
              value=19.5),
        Event(event_id="d", user_id="u2", item_id="i3", type="rating", ts=T0 + 12_000,
              value=4.0, context={"device": "a\tb"}),
    ]  # fmt: skip


def test_types_values_and_context_survive_the_training_file(tmp_path: Path) -> None:
    events = _events()
    items = [Item(item_id=f"i{n}", title=f"item {n}") for n in (1, 2, 3)]
    inter = write_atomic(events, items, tmp_path, "window")
    log = load_event_log(inter)
    assert set(log.context_fields) == {"device", "hour"}
    read = sorted(log.events, key=lambda e: (e.ts, e.user_id))
    assert [(e.user_id, e.item_id, e.type) for e in read] == [
        (e.user_id, e.item_id, e.type) for e in events
    ]
    fields = ("device", "hour")
    for wrote, got in zip(events, read, strict=True):
        assert _text(event_extra(got, fields)) == _text(event_extra(wrote, fields))


def _text(extra: Extra | None) -> tuple[float | None, dict[str, str]] | None:
    """An extra with its context as text: the file holds text, which the encoder hashes as
    ``name=value`` either way (whitespace inside a value collapses to one space)."""
    if extra is None:
        return None
    value, context = extra
    return value, {k: " ".join(str(v).split()) for k, v in (context or {}).items()}


def test_events_without_extras_write_the_plain_columns_they_had(tmp_path: Path) -> None:
    plain = [Event(event_id="a", user_id="u1", item_id="i1", type="rating", ts=T0, value=3.0)]
    inter = write_atomic(plain, [Item(item_id="i1", title="one")], tmp_path, "w")
    header, row = inter.read_text().splitlines()
    assert header.split("\t") == [
        "user_id:token", "item_id:token", "rating:float", "timestamp:float", "type:token",
        "value:float",
    ]  # fmt: skip
    assert row.split("\t") == ["u1", "i1", "3.0", str(T0 // 1000), "rating", "3.0"]


def test_keys_and_categories_a_tab_separated_file_cannot_hold_never_break_it(
    tmp_path: Path,
) -> None:
    """A context key with a tab or colon could not head a column and a tab in a category
    shifted the item columns: every training cycle failed while they were in the window."""
    odd = [
        Event(event_id="a", user_id="u1", item_id="i1", type="view", ts=T0,
              context={"de\tvice": "ios", "a:b": "x", "device": "tv"}),
        Event(event_id="b", user_id="u1", item_id="i2", type="view", ts=T0 + 1_000),
    ]  # fmt: skip
    items = [Item(item_id="i1", title="one", categories=["ca\tt", "new\nline"]),
             Item(item_id="i2", title="two")]  # fmt: skip
    inter = write_atomic(odd, items, tmp_path, "w")
    log = load_event_log(inter)
    assert set(log.context_fields) == {"device"} and len(log.events) == 2
    item_row = inter.with_suffix(".item").read_text().splitlines()[1]
    assert item_row.split("\t") == ["i1", "one", "", "ca_t new_line"]
