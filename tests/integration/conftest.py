"""Fixtures shared by the integration tests that serve a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.models.config import EncoderSettings, TrainSettings
from streamrec.models.pipeline import run_training
from streamrec.settings import Settings


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small encoders trained on MovieLens-100K with different seeds (distinct versions)."""
    folders = []
    for seed in (1, 2):
        settings = Settings(
            encoder=EncoderSettings(hidden_size=32, layers=1, heads=1, max_len=20),
            train=TrainSettings(epochs=1, seed=seed),
        )
        out = tmp_path_factory.mktemp(f"ckpt{seed}") / "model"
        run_training(settings, out=out, epochs=1, device="cpu", progress=False)
        folders.append(out)
    return folders
