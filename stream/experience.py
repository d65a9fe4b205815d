"""The experience topic: every closed impression with its rewards, for the one learner process.

With ``learner.mode = "shared"`` a worker does not learn by itself: when an impression's
attribution window closes (stream/feedback.py) it publishes the impression and every reward
joined to it to ``experience``, keyed by user_id (so one user's visits stay in order on one
partition, which the actor-critic's trajectories need), and serves whatever policy the learner
announces on ``control`` (stream/control.py). The learner process (stream/learner_process.py)
reads the topic in a consumer group of its own.

Delivery: the record is handed to the producer in the context of the event that closed the
impression, in the same flush as the table delete (stream/durability.py waits for both before
the event's offset commits): a crash before the commit may publish a closed impression twice,
never zero times; the learner drops a repeated ``rec_id`` (stream/learner_process.py).

Value (JSON): ``{"v": 1, "impression": Impression.to_dict(), "rewards": [Reward fields]}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streamrec.errors import ContractError
from streamrec.models.policy.critic import N_STATE
from streamrec.models.policy.rewards import Impression, Reward
from streamrec.models.policy.slate import N_FEATURES

EXPERIENCE_VERSION = 1

# (key, value) -> None: queues one record on the experience topic (faust's ``send_soon``).
SendSoon = Callable[[bytes, bytes], Any]


def encode_experience(impression: Impression, rewards: Sequence[Reward]) -> bytes:
    """One experience record's value."""
    return json.dumps(
        {
            "v": EXPERIENCE_VERSION,
            "impression": impression.to_dict(),
            "rewards": [r.__dict__ for r in rewards],
        }
    ).encode()


def decode_experience(raw: bytes) -> tuple[Impression, list[Reward]]:
    """Inverse of :func:`encode_experience`; raises ``ContractError`` (``bad_experience``) for
    a record the learner cannot learn from, so nothing it carries reaches an update."""
    try:
        data = json.loads(raw)
        if data.get("v") != EXPERIENCE_VERSION:
            raise ValueError(f"schema version {data.get('v')!r}, expected {EXPERIENCE_VERSION}")
        impression = Impression.from_dict(data["impression"])
        rewards = [
            Reward(str(r["rec_id"]), str(r["item_id"]), int(r["position"]), str(r["type"]),
                   float(r["value"]))
            for r in data["rewards"]
        ]  # fmt: skip
    except ContractError:
        raise
    except Exception as exc:  # anyone can write to the topic: whatever a record makes the
        # parsers raise (RecursionError on deep nesting, OverflowError on int(1e400)) is its fault
        raise ContractError("bad_experience", f"experience record: {exc!r}") from exc
    if any(not 0 <= r.position < len(impression.items) for r in rewards):
        raise ContractError(
            "bad_experience", f"experience {impression.rec_id}: reward position outside the slate"
        )
    problem = _unlearnable(impression, rewards)
    if problem:
        raise ContractError("bad_experience", f"experience {impression.rec_id}: {problem}")
    return impression, rewards


def _unlearnable(impression: Impression, rewards: Sequence[Reward]) -> str | None:
    """Why the learner could not use these arrays (a wrong shape fails its matrix products at
    the next update; a NaN, infinity or zero temperature turns its weights NaN), else None."""
    k = len(impression.items)
    shapes = {
        "features": (impression.features, (k, N_FEATURES)),
        "expected_features": (impression.expected_features, (k, N_FEATURES)),
        "params": (impression.params, (N_FEATURES,)),
        "state": (impression.state, (N_STATE,)),
        "diversity": (impression.diversity, (2,)),  # the slate's and its reference's
    }
    for name, (array, shape) in shapes.items():
        if array is not None and array.shape != shape:
            return f"{name} has shape {array.shape}, expected {shape}"
    numbers = [impression.created_at, *impression.propensities, *(r.value for r in rewards)]
    arrays = [np.asarray(numbers), *(a for a, _ in shapes.values() if a is not None)]
    if not all(np.isfinite(a).all() for a in arrays):
        return "a number is NaN or infinite"
    temperature = impression.temperature
    if temperature is not None and not (np.isfinite(temperature) and temperature > 0):
        return f"temperature must be finite and > 0; got {temperature}"
    return None


class ExperiencePublisher:
    """Publishes closed impressions (the worker's side of the shared learner)."""

    def __init__(self, send_soon: SendSoon) -> None:
        self.send_soon = send_soon
        self.published = 0

    def __call__(self, impression: Impression, rewards: Sequence[Reward]) -> None:
        self.send_soon(impression.user_id.encode(), encode_experience(impression, rewards))
        self.published += 1
