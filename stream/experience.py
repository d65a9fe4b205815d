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

from streamrec.errors import ContractError
from streamrec.models.policy.rewards import Impression, Reward

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
    """Inverse of :func:`encode_experience`; raises ``ContractError`` (``bad_experience``)."""
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
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError("bad_experience", f"experience record: {exc!r}") from exc
    if any(not 0 <= r.position < len(impression.items) for r in rewards):
        raise ContractError(
            "bad_experience", f"experience {impression.rec_id}: reward position outside the slate"
        )
    return impression, rewards


class ExperiencePublisher:
    """Publishes closed impressions (the worker's side of the shared learner)."""

    def __init__(self, send_soon: SendSoon) -> None:
        self.send_soon = send_soon
        self.published = 0

    def __call__(self, impression: Impression, rewards: Sequence[Reward]) -> None:
        self.send_soon(impression.user_id.encode(), encode_experience(impression, rewards))
        self.published += 1
