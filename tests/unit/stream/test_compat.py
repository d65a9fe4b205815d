"""Every faust/aiokafka internal stream/compat.py touches exists on the installed versions: an
upgrade that renames one fails here, by name, instead of breaking at-least-once silently."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer

from streamrec.stream.compat import TOUCH_POINTS


async def _build() -> dict[str, Any]:
    """The objects the worker reaches into, built as the worker builds them (nothing started;
    aiokafka wants a running loop even for that)."""
    app = faust.App("compat-check", broker="kafka://127.0.0.1:9", store="memory://")
    return {
        "faust.streams": importlib.import_module("faust.streams"),
        "faust app": app,
        "faust consumer": app.consumer,
        "faust producer": app.producer,
        "faust producer buffer.pending": app.producer.buffer.pending,
        "aiokafka consumer": AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9"),
    }


@pytest.fixture(scope="module")
def holders() -> dict[str, Any]:
    return asyncio.run(_build())


@pytest.mark.parametrize(("holder", "attribute"), TOUCH_POINTS, ids=lambda v: str(v))
def test_each_private_touch_point_exists(
    holders: dict[str, Any], holder: str, attribute: str
) -> None:
    assert hasattr(holders[holder], attribute), (
        f"{holder} has no {attribute} any more: stream/compat.py must follow the upgrade"
    )
