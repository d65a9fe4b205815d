"""A small saved encoder over 30 items and refresh inputs for it: the model path's test inputs."""

from __future__ import annotations

from pathlib import Path

import torch

from streamrec.models.encoder.checkpoint import save_checkpoint
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.settings import Settings
from streamrec.stream.contract import Event
from streamrec.stream.refresh import Pending, RefreshInput
from streamrec.stream.state import UserState, apply_event

IDS = [f"i{n}" for n in range(1, 31)]


def small_checkpoint(root: Path, text: bool = False) -> Path:
    """A 16-wide encoder saved under ``root``; ``text`` adds a projection so catalog items can
    be cold-started (MiniLM's 384 dimensions into the item space)."""
    torch.manual_seed(0)
    model = SequenceEncoder(
        EncoderConfig(n_items=len(IDS), hidden_size=16, heads=2, inner_size=32, max_len=8)
    ).eval()
    projection = (torch.randn(384, 16) * 0.05, torch.zeros(16)) if text else None
    return save_checkpoint(root / "ck", model, IDS, torch.zeros(16), {}, {}, projection, root)


def refresh_input(user: str, items: list[str]) -> RefreshInput:
    """The user's state after viewing ``items``, with one co-visitation list and trending."""
    state = UserState()
    for n, item in enumerate(items):
        event = Event(event_id=f"{user}-{n}", user_id=user, item_id=item, type="view",
                      ts=1_700_000_000_000 + n)  # fmt: skip
        apply_event(state, event, Settings().state)
    pending = Pending(user, 0, state)
    return RefreshInput(pending, state, {"i1": [("i2", 5.0)]}, [("i3", 9.0), ("i4", 8.0)])
