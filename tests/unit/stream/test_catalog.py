"""The catalog's records: active items kept, deactivated and deleted (tombstoned) ones listed as
inactive so no slate shows them, bad records dead-lettered."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Literal

import pytest
from stream_doubles import metrics

from streamrec.errors import ContractError
from streamrec.settings import Settings
from streamrec.stream.catalog import Catalog, Unservable, excluding
from streamrec.stream.routing import home_partition


def _catalog(
    listed_only: bool | Literal["auto"] = False, fill: int = 1_000, data_dir: Path | None = None
) -> tuple[Catalog, list[str]]:
    rejected: list[str] = []

    async def reject(raw: bytes, key: bytes | None, error: ContractError, *where: object) -> None:
        rejected.append(error.code)

    serving = Settings().serving.model_copy(
        update={"catalog_only": listed_only, "catalog_fill": fill}
    )
    return Catalog(Settings().kafka, metrics(), reject, serving, data_dir), rejected


def _record(item_id: str, active: bool = True, created_at: int | None = None) -> bytes:
    record = {"item_id": item_id, "title": f"T {item_id}", "active": active}
    if created_at is not None:
        record["created_at"] = created_at
    return json.dumps(record).encode()


def test_deactivated_and_deleted_items_are_inactive_until_a_record_brings_them_back() -> None:
    catalog, rejected = _catalog()

    def take(raw: bytes | None, key: str) -> None:
        asyncio.run(catalog.accept(raw, key.encode(), 0, 0))

    for item in ("a", "b", "c"):
        take(_record(item), item)
    take(_record("a", active=False), "a")
    take(None, "b")  # a tombstone: the compacted topic's delete
    assert set(catalog.items) == {"c"} and catalog.inactive == {"a", "b"}
    take(_record("a"), "a")  # back on sale
    assert set(catalog.items) == {"a", "c"} and catalog.inactive == {"b"}
    assert rejected == []  # a tombstone is not a bad record
    take(b"", "d")  # an empty value is
    assert rejected == ["invalid_json"]


def test_newest_lists_active_items_by_creation_time_at_most_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog, _ = _catalog(fill=3)
    day = 86_400_000
    for item, created in (("old", 1), ("undated", None), ("new", 3), ("mid", 2), ("late", None)):
        asyncio.run(
            catalog.accept(
                _record(item, created_at=created and 1_700_000_000_000 + created * day),
                item.encode(),
                0,
                0,
            )
        )
    assert catalog.newest() == ("new", "mid", "old")  # the undated ones last, beyond the 3 kept
    asyncio.run(catalog.accept(None, b"new", 0, 0))  # deleted
    assert catalog.newest() == ("new", "mid", "old")  # not re-sorted within NEWEST_REFRESH_S
    monkeypatch.setattr("streamrec.stream.catalog.NEWEST_REFRESH_S", 0.0)
    listed = catalog.newest()
    assert listed == ("mid", "old", "undated")  # then arrival order among equals
    calls: list[int] = []
    monkeypatch.setattr(
        "streamrec.stream.catalog.heapq.nlargest", lambda *a, **k: calls.append(1) or []
    )
    priced = {
        "item_id": "mid",
        "title": "T mid",
        "text": "now 5 EUR",
        "created_at": 1_700_000_000_000 + 2 * day,
    }
    asyncio.run(catalog.accept(json.dumps(priced).encode(), b"mid", 0, 0))  # a price change
    assert catalog.newest() is listed and calls == []  # not re-sorted for it
    old_dated = _record("undated", created_at=1_700_000_000_000 + 9 * day)
    asyncio.run(catalog.accept(old_dated, b"undated", 0, 0))  # re-dated: re-sorted
    catalog.newest()
    assert calls == [1]
    off, _ = _catalog(fill=0)
    asyncio.run(off.accept(_record("a"), b"a", 0, 0))
    assert off.newest() == ()


def test_a_refused_record_is_dead_lettered_once_per_worker_not_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def start() -> tuple[Catalog, list[str]]:
        return _catalog(data_dir=tmp_path)

    first, rejected = start()
    asyncio.run(first.accept(b"{", b"x", 0, 5, 1_000))  # refused: dead-lettered
    asyncio.run(first.accept(_record("a"), b"a", 0, 6, 1_001))
    assert rejected == ["invalid_json"]
    asyncio.run(first.save_rejects())

    again, rejected = start()  # the next start reads the same records
    asyncio.run(again.accept(b"{", b"x", 0, 5, 1_000))
    assert rejected == [] and again.repeats == 1
    asyncio.run(again.accept(b"[]", b"y", 1, 5, 1_000))  # another partition's: not sent yet
    asyncio.run(again.accept(b"[]", b"y", 0, 7, 1_002))  # a new one
    assert rejected == ["not_an_object", "not_an_object"] and again.repeats == 1
    # The topic deleted and created again: offsets start over, with newer records.
    asyncio.run(again.accept(b"{", b"z", 0, 0, 9_000))
    assert rejected == ["not_an_object", "not_an_object", "invalid_json"]

    # A record refused only since an upgrade, below the offsets sent before: sent.
    asyncio.run(again.accept(b"{", b"old", 0, 3, 999))
    assert rejected[-1] == "invalid_json" and len(rejected) == 4

    (tmp_path / "catalog_rejects.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        torn, rejected = start()
    asyncio.run(torn.accept(b"{", b"x", 0, 5, 1_000))
    assert rejected == ["invalid_json"] and "dead-lettered again" in caplog.text


def test_a_dead_letter_the_broker_did_not_acknowledge_is_sent_again_at_the_next_start(
    tmp_path: Path,
) -> None:
    sent: list[bytes] = []

    async def reject(raw: bytes, key: bytes | None, error: ContractError, *where: object) -> object:
        sent.append(raw)
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("broker gone"))
        return failed

    serving = Settings().serving

    async def one_start() -> None:
        catalog = Catalog(Settings().kafka, metrics(), reject, serving, tmp_path)
        await catalog.accept(b"{", b"x", 0, 5, 1_000)
        await catalog.save_rejects()

    asyncio.run(one_start())
    asyncio.run(one_start())
    assert sent == [b"{", b"{"]  # never acknowledged, so never remembered


def test_excluding_adds_the_inactive_items_to_what_a_user_has_seen() -> None:
    seen = {"s": None}
    assert excluding(seen, frozenset()) is seen  # nothing inactive: the fast container as is
    both = excluding(seen, {"x"})
    assert "s" in both and "x" in both and "y" not in both


def test_both_outcomes_are_exported_at_zero_before_the_first_record() -> None:
    catalog, _ = _catalog()
    samples = catalog.metrics.items_consumed.collect()[0].samples
    totals = {s.labels["outcome"]: s.value for s in samples if s.name.endswith("_total")}
    assert totals == {"accepted": 0.0, "rejected": 0.0}


def test_with_catalog_only_an_item_without_an_active_record_is_unservable() -> None:
    catalog, _ = _catalog(listed_only=True)
    assert "a" in catalog.unservable()  # named by events only, so far
    asyncio.run(catalog.accept(_record("a"), b"a", 0, 0))
    assert "a" not in catalog.unservable()
    asyncio.run(catalog.accept(_record("a", active=False), b"a", 0, 1))
    assert "a" in catalog.unservable()
    everything, _ = _catalog()
    assert "a" not in everything.unservable() and not everything.unservable()


def test_by_default_slates_keep_to_the_catalog_once_it_lists_any_item() -> None:
    """A news export listing embargoed articles trained a model that recommended them before
    they were published (a new-user pass); a deployment without a catalog still gets slates."""
    catalog, _ = _catalog(listed_only=Settings().serving.catalog_only)
    told: list[Unservable] = []
    catalog.on_unservable.append(told.append)
    catalog._tell(inactive_changed=False, fresh=False, loaded_now=True)  # no catalog: no rule
    assert "embargoed" not in catalog.unservable() and not catalog.unservable() and not told
    asyncio.run(catalog.accept(_record("a"), b"a", 0, 0))
    catalog._tell(inactive_changed=False, fresh=True, loaded_now=False)
    assert "embargoed" in catalog.unservable() and "a" not in catalog.unservable()
    assert [t.listed for t in told] == [frozenset({"a"})]  # the model process is told too


def test_listeners_are_told_the_listed_ids_when_records_arrive_and_at_the_loads_end() -> None:
    # A model process (which keeps its own copy) must learn what is listed from the catalog,
    # not only from what it loaded with: its first load can start before the catalog is read.
    catalog, _ = _catalog(listed_only=True)
    told: list[Unservable] = []
    catalog.on_unservable.append(told.append)
    catalog._tell(inactive_changed=False, fresh=False, loaded_now=True)  # an empty catalog too
    asyncio.run(catalog.accept(_record("a"), b"a", 0, 0))
    catalog._tell(inactive_changed=False, fresh=True, loaded_now=False)
    catalog._tell(inactive_changed=False, fresh=False, loaded_now=False)  # nothing new
    assert [t.listed for t in told] == [frozenset(), frozenset({"a"})]
    assert "b" in told[-1] and "a" not in told[-1]
    unlisted, _ = _catalog()
    unlisted.on_unservable.append(told.append)
    unlisted._tell(inactive_changed=False, fresh=True, loaded_now=True)  # only inactive matters
    assert len(told) == 2


def test_a_catalog_record_keyed_by_anything_but_its_item_id_is_dead_lettered() -> None:
    # Compaction keeps the latest record per key: an item under another key (or none) was
    # listed, then lost or never deletable once compacted.
    catalog, rejected = _catalog()
    for key in (b"other", None, b"\xff", b"a "):
        asyncio.run(catalog.accept(_record("a"), key, 0, 0))
    asyncio.run(catalog.accept(_record("b"), b"b", 0, 1))
    assert rejected == ["bad_key"] * 4 and set(catalog.items) == {"b"}


def test_a_record_on_another_partition_than_its_keys_is_kept_and_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalog, rejected = _catalog()
    catalog.partitions = 4
    home = home_partition(b"a", 4)
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.catalog"):
        asyncio.run(catalog.accept(_record("a"), b"a", home, 0))
        assert caplog.text == ""
        asyncio.run(catalog.accept(None, b"a", (home + 1) % 4, 0))  # its tombstone, misplaced
    assert "murmur2_random" in caplog.text and f"puts it on {home}" in caplog.text
    assert catalog.inactive == {"a"} and rejected == [], "applied live all the same"
