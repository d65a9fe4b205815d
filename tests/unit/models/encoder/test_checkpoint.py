"""Checkpoint round trip, inference API, corrupt folders, int8 quantisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from streamrec.errors import ModelError
from streamrec.models.encoder.checkpoint import (
    InferenceEncoder,
    load_encoder,
    load_projection,
    save_checkpoint,
    trained_until,
    verify_checkpoint,
)
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.quantize import agreement, quantize_int8

IDS = [f"i{n}" for n in range(1, 21)]


def _saved(tmp_path: Path, projection: bool = True) -> tuple[SequenceEncoder, Path]:
    torch.manual_seed(0)
    model = SequenceEncoder(
        EncoderConfig(n_items=20, hidden_size=16, heads=2, inner_size=32, max_len=6)
    ).eval()
    proj = (torch.randn(4, 16), torch.randn(16)) if projection else None
    folder = save_checkpoint(
        tmp_path / "ck",
        model,
        IDS,
        torch.full((16,), 0.5),
        {"lr": 1e-3},
        {"test": {"hr@10": 0.1}},
        proj,
    )
    return model, folder


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "item_ids.json",
        "metrics.json",
        "model.safetensors",
        "projection.safetensors",
    ]
    loaded, config, ids, fallback = load_encoder(folder)
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    assert torch.equal(model(items), loaded(items))
    assert ids == IDS and config["model_version"].startswith("enc-")
    assert torch.equal(fallback, torch.full((16,), 0.5))


def test_inference_api(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    enc = InferenceEncoder.load(folder, device="cpu", batch_size=2)
    assert enc.item_ids == IDS and enc.device.type == "cpu"
    assert enc.item_vectors().shape == (20, 16) and enc.item_vectors().dtype == np.float32
    vecs = enc.encode([["i3", "nope", "i4"], [], ["unknown"], ["i3", "i4"]])
    assert vecs.shape == (4, 16) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs[0], vecs[3], atol=1e-6)  # unknown ids skipped
    np.testing.assert_allclose(vecs[1], 0.5)  # empty -> fallback user vector
    np.testing.assert_allclose(vecs[2], 0.5)
    with torch.no_grad():
        direct = model.user_vectors(torch.tensor([[3, 4]]))[0].numpy()
    np.testing.assert_allclose(vecs[3], direct, atol=1e-5)
    assert enc.text_vectors_to_item_space(np.ones((3, 4), np.float32)).shape == (3, 16)
    with pytest.raises(ModelError, match="expects"):
        enc.text_vectors_to_item_space(np.ones((3, 5), np.float32))


def test_missing_projection_and_corrupt_files(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path, projection=False)
    with pytest.raises(ModelError, match="no text projection"):
        InferenceEncoder.load(folder, "cpu").text_vectors_to_item_space(np.ones((1, 4)))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_encoder(folder)
    (folder / "config.json").write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(ModelError, match="this streamrec reads"):
        load_encoder(folder)
    with pytest.raises(ModelError, match=r"directory .*absent does not exist \(check the path\)"):
        load_encoder(tmp_path / "absent")  # a typo in the path, not a file to retrain
    (folder / "config.json").unlink()
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        load_encoder(folder)


def test_a_checkpoint_is_verified_before_it_is_announced(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert verify_checkpoint(folder) == config["model_version"]
    with pytest.raises(ModelError, match="not a checkpoint folder"):
        verify_checkpoint(tmp_path / "absent")
    (folder / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ModelError, match="not an object"):
        verify_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**config, "encoder": {"n_items": "x"}}))
    with pytest.raises(ModelError, match="no usable encoder config"):
        verify_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**config, "model_version": ""}))
    with pytest.raises(ModelError, match="names no model_version"):
        verify_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated in a copy
    with pytest.raises(ModelError, match="unreadable"):
        verify_checkpoint(folder)


def test_trained_until_reads_the_recorded_horizon_and_none_when_absent(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    assert trained_until(folder) is None  # a checkpoint from before the horizon was recorded
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "trained_until_ms": 1_700_000}))
    assert trained_until(folder) == 1_700_000
    (folder / "metrics.json").write_text("{broken")
    assert trained_until(folder) is None
    assert trained_until(tmp_path / "absent") is None


def test_int8_stays_close_to_fp32(tmp_path: Path) -> None:
    model, _ = _saved(tmp_path)
    q = quantize_int8(model)
    items = torch.randint(1, 21, (32, 6))
    with torch.no_grad():
        ref, out = model.user_vectors(items).numpy(), q.user_vectors(items).numpy()
    m = agreement(ref, out, model.item_vectors().detach().numpy())
    assert m["cosine"] > 0.98
    assert m["top10_overlap"] > 0.8


def test_a_projection_from_before_calibration_is_loaded_with_a_warning_to_retrain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Such a projection lets the items it cold-starts crowd out trained ones (a new-user
    pass: one new item first in 77 of 200 slates); only retraining fixes it."""
    _, folder = _saved(tmp_path)
    with caplog.at_level("WARNING"):
        assert load_projection(folder) is not None
    assert not caplog.records  # saved now: on the trained items' scale
    old = {"weight": torch.randn(4, 16), "bias": torch.randn(16)}
    save_file(old, str(folder / "projection.safetensors"))  # no scale mark, as before
    with caplog.at_level("WARNING"):
        loaded = load_projection(folder)
    assert loaded is not None and torch.equal(loaded[0], old["weight"])  # still served
    assert "predates cold-start calibration" in caplog.text and "retrain" in caplog.text
