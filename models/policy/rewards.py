"""Reward join: responses that carry a ``rec_id`` become rewards for the slate that caused them.

Pure logic, no Kafka. :class:`RewardJoiner` is the one join: the worker runs it over its
``impressions`` table (stream/impressions.py: an :class:`ImpressionStore` whose entries expire
after the attribution window) and the offline closed loop over :class:`MemoryImpressionStore`.
The core is the function :func:`attribute`, which takes the impression (or ``None``) and says
either which reward the response earns or why it is dropped; it never raises on bad input.

Usage::

    joiner = RewardJoiner(store, settings.learner.attribution_window_s,
                          settings.learner.reward_weights)
    joiner.record(Impression.from_slate(rec_id, user_id, slate, now))   # when a slate is out
    out = joiner.join(Response(...))    # per response event: Reward or DropReason
    # when an impression's window has closed: learner.observe(impression, its rewards)

Semantics
- A response is joined when ``impression.created_at <= ts <= created_at + window_s``.
  Later: ``late``; earlier: ``before_impression`` (clock skew or a bogus rec_id).
- Unknown rec_id (never stored, or expired from the table): ``unknown_rec``. A response from
  another user than the one the slate was shown to: ``wrong_user`` (a rec_id is no credential)
  when both users' events share a partition; otherwise the responder's partition holds no such
  impression and it is ``unknown_rec``.
- Item not in that slate: ``unknown_item``. Event type without a weight: ``unweighted_type``.
- Dedupe key ``(rec_id, item_id, type)``: replaying a partition after a crash re-delivers
  responses (at-least-once); the second one is ``duplicate`` and earns nothing.
- Reward value = ``reward_weights[type]``; a dwell adds its weight once, whatever ``dwell_ms``.
- A skip (a dwell shorter than ``state.min_dwell_ms``) is a response of type ``SKIP`` worth
  ``-learner.skip_penalty`` (``response_weights``); with no penalty it is not joined at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from streamrec.errors import ContractError
from streamrec.models.policy.slate import FloatArray, Slate

SKIP = "skip"  # the response type of a skipped slate item (``learner.skip_penalty``)


def response_weights(reward_weights: Mapping[str, float], skip_penalty: float) -> dict[str, float]:
    """What each response type earns: the reward weights, and a skip ``-skip_penalty`` when
    there is one (a music service's skipped track tells the policy more than silence)."""
    skip = {SKIP: -skip_penalty} if skip_penalty > 0 else {}
    return {**reward_weights, **skip}


@dataclass(frozen=True)
class Impression:
    """A published slate as the learner needs it.

    ``items``: item ids in display order (position 0 first); ``propensities`` ``[K]``;
    ``features`` / ``expected_features`` ``[K, F]`` from the stochastic policy (``None`` for
    deterministic rerankers); ``params`` ``[F]`` the logging weights; ``created_at`` seconds.
    """

    rec_id: str
    user_id: str
    items: list[str]
    propensities: list[float]
    policy_version: str
    created_at: float
    features: FloatArray | None = None
    expected_features: FloatArray | None = None
    params: FloatArray | None = None
    temperature: float | None = None
    state: FloatArray | None = None
    diversity: FloatArray | None = None
    reference_items: list[str] | None = None

    @classmethod
    def from_slate(cls, rec_id: str, user_id: str, slate: Slate, created_at: float) -> Impression:
        """The impression of a slate the policy just produced."""
        return cls(
            rec_id=rec_id,
            user_id=user_id,
            items=slate.item_ids,
            propensities=slate.propensities,
            policy_version=slate.policy_version,
            created_at=created_at,
            features=slate.features,
            expected_features=slate.expected_features,
            params=slate.params,
            temperature=slate.temperature,
            state=slate.state,
            diversity=slate.diversity,
            reference_items=slate.reference_items,
        )

    @property
    def stochastic(self) -> bool:
        """True when the learner can use it (it carries the policy's features)."""
        return (
            self.features is not None
            and self.expected_features is not None
            and self.params is not None
            and self.temperature is not None
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a Faust table value or a JSONL log)."""

        def arr(a: FloatArray | None) -> list[Any] | None:
            return None if a is None else np.asarray(a).tolist()

        return {
            "rec_id": self.rec_id,
            "user_id": self.user_id,
            "items": list(self.items),
            "propensities": list(self.propensities),
            "policy_version": self.policy_version,
            "created_at": self.created_at,
            "features": arr(self.features),
            "expected_features": arr(self.expected_features),
            "params": arr(self.params),
            "temperature": self.temperature,
            "state": arr(self.state),
            "diversity": arr(self.diversity),
            "reference_items": self.reference_items,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Impression:
        """Inverse of :meth:`to_dict`; raises ``ContractError`` (code ``bad_impression``)."""

        def arr(key: str) -> FloatArray | None:
            value = data.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        try:
            imp = cls(
                rec_id=str(data["rec_id"]),
                user_id=str(data["user_id"]),
                items=[str(i) for i in data["items"]],
                propensities=[float(p) for p in data["propensities"]],
                policy_version=str(data["policy_version"]),
                created_at=float(data["created_at"]),
                features=arr("features"),
                expected_features=arr("expected_features"),
                params=arr("params"),
                temperature=None if data.get("temperature") is None else float(data["temperature"]),
                state=arr("state"),
                diversity=arr("diversity"),
                reference_items=_strings(data.get("reference_items")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(
                "bad_impression",
                f"impression {data.get('rec_id', '?')}: {exc!r}; expected the fields of "
                "Impression.to_dict",
            ) from exc
        if len(imp.items) != len(imp.propensities):
            raise ContractError(
                "bad_impression",
                f"impression {imp.rec_id}: {len(imp.items)} items but "
                f"{len(imp.propensities)} propensities",
            )
        return imp


def _strings(value: Any) -> list[str] | None:
    return None if value is None else [str(v) for v in value]


@dataclass(frozen=True)
class Response:
    """A behaviour event that answers a recommendation (``rec_id`` set). ``ts`` in seconds, by
    the producer's clock; ``received``, when known, the broker's time of its record (seconds)."""

    rec_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    position: int | None = None
    dwell_ms: float | None = None
    received: float | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Response:
        """From an event dict (the simulator's or the events topic's); raises ``ContractError``."""
        try:
            return cls(
                rec_id=str(event["rec_id"]),
                user_id=str(event["user_id"]),
                item_id=str(event["item_id"]),
                type=str(event["type"]),
                ts=float(event["ts"]),
                position=None if event.get("position") is None else int(event["position"]),
                dwell_ms=None if event.get("dwell_ms") is None else float(event["dwell_ms"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(
                "bad_response", f"response event {event.get('event_id', '?')}: {exc!r}"
            ) from exc


@dataclass(frozen=True)
class Reward:
    """A response credited to a slate position."""

    rec_id: str
    item_id: str
    position: int
    type: str
    value: float


class DropReason(StrEnum):
    """Why a response earned nothing (a stable label for metrics)."""

    UNKNOWN_REC = "unknown_rec"
    WRONG_USER = "wrong_user"
    UNKNOWN_ITEM = "unknown_item"
    LATE = "late"
    BEFORE_IMPRESSION = "before_impression"
    DUPLICATE = "duplicate"
    UNWEIGHTED_TYPE = "unweighted_type"


def dedupe_key(response: Response) -> str:
    """``rec_id|item_id|type``: one reward per item and response type per slate."""
    return f"{response.rec_id}|{response.item_id}|{response.type}"


def attribute(
    impression: Impression | None,
    response: Response,
    *,
    already_seen: bool,
    window_s: float,
    weights: Mapping[str, float],
) -> Reward | DropReason:
    """The reward ``response`` earns for ``impression``, or why it earns none. Never raises."""
    if impression is None:
        return DropReason.UNKNOWN_REC
    if response.user_id != impression.user_id:
        return DropReason.WRONG_USER
    if response.type not in weights:
        return DropReason.UNWEIGHTED_TYPE
    if response.item_id not in impression.items:
        return DropReason.UNKNOWN_ITEM
    # Judged on the record's broker time when known: no response reaches Kafka before its slate
    # was published, while a producer whose clock runs behind stamps its clicks earlier (a click
    # 1.5 s after the slate from a clock 2 s behind was dropped). Lateness stays on the event's
    # own time: a click synced hours later still counts if the user made it in the window.
    arrived = response.received if response.received is not None else response.ts
    if arrived < impression.created_at:
        return DropReason.BEFORE_IMPRESSION
    if response.ts > impression.created_at + window_s:
        return DropReason.LATE
    if already_seen:
        return DropReason.DUPLICATE
    return Reward(
        rec_id=impression.rec_id,
        item_id=response.item_id,
        position=impression.items.index(response.item_id),
        type=response.type,
        value=float(weights[response.type]),
    )


class ImpressionStore(Protocol):
    """Where impressions, their rewards so far and dedupe keys live; dicts here, Faust tables
    in the worker. ``credit`` keeps the rewards next to the impression because the learner wants
    them all at once, when the attribution window closes."""

    def get(self, rec_id: str) -> Impression | None: ...

    def put(self, impression: Impression) -> None: ...

    def seen(self, key: str) -> bool: ...

    def mark(self, key: str) -> None: ...

    def credit(self, reward: Reward) -> None: ...


@dataclass
class MemoryImpressionStore:
    """In-memory :class:`ImpressionStore` for tests and the offline closed loop.

    ``expire(now, window_s)`` removes impressions older than the window and returns them with
    their rewards so the caller can hand them to ``OnlineLearner.observe``.
    """

    impressions: dict[str, Impression] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    rewards: dict[str, list[Reward]] = field(default_factory=dict)

    def get(self, rec_id: str) -> Impression | None:
        return self.impressions.get(rec_id)

    def put(self, impression: Impression) -> None:
        self.impressions[impression.rec_id] = impression

    def seen(self, key: str) -> bool:
        return key in self.keys

    def mark(self, key: str) -> None:
        self.keys.add(key)

    def credit(self, reward: Reward) -> None:
        self.rewards.setdefault(reward.rec_id, []).append(reward)

    def expire(self, now: float, window_s: float) -> list[tuple[Impression, list[Reward]]]:
        old = [i for i in self.impressions.values() if i.created_at + window_s < now]
        for imp in old:
            del self.impressions[imp.rec_id]
        gone = {imp.rec_id for imp in old}
        self.keys = {k for k in self.keys if k.split("|", 1)[0] not in gone}
        return [(imp, self.rewards.pop(imp.rec_id, [])) for imp in old]


class RewardJoiner:
    """Joins responses to stored impressions; counts joins and drops by reason."""

    def __init__(
        self, store: ImpressionStore, window_s: float, weights: Mapping[str, float]
    ) -> None:
        self.store = store
        self.window_s = window_s
        self.weights = dict(weights)
        self.counts: Counter[str] = Counter()

    def record(self, impression: Impression) -> None:
        """Store a published slate's impression."""
        self.store.put(impression)

    def join(self, response: Response) -> Reward | DropReason:
        """Credit one response; marks its dedupe key only when it earns a reward."""
        key = dedupe_key(response)
        out = attribute(
            self.store.get(response.rec_id),
            response,
            already_seen=self.store.seen(key),
            window_s=self.window_s,
            weights=self.weights,
        )
        if isinstance(out, Reward):
            self.store.mark(key)
            self.store.credit(out)
            self.counts["joined"] += 1
        else:
            self.counts[out.value] += 1
        return out

    def join_event(self, event: Mapping[str, Any]) -> Reward | DropReason | ContractError:
        """Like :meth:`join` for a raw event dict; a malformed one is returned, not raised."""
        try:
            response = Response.from_event(event)
        except ContractError as exc:
            self.counts["malformed"] += 1
            return exc
        return self.join(response)


def position_rewards(impression: Impression, rewards: Sequence[Reward]) -> FloatArray:
    """Reward per slate position ``[K]`` summed over the joined rewards."""
    out = np.zeros(len(impression.items))
    for r in rewards:
        out[r.position] += r.value
    return out
