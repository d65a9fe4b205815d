"""Warm start: a new encoder over a new item map begins with the checkpoint's weights, item
rows matched by id; a different architecture is refused; training keeps the start unless an
epoch beats it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrec.errors import ModelError
from streamrec.models.encoder.checkpoint import save_checkpoint
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.warm_start import ITEM_TABLE, warm_state

OLD_IDS = ["a", "b", "c", "d"]


def _saved(tmp_path: Path, hidden: int = 16) -> tuple[Path, SequenceEncoder]:
    torch.manual_seed(0)
    config = EncoderConfig(n_items=len(OLD_IDS), hidden_size=hidden, heads=2, inner_size=32)
    model = SequenceEncoder(config).eval()
    folder = save_checkpoint(
        tmp_path / "ck", model, OLD_IDS, torch.zeros(hidden), {}, {}, None, root=tmp_path
    )
    return folder, model


def test_item_rows_follow_their_ids_and_every_other_weight_is_copied(tmp_path: Path) -> None:
    folder, old = _saved(tmp_path)
    new_ids = ["c", "new", "a"]  # a window's map: another order, one item the model lacks
    torch.manual_seed(1)
    fresh = SequenceEncoder(EncoderConfig(n_items=3, hidden_size=16, heads=2, inner_size=32))
    untouched = fresh.state_dict()[ITEM_TABLE][2].clone()
    state = warm_state(folder, fresh, new_ids)
    table, old_table = state[ITEM_TABLE], old.state_dict()[ITEM_TABLE]
    assert torch.equal(table[1], old_table[3]) and torch.equal(table[3], old_table[1])
    assert torch.equal(table[2], untouched)  # "new" keeps its fresh initialisation
    for name, tensor in old.state_dict().items():
        if name != ITEM_TABLE:
            assert torch.equal(state[name], tensor), name
    fresh.load_state_dict(state)  # the shapes are the new model's


def test_a_different_architecture_is_refused_with_what_differs(tmp_path: Path) -> None:
    folder, _ = _saved(tmp_path, hidden=16)
    other = SequenceEncoder(EncoderConfig(n_items=4, hidden_size=32, heads=2, inner_size=32))
    with pytest.raises(ModelError, match="hidden_size differ"):
        warm_state(folder, other, OLD_IDS)
