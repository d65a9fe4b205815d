"""Tiny hand-written event streams for the quality scoring and offline replay tests."""

from __future__ import annotations

from streamrec.stream.contract import Event

T0 = 1_700_000_000_000


def stream(*pairs: str) -> list[Event]:
    """Events e0, e1, ... from "user item" strings, in replay order."""
    out = []
    for n, pair in enumerate(pairs):
        user, item = pair.split()
        out.append(Event(event_id=f"e{n}", user_id=user, item_id=item, type="view", ts=T0 + n))
    return out
