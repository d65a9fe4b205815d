"""Warnings about a model a worker has just loaded: what it reads that the worker does not keep,
and how much of the catalog it was trained on. Neither stops the model from serving."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Below this share of the catalog in a loaded model's training items, the swap is warned about.
UNKNOWN_CATALOG_SHARE = 0.5


def warn_unkept_context(checkpoint: Path, kept: tuple[str, ...]) -> None:
    """A model trained on context fields the user states do not keep reads them as unknown."""
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        fields = config["encoder"].get("inputs", {}).get("context_fields", [])
    except (OSError, ValueError, KeyError, AttributeError):
        return  # the load itself succeeded; an unreadable extra costs only this warning
    missing = [f for f in fields if f not in kept]
    if missing:
        log.warning(
            "model %s reads event context %s that user states do not keep; it sees them as "
            "unknown. Set state.context_fields to include them (STREAMREC_STATE__CONTEXT_FIELDS)",
            checkpoint.name,
            missing,
        )


def warn_unknown_catalog(version: str, checkpoint: Path, catalog: list[str]) -> None:
    """A model that knows few of the catalog's items (trained on another catalog?) serves them
    from their text alone: say so, since nothing else would."""
    try:
        known = set(json.loads((checkpoint / "item_ids.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return  # the load itself succeeded; an unreadable extra costs only this warning
    trained = sum(item in known for item in catalog)
    if catalog and trained < UNKNOWN_CATALOG_SHARE * len(catalog):
        log.warning(
            "model %s was trained on %d of the %d catalog items; the others are served from "
            "their text vectors only (was it trained on another dataset?)",
            version,
            trained,
            len(catalog),
        )


def warn_no_model(control_topic: str) -> None:
    """A model-mode worker with no checkpoint configured and none announced waited for one
    without a word, never ready (a new user's report)."""
    log.warning(
        "model mode with no encoder.checkpoint set and no model served yet: answering with "
        "the heuristic, and not ready, until a model announced on %s loads (`streamrec "
        "publish-model`, or the trainer) or STREAMREC_ENCODER__CHECKPOINT is set",
        control_topic,
    )
