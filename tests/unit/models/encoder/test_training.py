"""Training loop on tiny synthetic data: loss falls, examples are built right, sampled softmax."""

from __future__ import annotations

import itertools
import random
import time
from typing import Literal

import pytest
import torch
from encoder_doubles import BASE, window_split

from streamrec.datasets import Dataset, Interaction, Item
from streamrec.models.encoder import training
from streamrec.models.encoder.evaluation import evaluate_scorer
from streamrec.models.encoder.inputs import TokenInputs
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.encoder.pipeline import preset_configs
from streamrec.models.encoder.training import (
    MIN_FRESH_ROWS,
    TrainConfig,
    batches,
    fresh_rows,
    full_softmax_loss,
    model_scorer,
    popularity_log_q,
    sampled_softmax_loss,
    seen_items,
    train,
    validate,
)
from streamrec.models.encoder.windows import WindowSplit
from streamrec.settings import Settings
from streamrec.stream.config import StateSettings
from streamrec.stream.contract import EVENT_TYPES


def synthetic(users: int = 40, items: int = 12, length: int = 10) -> Dataset:
    """Each user walks the catalog in steps of +1 from a random start: a learnable order."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for u in range(users):
        start = int(torch.randint(0, items, (1,), generator=gen))
        rows += [
            Interaction(f"u{u}", str((start + t) % items + 1), 1.0, BASE + t) for t in range(length)
        ]
    rows.sort(key=lambda r: r.ts)
    return Dataset(
        "walk", rows, {str(i): Item(str(i), f"m{i}", (), None) for i in range(1, items + 1)}
    )


def _rows(scheme: Literal["window", "prefix"], max_len: int) -> list[tuple[list[int], list[int]]]:
    # One user of 7 events: 5 train, then validation and test.
    one = [Interaction("u", str(i), 1.0, BASE + i) for i in range(1, 8)]
    ds = Dataset("one", one, {str(i): Item(str(i), "", (), None) for i in range(1, 8)})
    return [(e.window.items, e.targets) for e in window_split(ds, max_len, scheme=scheme).examples]


def test_window_and_prefix_examples() -> None:
    # Windows every max_len events from the end, a target per position; every pair once.
    assert _rows("window", 2) == [([1, 2], [2, 3]), ([3, 4], [4, 5])]
    assert _rows("prefix", 2) == [([1], [2]), ([1, 2], [3]), ([2, 3], [4]), ([3, 4], [5])]


def _dense(items: list[list[int]], targets: list[list[int]], n_items: int) -> list[list[bool]]:
    """The first row's seen items per target position, as a [T, N] grid."""
    grid = [[False] * n_items for _ in targets[0]]
    for b, t, item in zip(*seen_items(torch.tensor(items), torch.tensor(targets)), strict=True):
        if b == 0:
            grid[int(t)][int(item) - 1] = True
    return grid


def test_seen_items_are_the_rows_items_up_to_each_target_but_the_target() -> None:
    # A padded window (targets at every position) in which item 3 comes back as a target.
    assert _dense([[0, 3, 1, 3]], [[0, 1, 3, 2]], 3) == [
        [False, False, False],  # padding sees nothing
        [False, False, True],  # after 3
        [True, False, False],  # after 3, 1: 3 is the target, so it stays in the softmax
        [True, False, True],  # after 3, 1, 3
    ]
    # A prefix row: one target, after the whole row; a second row does not leak into it.
    assert _dense([[2, 1, 3], [0, 0, 4]], [[1], [2]], 4) == [[False, True, True, False]]


