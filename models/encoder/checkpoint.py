"""Checkpoint folders and the inference API the serving path uses.

A checkpoint is a folder (written to a temporary sibling, then renamed, so readers never see a
half-written one)::

    <version>/
      config.json        format + format_version, model_version, encoder config (with the
                         inputs it reads, ``TokenInputs``) and train config
      model.safetensors  encoder weights, plus `fallback_user` [D] (mean training user vector)
      item_ids.json      list of item ids; index i = row i of item_vectors()
      metrics.json       training history, best validation and test metrics, timings
      projection.safetensors   optional: `weight` [T, D], `bias` [D] text -> item space (metadata
                               `scale`: on the trained items' scale)

Nothing is unpickled: weights load with safetensors, the rest is JSON. Format version 2 added
the encoder's ``inputs``; a version-1 checkpoint (written before) loads as the ids-only model it
is, and a newer version fails with a message saying to upgrade.

Inference::

    enc = InferenceEncoder.load(folder, device="auto")
    enc.model_version, enc.item_ids, enc.device
    enc.item_vectors()            # np.float32 [N, D]
    enc.encode_states(states)     # np.float32 [B, D] from the worker's UserStates
    enc.encode([["1", "50"], []]) # np.float32 [B, D] from item ids alone (ids-only reading)
    enc.text_vectors_to_item_space(text_vecs)  # np.float32 [M, D] for cold-start items
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from streamrec.errors import ModelError
from streamrec.models.encoder.inputs import Featurizer, TokenFeatures, Window, collate
from streamrec.models.encoder.network import (
    EncoderConfig,
    SequenceEncoder,
    left_pad,
    safe_batch_size,
)
from streamrec.stream.state import UserState

log = logging.getLogger(__name__)
# projection.safetensors metadata: projected vectors score on the trained items' scale
# (models/encoder/coldstart.py ``calibrated``); files without it predate that (session 22).
CALIBRATED = "trained_items"

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "InferenceEncoder",
    "load_encoder",
    "read_config",
    "save_checkpoint",
]

FORMAT = "streamrec.sequence-encoder"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: before TokenInputs; its config has no "inputs" (ids only)
_FALLBACK = "fallback_user"


def _model_version(state: Mapping[str, torch.Tensor]) -> str:
    """``enc-<UTC time>-<8 hex of the weights>``: sortable and content-addressed."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return f"enc-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest.hexdigest()[:8]}"


def save_checkpoint(
    folder: Path | None,
    model: SequenceEncoder,
    item_ids: Sequence[str],
    fallback_user: torch.Tensor,
    train_config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    projection: tuple[torch.Tensor, torch.Tensor] | None = None,
    root: Path | None = None,
) -> Path:
    """Write a checkpoint; ``folder=None`` means ``root / <model_version>``. Returns the folder.

    ``fallback_user`` [D] is what ``encode`` returns for a sequence with no known item;
    ``projection`` is (weight [T, D], bias [D]) mapping text vectors into the item space, on
    the trained items' scale (``fit_projection`` gives it so), and is marked as such.
    """
    if len(item_ids) != model.config.n_items:
        raise ModelError(f"{len(item_ids)} item ids for an encoder of {model.config.n_items} items")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state[_FALLBACK] = fallback_user.detach().float().cpu().contiguous()
    version = _model_version(state)
    if folder is None:
        if root is None:
            raise ModelError("save_checkpoint needs a folder or a root to put <version>/ under")
        folder = root / version
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        save_file(state, str(staging / "model.safetensors"))
        if projection is not None:
            weight, bias = projection
            save_file(
                {
                    "weight": weight.detach().float().cpu().contiguous(),
                    "bias": bias.detach().float().cpu().contiguous(),
                },
                str(staging / "projection.safetensors"),
                metadata={"scale": CALIBRATED},
            )
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_version": version,
            "encoder": model.config.to_dict(),
            "train": dict(train_config),
        }
        _write_json(staging / "config.json", config)
        _write_json(staging / "item_ids.json", list(item_ids))
        _write_json(staging / "metrics.json", dict(metrics))
        if folder.exists():
            shutil.rmtree(folder)  # an explicit --out overwrites the previous run there
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_projection(
    folder: Path, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The checkpoint's text -> item-space projection (weight [T, D], bias [D]), if it has one."""
    path = Path(folder) / "projection.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        scale = (f.metadata() or {}).get("scale")
    if scale != CALIBRATED:
        log.warning(
            "checkpoint %s: its text projection predates cold-start calibration, so new "
            "catalog items it cold-starts can crowd out trained ones; retrain it (streamrec "
            "train, or one continual-training cycle)",
            Path(folder).name,
        )
    tensors = load_file(str(path), device=str(device))
    return tensors["weight"], tensors["bias"]


def trained_until(folder: Path) -> int | None:
    """The newest event time (epoch ms) in the data a checkpoint was trained on; None for a
    checkpoint from before it was recorded, or without its metrics."""
    try:
        metrics = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    value = metrics.get("trained_until_ms") if isinstance(metrics, dict) else None
    return int(value) if isinstance(value, int) else None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"checkpoint file {path} is missing; re-run `streamrec train`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); retrain") from exc


