"""Fixtures shared by the integration tests that serve a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.datasets import load_dataset
from streamrec.models.config import EncoderSettings, TrainSettings
from streamrec.models.encoder.pipeline import run_training
from streamrec.settings import Settings


def _subset(tmp: Path, users: int) -> Path:
    """The first ``users`` users of MovieLens-100K as RecBole atomic files (a small, fast set)."""
    dataset = load_dataset(None)
    keep = sorted({it.user_id for it in dataset.interactions}, key=int)[:users]
    chosen = set(keep)
    inter = tmp / "ml-subset.inter"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [
        f"{i.user_id}\t{i.item_id}\t{i.rating}\t{i.ts}"
        for i in dataset.interactions
        if i.user_id in chosen
    ]
    inter.write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [
        f"{i.item_id}\t{i.title}\t{i.year or ''}\t{' '.join(i.genres)}"
        for i in dataset.items.values()
    ]
    (tmp / "ml-subset.item").write_text("\n".join(items) + "\n")
    return inter


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small encoders (different seeds, so distinct versions) trained for one epoch on 200
    MovieLens-100K users, with the text projection for cold start."""
    data = _subset(tmp_path_factory.mktemp("data"), 200)
    folders = []
    for seed in (1, 2):
        settings = Settings(
            encoder=EncoderSettings(hidden_size=32, layers=1, heads=1, max_len=20),
            train=TrainSettings(epochs=1, seed=seed),
        )
        out = tmp_path_factory.mktemp(f"ckpt{seed}") / "model"
        run_training(settings, dataset=data, out=out, epochs=1, device="cpu", progress=False)
        folders.append(out)
    return folders