def test_masked_loss_is_cross_entropy_over_the_unseen_items_only() -> None:
    torch.manual_seed(0)
    enc = EncoderConfig(n_items=5, hidden_size=8, heads=2, inner_size=16, max_len=3)
    model = SequenceEncoder(enc)
    hidden = torch.randn(1, 3, 8)
    items, targets = torch.tensor([[4, 1, 2]]), torch.tensor([[1, 2, 5]])
    masked = full_softmax_loss(model, hidden, targets, 0.0, seen_items(items, targets))
    logits = model.scores(hidden[0]).float()  # [3, 5]
    expected = [
        torch.log_softmax(logits[0, [0, 1, 2, 4]], 0)[0],  # after 4: items 1, 2, 3, 5
        torch.log_softmax(logits[1, [1, 2, 4]], 0)[0],  # after 4, 1: items 2, 3, 5
        torch.log_softmax(logits[2, [2, 4]], 0)[1],  # after 4, 1, 2: items 3, 5
    ]
    assert masked.item() == pytest.approx(-torch.stack(expected).mean().item(), rel=1e-5)
    unmasked = full_softmax_loss(model, hidden, targets, 0.0)
    assert unmasked.item() > masked.item()


def test_training_learns_a_sequential_pattern() -> None:
    split = window_split(synthetic(), max_len=8)
    enc = EncoderConfig(
        n_items=split.n_items,
        hidden_size=16,
        heads=2,
        inner_size=32,
        dropout=0.0,
        attn_dropout=0.0,
        max_len=8,
    )
    cfg = TrainConfig(epochs=25, batch_size=16, lr=1e-2, patience=25, seed=1)
    result = train(split, enc, cfg, torch.device("cpu"), progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_valid["hr@10"] == 1.0  # 12 items: top-10 must hold the next step
    assert result.best_valid["ndcg@10"] > 0.8  # ...and mostly first


def test_sampled_softmax_with_logq_is_finite_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = SequenceEncoder(EncoderConfig(n_items=20, hidden_size=8, heads=2, max_len=5))
    hidden = torch.randn(3, 4, 8)
    targets = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 7, 8, 9]])
    log_q = popularity_log_q([[1, 2, 3], [3, 3, 4]], 20)
    assert log_q[0] == float("-inf") and torch.isclose(log_q.exp().sum(), torch.tensor(1.0))
    loss = sampled_softmax_loss(model, hidden, targets, log_q, negatives=32)
    assert torch.isfinite(loss) and loss > 0
    # Padded positions carry no loss: changing their hidden states changes nothing.
    torch.manual_seed(1)
    a = sampled_softmax_loss(model, hidden, targets, log_q, 32)
    hidden2 = hidden.clone()
    hidden2[0, 0] += 5.0
    torch.manual_seed(1)
    assert torch.equal(a, sampled_softmax_loss(model, hidden2, targets, log_q, 32))


def test_sampled_softmax_training_also_learns() -> None:
    split = window_split(synthetic(), max_len=8)
    enc = EncoderConfig(
        n_items=split.n_items,
        hidden_size=16,
        heads=2,
        inner_size=32,
        dropout=0.0,
        attn_dropout=0.0,
        max_len=8,
    )
    cfg = TrainConfig(
        epochs=20, batch_size=16, lr=1e-2, patience=20, loss="sampled_softmax", negatives=8, seed=1
    )
    result = train(split, enc, cfg, torch.device("cpu"), progress=False)
    assert result.best_valid["hr@10"] == 1.0
    assert result.best_valid["ndcg@10"] > 0.5


def test_a_warm_start_is_kept_unless_an_epoch_beats_it() -> None:
    """Fine-tuning a trained model with a ruinous step size: the start wins, unchanged; with a
    sane one, training from the start goes on from its validation score."""
    split = window_split(synthetic(), max_len=8)
    enc = EncoderConfig(n_items=split.n_items, hidden_size=16, heads=2, inner_size=32,
                        dropout=0.0, attn_dropout=0.0, max_len=8)  # fmt: skip
    cpu = torch.device("cpu")
    trained = train(split, enc, TrainConfig(epochs=25, batch_size=16, lr=1e-2, seed=1), cpu, False)
    start = {name: t.clone() for name, t in trained.model.state_dict().items()}
    ruined = train(
        split, enc, TrainConfig(epochs=2, batch_size=16, lr=50.0, seed=2), cpu, False,
        start=lambda model: start,
    )  # fmt: skip
    assert ruined.best_epoch == 0 and ruined.best_valid == trained.best_valid
    assert all(torch.equal(t, start[n]) for n, t in ruined.model.state_dict().items())
    tuned = train(
        split, enc, TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=2), cpu, False,
        start=lambda model: start,
    )  # fmt: skip
    assert tuned.best_valid["ndcg@10"] >= trained.best_valid["ndcg@10"]


