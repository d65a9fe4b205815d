"""What the encoder reads from a user state: one code path for training windows and serving.

``Featurizer.window(state)`` turns a ``streamrec.stream.state.UserState`` (what the worker keeps)
into a ``Window``: the last ``length`` events of ``state.recent`` as tokens, each with its item and,
when ``TokenInputs`` switches them on, its event type, bucketed value, bucketed time gap to the
previous event and hashed context fields; plus up to ``summary_tokens`` summary tokens, one per
newest long-term slice of ``state.summary`` (its items and decayed weights, and the slice's age
before the window's first event). ``collate`` pads windows into tensors for
``SequenceEncoder.forward``. Training windows (``windows.py``) are the same states, rebuilt by
replaying the event log through the worker's ``apply_event``, featurized by this same code.

Values and context come from the state's ``extras`` (the value of each recent event, and the
context fields ``StateSettings.context_fields`` names). Training replays with those fields kept
(``pipeline.prepare_split``); a worker whose settings do not keep a field the model reads serves
it as "unknown" and says so in its log when the model loads.

Buckets: time gaps by ``floor(log2(1 + seconds))`` (1 s ... 48 days in 24 buckets), values by
``floor(4 * log2(1 + value))`` (ratings 1..5 land in distinct buckets; dwell seconds up to ~3 min
stay distinct), context ``field=value`` strings by CRC-32 into ``CONTEXT_BUCKETS``. Bucket 0 is
"unknown/none" everywhere and embeds to zero.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from streamrec.stream.contract import EVENT_TYPES
from streamrec.stream.state import Extra, UserState

__all__ = [
    "CONTEXT_BUCKETS",
    "GAP_BUCKETS",
    "TYPE_BUCKETS",
    "VALUE_BUCKETS",
    "Featurizer",
    "TokenFeatures",
    "TokenInputs",
    "Window",
    "collate",
]

TYPE_BUCKETS = len(EVENT_TYPES) + 1  # 0: unknown type
GAP_BUCKETS = 24
VALUE_BUCKETS = 32
CONTEXT_BUCKETS = 64
_TYPE_INDEX = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class TokenInputs:
    """Which inputs the encoder reads besides item ids (recorded in every checkpoint).

    The defaults are ids only, so a checkpoint written before these inputs existed loads as
    the model it was.
    """

    types: bool = False
    values: bool = False
    gaps: bool = False
    summary_tokens: int = 0
    context_fields: tuple[str, ...] = ()

    @property
    def needs_extras(self) -> bool:
        """True when an input reads the state's ``extras`` (value, context)."""
        return self.values or bool(self.context_fields)

    def describe(self) -> str:
        """Short label, e.g. ``ids+types+gaps+summary8``."""
        parts = ["ids"]
        parts += [name for name, on in (("types", self.types), ("values", self.values)) if on]
        parts += ["gaps"] if self.gaps else []
        parts += [f"summary{self.summary_tokens}"] if self.summary_tokens else []
        parts += [f"context({','.join(self.context_fields)})"] if self.context_fields else []
        return "+".join(parts)


@dataclass
class Window:
    """One encoder input row in plain Python (oldest event first); ``collate`` pads a batch."""

    items: list[int]  # 1-based item indices
    types: list[int] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    context: list[list[int]] = field(default_factory=list)  # [n][fields]
    # Per summary token (oldest slice first): item indices, weights, age bucket.
    summary: list[tuple[list[int], list[float], int]] = field(default_factory=list)


@dataclass
class TokenFeatures:
    """Padded side inputs aligned with the item tensor ``[B, L]``; None where switched off."""

    types: torch.Tensor | None = None  # [B, L]
    values: torch.Tensor | None = None  # [B, L]
    gaps: torch.Tensor | None = None  # [B, L]
    context: torch.Tensor | None = None  # [B, L, F]
    summary_items: torch.Tensor | None = None  # [B, S, K]
    summary_weights: torch.Tensor | None = None  # [B, S, K]
    summary_ages: torch.Tensor | None = None  # [B, S]

    def to(self, device: torch.device) -> TokenFeatures:
        moved = {k: v.to(device) if v is not None else None for k, v in vars(self).items()}
        return TokenFeatures(**moved)


def gap_bucket(seconds: float) -> int:
    """1 + floor(log2(1 + seconds)), capped; negative gaps (late events) count as 0 s."""
    return 1 + min(GAP_BUCKETS - 2, int(math.log2(1.0 + max(seconds, 0.0))))


