"""Resuming the publishing tools, and what they say when the broker stays away.

No broker here: an in-memory producer stands in. The real-broker outage is
tests/integration/test_broker_outage.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from streamrec.datasets import Dataset, Interaction
from streamrec.errors import ConfigError, DataError, DeliveryError
from streamrec.models.encoder.event_log import load_event_log, stream_event_log
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream import producer as producer_module
from streamrec.stream.contract import Event, encode
from streamrec.stream.producer import dataset_events, produce_file, publish, read_records
from streamrec.stream.tools import replay as replay_module


class Producer:
    """Acknowledges every record at once, or never (a broker that is away)."""

    def __init__(self, sent: list[tuple[bytes, bytes]], acknowledge: bool) -> None:
        self.sent = sent
        self.acknowledge = acknowledge

    async def start(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.acknowledge:
            self.sent.append((key, value))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        return None


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    records: list[tuple[bytes, bytes]] = []
    monkeypatch.setattr(producer_module, "new_producer", lambda kafka: Producer(records, True))
    return records


def _away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "new_producer", lambda kafka: Producer([], False))


def _event(n: int) -> Event:
    return Event(event_id=f"e{n}", user_id=f"u{n % 3}", item_id="i", type="view", ts=10**12 + n)


def test_publish_resumes_at_the_given_index(sent: list[tuple[bytes, bytes]]) -> None:
    events = [_event(n) for n in range(10)]
    report = asyncio.run(publish(KafkaSettings(), events, "t", progress=False, resume_from=4))
    assert [json.loads(value)["event_id"] for _, value in sent] == [f"e{n}" for n in range(4, 10)]
    assert report.accepted == 6


def test_produce_resumes_at_a_line_and_reports_only_the_rows_after_it(
    sent: list[tuple[bytes, bytes]], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    lines = [encode(_event(n)).decode() for n in range(6)]
    lines[1] = lines[4] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    report = asyncio.run(produce_file(KafkaSettings(), path, "events", False, resume_from_line=3))
    assert [json.loads(value)["event_id"] for _, value in sent] == ["e2", "e3", "e5"]
    assert [r.line for r in report.rejected] == [5]


def test_a_csv_rows_context_columns_become_the_events_context(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,item_id,type,ts,context_device,context_locale\n"
        "e1,u1,SKU-1,view,1700000000000,mobile,de-DE\n"
        "e2,u1,SKU-2,click,1700000001000,,\n"
    )
    rows = [record for _, record in read_records(path, "events")]
    assert [getattr(r, "context", "rejected") for r in rows] == [
        {"device": "mobile", "locale": "de-DE"},
        None,
    ]


def test_a_csv_catalogs_active_column_is_read_as_a_boolean(tmp_path: Path) -> None:
    # Every row of such a catalog was refused (wrong_type): the cell reached the contract as text.
    path = tmp_path / "items.csv"
    cells = ["true", "False", "1", "0", "yes", "NO", " ", "maybe"]  # blank: absent, so active
    rows = "".join(f"SKU-{n},Item {n},{cell}\n" for n, cell in enumerate(cells))
    path.write_text("item_id,title,active\n" + rows)
    found = [record for _, record in read_records(path, "items")]
    assert [getattr(r, "active", None) for r in found[:7]] == [
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert getattr(found[7], "code", None) == "wrong_type"


def test_a_csv_with_a_context_column_and_context_columns_is_refused_not_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,item_id,type,ts,dwell_ms,context,context_device\n"
        "e1,u1,SKU-1,view,1700000000000,5300.0,x,mobile\n"
        "e2,u1,SKU-2,view,1700000001000,5300.0,,mobile\n"
    )
    (_, first), (_, second) = read_records(path, "events")
    assert getattr(first, "code", None) == "wrong_type"
    assert getattr(second, "dwell_ms", None) == 5300  # a whole float, as in JSON


def test_produce_names_the_line_to_resume_from_when_the_broker_stays_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _away(monkeypatch)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(encode(_event(n)).decode() for n in range(5)) + "\n")
    with pytest.raises(DeliveryError, match=r"--resume-from-line 1`") as info:
        asyncio.run(produce_file(KafkaSettings(), path, "events", False, max_outage_s=0.2))
    assert info.value.resume_from == 1  # nothing was acknowledged: line 1 is the first


def test_replay_names_the_event_index_to_resume_from(monkeypatch: pytest.MonkeyPatch) -> None:
    _away(monkeypatch)
    dataset = Dataset(
        name="tiny",
        interactions=[Interaction("u1", "i1", 4.0, 10**9 + n) for n in range(5)],
        items={},
    )

    async def no_topics(kafka: KafkaSettings) -> None:
        return None

    made = (dataset, dataset_events(dataset))
    monkeypatch.setattr(replay_module, "stream_event_log", lambda path, cache: made)
    monkeypatch.setattr(replay_module, "create_topics", no_topics)
    replay = replay_module.replay_dataset(
        Settings(), None, None, None, False, False, max_outage_s=0.2, resume_from=2
    )
    with pytest.raises(DeliveryError, match=r"--resume-from 2 --no-items") as info:
        asyncio.run(replay)
    assert info.value.resume_from == 2
    assert "tiny-<index>" in str(info.value)


def test_a_resume_point_past_the_limit_is_refused_not_a_silent_empty_replay(
    monkeypatch: pytest.MonkeyPatch, sent: list[tuple[bytes, bytes]]
) -> None:
    dataset = Dataset(
        name="tiny",
        interactions=[Interaction("u1", "i1", 4.0, 10**9 + n) for n in range(5)],
        items={},
    )
    made = (dataset, dataset_events(dataset))
    monkeypatch.setattr(replay_module, "stream_event_log", lambda path, cache: made)
    for limit, resume in ((3, 3), (None, 5)):
        replay = replay_module.replay_dataset(
            Settings(), None, None, limit, False, False, resume_from=resume
        )
        with pytest.raises(ConfigError, match=f"--resume-from {resume} leaves nothing to send"):
            asyncio.run(replay)
    assert sent == []


def test_replay_publishes_a_files_types_and_context_on_a_valid_clock(
    tmp_path: Path, sent: list[tuple[bytes, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RecBole file's extra columns reach the events topic (the model trained on them is
    served from them), and a relative clock is shifted into the contract's range."""
    inter = _shop(tmp_path)

    async def no_topics(kafka: KafkaSettings) -> None:
        return None

    monkeypatch.setattr(replay_module, "create_topics", no_topics)
    asyncio.run(replay_module.replay_dataset(Settings(), inter, None, None, False, False))
    events = [json.loads(value) for _, value in sent]
    assert [(e["item_id"], e["type"], e.get("context")) for e in events] == [
        ("i1", "view", {"device": "tv"}),
        ("i2", "add_to_cart", None),
    ]
    assert events[1]["ts"] - events[0]["ts"] == 60_000 and events[0]["ts"] >= 631_152_000_000


def test_the_replays_events_are_made_one_at_a_time_and_equal_the_trainings(
    tmp_path: Path,
) -> None:
    inter = _shop(tmp_path)
    _, events = stream_event_log(inter)
    assert not isinstance(events, list)
    assert list(events) == load_event_log(inter).events


def test_a_dataset_row_that_breaks_the_event_contract_is_named_not_a_traceback(
    tmp_path: Path,
) -> None:
    inter = tmp_path / "future.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t4102444800\n")
    with pytest.raises(DataError, match=r"event 0 .*user 'u1', item 'i1'.*ts: .*in the future"):
        list(stream_event_log(inter)[1])


def _shop(tmp_path: Path) -> Path:
    inter = tmp_path / "shop.inter"
    inter.write_text(
        "user_id:token\titem_id:token\ttimestamp:float\ttype:token\tcontext_device:token\n"
        "u1\ti1\t10\tview\ttv\n"
        "u1\ti2\t70\tadd_to_cart\t\n"
    )
    return inter
