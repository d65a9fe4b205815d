"""Warm start: a new encoder over a new item map begins with the checkpoint's weights, item
rows matched by id; a different architecture is refused; a warm start takes the checkpoint's
shape and inputs over the encoder settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from streamrec.errors import ModelError
from streamrec.models.config import EncoderSettings, TrainSettings
from streamrec.models.encoder.checkpoint import read_config, save_checkpoint, trained_until
from streamrec.models.encoder.inputs import TokenInputs
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.pipeline import run_training
from streamrec.models.encoder.warm_start import ITEM_TABLE, warm_config, warm_state
from streamrec.settings import DataSettings, Settings

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


def _saved_with_inputs(tmp_path: Path) -> Path:
    """A checkpoint whose encoder reads event types and time gaps besides the item ids."""
    config = EncoderConfig(n_items=len(OLD_IDS), hidden_size=16, heads=2, inner_size=32,
                           inputs=TokenInputs(types=True, gaps=True))  # fmt: skip
    return save_checkpoint(tmp_path / "ck", SequenceEncoder(config), OLD_IDS, torch.zeros(16),
                           {}, {}, None, root=tmp_path)  # fmt: skip


def test_a_warm_start_takes_the_shape_and_inputs_the_checkpoint_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings left unset are defaults (ids only, hidden 64): they say nothing about the
    served model, which a trainer started without them once dropped for an ids-only one."""
    folder = _saved_with_inputs(tmp_path)
    asked = EncoderSettings(dropout=0.1)
    config = warm_config(folder, EncoderConfig.from_settings(asked, 9), asked)
    assert config.inputs == TokenInputs(types=True, gaps=True)
    assert (config.hidden_size, config.inner_size, config.heads) == (16, 32, 2)
    assert config.n_items == 9 and config.dropout == 0.1  # the window's items, the training's
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_settings_that_ask_for_other_inputs_are_told_the_checkpoints_are_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _saved_with_inputs(tmp_path)
    asked = EncoderSettings(event_types=False, time_gaps=True, hidden_size=16)
    with caplog.at_level(logging.WARNING):
        config = warm_config(folder, EncoderConfig.from_settings(asked, 4), asked)
    assert config.inputs == TokenInputs(types=True, gaps=True)
    [line] = [r.getMessage() for r in caplog.records]
    assert "ids+types+gaps" in line and "event_types" in line
    assert "time_gaps" not in line and "hidden_size" not in line  # those agree


def test_training_from_a_checkpoint_keeps_its_inputs_when_the_settings_name_none(
    tmp_path: Path,
) -> None:
    """The trainer's path (models/encoder/pipeline.py): once a ModelError, then from scratch."""
    rows = [f"{u}\t{(u + t) % 15 + 1}\t4\t{1000 + t}" for u in range(1, 31) for t in range(8)]
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "u.data").write_text("\n".join(rows) + "\n")
    shape = {"hidden_size": 16, "heads": 2, "inner_size": 32, "max_len": 8}
    trained_with = EncoderSettings(**shape, event_types=True, time_gaps=True, device="cpu")
    served = _trained(tmp_path, data, "served", trained_with, None)["checkpoint"]
    warm = _trained(tmp_path, data, "warm", EncoderSettings(device="cpu"), Path(served))
    assert warm["inputs"] == "ids+types+gaps"
    # judged on the validation targets newer than what the served model learned (training.py)
    assert warm["valid_after_ms"] == trained_until(Path(served)) is not None
    _, config = read_config(Path(warm["checkpoint"]))
    assert (config.hidden_size, config.max_len) == (16, 8)


def _trained(
    tmp_path: Path, data: Path, name: str, encoder: EncoderSettings, init: Path | None
) -> dict[str, Any]:
    settings = Settings(encoder=encoder, train=TrainSettings(epochs=1, seed=1),
                        data=DataSettings(cache_dir=tmp_path / "cache"))  # fmt: skip
    return run_training(settings, dataset=data, out=tmp_path / name, progress=False,
                        fit_text=False, init=init, explain_inputs=False)  # fmt: skip
