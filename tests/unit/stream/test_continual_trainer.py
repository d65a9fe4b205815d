"""The continual trainer's cycle with stand-in parts: what is held out, what is announced,
what is kept on disk, which model is judged; and the held-out scoring's gain."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamrec.errors import BrokerError, DataError, ModelError
from streamrec.stream.config import TrainerSettings
from streamrec.stream.contract import Event, Item
from streamrec.stream.trainer import ContinualTrainer
from streamrec.stream.trainer_metrics import TrainerCollector
from streamrec.stream.trainer_process import _gain

SETTINGS = TrainerSettings(
    window_events=100, holdout_events=10, every_events=30, keep_checkpoints=2
)


def _event(n: int) -> Event:
    return Event(event_id=f"e{n}", user_id=f"u{n % 7}", item_id=f"i{n % 13}", type="view",
                 ts=1_700_000_000_000 + n)  # fmt: skip


class Parts:
    """Stand-in train/score/announce: candidate n scores ``scores[n]``; the served one 0.5."""

    def __init__(self, scores: list[float | None]) -> None:
        self.scores = scores
        self.trained: list[tuple[int, int]] = []  # (trained on, held out) sizes seen by score
        self.announced: list[Path] = []
        self.starts: list[Path | None] = []  # the checkpoint each candidate started from

    def train(
        self, events: Sequence[Event], catalog: Sequence[Item], out: Path, start: Path | None
    ) -> Path | None:
        self.starts.append(start)
        if self.scores[len(self.trained)] is None:  # nothing beat the start: no candidate
            self.trained.append((len(events), -1))
            return None
        checkpoint = out / "model"
        checkpoint.mkdir(parents=True)
        (checkpoint / "n").write_text(str(len(self.trained)))
        self.trained.append((len(events), -1))
        return checkpoint

    def score(self, checkpoint: Path, history: Sequence[Event], held: Sequence[Event]) -> float:
        self.trained[-1] = (len(history), len(held))
        marker = checkpoint / "n"
        return self.scores[int(marker.read_text())] if marker.is_file() else 0.5

    async def announce(self, checkpoint: Path) -> str:
        self.announced.append(checkpoint)
        return checkpoint.parent.name


def _trainer(tmp_path: Path, scores: list[float | None]) -> tuple[ContinualTrainer, Parts]:
    parts = Parts(scores)
    served = tmp_path / "served"
    served.mkdir()
    trainer = ContinualTrainer(
        SETTINGS, parts.train, parts.score, parts.announce, tmp_path / "t", served=served
    )
    trainer.folder.mkdir()
    return trainer, parts


def test_a_cycle_holds_out_the_newest_events_and_announces_a_candidate_that_does_not_regress(
    tmp_path: Path,
) -> None:
    trainer, parts = _trainer(tmp_path, [0.6])
    for n in range(150):  # the window keeps the newest 100
        trainer.add(_event(n))
    assert trainer.due(0.0)
    result = asyncio.run(trainer.cycle())
    assert parts.trained == [(90, 10)]
    assert result.announced is not None and parts.announced == [trainer.served]
    assert result.candidate_ndcg == 0.6 and result.served_ndcg == 0.5
    assert result.outcome == "announced"
    assert not trainer.due(0.0)  # the counter restarted


def test_a_regressing_candidate_is_not_announced_and_not_kept(tmp_path: Path) -> None:
    trainer, parts = _trainer(tmp_path, [0.4])
    served = trainer.served
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())
    assert result.announced is None and parts.announced == [] and trainer.served == served
    assert result.outcome == "regressed" and trainer.outcomes["regressed"] == 1
    assert list(trainer.folder.glob("candidate-*")) == []


def test_no_candidate_when_training_found_nothing_better_than_the_served_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer, parts = _trainer(tmp_path, [None])
    served = trainer.served
    for n in range(50):
        trainer.add(_event(n))
    with caplog.at_level(logging.INFO):
        result = asyncio.run(trainer.cycle())
    assert result.announced is None and result.candidate_ndcg is None and parts.announced == []
    assert "no candidate: no epoch beat the served weights" in caplog.text  # says why
    assert trainer.served == served and list(trainer.folder.glob("candidate-*")) == []


def test_old_candidates_are_pruned_but_the_served_one_stays(tmp_path: Path) -> None:
    trainer, parts = _trainer(tmp_path, [0.6, 0.7, 0.1, 0.8])
    for cycle in range(4):
        for n in range(40):
            trainer.add(_event(cycle * 40 + n))
        asyncio.run(trainer.cycle())
    kept = sorted(p.name for p in trainer.folder.glob("candidate-*"))
    assert len(kept) == SETTINGS.keep_checkpoints
    assert trainer.served is not None and trainer.served.is_dir()
    assert len(parts.announced) == 3  # the third candidate (0.1) regressed
    # each candidate is fine-tuned from the model served when its cycle began
    first = tmp_path / "served"
    assert parts.starts == [first, parts.announced[0], parts.announced[1], parts.announced[1]]


def test_a_cycle_is_due_after_enough_events_or_time_with_some() -> None:
    trainer = ContinualTrainer(SETTINGS, Parts([]).train, Parts([]).score, Parts([]).announce,
                               Path("."))  # fmt: skip
    for n in range(SETTINGS.holdout_events + 1):
        trainer.add(_event(n))
    assert not trainer.due(0.0)
    assert trainer.due(SETTINGS.every_s)


def test_only_events_younger_than_the_served_models_data_count_towards_a_cycle(
    tmp_path: Path,
) -> None:
    horizons: dict[Path, int | None] = {}
    parts = Parts([0.6])
    served = tmp_path / "served"
    horizons[served] = _event(99).ts  # the served model was trained on events 0..99

    def horizon_of(checkpoint: Path) -> int | None:
        return horizons.get(checkpoint, _event(200).ts)

    trainer = ContinualTrainer(SETTINGS, parts.train, parts.score, parts.announce,
                               tmp_path / "t", served=served, horizon_of=horizon_of)  # fmt: skip
    trainer.folder.mkdir()
    for n in range(100):  # a full window of what the model already learned: nothing to do
        trainer.add(_event(n))
    assert not trainer.due(SETTINGS.every_s) and trainer.since_cycle == 0
    for n in range(100, 100 + SETTINGS.every_events):
        trainer.add(_event(n))
    assert trainer.due(0.0)
    asyncio.run(trainer.cycle())
    assert trainer.horizon == _event(200).ts  # now the candidate's horizon counts
    for n in range(130, 201):
        trainer.add(_event(n))
    assert trainer.since_cycle == 0
    trainer.add(_event(201))
    assert trainer.since_cycle == 1


def test_gain_is_the_ndcg_of_the_target_among_unseen_items() -> None:
    index = {f"i{n}": n for n in range(12)}
    scores = np.arange(12, dtype=np.float64)[::-1].copy()  # i0 best, i11 worst
    assert _gain(scores, index, ["i0"], "i1") == 1.0  # i0 seen, so i1 ranks first
    assert _gain(scores, index, [], "i1") == pytest.approx(1 / math.log2(3))
    assert _gain(scores, index, [], "i11") == 0.0  # rank 12: outside the top 10
    assert _gain(scores, index, [], "unknown") == 0.0


def test_a_re_sent_event_is_not_taken_twice(tmp_path: Path) -> None:
    """Twice in the held-out part, an event scores as a seen item: a replay sent twice once
    made both models score 0.0 and the gate let anything through."""
    trainer, _ = _trainer(tmp_path, [])
    for n in [*range(40), *range(40)]:
        trainer.add(_event(n))
    assert len(trainer.window) == 40 and trainer.since_cycle == 40
    for n in range(40, 140):  # events 0-39 leave the window: their ids may come back
        trainer.add(_event(n))
    trainer.add(_event(0))
    assert trainer.window[-1].event_id == "e0" and len(trainer.ids) == len(trainer.window)


def test_an_event_stamped_ahead_of_the_clock_does_not_make_later_events_old(
    tmp_path: Path,
) -> None:
    day_ahead = int(time.time() * 1000) + 20 * 3600 * 1000
    parts = Parts([])
    trainer = ContinualTrainer(SETTINGS, parts.train, parts.score, parts.announce, tmp_path,
                               served=tmp_path, horizon_of=lambda _: day_ahead)  # fmt: skip
    assert trainer.horizon is not None and trainer.horizon <= time.time() * 1000
    now = Event(event_id="late", user_id="u", item_id="i", type="view",
                ts=int(time.time() * 1000) + 1_000)  # fmt: skip
    trainer.add(now)
    assert trainer.since_cycle == 1


def test_a_candidate_is_not_announced_when_no_held_out_event_could_be_scored(
    tmp_path: Path,
) -> None:
    trainer, parts = _trainer(tmp_path, [0.6])
    trainer.score = lambda checkpoint, history, held: None
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())
    assert result.announced is None and parts.announced == []
    assert list(trainer.folder.glob("candidate-*")) == []


def test_a_failed_training_keeps_the_served_model_and_the_trainer_running(
    tmp_path: Path,
) -> None:
    trainer, _ = _trainer(tmp_path, [0.6])
    served = trainer.served

    def broken(*args: object) -> Path | None:
        raise DataError("window.inter:602: expected 7 tab-separated fields, got 2")

    trainer.train = broken
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())
    assert result.candidate_ndcg is None and result.announced is None
    assert trainer.served == served and list(trainer.folder.glob("candidate-*")) == []


def test_the_held_out_part_must_leave_something_to_train_on() -> None:
    with pytest.raises(ValueError, match=r"holdout_events .* must be below"):
        TrainerSettings(window_events=1_000, holdout_events=1_000)


def test_a_failed_announcement_or_an_unreadable_served_model_never_ends_the_trainer(
    tmp_path: Path,
) -> None:
    trainer, parts = _trainer(tmp_path, [0.6, 0.7])
    served = trainer.served

    async def broker_down(checkpoint: Path) -> str:
        raise BrokerError("kafka down")

    trainer.announce = broker_down
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())  # the candidate beat the served model, then failed
    assert result.announced is None and trainer.served == served
    assert list(trainer.folder.glob("candidate-*")) == []

    trainer.announce = parts.announce
    score = parts.score

    def unreadable_served(
        checkpoint: Path, history: Sequence[Event], held: Sequence[Event]
    ) -> float | None:
        if checkpoint == served:
            raise ModelError("checkpoint file item_ids.json is missing")
        return score(checkpoint, history, held)

    trainer.score = unreadable_served
    result = asyncio.run(trainer.cycle())
    assert result.served_ndcg is None and result.announced is not None  # a readable one wins


def test_a_model_published_meanwhile_is_judged_and_fine_tuned_instead_of_the_trainers_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``streamrec publish-model`` beside a running trainer: its next candidate starts from the
    published model and is compared with it. Once, the trainer kept judging and fine-tuning
    its own last candidate, and announcing the next one overrode the publish."""
    trainer, parts = _trainer(tmp_path, [0.6, 0.7, 0.8])
    assert trainer.served is not None
    control = [trainer.served.resolve()]  # the newest loadable announcement last

    async def newest(served: Path | None) -> Path | None:
        return control[-1]

    async def announce(checkpoint: Path) -> str:
        control.append(checkpoint.resolve())  # as announce_model records it
        return await parts.announce(checkpoint)

    trainer.newest, trainer.announce = newest, announce
    own = []
    for cycle in range(3):
        if cycle == 1:  # someone publishes a model between the first two cycles
            published = tmp_path / "published"
            published.mkdir()
            control.append(published)
        for n in range(40):
            trainer.add(_event(cycle * 40 + n))
        with caplog.at_level(logging.INFO, logger="streamrec.stream.trainer"):
            own.append(asyncio.run(trainer.cycle()))
    assert parts.starts == [tmp_path / "served", published, parts.announced[1]]
    assert own[1].served_ndcg == 0.5  # the published model's score, not candidate 0's 0.6
    assert [o.announced is not None for o in own] == [True, True, True]
    switches = [r.getMessage() for r in caplog.records if "not by this trainer" in r.msg]
    assert len(switches) == 1 and str(published) in switches[0]


