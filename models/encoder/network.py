"""The SASRec-style sequence encoder: a causal transformer over the tokens of a user state.

The backbone is ``transformers``' ``BertModel`` configured as a decoder (``is_decoder=True``
gives a causal mask) and fed with ``inputs_embeds``. That reproduces SASRec as RecBole builds it:
item embedding + learned position embedding, LayerNorm, dropout, then post-LN blocks with GELU.
Item embeddings are tied for scoring: ``score(user, item) = user_vector · item_embedding``.

Sequences are **left-padded** with index 0 so the last position always holds the most recent
item; its output is the user vector. Positions count from the first real item (item j of a
sequence has position j, as in RecBole), so training windows and inference agree. Item ``i`` of
the item-id map is embedding row ``i + 1``.

Richer inputs (``TokenInputs``, off by default, recorded in the checkpoint; ``inputs.py`` builds
them from the worker's state): each event token adds embeddings of its type, bucketed value,
bucketed gap to the previous event and hashed context fields; summary tokens (one per long-term
slice: its items' embeddings averaged with the slice's decayed weights, plus the slice's age and a
learned marker) are prepended to the events, so every event attends to the long history at a
cost of ``summary_tokens`` extra positions. Positions then count from the first summary token.
An ids-only config builds exactly the original network (same parameter names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertLayer

from streamrec.errors import ModelError
from streamrec.models.config import EncoderSettings
from streamrec.models.encoder.inputs import (
    CONTEXT_BUCKETS,
    GAP_BUCKETS,
    TYPE_BUCKETS,
    VALUE_BUCKETS,
    TokenFeatures,
    TokenInputs,
)

_DEFAULTS = EncoderSettings.model_fields

__all__ = [
    "INPUT_SETTINGS",
    "PAD",
    "EncoderConfig",
    "SequenceEncoder",
    "left_pad",
    "safe_batch_size",
]

PAD = 0  # padding index of the item embedding; real items start at 1

# The encoder settings that switch on an input besides item ids -> their ``TokenInputs`` field.
INPUT_SETTINGS = {
    "event_types": "types",
    "event_values": "values",
    "time_gaps": "gaps",
    "summary_tokens": "summary_tokens",
    "context_fields": "context_fields",
}

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
    # Not the settings' defaults: a checkpoint whose config lacks this key is ids-only.
    inputs: TokenInputs = field(default_factory=TokenInputs)

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
        skip = {"n_items", "inputs"}
        shape = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name not in skip}
        chosen = {field: getattr(settings, name) for name, field in INPUT_SETTINGS.items()}
        return cls(n_items=n_items, inputs=TokenInputs(**chosen), **shape)

    def setting(self, name: str) -> Any:
        """The value of the encoder setting ``name`` (models/config.py) this config has."""
        if name in INPUT_SETTINGS:
            return getattr(self.inputs, INPUT_SETTINGS[name])
        return getattr(self, name)

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
        raw = dict(raw)
        inputs = dict(raw.pop("inputs", None) or {})
        unknown_inputs = set(inputs) - {f.name for f in fields(TokenInputs)}
        if unknown_inputs:
            raise ModelError(
                f"encoder inputs {sorted(unknown_inputs)} are unknown to this streamrec; the "
                "checkpoint was written by a newer version, upgrade to load it"
            )
        inputs["context_fields"] = tuple(inputs.get("context_fields", ()))
        return cls(**raw, inputs=TokenInputs(**inputs))


class SequenceEncoder(nn.Module):
    """Causal transformer: item sequences ``[B, L]`` (+ side inputs) -> hidden ``[B, L, D]``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        dim, inputs = config.hidden_size, config.inputs
        self.item_emb = nn.Embedding(config.n_items + 1, dim, padding_idx=PAD)
        # Side-input tables exist only when switched on, so ids-only weights keep their names.
        self.type_emb = _table(TYPE_BUCKETS, dim) if inputs.types else None
        self.value_emb = _table(VALUE_BUCKETS, dim) if inputs.values else None
        self.gap_emb = _table(GAP_BUCKETS, dim) if inputs.gaps else None
        self.context_emb = _table(CONTEXT_BUCKETS, dim) if inputs.context_fields else None
        self.age_emb = _table(GAP_BUCKETS, dim) if inputs.summary_tokens else None
        self.summary_marker = (
            nn.Parameter(torch.randn(dim) * 0.02) if inputs.summary_tokens else None
        )
        bert = BertConfig(
            vocab_size=1,  # unused: we always pass inputs_embeds
            hidden_size=config.hidden_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=config.inner_size,
            hidden_act="gelu",
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.attn_dropout,
            max_position_embeddings=config.max_len + inputs.summary_tokens,
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

    def forward(self, items: torch.Tensor, features: TokenFeatures | None = None) -> torch.Tensor:
        """``items`` [B, L] left-padded item indices (L <= max_len) and the side inputs the
        config switches on (``inputs.collate``) -> hidden states of the events [B, L, D]."""
        emb, mask, pos, slots = self._tokens(items, features)
        out = self.backbone(inputs_embeds=emb, attention_mask=mask.long(), position_ids=pos)
        hidden: torch.Tensor = out.last_hidden_state[:, slots:]  # [B, L, D]
        return hidden

    def _tokens(
        self, items: torch.Tensor, features: TokenFeatures | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Input embeddings [B, T, D], real-token mask [B, T], positions [B, T] and the number
        of summary slots in front of the events (T = slots + L)."""
        length = items.shape[1]
        if length > self.config.max_len:
            raise ModelError(f"sequence length {length} exceeds max_len={self.config.max_len}")
        mask = items != PAD  # [B, L]
        emb = self.item_emb(items)  # [B, L, D]
        if features is not None:
            emb = emb + self._side_inputs(features, emb)  # [B, L, D]
        slots = 0
        if self.summary_marker is not None and features is not None:
            summary, summary_mask = self._summary_tokens(features)  # [B, S, D], [B, S]
            slots = summary.shape[1]
            emb = torch.cat([summary, emb], dim=1)  # [B, S + L, D]
            mask = torch.cat([summary_mask, mask], dim=1)  # [B, S + L]
        # Positions count from each row's first real token (RecBole's convention under left
        # padding): a token's position is the same in a training window and at inference.
        pos = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, S + L]
        return emb, mask, pos, slots

    def _side_inputs(self, features: TokenFeatures, like: torch.Tensor) -> torch.Tensor:
        """Sum of the switched-on per-event embeddings, [B, L, D] (zeros when none)."""
        extra = torch.zeros_like(like)  # [B, L, D]
        for table, index in (
            (self.type_emb, features.types),
            (self.value_emb, features.values),
            (self.gap_emb, features.gaps),
        ):
            if table is not None and index is not None:
                extra = extra + table(index)  # [B, L, D]
        if self.context_emb is not None and features.context is not None:
            extra = extra + self.context_emb(features.context).sum(dim=2)  # [B, L, F, D] -> sum
        return extra

    def _summary_tokens(self, features: TokenFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per long-term slice: weighted mean of its items + age + marker.

        Returns tokens [B, S, D] and their mask [B, S] (False for empty slots).
        """
        assert self.age_emb is not None and self.summary_marker is not None
        items, weights, ages = (
            features.summary_items,
            features.summary_weights,
            features.summary_ages,
        )
        if items is None or weights is None or ages is None:
            raise ModelError("this encoder reads summary tokens; pass them (inputs.collate)")
        total = weights.sum(dim=2, keepdim=True)  # [B, S, 1]
        share = weights / total.clamp(min=1e-9)  # [B, S, K]
        pooled = (share.unsqueeze(-1) * self.item_emb(items)).sum(dim=2)  # [B, S, D]
        mask = total.squeeze(2) > 0  # [B, S]
        tokens = pooled + self.age_emb(ages) + self.summary_marker  # [B, S, D]
        return tokens * mask.unsqueeze(-1), mask

    def user_vectors(
        self, items: torch.Tensor, features: TokenFeatures | None = None
    ) -> torch.Tensor:
        """``items`` [B, L] left-padded (+ side inputs) -> user vectors [B, D] (last position).

        In eval mode the final layer is computed for the last position only: its other
        positions feed nothing (a layer's keys and values come from the layer below), and it
        was about 40% of the serving encoder's time. The result equals ``forward``'s last
        position (tests/unit/models/encoder/test_last_position.py).
        """
        if self.training:
            return self.forward(items, features)[:, -1]  # [B, D]
        emb, mask, pos, _ = self._tokens(items, features)
        hidden = self.backbone.embeddings(inputs_embeds=emb, position_ids=pos)  # [B, T, D]
        additive = _causal_mask(mask, hidden.dtype)  # [B, 1, T, T]
        layers = cast(list[BertLayer], list(self.backbone.encoder.layer))
        for layer in layers[:-1]:
            hidden = layer(hidden, attention_mask=additive)
        return _last_position(layers[-1], hidden, additive[:, :, -1:, :])  # [B, D]

    def item_vectors(self) -> torch.Tensor:
        """Embeddings of the real items [N, D] (row i = item i of the id map)."""
        return self.item_emb.weight[1:]

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., D] -> scores over real items [..., N]."""
        return hidden @ self.item_vectors().T


def _table(rows: int, dim: int) -> nn.Embedding:
    """An embedding table whose row 0 ("unknown") adds nothing; BERT/RecBole initialiser."""
    table = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=0.02)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def _causal_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask ``BertModel`` builds for a decoder with eager attention: query ``i``
    sees real keys ``j <= i``; 0 where allowed, the dtype's minimum elsewhere -> [B, 1, T, T]."""
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = causal[None, None] & mask[:, None, None, :]  # [B, 1, T, T]
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _last_position(layer: BertLayer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``layer`` (a ``BertLayer``) applied to the last position of ``hidden`` [B, T, D] only,
    keys and values from every position; ``mask`` [B, 1, 1, T] -> [B, D]."""
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query = attention.query(hidden[:, -1:]).view(batch, 1, heads, size).transpose(1, 2)
    key = attention.key(hidden).view(batch, length, heads, size).transpose(1, 2)
    value = attention.value(hidden).view(batch, length, heads, size).transpose(1, 2)
    weights = torch.softmax(query @ key.transpose(2, 3) * attention.scaling + mask, dim=-1)
    context = (weights @ value).transpose(1, 2).reshape(batch, 1, heads * size)  # [B, 1, D]
    attended = layer.attention.output(context, hidden[:, -1:])  # [B, 1, D]
    inner = layer.intermediate(attended)  # [B, 1, inner]
    out: torch.Tensor = layer.output(inner, attended)  # [B, 1, D]
    return out[:, 0]


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
