"""Cold-start items: a learned projection from text vectors into the item-embedding space.

``fit_projection`` learns ``item_vector ≈ text_vector @ W + b`` with the recommendation loss
itself: the trained encoder is frozen, its hidden state at every training position is a query,
and W, b are fitted by full-softmax cross-entropy over the *projected* vectors of the training
items. This ranks well directly, where regressing onto the learned embeddings (MSE) only
approximates their geometry.

The projection's scale is then set apart from that fit. Its softmax holds projected vectors only,
so nothing ties their length to the trained ones', and a new item competes with trained items in
one index: a new-user pass found projected vectors ten times as long as the trained ones (2.3
against 0.22), so one new kitchen item topped 77 of 200 users' slates, and on ML-100K the 10%
of items held out took 94% of every user's top 10. ``calibrated`` moves the projected vectors'
mean onto the trained ones' and scales their scores' spread to the trained ones', so a new item
scores as the average trained item plus what its text predicts.

``evaluate_cold_start`` holds a random 10% of items out of training, trains the encoder on the
rest, fits the projection on the warm items, then ranks every interaction with a held-out item:
the input is the user's earlier warm items, the candidates the held-out items (excluding ones
the user already had), the item vectors their projected text. Baselines: random order, and
popularity of the held-out items counted over the whole log (an oracle a launch-day system
cannot have, so the strongest fair-looking baseline); a full-catalog variant ranks them among
all items too. Its cases are id sequences, so the encoder it trains reads item ids only.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from streamrec.datasets import Dataset
from streamrec.models.encoder.evaluation import catalog_order, ranking_metrics, ranks_and_topk
from streamrec.models.encoder.event_log import dataset_as_events
from streamrec.models.encoder.inputs import Featurizer, TokenInputs
from streamrec.models.encoder.network import PAD, EncoderConfig, SequenceEncoder, left_pad
from streamrec.models.encoder.training import TrainConfig, batches, seed_everything, train
from streamrec.models.encoder.windows import Example, build_split
from streamrec.stream.config import StateSettings

__all__ = ["ProjectionConfig", "evaluate_cold_start", "fit_projection", "hold_out_items"]


@dataclass(frozen=True)
class ProjectionConfig:
    """Fitting the text -> item-space projection."""

    epochs: int = 30
    # From a served model's projection, refitted after a fine-tune (session 8, ML-100K, one
    # continual-training window): 30 epochs from the least-squares start were half of the cycle
    # (4 s); 5 from the served projection reach most of that fit (loss 6.27 unrefined, 6.16
    # after 6 epochs, 6.10 after the 30) in a quarter of the time.
    warm_epochs: int = 5
    batch_size: int = 1024  # query positions per step
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 42
    scale_queries: int = 2048  # sampled queries and items the score scale is fitted on
    scale_items: int = 4096


@torch.inference_mode()
def _queries(model: SequenceEncoder, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen hidden states at every training position [M, D] and their next items [M]."""
    model.eval()
    device = next(model.parameters()).device
    hs, ts = [], []
    rows = batches(examples, 256, random.Random(0), model.config.inputs)
    for items, feats, targets in rows:
        hidden = model(items.to(device), feats.to(device))[:, -targets.shape[1] :]  # [B, T, D]
        targets = targets.to(device)  # [B, T]
        keep = targets != PAD
        hs.append(hidden[keep].float())
        ts.append(targets[keep])
    return torch.cat(hs), torch.cat(ts)


