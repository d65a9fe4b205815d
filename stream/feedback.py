"""Impressions, the reward join and online policy learning inside the worker.

Impressions come from the ``recommendations`` topic itself: an agent reads each published
slate and stores it in the ``impressions`` table (rec_id -> impression, credited rewards). The
topic is keyed by user_id with the same partition count as ``events``, so a slate and the
responses of its user land in the same partition number, which faust assigns to one worker:
the reward join needs no cross-worker lookup. The refresher of the same worker hands each
slate over in memory too, with the policy's per-slate features (needed by the learner, not
published). A response read before its slate comes back (the consumer may serve a backlog of
events first) stores the impression from that hand-over, in its own event context, which maps
to the same changelog partition; the slate's record, read later, then stores nothing.

A response (an event with ``rec_id``) is joined to its impression by ``models.rewards.attribute``
within the attribution window; unknown, late and duplicate responses (dedupe key
rec_id|item|type) are counted by reason and dropped. When an impression's window has closed
(checked on each slate and each event of its partition) it is passed, with every reward it
earned, to the ``OnlineLearner``; each full mini-batch makes one guarded update (or a
rollback), the stochastic reranker switches to the new weights, and the learner is
saved to ``<data_dir>/learner.safetensors`` so it survives a restart.

All table writes happen inside the agents' event context, so each goes to the changelog
partition of the record that caused it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faust

from streamrec.errors import ModelError
from streamrec.models.learner import OnlineLearner
from streamrec.models.rewards import (
    DropReason,
    Impression,
    Response,
    Reward,
    attribute,
    dedupe_key,
)
from streamrec.stream.contract import Event, Recommendation

if TYPE_CHECKING:
    from streamrec.stream.app import StreamrecApp

log = logging.getLogger(__name__)
LOGGED_KEPT = 50_000


class Feedback:
    """Owns the impressions table, the reward join and the online learner."""

    def __init__(self, worker: StreamrecApp) -> None:
        self.worker = worker
        s = worker.settings
        self.window_s = s.learner.attribution_window_s
        self.table = worker.app.Table(
            "impressions", default=None, partitions=s.kafka.topics.partitions, key_type=str
        )
        self.path = s.state.data_dir / "learner.safetensors"
        self.learner = self._load_learner()
        self.logged: dict[str, Impression] = {}
        self.stored_early: dict[str, None] = {}  # rec_ids a response stored before the slate
        self.expiry: dict[int, deque[tuple[float, str]]] = {}
        self.rewards = 0
        self.reward_value = 0.0
        self.dropped: dict[str, int] = {}

    def _load_learner(self) -> OnlineLearner:
        s = self.worker.settings
        if self.path.exists():
            try:
                return OnlineLearner.load(self.path, s.learner, s.policy)
            except ModelError as exc:
                log.error("learner state %s unusable, starting fresh: %s", self.path, exc)
        return OnlineLearner(s.learner, s.policy)

    def log_impression(self, impression: Impression) -> None:
        """Refresher hand-over of a published slate (with the policy's features, if any)."""
        self.logged[impression.rec_id] = impression
        _bound(self.logged)

    async def on_recommendations(self, stream: faust.StreamT[bytes]) -> None:
        """Agent on the recommendations topic: store impressions, close expired ones."""
        async for event in stream.events():
            rec = Recommendation.model_validate_json(event.value)
            partition = event.message.partition
            if rec.rec_id in self.stored_early:  # a response stored it already, with rewards
                del self.stored_early[rec.rec_id]
            else:
                impression = self.logged.pop(rec.rec_id, None) or impression_of(rec)
                self._store(impression, partition)
            self._close_expired(partition, time.time())

    def _store(self, impression: Impression, partition: int) -> None:
        """Put a new impression in the table and the partition's expiry queue (event context)."""
        self.table[impression.rec_id] = {"imp": impression.to_dict(), "rewards": [], "seen": []}
        queue = self.expiry.setdefault(partition, deque())
        queue.append((impression.created_at, impression.rec_id))

    def _entry(self, rec_id: str, partition: int) -> Mapping[str, Any] | None:
        """The impression entry of ``rec_id``; one only logged so far is stored now.

        A response can be read before its slate comes back on the recommendations topic (the
        consumer serves a backlog of events first); the refresher's hand-over has the slate.
        """
        entry: Mapping[str, Any] | None = self.table.get(rec_id)
        if entry is None and rec_id in self.logged:
            self._store(self.logged.pop(rec_id), partition)
            self.stored_early[rec_id] = None  # its record, read later, must not store it again
            _bound(self.stored_early)
            entry = self.table.get(rec_id)
        return entry

    def on_response(self, event: Event, partition: int) -> DropReason | None:
        """Join a response (event with rec_id) to its impression; call in the event context."""
        assert event.rec_id is not None
        entry = self._entry(event.rec_id, partition)
        impression = Impression.from_dict(entry["imp"]) if entry else None
        response = Response(
            rec_id=event.rec_id,
            user_id=event.user_id,
            item_id=event.item_id,
            type=event.type,
            ts=event.ts / 1000,
            position=event.position,
        )
        key = dedupe_key(response)
        result = attribute(
            impression,
            response,
            already_seen=bool(entry and key in entry["seen"]),
            window_s=self.window_s,
            weights=self.worker.settings.learner.reward_weights,
        )
        if isinstance(result, DropReason):
            self.dropped[result.value] = self.dropped.get(result.value, 0) + 1
            self.worker.metrics.rewards_dropped.labels(result.value).inc()
            return result
        assert entry is not None
        self.table[event.rec_id] = {
            **entry,
            "rewards": [*entry["rewards"], result.__dict__],
            "seen": [*entry["seen"], key],
        }
        self.rewards += 1
        self.reward_value += result.value
        self.worker.metrics.rewards.labels(result.type).inc(result.value)
        return None

    def tick(self, partition: int) -> None:
        """Close the partition's expired impressions; call in an event context of ``partition``.

        Called for every slate read back and every event ingested on the partition, so a
        window closes on time even when no further slate is published there.
        """
        self._close_expired(partition, time.time())

    def _close_expired(self, partition: int, now: float) -> None:
        queue = self.expiry.get(partition)
        while queue and queue[0][0] + self.window_s < now:
            _, rec_id = queue.popleft()
            entry = self.table.pop(rec_id, None)
            if entry is None:
                continue
            rewards = [Reward(**r) for r in entry["rewards"]]
            self.learner.observe(Impression.from_dict(entry["imp"]), rewards)
            self.worker.metrics.impressions_closed.inc()
        if self.learner.ready():
            self._update()

    def _update(self) -> None:
        result = self.learner.update()
        metrics = self.worker.metrics
        metrics.policy_updates.inc()
        if result.rolled_back:
            metrics.policy_rollbacks.inc()
        reranker = self._reranker()
        if reranker is not None:
            reranker.set_params(self.learner.weights, self.learner.version)
        self.learner.save(self.path)
        log.info(
            "policy %s after update %d (rolled back: %s)",
            self.learner.version,
            self.learner.n_updates,
            result.rolled_back,
        )

    def sync_reranker(self) -> None:
        """Give a freshly loaded stochastic reranker the learner's current weights."""
        reranker = self._reranker()
        if reranker is not None:
            reranker.set_params(self.learner.weights, self.learner.version)

    def _reranker(self) -> Any:
        server = self.worker.model_server
        builder = server.builder if server is not None else None
        reranker = builder.reranker if builder is not None else None
        return reranker if hasattr(reranker, "set_params") else None

    def stats(self) -> dict[str, Any]:
        return {
            "rewards_joined": self.rewards,
            "reward_value": round(self.reward_value, 3),
            "responses_dropped": self.dropped,
            "policy_version": self.learner.version,
            "policy_updates": self.learner.n_updates,
            "policy_rollbacks": self.learner.n_rollbacks,
            "open_impressions": sum(len(q) for q in self.expiry.values()),
        }


def impression_of(rec: Recommendation) -> Impression:
    """The impression of a published slate as its record tells it (no policy features)."""
    return Impression(
        rec_id=rec.rec_id,
        user_id=rec.user_id,
        items=[i.item_id for i in rec.items],
        propensities=[i.propensity for i in rec.items],
        policy_version=rec.policy_version,
        created_at=rec.created_at / 1000,
    )


def _bound(kept: dict[str, Any]) -> None:
    """Drop the oldest entries past ``LOGGED_KEPT`` (dicts keep insertion order)."""
    while len(kept) > LOGGED_KEPT:
        kept.pop(next(iter(kept)))