def test_the_served_model_is_kept_when_nothing_announced_loads(tmp_path: Path) -> None:
    trainer, parts = _trainer(tmp_path, [0.6])

    async def nothing(served: Path | None) -> Path | None:
        return None

    trainer.newest = nothing
    for n in range(50):
        trainer.add(_event(n))
    asyncio.run(trainer.cycle())
    assert parts.starts == [tmp_path / "served"]


def test_a_control_topic_that_cannot_be_read_keeps_the_served_model_for_the_cycle(
    tmp_path: Path,
) -> None:
    trainer, parts = _trainer(tmp_path, [0.6])

    async def unreadable(served: Path | None) -> Path | None:
        raise ConnectionError("broker unreachable")

    trainer.newest = unreadable
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())
    assert parts.starts == [tmp_path / "served"] and result.announced is not None


def test_a_candidate_that_ranks_no_held_out_event_is_not_announced(tmp_path: Path) -> None:
    # Held-out events that are all repeats or new items scored both models 0.0, and the tie
    # passed as "no regression": a candidate went out on no evidence.
    trainer, parts = _trainer(tmp_path, [0.0])
    served = trainer.served
    for n in range(50):
        trainer.add(_event(n))
    result = asyncio.run(trainer.cycle())
    assert result.announced is None and parts.announced == [] and trainer.served == served


