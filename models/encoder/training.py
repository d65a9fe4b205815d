"""Training the sequence encoder: batches, losses, AdamW, early stopping on validation NDCG@10.

Rows come from ``windows.py``: states rebuilt from the event log as the worker held them, each
featurized by the same code that serves a ``UserState``. ``TrainConfig.scheme`` picks the rows:

* ``window`` (our default): one state every W events with the loss at *every* event position;
  with a causal encoder this trains W targets in one pass, ~25x cheaper per epoch than
* ``prefix`` (RecBole's SASRec): the state after every event, loss at its last position only.

Losses: full-softmax cross-entropy over all items (``ce``), or sampled softmax with logQ
correction (``sampled_softmax``): negatives drawn from item popularity, each logit reduced by
the log of its sampling probability so the estimate targets the full softmax.

``mask_history`` (on by default) leaves the items a position has already seen in its row out of
that position's full softmax: the model is ranked with each user's history excluded (offline and
in every slate), so it need not spend capacity pushing seen items down (ML-100K, five seeds:
NDCG@10 +5%; the README's encoder section has the figures).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamrec.errors import ModelError
from streamrec.models.config import TrainSettings
from streamrec.models.encoder.evaluation import evaluate_scorer
from streamrec.models.encoder.inputs import TokenFeatures, TokenInputs, Window, collate
from streamrec.models.encoder.network import (
    PAD,
    EncoderConfig,
    SequenceEncoder,
    left_pad,
    safe_batch_size,
)
from streamrec.models.encoder.windows import Example, WindowSplit, new_item_rows, tie_shuffled

_DEFAULTS = TrainSettings.model_fields
# Fewer fresh validation targets than this judge a fine-tune on all of them: too few users to
# tell epochs apart (NDCG@10 over 50 users moves by about 0.03 between equal models). A fixed
# statistical floor, not a setting: no deployment is better served by a noisier stopping rule.
MIN_FRESH_ROWS = 50

__all__ = ["TrainConfig", "TrainResult", "model_scorer", "pick_device", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters (stored in the checkpoint's metrics)."""

    # Defaults are the settings' defaults (models/config.py), the one place they are written.
    epochs: int = _DEFAULTS["epochs"].default
    batch_size: int = _DEFAULTS["batch_size"].default
    lr: float = _DEFAULTS["lr"].default
    weight_decay: float = _DEFAULTS["weight_decay"].default
    loss: Literal["ce", "sampled_softmax"] = _DEFAULTS["loss"].default
    negatives: int = _DEFAULTS["negatives"].default
    scheme: Literal["window", "prefix"] = _DEFAULTS["scheme"].default
    patience: int = _DEFAULTS["patience"].default
    seed: int = _DEFAULTS["seed"].default
    label_smoothing: float = _DEFAULTS["label_smoothing"].default
    mask_history: bool = _DEFAULTS["mask_history"].default
    shuffle_ties: bool = _DEFAULTS["shuffle_ties"].default
    # Stop (keeping the best epoch) once this is spent; None: no budget.
    time_budget_s: float | None = _DEFAULTS["time_budget_s"].default
    budget_clock: Literal["wall", "cpu"] = _DEFAULTS["budget_clock"].default

    @classmethod
    def from_settings(cls, settings: TrainSettings) -> TrainConfig:
        """The optimisation ``settings`` describe."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class TrainResult:
    """The best model (by validation NDCG@10) and how training went."""

    model: SequenceEncoder
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time while training
    stopped: str = "epochs"  # epochs | early_stopping | time_budget


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ModelError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but torch sees no GPU; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- batches

Batch = tuple[torch.Tensor, TokenFeatures, torch.Tensor]


def batches(
    examples: list[Example],
    batch_size: int,
    rng: random.Random,
    inputs: TokenInputs,
    shuffle_ties: bool = False,
) -> Iterator[Batch]:
    """Shuffled batches of similar length (padding costs as much as real items on the CPU).

    Examples are ordered by length with random tie-breaks, cut into batches, and the batches
    shuffled. Yields items [B, L], their side inputs and targets [B, T] (T = L for windows, 1
    for prefixes; the targets are right-aligned with the last T event positions).
    """
    order = sorted(
        range(len(examples)), key=lambda i: (len(examples[i].window.items), rng.random())
    )
    starts = list(range(0, len(order), batch_size))
    rng.shuffle(starts)
    for start in starts:
        chunk = [examples[i] for i in order[start : start + batch_size]]
        if shuffle_ties:
            chunk = [tie_shuffled(e, rng) for e in chunk]
        items, feats = collate([e.window for e in chunk], inputs)  # [B, L]
        width = max(len(e.targets) for e in chunk)
        targets = left_pad([e.targets for e in chunk], width)  # [B, T]
        yield items, feats, targets


# --------------------------------------------------------------------------- losses


def full_softmax_loss(
    model: SequenceEncoder,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float,
    seen: SeenItems | None = None,
) -> torch.Tensor:
    """Cross-entropy over all items. hidden [B, T, D], targets [B, T] 1-based (PAD ignored);
    ``seen`` (``seen_items``) leaves those items out of their position's softmax."""
    keep = targets != PAD  # [B, T]
    logits = model.scores(hidden[keep]).float()  # [M, N]; only real positions pay the matmul
    if seen is not None:
        row = torch.full(targets.shape, -1, dtype=torch.long, device=targets.device)
        row[keep] = torch.arange(int(keep.sum()), device=targets.device)
        rows, positions, items = seen
        # Finite, not -inf: label smoothing takes every logit's log-probability.
        logits = logits.index_put(
            (row[rows, positions], items - 1), torch.tensor(-1e4, device=logits.device)
        )
    return F.cross_entropy(logits, targets[keep] - 1, label_smoothing=smoothing)


