"""The learned serving figures survive a restart: saved, loaded, and never fatal when broken."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from streamrec.stream.config import FusionSettings
from streamrec.stream.fusion import FusionLearner
from streamrec.stream.ranker import FEATURES
from streamrec.stream.serving_memory import ServingMemory

SETTINGS = FusionSettings(warmup=20, half_life=500)
RANKER = {"weights": {name: 0.5 + n for n, name in enumerate(FEATURES)}, "updates": 12}


def _trained() -> FusionLearner:
    learner, rng = FusionLearner(SETTINGS, 10), random.Random(0)
    items = [f"i{n}" for n in range(30)]
    for n in range(100):
        user = f"u{n % 7}"
        learner.remember(user, {"covisitation": items, "trending": rng.sample(items, 30)})
        learner.observe(user, items[n % 3])
    return learner


class _Ranker:
    """The model service's two ranker calls, recorded."""

    def __init__(self) -> None:
        self.restored: list[tuple[Mapping[str, float], int]] = []

    def figures(self) -> Mapping[str, object]:
        return RANKER

    def restore(self, weights: Mapping[str, float], updates: int) -> None:
        self.restored.append((weights, updates))


def test_a_new_worker_continues_from_the_saved_figures(tmp_path: Path) -> None:
    path = tmp_path / "serving_learned.json"
    old = _trained()
    ServingMemory(path, old, (_Ranker().figures, _Ranker().restore), 30.0).save()
    fresh, ranker = FusionLearner(SETTINGS, 10), _Ranker()
    ServingMemory(path, fresh, (ranker.figures, ranker.restore), 30.0).load()
    assert dict(fresh.weights) == dict(old.weights) and fresh.power == old.power
    assert fresh.observations == old.observations == 100
    assert ranker.restored == [(RANKER["weights"], 12)]


def test_a_heuristic_worker_keeps_the_fusion_figures_only(tmp_path: Path) -> None:
    path = tmp_path / "serving_learned.json"
    ServingMemory(path, _trained(), None, 30.0).save()
    assert json.loads(path.read_text())["ranker"] is None
    fresh, ranker = FusionLearner(SETTINGS, 10), _Ranker()
    ServingMemory(path, fresh, (ranker.figures, ranker.restore), 30.0).load()
    assert fresh.observations == 100 and ranker.restored == []


@pytest.mark.parametrize(
    "body",
    ["{not json", '{"format": 99, "fusion": {}}', '{"format": 1}', '{"format": 1, "fusion": []}'],
)
def test_an_unusable_file_is_logged_and_the_worker_learns_afresh(
    tmp_path: Path, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "serving_learned.json"
    path.write_text(body)
    fresh, ranker = FusionLearner(SETTINGS, 10), _Ranker()
    with caplog.at_level(logging.ERROR):
        ServingMemory(path, fresh, (ranker.figures, ranker.restore), 30.0).load()
    assert "learning afresh" in caplog.text
    assert fresh.observations == 0 and dict(fresh.weights) == {} and ranker.restored == []


def test_no_file_is_a_fresh_start(tmp_path: Path) -> None:
    fresh = FusionLearner(SETTINGS, 10)
    ServingMemory(tmp_path / "none.json", fresh, None, 30.0).load()
    assert fresh.observations == 0


def test_the_running_memory_saves_on_its_interval_and_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "serving_learned.json"
    learner = _trained()
    memory = ServingMemory(path, learner, None, 0.01)

    async def run() -> None:
        task = asyncio.ensure_future(memory.run())
        while not path.exists():  # the first interval's save
            await asyncio.sleep(0.01)
        learner.observations = 123  # learned meanwhile: the stop must save it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert json.loads(path.read_text())["fusion"]["observations"] == 123


def test_a_failed_save_is_logged_and_the_memory_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    memory = ServingMemory(blocked / "serving_learned.json", _trained(), None, 0.01)

    async def run() -> None:
        task = asyncio.ensure_future(memory.run())
        while "not saved" not in caplog.text:
            await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