def read_config(folder: Path) -> tuple[dict[str, Any], EncoderConfig]:
    """A checkpoint's config.json and the encoder config in it (the architecture and inputs it
    was built with), without loading its weights; ModelError when they cannot be read."""
    if not Path(folder).is_dir():  # a typo in the path reads better so than as a missing file
        raise ModelError(f"checkpoint directory {folder} does not exist (check the path)")
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise ModelError(f"{folder}/config.json is not a checkpoint config (not an object)")
    if config.get("format") != FORMAT or config.get("format_version") not in _READABLE_VERSIONS:
        raise ModelError(
            f"{folder}/config.json is format {config.get('format')!r} v"
            f"{config.get('format_version')}, this streamrec reads {FORMAT} v1 to "
            f"v{FORMAT_VERSION}; upgrade streamrec to load a newer checkpoint"
        )
    try:
        return config, EncoderConfig.from_dict(config["encoder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{folder}/config.json has no usable encoder config ({exc!r})") from exc


def load_encoder(
    folder: Path, device: torch.device | str = "cpu"
) -> tuple[SequenceEncoder, dict[str, Any], list[str], torch.Tensor]:
    """Load (model in eval mode, config.json, item ids, fallback user vector [D])."""
    folder = Path(folder)
    config, encoder = read_config(folder)
    item_ids = _read_json(folder / "item_ids.json")
    model = SequenceEncoder(encoder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"checkpoint weights {weights} are missing; re-run `streamrec train`")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors' own error type for a truncated or foreign file
        raise ModelError(f"checkpoint weights {weights} are unreadable ({exc})") from exc
    fallback = state.pop(_FALLBACK, None)
    if fallback is None or len(item_ids) != model.config.n_items:
        raise ModelError(f"{folder} is inconsistent (item map or fallback vector); retrain")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{weights} does not match config.json: {exc}") from exc
    model.to(device).eval()
    return model, config, item_ids, fallback.to(device)


def verify_checkpoint(folder: Path) -> str:
    """The version of a checkpoint that loads (on the CPU); ModelError saying what is wrong
    otherwise. Run before announcing one, so workers are never sent a folder they would refuse."""
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a checkpoint folder (no config.json); run `streamrec train`"
        )
    _, config, _, _ = load_encoder(folder)
    version = config.get("model_version")
    if not isinstance(version, str) or not version:
        raise ModelError(f"{folder}/config.json names no model_version; retrain")
    return version