SeenItems = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def seen_items(items: torch.Tensor, targets: torch.Tensor) -> SeenItems:
    """The items each target position has seen in its row, as (row, position, item) indices.

    items [B, L] (PAD 0), targets [B, T] right-aligned with the last T positions of ``items``.
    A position sees the row's items up to its own; its target is never among them (a repeat
    stays learnable), nor is padding. Indices, not a [B, T, N] mask: that would be gigabytes
    for a catalog of 50,000 items.
    """
    rows, length = items.shape
    width = targets.shape[1]
    position = torch.arange(length - width, length, device=items.device)  # of each target
    visible = torch.arange(length, device=items.device).unsqueeze(0) <= position.unsqueeze(1)
    seen = items.unsqueeze(1).expand(rows, width, length)  # [B, T, L]
    keep = visible & (seen != PAD) & (seen != targets.unsqueeze(-1)) & (targets != PAD)[..., None]
    b, t, k = keep.nonzero(as_tuple=True)
    return b, t, seen[b, t, k]


def sampled_softmax_loss(
    model: SequenceEncoder,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    log_q: torch.Tensor,
    negatives: int,
) -> torch.Tensor:
    """Sampled softmax with logQ correction; negatives shared by the batch.

    ``log_q`` [N+1] log sampling probability per item index (PAD never sampled).
    """
    keep = targets != PAD  # [B, T]
    h = hidden[keep]  # [M, D]
    pos = targets[keep]  # [M]
    neg = torch.multinomial(log_q.exp(), negatives, replacement=True)  # [K]
    emb = model.item_emb.weight
    pos_logit = (h * emb[pos]).sum(-1) - log_q[pos]  # [M]
    neg_logit = h @ emb[neg].T - log_q[neg].unsqueeze(0)  # [M, K]
    # A sampled negative that is the row's own positive is not a negative.
    neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1).float()  # [M, 1 + K]
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=h.device))


def popularity_log_q(train: list[list[int]], n_items: int) -> torch.Tensor:
    """log of the unigram item distribution of the training data, [N+1] (PAD = -inf)."""
    counts = np.ones(n_items + 1, dtype=np.float64)  # +1 smoothing: every item samplable
    for seq in train:
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
    counts[PAD] = 0.0
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(counts / counts.sum())).float()


# --------------------------------------------------------------------------- loop


def model_scorer(
    model: SequenceEncoder, device: torch.device
) -> Callable[[list[Window]], torch.Tensor]:
    """Scores over all items [B, N] for batches of windows (inference mode)."""
    inputs = model.config.inputs

    @torch.inference_mode()
    def score(batch: list[Window]) -> torch.Tensor:
        items, feats = collate(batch, inputs)  # [B, L]
        with _autocast(device):
            users = model.user_vectors(items.to(device), feats.to(device))  # [B, D]
            scores: torch.Tensor = model.scores(users).float()  # [B, N]
            return scores

    return score


def _autocast(device: torch.device) -> torch.autocast:
    # bf16 on the GPU; on the CPU bf16 is slower than fp32 on most parts, so keep fp32 there.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def validate(
    model: SequenceEncoder, split: WindowSplit, device: torch.device, after: int | None = None
) -> dict[str, float]:
    """Validation metrics (history excluded), the early-stopping signal: over the users whose
    validation item is new to them when there are any, since serving shows no user what they
    had; on a shop's bursts the repeat targets (a click after its view) rewarded the epochs
    that ranked the last item first. ``after``: only targets newer than it (``fresh_rows``)."""
    model.eval()
    length = model.config.max_len + model.config.inputs.summary_tokens
    batch = safe_batch_size(512, model.config.heads, length)
    new = new_item_rows(split.valid_targets, split.valid_history)
    keep = fresh_rows(split, new or range(len(split.valid_targets)), after)
    metrics: dict[str, float] = evaluate_scorer(
        model_scorer(model, device),
        [split.valid_windows[n] for n in keep],
        [split.valid_targets[n] for n in keep],
        split.n_items,
        exclude_history=True,
        batch_size=batch,
        history=[split.valid_history[n] for n in keep],
    )
    return metrics


