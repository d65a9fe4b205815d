"""Impressions, the reward join and online policy learning inside the worker.

The refresher hands every slate it publishes to ``Feedback.store``, with the policy's
per-slate features (needed by the learner, not published), which puts it in the
``impressions`` table (rec_id -> impression, credited rewards). The write goes to the changelog
partition of the slate's user, in the context of that partition's latest event
(stream/write_behind.py): responses are events of the same user, so the reward join never
needs another worker's data, and the impression is in the table before any response to it can
be read. (The worker used to read the recommendations topic back to learn the same; without
that, p99 latency at 1,000 events/s fell from 45-65 ms to 36 ms.)

A response (an event with ``rec_id``) is joined to its impression by ``models.rewards``'
``RewardJoiner`` (the same join the offline closed loop runs) within the attribution window;
unknown, late and duplicate responses (dedupe key rec_id|item|type) are counted by reason and
dropped. When an impression's window has closed (checked on each event of its partition) it is
passed, with every reward it earned, to the ``OnlineLearner``; each full mini-batch makes one
guarded update (or a rollback), the new policy goes to the serving reranker, and the learner
is saved to ``<data_dir>/learner.safetensors`` so it survives a restart. The queues of open
impressions live in memory; after a restart or rebalance ``reopen`` fills them again from the
table, so no impression is left open for good.

With ``learner.mode = "shared"`` the worker learns nothing itself: each closed impression goes,
with its rewards, to the ``experience`` sink (stream/experience.py), and new policies arrive
from the one learner process through the control topic (stream/control.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from faust.types import EventT

from streamrec.errors import ModelError
from streamrec.models.config import LearnerSettings, PolicySettings
from streamrec.models.policy.actor_critic import load_learner, make_learner
from streamrec.models.policy.learner import OnlineLearner
from streamrec.models.policy.rewards import (
    SKIP,
    DropReason,
    Impression,
    Response,
    Reward,
    RewardJoiner,
    response_weights,
)
from streamrec.models.policy.slate import FloatArray
from streamrec.stream.compat import event_context
from streamrec.stream.contract import Event, SlateItem
from streamrec.stream.impressions import TableImpressions
from streamrec.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)


# (weights [F], version) -> None: hands each new policy to the serving reranker.
PolicySink = Callable[[FloatArray, str], None]
# (impression, its rewards) -> None: publishes a closed impression for the learner process.
ExperienceSink = Callable[[Impression, list[Reward]], None]


class Feedback:
    """Owns the impressions table, the reward join and the online learner."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        context_of: Callable[[int], EventT[Any] | None],
        learner: LearnerSettings,
        policy: PolicySettings,
        path: Path,
        on_policy: PolicySink,
        metrics: WorkerMetrics,
        experience: ExperienceSink | None = None,
    ) -> None:
        self.impressions = TableImpressions(table)
        weights = response_weights(learner.reward_weights, learner.skip_penalty)
        self.joiner = RewardJoiner(self.impressions, learner.attribution_window_s, weights)
        self.context_of = context_of  # a partition's latest event (its table write context)
        self.window_s = learner.attribution_window_s
        self.path = path
        self.learner = _load_learner(path, learner, policy)
        self.on_policy = on_policy
        self.metrics = metrics
        self.experience = experience  # shared mode: closed impressions go to the learner process
        self.expiry: dict[int, deque[tuple[float, str]]] = {}
        self.reward_value = 0.0
        self.started_ms = int(time.time() * 1000)
        self.announced_updates = 0  # shared mode: versions announced since the start, taken up
        self.announced_rollbacks = 0  # of them, the learner's rollbacks
        for reason in DropReason:  # a series per reason from the start: rate() and alerts see 0s
            metrics.rewards_dropped.labels(reason.value)
        for kind, value in weights.items():  # the series each response type can move
            (metrics.rewards if value >= 0 else metrics.penalties).labels(kind)
            metrics.responses_joined.labels(kind)
        on_policy(self.learner.weights, self.learner.version)

    def store(self, impression: Impression, partition: int) -> bool:
        """Store the impression of a slate just published for a user of ``partition``.

        False when the partition is no longer this worker's (a rebalance since the user's
        event): its next owner has no such impression, and a response to it counts as
        ``unknown_rec``.
        """
        event = self.context_of(partition)
        if event is None:
            return False
        with event_context(event):
            self.impressions.partition = partition
            self.joiner.record(impression)
        self.expiry.setdefault(partition, deque()).append(
            (impression.created_at, impression.rec_id)
        )
        return True

    def reopen(self, owned: set[int]) -> None:
        """Queue for closing every stored impression of ``owned`` partitions (after a restart
        or a rebalance the queues, which live in memory, start empty)."""
        found = sorted(
            (p, created, rec_id) for p, created, rec_id in self.impressions.open() if p in owned
        )
        self.expiry = {p: deque() for p in owned}
        for partition, created, rec_id in found:
            self.expiry[partition].append((created, rec_id))

    def on_response(
        self, event: Event, partition: int, received: float | None = None
    ) -> DropReason | None:
        """Join a response (event with rec_id) to its impression; call in the event context.
        ``received``: its record's broker time in seconds, when known (``Response``)."""
        return self._join(event, event.type, received)

    def on_skip(
        self, event: Event, partition: int, received: float | None = None
    ) -> DropReason | None:
        """Join a skipped slate item (``StateSettings.is_skip``) as a penalty, when
        ``learner.skip_penalty`` sets one; without, a skip earns nothing and is not joined."""
        if SKIP not in self.joiner.weights:
            return None
        return self._join(event, SKIP, received)

    def _join(self, event: Event, kind: str, received: float | None) -> DropReason | None:
        assert event.rec_id is not None
        response = Response(
            rec_id=event.rec_id,
            user_id=event.user_id,
            item_id=event.item_id,
            type=kind,
            ts=event.ts / 1000,
            position=event.position,
            received=received,
        )
        result = self.joiner.join(response)
        if isinstance(result, DropReason):
            self.metrics.rewards_dropped.labels(result.value).inc()
            return result
        self.reward_value += result.value
        # A counter only rises: a penalty is summed apart (inc() of a negative value raises).
        if result.value >= 0:
            self.metrics.rewards.labels(result.type).inc(result.value)
        else:
            self.metrics.penalties.labels(result.type).inc(-result.value)
        self.metrics.responses_joined.labels(result.type).inc()
        return None

    def tick(self, partition: int, received: float | None = None) -> None:
        """Close the partition's expired impressions; call in an event context of ``partition``
        (each event ingested there) with its record's append time (seconds) when known.

        Their windows are judged on the partition's append time, not on the clock alone: a
        worker lagging 3 s behind a 2 s window closed each impression before reading the clicks
        made within it, and dropped them as ``unknown_rec``. A record appended after a window
        has passed follows every response appended within it."""
        now = time.time()
        self._close_expired(partition, now if received is None else min(now, received))

    def _close_expired(self, partition: int, now: float) -> None:
        queue = self.expiry.get(partition)
        while queue and queue[0][0] + self.window_s < now:
            _, rec_id = queue.popleft()
            closed = self.impressions.close(rec_id)
            if closed is None:
                continue
            if self.experience is not None:
                self.experience(*closed)
            else:
                self.learner.observe(*closed)
            self.metrics.impressions_closed.inc()
        if self.experience is None and self.learner.ready():
            self._update()

    def _update(self) -> None:
        result = self.learner.update()
        self.metrics.policy_updates.inc()
        if result.rolled_back:
            self.metrics.policy_rollbacks.inc()
        self.on_policy(self.learner.weights, self.learner.version)
        self.learner.save(self.path)
        log.info(
            "policy %s after update %d (rolled back: %s)",
            self.learner.version,
            self.learner.n_updates,
            result.rolled_back,
        )

    def serve_announced(
        self, weights: FloatArray, version: str, announced_at_ms: int, rolled_back: bool = False
    ) -> None:
        """Shared mode: serve the learner process's version (stream/control.py). The local
        learner only mirrors it, so /stats, ``streamrec_policy_updates_total`` and
        ``_rollbacks_total`` follow what the slates use; versions announced before this worker
        started (read again from the control topic at start) are served but not counted."""
        self.on_policy(weights, version)
        self.learner.weights, self.learner.version = weights, version
        if announced_at_ms >= self.started_ms:
            self.announced_updates += 1
            self.metrics.policy_updates.inc()
            if rolled_back:
                self.announced_rollbacks += 1
                self.metrics.policy_rollbacks.inc()

    def stats(self) -> dict[str, Any]:
        return {
            "rewards_joined": self.joiner.counts["joined"],
            "reward_value": round(self.reward_value, 3),
            "responses_dropped": {k: n for k, n in self.joiner.counts.items() if k != "joined"},
            "policy_version": self.learner.version,
            "policy_updates": self.learner.n_updates + self.announced_updates,
            "policy_rollbacks": self.learner.n_rollbacks + self.announced_rollbacks,
            "policy_holding": self.learner.guard.holding,  # after a rollback: the restored version
            "open_impressions": sum(len(q) for q in self.expiry.values()),
        }


def _load_learner(path: Path, learner: LearnerSettings, policy: PolicySettings) -> OnlineLearner:
    if path.exists():
        try:
            return load_learner(path, learner, policy)
        except ModelError as exc:
            log.error("learner state %s unusable, starting fresh: %s", path, exc)
    return make_learner(learner, policy)


def impression_of(
    rec_id: str, user_id: str, items: Sequence[SlateItem], policy_version: str, created_at: int
) -> Impression:
    """The impression of a published slate as its record tells it (no policy features);
    ``created_at`` in epoch ms, as the record has it."""
    return Impression(
        rec_id=rec_id,
        user_id=user_id,
        items=[i.item_id for i in items],
        propensities=[i.propensity for i in items],
        policy_version=policy_version,
        created_at=created_at / 1000,
    )
