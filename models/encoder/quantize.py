"""Dynamic int8 quantisation of the encoder for CPU serving, and its measured trade-off.

Only the ``nn.Linear`` layers of the transformer blocks are quantised (weights int8, activations
quantised on the fly per batch); embeddings stay float32 because they are also the item vectors
used for retrieval, and quantising them would change every score, not just the user vectors.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from streamrec.errors import ModelError
from streamrec.models.encoder.network import SequenceEncoder

__all__ = ["agreement", "quantize_int8"]


def quantize_int8(model: SequenceEncoder) -> SequenceEncoder:
    """A CPU copy of ``model`` with int8 dynamic-quantised linear layers (eval mode)."""
    from torch.ao.quantization import quantize_dynamic

    if next(model.parameters()).device.type != "cpu":
        raise ModelError(
            "dynamic int8 quantisation runs on the CPU; load the model with device cpu"
        )
    clone = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; it still works in this torch
        # and avoids a new dependency. Revisit when torch removes it.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        clone.backbone = quantize_dynamic(  # type: ignore[no-untyped-call]  # torch.ao is untyped
            clone.backbone, {nn.Linear}, dtype=torch.qint8
        )
    return clone


def agreement(
    reference: np.ndarray, other: np.ndarray, items: np.ndarray, k: int = 10
) -> dict[str, float]:
    """How far ``other`` user vectors [B, D] stray from ``reference`` [B, D].

    Returns the mean cosine similarity and the mean overlap of the top-k items scored against
    ``items`` [N, D] (1.0 = identical recommendations).
    """
    ref_n = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    oth_n = other / np.linalg.norm(other, axis=1, keepdims=True).clip(1e-12)
    top_ref = np.argsort(-(reference @ items.T), axis=1)[:, :k]
    top_oth = np.argsort(-(other @ items.T), axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_oth, strict=True)]
    return {
        "cosine": float((ref_n * oth_n).sum(1).mean()),
        f"top{k}_overlap": float(np.mean(overlap)),
    }
