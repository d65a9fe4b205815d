"""The worker's impression store: the ``impressions`` table behind ``models.rewards``'
``ImpressionStore`` protocol, so the worker and the offline closed loop join rewards with the
one ``RewardJoiner``.

Entry layout (rec_id -> JSON): ``imp`` the impression (``Impression.to_dict``), ``p`` the
events partition of its user (where every write of the entry goes, and which worker closes
it), ``rewards`` the rewards credited so far, ``seen`` their dedupe keys.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from streamrec.models.policy.rewards import Impression, Reward


class TableImpressions:
    """``ImpressionStore`` over a table-like mapping; callers write in the entry's partition."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.partition = 0  # of the next ``put``: set by the caller with the user's partition

    def get(self, rec_id: str) -> Impression | None:
        entry = self.table.get(rec_id)
        return Impression.from_dict(entry["imp"]) if entry else None

    def put(self, impression: Impression) -> None:
        self.table[impression.rec_id] = {
            "imp": impression.to_dict(),
            "p": self.partition,
            "rewards": [],
            "seen": [],
        }

    def seen(self, key: str) -> bool:
        entry = self.table.get(_rec_id(key))
        return bool(entry and key in entry["seen"])

    def mark(self, key: str) -> None:
        self._extend(_rec_id(key), "seen", key)

    def credit(self, reward: Reward) -> None:
        self._extend(reward.rec_id, "rewards", reward.__dict__)

    def close(self, rec_id: str) -> tuple[Impression, list[Reward]] | None:
        """Remove an impression; it and its rewards, or None when it is not here."""
        entry = self.table.pop(rec_id, None)
        if entry is None:
            return None
        return Impression.from_dict(entry["imp"]), [Reward(**r) for r in entry["rewards"]]

    def open(self) -> Iterator[tuple[int, float, str]]:
        """Every stored impression as (partition, created_at, rec_id): after a restart these
        still wait to be closed."""
        for rec_id, entry in self.table.items():
            if entry:
                yield int(entry.get("p", 0)), float(entry["imp"]["created_at"]), rec_id

    def _extend(self, rec_id: str, field: str, value: Any) -> None:
        entry = self.table.get(rec_id)
        if entry is not None:
            self.table[rec_id] = {**entry, field: [*entry[field], value]}


def _rec_id(key: str) -> str:
    return key.split("|", 1)[0]  # dedupe keys are rec_id|item_id|type