def value_bucket(value: float | None) -> int:
    """0 when unknown, else 1 + floor(4 log2(1 + value)), capped (negatives count as 0)."""
    if value is None or not math.isfinite(value):
        return 0
    return 1 + min(VALUE_BUCKETS - 2, int(4.0 * math.log2(1.0 + max(value, 0.0))))


def context_bucket(name: str, value: object) -> int:
    """0 when the field is absent, else 1 + CRC-32 of ``name=value`` into the table."""
    if value is None:
        return 0
    return 1 + zlib.crc32(f"{name}={value}".encode()) % (CONTEXT_BUCKETS - 1)


class Featurizer:
    """Builds ``Window`` rows from user states for one item map and one ``TokenInputs``."""

    def __init__(self, index: Mapping[str, int], inputs: TokenInputs, length: int) -> None:
        self.index = index
        self.inputs = inputs
        self.length = length  # most recent events kept as tokens (the encoder's max_len)

    def window(self, state: UserState) -> Window:
        """The encoder input for ``state``; events with items outside the map are skipped."""
        recent = state.recent[-self.length :]
        offset = len(state.recent) - len(recent)
        win = Window(items=[])
        for j, (item, ts, kind) in enumerate(recent):
            idx = self.index.get(item)
            if idx is None:
                continue
            win.items.append(idx)
            if self.inputs.types:
                win.types.append(_TYPE_INDEX.get(kind, 0))
            if self.inputs.gaps:
                prev = offset + j - 1  # the state's previous event, if it still holds one
                win.gaps.append(gap_bucket((ts - state.recent[prev][1]) / 1000) if prev >= 0 else 0)
            if self.inputs.needs_extras:
                self._add_extras(win, state.extras.get((item, ts, kind)))
        if self.inputs.summary_tokens and recent:
            win.summary = self._summary(state, recent[0][1])
        return win

    def _add_extras(self, win: Window, extra: Extra | None) -> None:
        value, context = extra if extra is not None else (None, None)
        if self.inputs.values:
            win.values.append(value_bucket(value))
        if self.inputs.context_fields:
            ctx = context or {}
            win.context.append([context_bucket(f, ctx.get(f)) for f in self.inputs.context_fields])

    def _summary(self, state: UserState, first_ts: int) -> list[tuple[list[int], list[float], int]]:
        out = []
        for start, slice_items in state.summary[-self.inputs.summary_tokens :]:
            known = [(self.index[i], w) for i, w in slice_items.items() if i in self.index]
            if known:
                age = gap_bucket((first_ts - start) / 1000)
                out.append(([i for i, _ in known], [w for _, w in known], age))
        return out


def collate(windows: Sequence[Window], inputs: TokenInputs) -> tuple[torch.Tensor, TokenFeatures]:
    """Left-pad a batch: items [B, L] (L = longest window, at least 1) and its side inputs."""
    length = max(1, max((len(w.items) for w in windows), default=1))
    items = _pad([w.items for w in windows], length)  # [B, L]
    feats = TokenFeatures()
    if inputs.types:
        feats.types = _pad([w.types for w in windows], length)
    if inputs.values:
        feats.values = _pad([w.values for w in windows], length)
    if inputs.gaps:
        feats.gaps = _pad([w.gaps for w in windows], length)
    if inputs.context_fields:
        width = len(inputs.context_fields)
        ctx = torch.zeros((len(windows), length, width), dtype=torch.long)
        for row, w in enumerate(windows):
            if w.context:
                ctx[row, length - len(w.context) :] = torch.tensor(w.context, dtype=torch.long)
        feats.context = ctx  # [B, L, F]
    if inputs.summary_tokens:
        _collate_summary(windows, inputs.summary_tokens, feats)
    return items, feats


def _pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    out = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            out[r, length - len(row) :] = torch.tensor(row, dtype=torch.long)
    return out


def _collate_summary(windows: Sequence[Window], slots: int, feats: TokenFeatures) -> None:
    """Summary slots right-aligned (the newest slice next to the events), empty slots zero."""
    width = max(1, max((len(s[0]) for w in windows for s in w.summary), default=1))
    items = torch.zeros((len(windows), slots, width), dtype=torch.long)
    weights = torch.zeros((len(windows), slots, width), dtype=torch.float32)
    ages = torch.zeros((len(windows), slots), dtype=torch.long)
    for row, w in enumerate(windows):
        for k, (ids, ws, age) in enumerate(w.summary[-slots:]):
            slot = slots - min(slots, len(w.summary)) + k
            items[row, slot, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            weights[row, slot, : len(ws)] = torch.tensor(ws, dtype=torch.float32)
            ages[row, slot] = age
    feats.summary_items, feats.summary_weights, feats.summary_ages = items, weights, ages