def test_repeats_are_not_scored_and_nothing_scoreable_is_none(tmp_path: Path) -> None:
    from model_doubles import small_checkpoint

    from streamrec.stream.trainer_process import next_item_ndcg

    checkpoint = small_checkpoint(tmp_path)

    def event(n: int, item: str) -> Event:
        return Event(event_id=f"r{n}", user_id="u1", item_id=item, type="view",
                     ts=1_700_000_000_000 + n)  # fmt: skip

    history = [event(0, "i1"), event(1, "i2")]
    assert next_item_ndcg(checkpoint, history, [event(2, "i1"), event(3, "i2")]) is None
    # the repeat is history for what follows it, not a target: one target, i3, after i1 i2 i1
    alone = next_item_ndcg(checkpoint, [*history, event(2, "i1")], [event(3, "i3")])
    scored = next_item_ndcg(checkpoint, history, [event(2, "i1"), event(3, "i3")])
    assert scored is not None and scored == alone


def test_the_trainers_metrics_count_cycles_by_outcome_and_show_the_last_cycle(
    tmp_path: Path,
) -> None:
    trainer, _ = _trainer(tmp_path, [0.6, 0.4, None])
    registry = CollectorRegistry()
    registry.register(TrainerCollector(trainer))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"streamrec_trainer_{name}", labels)

    assert value("cycles_total", outcome="announced") == 0
    assert value("heldout_ndcg", model="candidate") is None  # no cycle yet
    for n in range(50):
        trainer.add(_event(n))
    trainer.add(_event(0))  # re-sent: read, not taken
    asyncio.run(trainer.cycle())
    assert value("heldout_ndcg", model="candidate") == 0.6
    assert value("heldout_ndcg", model="served") == 0.5
    asyncio.run(trainer.cycle())
    asyncio.run(trainer.cycle())
    assert [value("cycles_total", outcome=o) for o in ("announced", "regressed")] == [1, 1]
    assert value("cycles_total", outcome="no_candidate") == 1
    assert value("heldout_ndcg", model="candidate") is None  # the last cycle had none
    assert value("events_read_total") == 51
    trainer.polled_at = time.monotonic() - 100  # the read loop last polled 100 s ago
    poll_age, cycle_age = value("poll_age_seconds"), value("last_cycle_age_seconds")
    assert poll_age is not None and 100 <= poll_age < 110
    assert cycle_age is not None and 0 <= cycle_age < 10  # the cycles just ran
