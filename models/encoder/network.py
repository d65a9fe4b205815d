"""The SASRec-style sequence encoder: a causal transformer over item-ID embeddings.

The backbone is ``transformers``' ``BertModel`` configured as a decoder (``is_decoder=True``
gives a causal mask) and fed with ``inputs_embeds``. That reproduces SASRec as RecBole builds it:
item embedding + learned position embedding, LayerNorm, dropout, then post-LN blocks with GELU.
Item embeddings are tied for scoring: ``score(user, item) = user_vector · item_embedding``.

Sequences are **left-padded** with index 0 so the last position always holds the most recent
item; its output is the user vector. Positions count from the first real item (item j of a
sequence has position j, as in RecBole), so training windows and inference agree. Item ``i`` of
the item-id map is embedding row ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel

from streamrec.errors import ModelError
from streamrec.models.config import EncoderSettings

_DEFAULTS = EncoderSettings.model_fields

__all__ = ["PAD", "EncoderConfig", "SequenceEncoder", "left_pad", "safe_batch_size"]

PAD = 0  # padding index of the item embedding; real items start at 1

# DESIGN pitfall: fused attention kernels crashed at batch * heads * L^2 >= 2^31 (torch 2.11, bf16).
_ATTN_ELEMENT_LIMIT = 2**31


@dataclass(frozen=True)
class EncoderConfig:
    """Hyperparameters of :class:`SequenceEncoder` (stored as JSON in every checkpoint)."""

    n_items: int
    # Defaults are the settings' defaults (models/config.py), the one place they are written.
    hidden_size: int = _DEFAULTS["hidden_size"].default
    layers: int = _DEFAULTS["layers"].default
    heads: int = _DEFAULTS["heads"].default
    inner_size: int = _DEFAULTS["inner_size"].default
    dropout: float = _DEFAULTS["dropout"].default
    attn_dropout: float = _DEFAULTS["attn_dropout"].default
    max_len: int = _DEFAULTS["max_len"].default

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ModelError(f"encoder needs at least one item, got n_items={self.n_items}")
        if self.hidden_size % self.heads:
            raise ModelError(
                f"heads={self.heads} must divide hidden_size={self.hidden_size}; "
                "change one of them in the encoder settings"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: EncoderSettings, n_items: int) -> EncoderConfig:
        """The encoder ``settings`` describe, for a catalog of ``n_items``."""
        shape = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name != "n_items"}
        return cls(n_items=n_items, **shape)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderConfig:
        """Build from JSON; unknown keys are a ModelError (a newer checkpoint format)."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ModelError(
                f"encoder config has unknown keys {sorted(unknown)}; the checkpoint was written "
                "by a newer streamrec, upgrade to load it"
            )
        return cls(**raw)


class SequenceEncoder(nn.Module):
    """Causal transformer: item sequences ``[B, L]`` -> hidden states ``[B, L, D]``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden_size, padding_idx=PAD)
        bert = BertConfig(
            vocab_size=1,  # unused: we always pass inputs_embeds
            hidden_size=config.hidden_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=config.inner_size,
            hidden_act="gelu",
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.attn_dropout,
            max_position_embeddings=config.max_len,
            type_vocab_size=1,
            is_decoder=True,
            use_cache=False,
            layer_norm_eps=1e-12,
        )
        # eager attention: an additive mask keeps fully padded query rows finite (SDPA with a
        # boolean mask can return NaN for them, and NaN would leak through later layers).
        bert._attn_implementation = "eager"
        self.backbone = BertModel(bert, add_pooling_layer=False)  # type: ignore[no-untyped-call]
        nn.init.normal_(self.item_emb.weight, std=0.02)  # BERT/RecBole initialiser
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` [B, L] left-padded item indices (L <= max_len) -> hidden [B, L, D]."""
        length = items.shape[1]
        if length > self.config.max_len:
            raise ModelError(f"sequence length {length} exceeds max_len={self.config.max_len}")
        mask = (items != PAD).long()  # [B, L]
        # Positions count from each row's first real item (RecBole's convention under left
        # padding): an item's position is the same in a training window and at inference.
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]
        emb = self.item_emb(items)  # [B, L, D]
        out = self.backbone(inputs_embeds=emb, attention_mask=mask, position_ids=pos)
        hidden: torch.Tensor = out.last_hidden_state  # [B, L, D]
        return hidden

    def user_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` [B, L] left-padded -> user vectors [B, D] (output at the last position)."""
        return self.forward(items)[:, -1]  # [B, D]

    def item_vectors(self) -> torch.Tensor:
        """Embeddings of the real items [N, D] (row i = item i of the id map)."""
        return self.item_emb.weight[1:]

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., D] -> scores over real items [..., N]."""
        return hidden @ self.item_vectors().T


def left_pad(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` indices of each sequence, left-pad with PAD -> [B, L].

    ``L`` is the longest kept length (at least 1), so short batches stay cheap.
    """
    length = max(1, min(max_len, max((len(s) for s in sequences), default=1)))
    out = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        kept = list(seq)[-length:]
        if kept:
            out[row, length - len(kept) :] = torch.tensor(kept, dtype=torch.long)
    return out


def safe_batch_size(requested: int, heads: int, length: int) -> int:
    """Largest batch <= requested with batch * heads * L^2 below 2^31 (attention-kernel cap)."""
    per_row = max(1, heads * length * length)
    return max(1, min(requested, (_ATTN_ELEMENT_LIMIT - 1) // per_row))
