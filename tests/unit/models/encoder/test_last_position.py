"""Serving computes the final layer for the last position only: the user vectors must equal
the full forward pass's last position for every input the encoder can read."""

from __future__ import annotations

import pytest
import torch

from streamrec.models.encoder.inputs import Featurizer, TokenInputs, collate
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder, left_pad
from streamrec.stream.config import StateSettings
from streamrec.stream.contract import Event
from streamrec.stream.state import UserState, apply_event

IDS = [str(i) for i in range(1, 21)]
INDEX = {item: i + 1 for i, item in enumerate(IDS)}
STATE = StateSettings(recent_length=8, summary_slices=3, summary_items=4, summary_slice_s=60)
RICH = TokenInputs(types=True, gaps=True, summary_tokens=3)
IDS_ONLY = TokenInputs()


def _model(layers: int, inputs: TokenInputs = IDS_ONLY, seed: int = 0) -> SequenceEncoder:
    torch.manual_seed(seed)
    config = EncoderConfig(
        n_items=20, hidden_size=16, heads=4, inner_size=24, layers=layers, max_len=8, inputs=inputs
    )
    model = SequenceEncoder(config)
    for parameter in model.parameters():  # not the near-zero initialiser: every path counts
        torch.nn.init.normal_(parameter, std=0.5)
    return model.eval()


def _state(n_events: int, seed: int) -> UserState:
    state = UserState()
    for n in range(n_events):
        kind = "purchase" if (n + seed) % 3 == 0 else "view"
        item = IDS[(n * 7 + seed) % 20]
        ts = 1_700_000_000_000 + n * 50_000
        event = Event(event_id=f"e{n}", user_id="u", item_id=item, type=kind, ts=ts)  # type: ignore[arg-type]
        apply_event(state, event, STATE)
    return state


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_ids_only_user_vectors_equal_the_full_forward(layers: int) -> None:
    model = _model(layers)
    items = left_pad([[3, 1, 4, 1, 5, 9, 2, 6], [7], [2, 7, 1], []], 8)  # with an all-pad row
    with torch.no_grad():
        full = model(items)[:, -1]
        fast = model.user_vectors(items)
    assert fast.shape == full.shape == (4, 16)
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)


def test_user_vectors_with_types_gaps_and_summary_tokens_equal_the_full_forward() -> None:
    model = _model(2, RICH, seed=1)
    featurizer = Featurizer(INDEX, RICH, 8)
    windows = [featurizer.window(_state(n, seed=n)) for n in (1, 4, 9, 20, 30)]
    items, features = collate(windows, RICH)
    assert features.summary_items is not None  # the long histories have summary slices
    with torch.no_grad():
        full = model(items, features)[:, -1]
        fast = model.user_vectors(items, features)
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)


def test_training_mode_takes_the_full_forward_so_gradients_reach_every_layer() -> None:
    model = _model(2).train()
    items = left_pad([[1, 2, 3], [4, 5]], 8)
    model.user_vectors(items).sum().backward()
    first_layer = model.backbone.encoder.layer[0].attention.self.query.weight
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
