"""The model half of a serving snapshot: the encoder and its item vectors by id, loaded from a
checkpoint with the item index built over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streamrec.index.config import IndexSettings
from streamrec.index.item_index import ItemIndex
from streamrec.index.swap import ServingSnapshot
from streamrec.models.encoder.checkpoint import InferenceEncoder
from streamrec.stream.item_vectors import ItemVectors


@dataclass
class ServedModel:
    """The model half of a snapshot: the encoder and its item vectors by id."""

    encoder: InferenceEncoder
    vectors: ItemVectors
    cold_items: set[str] = field(default_factory=set)


def load_snapshot(
    checkpoint: Path, index: IndexSettings, device: str
) -> ServingSnapshot[ServedModel]:
    """Load a checkpoint and build its item index (seconds for ML-100K; run off the loop)."""
    encoder = InferenceEncoder.load(checkpoint, device=device)
    vectors = encoder.item_vectors()
    item_index = ItemIndex.build(encoder.item_ids, vectors, index, encoder.model_version)
    model = ServedModel(encoder, ItemVectors(encoder.item_ids, vectors))
    return ServingSnapshot(encoder.model_version, model, item_index)