class InferenceEncoder:
    """Batched user-vector encoding for the serving path (CPU or CUDA).

    ``encode`` skips item ids the model does not know, keeps the last ``max_len`` known items,
    and returns the mean training user vector (``fallback_user``) for a sequence with no known
    item, so a brand-new user still gets popular-ish, model-consistent results.
    """

    def __init__(
        self,
        model: SequenceEncoder,
        item_ids: list[str],
        model_version: str,
        fallback_user: torch.Tensor,
        projection: tuple[torch.Tensor, torch.Tensor] | None = None,
        batch_size: int = 1024,
    ) -> None:
        self.model = model.eval()
        self.item_ids = item_ids
        self.model_version = model_version
        self.device = next(model.parameters()).device
        self._index = {item: i + 1 for i, item in enumerate(item_ids)}
        self._fallback = fallback_user.to(self.device)
        self._projection = projection
        cfg = model.config
        self.featurizer = Featurizer(self._index, cfg.inputs, cfg.max_len)
        length = cfg.max_len + cfg.inputs.summary_tokens
        self.batch_size = safe_batch_size(batch_size, cfg.heads, length)

    @classmethod
    def load(cls, folder: Path, device: str = "auto", batch_size: int = 1024) -> InferenceEncoder:
        """Load a checkpoint folder onto ``device`` (auto: CUDA when present, else CPU)."""
        from streamrec.models.encoder.training import pick_device

        dev = pick_device(device)
        model, config, item_ids, fallback = load_encoder(Path(folder), dev)
        projection = load_projection(Path(folder), dev)
        return cls(model, item_ids, config["model_version"], fallback, projection, batch_size)

    def item_vectors(self) -> np.ndarray:
        """Item embeddings, float32 [N, D]; row i scores ``item_ids[i]`` by dot product."""
        with torch.inference_mode():
            vecs: np.ndarray = self.model.item_vectors().float().cpu().numpy().copy()
            return vecs

    def indices(self, sequence: Sequence[str]) -> list[int]:
        """Known items of ``sequence`` as 1-based encoder indices (unknown ids skipped)."""
        return [self._index[i] for i in sequence if i in self._index]

    def encode_states(self, states: Sequence[UserState]) -> np.ndarray:
        """User vectors, float32 [B, D], for the worker's user states: the inputs the
        checkpoint was trained with, read by the code that built its training windows."""
        return self.encode_windows([self.featurizer.window(s) for s in states])

    @torch.inference_mode()
    def encode_windows(self, windows: Sequence[Window]) -> np.ndarray:
        """As ``encode_states`` for featurized rows; float32 [B, D]."""
        dim = self.model.config.hidden_size
        out = np.empty((len(windows), dim), dtype=np.float32)
        for start in range(0, len(windows), self.batch_size):
            batch = list(windows[start : start + self.batch_size])
            items, feats = collate(batch, self.model.config.inputs)  # [B, L]
            users = self._users(items, feats.to(self.device), [len(w.items) for w in batch])
            out[start : start + len(batch)] = users
        return out

    def _users(self, items: torch.Tensor, feats: TokenFeatures | None, sizes: list[int]) -> Any:
        """User vectors [B, D] as numpy; rows with no known item get the fallback vector."""
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
            users = self.model.user_vectors(items.to(self.device), feats).float()  # [B, D]
        empty = torch.tensor([n == 0 for n in sizes], device=self.device)
        return torch.where(empty.unsqueeze(1), self._fallback, users).cpu().numpy()  # [B, D]

    def encode(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        """User vectors, float32 [B, D], for item-id sequences in time order (oldest first),
        read as ids only (no side inputs, even when the checkpoint was trained with them)."""
        return self.encode_indices([self.indices(s) for s in sequences])

    @torch.inference_mode()
    def encode_indices(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """As ``encode`` for 1-based index sequences; float32 [B, D]."""
        dim = self.model.config.hidden_size
        out = np.empty((len(sequences), dim), dtype=np.float32)
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            items = left_pad(batch, self.model.config.max_len)  # [B, L]
            out[start : start + len(batch)] = self._users(items, None, [len(s) for s in batch])
        return out

    @property
    def has_projection(self) -> bool:
        """Whether items it was not trained on can get vectors from their text (cold start)."""
        return self._projection is not None

    def text_vectors_to_item_space(self, text_vecs: np.ndarray) -> np.ndarray:
        """Project text vectors [M, T] (all-MiniLM-L6-v2, normalised) to item vectors [M, D]."""
        if self._projection is None:
            raise ModelError(
                f"checkpoint {self.model_version} has no text projection; "
                "train with text enabled (the default) to score cold-start items"
            )
        weight, bias = self._projection
        if text_vecs.ndim != 2 or text_vecs.shape[1] != weight.shape[0]:
            raise ModelError(
                f"text vectors have shape {text_vecs.shape}, the projection expects [M, "
                f"{weight.shape[0]}] (all-MiniLM-L6-v2 embeddings)"
            )
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(text_vecs, dtype=np.float32), device=weight.device)
            return (x @ weight + bias).cpu().numpy()  # [M, D]
