"""`streamrec produce` against the real broker: every good row arrives in per-user order, every
bad row is reported with its line number and reason, nothing good is lost."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from streamrec.cli import PRODUCED_WITH_REJECTIONS, app
from streamrec.settings import KafkaSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.topics import create_topics

GOOD = 10_000
BAD = 100
BASE_TS = 1_700_000_000_000


def _bad_rows() -> list[tuple[str, str]]:
    """(line text, expected error code) for many kinds of malformed rows."""
    ok = {"event_id": "x", "user_id": "u1", "item_id": "i1", "type": "click", "ts": BASE_TS}
    kinds = [
        ("{not json", "invalid_json"),
        ("[1, 2, 3]", "not_an_object"),
        (json.dumps({**ok, "type": "teleport"}), "unknown_event_type"),
        (json.dumps({k: v for k, v in ok.items() if k != "user_id"}), "missing_field"),
        (json.dumps({**ok, "ts": "yesterday"}), "bad_timestamp"),
        (json.dumps({**ok, "ts": 881250949}), "bad_timestamp"),
        (json.dumps({**ok, "item_id": 42}), "wrong_type"),
        (json.dumps({**ok, "dwell_ms": -5}), "bad_value"),
        (json.dumps({**ok, "v": 9}), "unsupported_version"),
        (json.dumps({**ok, "item_id": "y" * 20_000}), "too_large"),
    ]
    return [kinds[i % len(kinds)] for i in range(BAD)]


def _write_input(path: Path) -> tuple[dict[int, str], dict[str, list[str]]]:
    rng = random.Random(7)
    lines: list[tuple[str, str | None]] = []
    for n in range(GOOD):
        user = f"u{rng.randrange(300)}"
        event = {
            "event_id": f"e{n}",
            "user_id": user,
            "item_id": f"i{rng.randrange(500)}",
            "type": rng.choice(["view", "click", "purchase"]),
            "ts": BASE_TS + n,
        }
        lines.append((json.dumps(event), None))
    for text, code in _bad_rows():
        lines.insert(rng.randrange(len(lines) + 1), (text, code))
    expected_bad: dict[int, str] = {}
    per_user: dict[str, list[str]] = defaultdict(list)
    with path.open("w") as fh:
        for line_no, (text, code) in enumerate(lines, start=1):
            fh.write(text + "\n")
            if code is None:
                obj = json.loads(text)
                per_user[obj["user_id"]].append(obj["event_id"])
            else:
                expected_bad[line_no] = code
    return expected_bad, per_user


async def _read_all(kafka: KafkaSettings, topic: str, want: int) -> dict[str, list[str]]:
    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_kwargs(kafka),
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    per_user: dict[str, list[str]] = defaultdict(list)
    seen = 0
    try:
        async with asyncio.timeout(90):
            while seen < want:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        obj = json.loads(m.value)
                        assert m.key == obj["user_id"].encode(), "events are keyed by user_id"
                        per_user[obj["user_id"]].append(obj["event_id"])
                        seen += 1
        # Anything beyond `want` would be a duplicate; give it a moment to show up.
        extra = await consumer.getmany(timeout_ms=1000)
        assert not any(extra.values()), "more records than good rows were published"
    finally:
        await consumer.stop()
    return per_user


def test_produce_reports_bad_rows_and_keeps_every_good_one(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    expected_bad, expected_per_user = _write_input(path)
    asyncio.run(create_topics(kafka_settings))
    env = {
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMREC_KAFKA__TOPICS__PREFIX": kafka_settings.topics.prefix,
    }
    result = CliRunner().invoke(app, ["produce", str(path), "--json"], env=env)
    assert result.exit_code == PRODUCED_WITH_REJECTIONS, result.output  # good rows went out
    figures = json.loads(result.stdout)
    assert figures["accepted"] == GOOD
    assert figures["rejected"] == BAD
    reported = {r["line"]: r["code"] for r in figures["rejections"]}
    assert reported == expected_bad
    assert all(r["message"] for r in figures["rejections"])

    got = asyncio.run(_read_all(kafka_settings, kafka_settings.topics.name("events"), GOOD))
    assert got == expected_per_user


def test_an_empty_file_is_said_to_publish_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n")
    asyncio.run(create_topics(kafka_settings))
    env = {
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMREC_KAFKA__TOPICS__PREFIX": kafka_settings.topics.prefix,
    }
    result = CliRunner().invoke(app, ["produce", str(path), "--json"], env=env)
    assert result.exit_code == 0, result.output  # no new events is not a failure
    assert json.loads(result.stdout)["accepted"] == 0
    assert "has no records; nothing was published" in result.stderr
