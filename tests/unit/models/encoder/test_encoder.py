"""Sequence encoder: shapes, causality, padding, configuration errors."""

from __future__ import annotations

import pytest
import torch

from streamrec.errors import ModelError
from streamrec.models.encoder.network import (
    EncoderConfig,
    SequenceEncoder,
    left_pad,
    safe_batch_size,
)


def _model(**kw: object) -> SequenceEncoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(
        **{"n_items": 30, "hidden_size": 16, "heads": 2, "inner_size": 32, "max_len": 12, **kw}
    )  # type: ignore[arg-type]
    return SequenceEncoder(cfg).eval()


def test_shapes_and_tied_scores() -> None:
    model = _model()
    items = left_pad([[1, 2, 3], [4, 5, 6, 7, 8]], 12)  # [2, 5]
    hidden = model(items)
    assert hidden.shape == (2, 5, 16)
    assert model.user_vectors(items).shape == (2, 16)
    assert model.scores(hidden).shape == (2, 5, 30)
    assert torch.allclose(model.scores(hidden[:, -1]), hidden[:, -1] @ model.item_emb.weight[1:].T)


def test_later_item_cannot_change_earlier_positions() -> None:
    model = _model()
    items = left_pad([[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]], 12)  # row 0 has two pads
    changed = items.clone()
    changed[:, -1] = 29
    before, after = model(items), model(changed)
    assert torch.allclose(before[0, 2:-1], after[0, 2:-1], atol=1e-6)
    assert torch.allclose(before[1, :-1], after[1, :-1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_left_padding_does_not_change_the_user_vector() -> None:
    model = _model()
    alone = model.user_vectors(torch.tensor([[3, 1, 4]]))
    padded = model.user_vectors(left_pad([[3, 1, 4], [1, 5, 9, 2, 6, 5, 3]], 12))[0]
    assert torch.allclose(alone[0], padded, atol=1e-5)
    assert torch.isfinite(model(left_pad([[], [1]], 12))).all()  # all-pad rows stay finite


def test_left_pad_keeps_most_recent_items() -> None:
    assert left_pad([[1, 2, 3, 4], [5]], 3).tolist() == [[2, 3, 4], [0, 0, 5]]
    assert left_pad([[]], 3).tolist() == [[0]]


def test_too_long_input_and_bad_heads_are_model_errors() -> None:
    with pytest.raises(ModelError, match="exceeds max_len=12"):
        _model()(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ModelError, match="must divide hidden_size"):
        EncoderConfig(n_items=3, hidden_size=10, heads=3)
    with pytest.raises(ModelError, match="unknown keys"):
        EncoderConfig.from_dict({"n_items": 3, "rotary": True})


def test_safe_batch_size_caps_attention_elements() -> None:
    assert safe_batch_size(64, 2, 50) == 64
    capped = safe_batch_size(10**9, 4, 200)
    assert capped * 4 * 200 * 200 < 2**31 <= (capped + 1) * 4 * 200 * 200