def fit_projection(
    model: SequenceEncoder,
    examples: list[Example],
    text_vecs: np.ndarray,
    config: ProjectionConfig | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit (weight [T, D], bias [D]) so projected text vectors score like item embeddings.

    ``text_vecs`` [N, T] row i = item index i + 1 of the encoder; ``examples`` the training
    rows of the encoder (``WindowSplit.examples``). ``start``: a projection to refine for
    ``config.warm_epochs`` (a warm-started model's), instead of ``config.epochs`` from the
    least-squares fit.
    """
    config = config or ProjectionConfig()
    seed_everything(config.seed)
    device = next(model.parameters()).device
    queries, targets = _queries(model, examples)  # [M, D], [M]
    text = torch.as_tensor(text_vecs, dtype=torch.float32, device=device)  # [N, T]
    if start is None:
        weight, bias = _least_squares(model, text)
        epochs = config.epochs
    else:
        weight, bias = (t.detach().float().to(device).clone() for t in start)
        epochs = config.warm_epochs
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.AdamW([weight, bias], lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    for _ in range(epochs):
        order = torch.randperm(len(queries), generator=gen).to(device)
        for first in range(0, len(order), config.batch_size):
            idx = order[first : first + config.batch_size]
            items = text @ weight + bias  # [N, D]
            logits = queries[idx] @ items.T  # [B, N]
            loss = F.cross_entropy(logits, targets[idx] - 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    trained = model.item_vectors().detach().float()
    return calibrated(weight.detach(), bias.detach(), text, queries, trained, config)


@torch.no_grad()
def calibrated(
    weight: torch.Tensor,
    bias: torch.Tensor,
    text: torch.Tensor,
    queries: torch.Tensor,
    trained: torch.Tensor,
    config: ProjectionConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection with its scores put on the trained vectors' scale (module docstring).

    A projected vector ``p_i`` becomes ``s (p_i - mean p) + mean e``: every query then scores a
    new item as it scores the average trained item, plus the part its text predicts, spread as
    much as the trained items' scores spread (``s``: the ratio of the standard deviations of
    ``q.(e_i - mean e)`` and ``q.(p_i - mean p)`` over sampled queries ``q`` and training items
    ``i``). ML-100K, 10% of items held out (``streamrec coldstart``): new items took 94% of
    users' top 10 before, 0.1% with ``s`` fitted by least squares (which shrinks what text
    predicts towards the average), 18% with matched spreads, against their 9.6% of the
    interactions."""
    projected = text @ weight + bias  # [N, D], row i: item i + 1, as ``trained``
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    rows = torch.randperm(len(queries), generator=gen)[: config.scale_queries]
    items = torch.randperm(len(trained), generator=gen)[: config.scale_items]
    q = queries[rows.to(queries.device)]
    by_text = q @ (projected - projected.mean(0))[items.to(text.device)].T  # [m, n]
    learned = q @ (trained - trained.mean(0))[items.to(text.device)].T
    spread = float(by_text.std())
    scale = float(learned.std()) / spread if spread > 0 else 1.0
    return weight * scale, trained.mean(0) - scale * (text.mean(0) @ weight)


def _least_squares(model: SequenceEncoder, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge fit of ``text`` [N, T] onto the learned item embeddings: a good, cheap start."""
    emb = model.item_vectors().detach().float()  # [N, D]
    ones = torch.ones(len(text), 1, device=text.device)
    design = torch.cat([text, ones], dim=1)  # [N, T + 1]
    reg = 1e-2 * torch.eye(design.shape[1], device=text.device)
    solved = torch.linalg.solve(design.T @ design + reg, design.T @ emb)  # [T + 1, D]
    return solved[:-1].clone(), solved[-1].clone()


def hold_out_items(dataset: Dataset, fraction: float, seed: int) -> set[str]:
    """A random ``fraction`` of the items that occur in interactions (seeded)."""
    items = sorted({i.item_id for i in dataset.interactions})
    return set(random.Random(seed).sample(items, max(1, round(fraction * len(items)))))


def evaluate_cold_start(
    dataset: Dataset,
    text_for: dict[str, np.ndarray],
    encoder: EncoderConfig,
    train_config: TrainConfig,
    device: torch.device,
    fraction: float = 0.1,
    progress: bool = True,
) -> dict[str, object]:
    """Hold ``fraction`` of the items out, train on the rest, rank held-out interactions.

    ``text_for`` maps item id -> text vector [T]. Returns metrics@10 for the projection,
    random and popularity, on held-out candidates and on the full catalog, plus counts.
    """
    cold = hold_out_items(dataset, fraction, train_config.seed)
    warm = Dataset(
        dataset.name,
        [i for i in dataset.interactions if i.item_id not in cold],
        {k: v for k, v in dataset.items.items() if k not in cold},
    )
    warm_ids = catalog_order(warm)
    enc_cfg = dataclasses.replace(encoder, n_items=len(warm_ids), inputs=TokenInputs())
    index = {item: i + 1 for i, item in enumerate(warm_ids)}
    featurizer = Featurizer(index, TokenInputs(), enc_cfg.max_len)
    split = build_split(
        dataset_as_events(warm), warm_ids, featurizer, StateSettings(), train_config.scheme
    )
    result = train(split, enc_cfg, train_config, device, progress)
    model = result.model
    warm_text = np.stack([text_for[i] for i in split.item_ids])
    weight, bias = fit_projection(model, split.examples, warm_text)

    cold_ids = sorted(cold)
    cold_pos = {c: j for j, c in enumerate(cold_ids)}
    cold_vecs = torch.as_tensor(np.stack([text_for[c] for c in cold_ids]), device=device)
    cold_items = cold_vecs @ weight + bias  # [C, D]
    warm_index = {item: i + 1 for i, item in enumerate(split.item_ids)}
    inputs, targets, seen = _cold_cases(dataset, cold, warm_index, cold_pos)
    counts = np.bincount(np.asarray(targets), minlength=len(cold_ids)).astype(np.float32)
    with torch.inference_mode():
        users = torch.cat([
            model.user_vectors(left_pad(inputs[s : s + 512], enc_cfg.max_len).to(device))
            for s in range(0, len(inputs), 512)
        ])  # fmt: skip  # [E, D]
        proj = (users @ cold_items.T).float().cpu()  # [E, C]
        full = torch.cat([(users @ model.item_vectors().T).float().cpu(), proj], dim=1)
    gen = torch.Generator().manual_seed(train_config.seed)
    rand = torch.rand(proj.shape, generator=gen)
    pop = torch.from_numpy(counts).expand(len(targets), -1)
    tgt = torch.as_tensor(targets)
    n_warm = split.n_items
    pop_full = torch.cat(
        [
            torch.from_numpy(_warm_counts(split.train, n_warm)).expand(len(targets), -1),
            torch.zeros(len(targets), len(cold_ids)),
        ],
        dim=1,
    )
    seen_full = [[n_warm + j for j in row] for row in seen]
    return {
        "held_out_items": len(cold_ids),
        "held_out_interactions": len(targets),
        # How much of every user's top 10 the projected items take, against their share of
        # the log: far above it, new items crowd out what users were predicted to want.
        "held_out_share_of_interactions": round(len(targets) / len(dataset.interactions), 4),
        "held_out_share_of_top10": _cold_share(model, dataset, warm_index, cold_items, enc_cfg),
        "encoder_valid_ndcg@10": result.best_valid["ndcg@10"],
        "candidates_held_out": {
            "text_projection": _metrics(proj, tgt, seen, len(cold_ids)),
            "random": _metrics(rand, tgt, seen, len(cold_ids)),
            "popularity_oracle": _metrics(pop, tgt, seen, len(cold_ids)),
        },
        "candidates_all_items": {
            "text_projection": _metrics(full, tgt + n_warm, seen_full, full.shape[1]),
            "popularity_warm": _metrics(pop_full, tgt + n_warm, seen_full, full.shape[1]),
            "random": _metrics(
                torch.rand(full.shape, generator=gen), tgt + n_warm, seen_full, full.shape[1]
            ),
        },
    }


def _cold_cases(
    dataset: Dataset, cold: set[str], warm_index: dict[str, int], cold_pos: dict[str, int]
) -> tuple[list[list[int]], list[int], list[list[int]]]:
    """Per held-out interaction: earlier warm items (1-based), target (0-based among held-out
    items), earlier held-out items (1-based among held-out items, to exclude)."""
    inputs, targets, seen = [], [], []
    for events in dataset.sequences().values():
        warm_seq: list[int] = []
        cold_seen: list[int] = []
        for e in events:
            if e.item_id in cold:
                inputs.append(list(warm_seq))
                targets.append(cold_pos[e.item_id])
                seen.append(list(cold_seen))
                cold_seen.append(cold_pos[e.item_id] + 1)
            else:
                warm_seq.append(warm_index[e.item_id])
    return inputs, targets, seen


@torch.inference_mode()
def _cold_share(
    model: SequenceEncoder,
    dataset: Dataset,
    warm_index: dict[str, int],
    cold_items: torch.Tensor,
    encoder: EncoderConfig,
) -> float:
    """Share of the top-10 slots of every user (state: all their warm items, those excluded)
    that held-out items take when ranked with the trained items."""
    histories = [
        [warm_index[e.item_id] for e in events if e.item_id in warm_index]
        for events in dataset.sequences().values()
    ]
    histories = [h for h in histories if h]
    device = cold_items.device
    taken = 0
    for first in range(0, len(histories), 512):
        rows = histories[first : first + 512]
        users = model.user_vectors(left_pad(rows, encoder.max_len).to(device))
        scores = torch.cat([users @ model.item_vectors().T, users @ cold_items.T], dim=1).float()
        for row, history in enumerate(rows):
            scores[row, torch.as_tensor(history, device=device) - 1] = -torch.inf
        taken += int((scores.topk(10, dim=1).indices >= encoder.n_items).sum())
    return round(taken / (10 * max(len(histories), 1)), 4)


def _warm_counts(train_seqs: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.float32)
    for seq in train_seqs:
        np.add.at(counts, np.asarray(seq, dtype=np.int64) - 1, 1.0)
    return counts


def _metrics(
    scores: torch.Tensor, targets: torch.Tensor, seen: list[list[int]], n: int
) -> dict[str, float]:
    ranks, topk = ranks_and_topk(scores, targets, seen, k=10)
    metrics: dict[str, float] = ranking_metrics(ranks.numpy(), topk.numpy(), n, k=10)
    return metrics
