"""The reward join when a response is read before its slate's own record comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from streamrec.settings import Settings
from streamrec.stream.contract import Event, Recommendation, SlateItem, encode
from streamrec.stream.feedback import Feedback, impression_of
from streamrec.stream.metrics import WorkerMetrics


def _feedback(tmp_path: Path) -> Feedback:
    settings = Settings(state={"data_dir": tmp_path})  # type: ignore[arg-type]
    app = SimpleNamespace(Table=lambda *args, **kwargs: {})  # a dict stands in for the table
    worker = SimpleNamespace(
        settings=settings,
        app=app,
        metrics=WorkerMetrics(CollectorRegistry()),
        model_server=None,
    )
    return Feedback(worker)  # type: ignore[arg-type]


def _slate(rec_id: str) -> Recommendation:
    return Recommendation(
        rec_id=rec_id,
        user_id="u1",
        items=[SlateItem(item_id=i, score=1.0, propensity=1.0, reason="") for i in ("a", "b")],
        model_version="none",
        policy_version="heuristic-1",
        trigger_event_ids=["e0"],
        created_at=int(time.time() * 1000),
        timing_ms={},
    )


def _click(rec_id: str, item: str) -> Event:
    now = int(time.time() * 1000) + 1
    return Event(event_id=f"c-{item}", user_id="u1", item_id=item, type="click", ts=now,
                 rec_id=rec_id, position=0)  # fmt: skip


async def _read_back(feedback: Feedback, rec: Recommendation) -> None:
    async def records() -> AsyncIterator[Any]:
        message = SimpleNamespace(partition=0)
        yield SimpleNamespace(value=encode(rec), message=message)

    await feedback.on_recommendations(SimpleNamespace(events=records))  # type: ignore[arg-type]


def test_a_response_before_its_slate_record_keeps_its_reward(tmp_path: Path) -> None:
    feedback, rec = _feedback(tmp_path), _slate("r1")
    feedback.log_impression(impression_of(rec))  # the refresher's hand-over at publish time
    assert feedback.on_response(_click("r1", "a"), 0) is None  # joined, not unknown_rec
    asyncio.run(_read_back(feedback, rec))  # the slate's own record arrives afterwards
    assert [r["item_id"] for r in feedback.table["r1"]["rewards"]] == ["a"]
    assert feedback.stats()["open_impressions"] == 1  # queued for expiry once, not twice


def test_a_slate_read_back_first_is_stored_from_its_record(tmp_path: Path) -> None:
    feedback, rec = _feedback(tmp_path), _slate("r2")
    asyncio.run(_read_back(feedback, rec))
    assert feedback.table["r2"]["imp"]["items"] == ["a", "b"]
    assert feedback.on_response(_click("r2", "b"), 0) is None
    assert feedback.rewards == 1
