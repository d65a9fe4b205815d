"""Helpers for the encoder tests: a dataset's leave-one-out split over replayed user states."""

from __future__ import annotations

from typing import Literal

from streamrec.datasets import Dataset
from streamrec.models.encoder.evaluation import catalog_order
from streamrec.models.encoder.event_log import dataset_as_events
from streamrec.models.encoder.inputs import Featurizer, TokenInputs
from streamrec.models.encoder.windows import WindowSplit, build_split
from streamrec.stream.config import StateSettings

BASE = 1_700_000_000  # epoch seconds: the event contract accepts times after 1990


def window_split(
    dataset: Dataset,
    max_len: int,
    inputs: TokenInputs | None = None,
    scheme: Literal["window", "prefix"] = "window",
    state: StateSettings | None = None,
) -> WindowSplit:
    """``dataset`` as the worker's events, replayed into the split ``train`` reads."""
    ids = catalog_order(dataset)
    featurizer = Featurizer({i: n + 1 for n, i in enumerate(ids)}, inputs or TokenInputs(), max_len)
    return build_split(
        dataset_as_events(dataset), ids, featurizer, state or StateSettings(), scheme
    )