def test_a_cpu_budget_ignores_wall_time_the_process_did_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paused or starved on a shared machine (each wall clock read an hour later), a wall
    budget stops after the first epoch; a CPU budget of the same size does not."""
    split = window_split(synthetic(users=8), max_len=8)
    enc = EncoderConfig(n_items=split.n_items, hidden_size=8, heads=2, inner_size=8, max_len=8)
    wall = itertools.count(0.0, 3_600.0)
    monkeypatch.setattr(time, "perf_counter", lambda: next(wall))
    stops = {}
    for clock in ("wall", "cpu"):
        cfg = TrainConfig(epochs=3, patience=3, time_budget_s=600.0, budget_clock=clock)
        result = train(split, enc, cfg, torch.device("cpu"), progress=False)
        stops[clock] = (result.stopped, len(result.history))
    assert stops == {"wall": ("time_budget", 1), "cpu": ("epochs", 3)}


def test_the_demo_preset_masks_history_unless_slates_may_repeat_items() -> None:
    assert preset_configs(Settings(), "demo", 10)[1].mask_history
    assert not preset_configs(Settings(), "reference", 10)[1].mask_history  # RecBole's SASRec
    repeats = Settings.model_validate({"state": {"repeatable_types": ["purchase"]}})
    assert not preset_configs(repeats, "demo", 10)[1].mask_history


def test_the_demo_preset_shuffles_ties_and_the_reference_keeps_the_log_order() -> None:
    assert preset_configs(Settings(), "demo", 10)[1].shuffle_ties
    assert not preset_configs(Settings(), "reference", 10)[1].shuffle_ties  # RecBole's SASRec


def test_batches_reorder_tied_events_anew_each_epoch_and_keep_every_target() -> None:
    # Every event of a user at one of two times: two tie groups per window.
    rows = [
        Interaction(f"u{u}", str(i), 1.0, BASE + (i > 4) * 60)
        for u in range(4)
        for i in range(1, 9)
    ]
    ds = Dataset("ties", rows, {str(i): Item(str(i), "", (), None) for i in range(1, 9)})
    examples = window_split(ds, 8, scheme="window").examples
    rng = random.Random(0)
    epochs = [list(batches(examples, 4, rng, TokenInputs(), shuffle_ties=True)) for _ in range(3)]
    targets = [sorted(tuple(row) for _, _, t in epoch for row in t.tolist()) for epoch in epochs]
    assert len({tuple(map(tuple, epoch)) for epoch in targets}) > 1  # drawn anew each epoch
    for epoch in epochs:
        for items, _, t in epoch:
            for row_items, row_targets in zip(items.tolist(), t.tolist(), strict=True):
                kept = [i for i in row_items if i]
                assert kept[1:] == row_targets[-len(kept) :][:-1]  # next event, in its order
                assert sorted(kept[:4]) == [1, 2, 3, 4]  # the first time's events stay first


def test_validation_scores_only_the_users_whose_item_is_new_to_them() -> None:
    walk = synthetic(users=20)
    # Every even user's validation event repeats the item before it (a click after its view).
    rows = []
    for row in walk.interactions:
        seen = [r for r in walk.interactions if r.user_id == row.user_id]
        if row is seen[-2] and int(row.user_id[1:]) % 2 == 0:
            row = Interaction(row.user_id, seen[-3].item_id, 1.0, row.ts)
        rows.append(row)
    # Repeatable types keep a repeat as a target (the split's rule otherwise passes over it).
    repeats = StateSettings(repeatable_types=frozenset(EVENT_TYPES))
    split = window_split(Dataset("repeats", rows, walk.items), max_len=8, state=repeats)
    model = SequenceEncoder(EncoderConfig(n_items=split.n_items, hidden_size=16, heads=2,
                                          inner_size=32, max_len=8))  # fmt: skip
    model.eval()  # as validate puts it: no dropout
    new = [n for n, t in enumerate(split.valid_targets) if t + 1 not in split.valid_history[n]]
    assert len(new) == 10
    assert validate(model, split, torch.device("cpu")) == _scored_on(model, split, new)


def _scored_on(model: SequenceEncoder, split: WindowSplit, rows: list[int]) -> dict[str, float]:
    """The validation metrics over ``rows`` alone, computed without ``validate``."""
    return evaluate_scorer(
        model_scorer(model, torch.device("cpu")),
        [split.valid_windows[n] for n in rows],
        [split.valid_targets[n] for n in rows],
        split.n_items,
        exclude_history=True,
        history=[split.valid_history[n] for n in rows],
    )


def _late(users: int, late: int) -> Dataset:
    """``synthetic`` walks whose last ``late`` users walk an hour after the others."""
    walk = synthetic(users=users)
    rows = [
        Interaction(r.user_id, r.item_id, 1.0, r.ts + 3_600 * (int(r.user_id[1:]) >= users - late))
        for r in walk.interactions
    ]
    return Dataset("late", sorted(rows, key=lambda r: r.ts), walk.items)


def test_a_fine_tune_is_judged_on_the_validation_targets_newer_than_its_start() -> None:
    split = window_split(_late(100, 60), max_len=8)
    # each validation target is the user's second-last event (the walk's step 8), in ms
    late = {f"u{u}" for u in range(40, 100)}
    assert split.valid_ts == [(BASE + 8 + 3_600 * (u in late)) * 1000 for u in split.users]
    horizon = (BASE + 9) * 1000  # the start learned the early users' whole walks
    everyone = range(len(split.valid_targets))
    assert [split.users[n] for n in fresh_rows(split, everyone, horizon)] == sorted(
        late, key=split.users.index
    )
    assert fresh_rows(split, everyone, None) == everyone
    few = window_split(_late(100, MIN_FRESH_ROWS - 1), max_len=8)
    assert fresh_rows(few, everyone, horizon) == everyone  # too few to tell epochs apart
    torch.manual_seed(0)
    model = SequenceEncoder(EncoderConfig(n_items=split.n_items, hidden_size=16, heads=2,
                                          inner_size=32, max_len=8))  # fmt: skip
    model.eval()  # as validate puts it: no dropout
    expected = _scored_on(model, split, list(fresh_rows(split, everyone, horizon)))
    assert validate(model, split, torch.device("cpu"), horizon) == expected
    assert validate(model, split, torch.device("cpu"), horizon) != validate(
        model, split, torch.device("cpu")
    )


def test_only_a_warm_start_is_judged_on_fresh_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    split = window_split(synthetic(users=8), max_len=8)
    enc = EncoderConfig(n_items=split.n_items, hidden_size=8, heads=2, inner_size=8, max_len=8)
    asked: list[int | None] = []
    real = training.validate

    def spy(
        model: SequenceEncoder, s: object, device: torch.device, after: int | None = None
    ) -> dict[str, float]:
        asked.append(after)
        return real(model, split, device, after)

    monkeypatch.setattr(training, "validate", spy)
    cfg = TrainConfig(epochs=2, patience=3, seed=1)
    fresh = train(split, enc, cfg, torch.device("cpu"), False, fresh_after=123)
    assert asked == [None, None]  # from scratch: no start was picked on any target
    asked.clear()
    start = {n: t.clone() for n, t in fresh.model.state_dict().items()}
    train(split, enc, cfg, torch.device("cpu"), False, lambda model: start, fresh_after=123)
    assert asked == [123, 123, 123]  # the start, then each epoch
