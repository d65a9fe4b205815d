"""The dead-letter path counts catalog rejections apart from event rejections."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client import CollectorRegistry

from streamrec.errors import ContractError
from streamrec.stream.deadletter import DeadLetters
from streamrec.stream.metrics import WorkerMetrics


def test_item_rejections_are_sent_but_not_counted_as_bad_events() -> None:
    sent: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, value: bytes) -> None:
        sent.append((key, value))

    metrics = WorkerMetrics(CollectorRegistry())
    letters = DeadLetters(send, metrics, "p.items")
    bad = ContractError("bad_value", "field `title`: too long")
    asyncio.run(letters.reject(b"{}", b"i1", bad, "p.items", 0, 7))
    asyncio.run(letters.reject(b"x", b"u1", ContractError("invalid_json", "no"), "p.events", 2, 9))
    assert [json.loads(value)["source_topic"] for _, value in sent] == ["p.items", "p.events"]
    assert letters.count == 1 and letters.by_code == {"invalid_json": 1}
    assert letters.items_by_code == {"bad_value": 1}
    assert metrics.items_rejected.labels("bad_value")._value.get() == 1
    assert metrics.events_rejected.labels("bad_value")._value.get() == 0
    assert metrics.dead_lettered._value.get() == 1


def test_each_code_logs_under_its_own_template(caplog: pytest.LogCaptureFixture) -> None:
    # The log limiter keys on the template: with one template for every code, a burst of
    # too_large hid the first bad_key record, whose code then never reached the log.
    async def send(key: bytes | None, value: bytes) -> None:
        return None

    letters = DeadLetters(send, WorkerMetrics(CollectorRegistry()), "p.items")
    with caplog.at_level(logging.WARNING, "streamrec.stream.deadletter"):
        for code in ("too_large", "bad_key"):
            asyncio.run(letters.reject(b"x", b"u1", ContractError(code, "no"), "p.events", 0, 1))
    templates = [str(r.msg) for r in caplog.records]
    assert len(set(templates)) == 2 and "(bad_key)" in caplog.records[1].getMessage()