def fresh_rows(split: WindowSplit, rows: Sequence[int], after: int | None) -> Sequence[int]:
    """The validation ``rows`` whose target is newer than ``after`` (epoch ms), when there are
    ``MIN_FRESH_ROWS`` of them; else ``rows``. A fine-tune judges its start weights on these:
    the weights were trained and early-stopped up to ``after``, so the older targets (a user
    idle since keeps the same two) are ones the start was picked on, and no epoch of a
    fine-tune looked better than them (the continual trainer then had nothing to offer)."""
    if after is None:
        return rows
    fresh = [n for n in rows if split.valid_ts[n] > after]
    return fresh if len(fresh) >= MIN_FRESH_ROWS else rows


def train(
    split: WindowSplit,
    encoder: EncoderConfig,
    config: TrainConfig,
    device: torch.device,
    progress: bool = True,
    start: Callable[[SequenceEncoder], dict[str, torch.Tensor]] | None = None,
    fresh_after: int | None = None,
) -> TrainResult:
    """Train an encoder on ``split.examples``; keep the epoch with the best validation
    NDCG@10 (the split must be featurized for ``encoder.inputs``).

    ``start`` gives the weights to begin from (models/encoder/warm_start.py) instead of a
    fresh initialisation; they are validated first and kept unless an epoch beats them, on
    the validation targets newer than ``fresh_after``, the start's newest training event
    (``fresh_rows``).

    Stops after ``config.epochs``, after ``config.patience`` epochs without improvement, or once
    ``config.time_budget_s`` seconds are spent, counted by ``config.budget_clock``. Wall time is
    in ``TrainResult.seconds``, CPU time in ``TrainResult.cpu_seconds``.
    """
    if encoder.n_items != split.n_items:
        raise ModelError(f"encoder has {encoder.n_items} items, split has {split.n_items}")
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    model = SequenceEncoder(encoder).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log_q = popularity_log_q(split.train, split.n_items).to(device)
    length = encoder.max_len + encoder.inputs.summary_tokens
    batch_size = safe_batch_size(config.batch_size, encoder.heads, length)

    result = TrainResult(model=model, best_epoch=0, best_valid={"ndcg@10": -1.0})
    if start is not None:
        model.load_state_dict(start(model))
        result.best_valid = validate(model, split, device, fresh_after)
    best_state = copy.deepcopy(model.state_dict())
    started, cpu_started = time.perf_counter(), time.process_time()
    bar = tqdm(range(1, config.epochs + 1), desc="train", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, steps = 0.0, 0
        epoch_batches = batches(
            split.examples, batch_size, rng, encoder.inputs, config.shuffle_ties
        )
        for items, feats, targets in epoch_batches:
            items, feats, targets = items.to(device), feats.to(device), targets.to(device)
            with _autocast(device):
                hidden = model(items, feats)[:, -targets.shape[1] :]  # [B, T, D]
                if config.loss == "ce":
                    seen = seen_items(items, targets) if config.mask_history else None
                    loss = full_softmax_loss(model, hidden, targets, config.label_smoothing, seen)
                else:
                    loss = sampled_softmax_loss(model, hidden, targets, log_q, config.negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total, steps = total + loss.item(), steps + 1
        valid = validate(model, split, device, fresh_after if start is not None else None)
        elapsed = time.perf_counter() - started
        result.history.append(
            {
                "epoch": epoch,
                "loss": total / max(steps, 1),
                "seconds": elapsed,
                **{f"valid_{k}": v for k, v in valid.items()},
            }
        )
        bar.set_postfix(loss=f"{total / max(steps, 1):.3f}", ndcg=f"{valid['ndcg@10']:.4f}")
        if valid["ndcg@10"] > result.best_valid["ndcg@10"]:
            result.best_epoch, result.best_valid = epoch, valid
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= config.patience:
            result.stopped = "early_stopping"
            break
        spent = elapsed if config.budget_clock == "wall" else time.process_time() - cpu_started
        if config.time_budget_s is not None and spent >= config.time_budget_s:
            result.stopped = "time_budget"
            break
        if not math.isfinite(total):
            raise ModelError(f"training diverged at epoch {epoch} (loss {total}); lower the lr")
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result
