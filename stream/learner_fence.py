"""One learner per consumer group: which learner's policy the workers serve.

Every learner process has an id (kept in its state file) and announces its versions with it
and its start time (stream/control.py). Two learners for one group would switch every worker
between two lineages of weights, so:

Only valid announcements count (stream/control.py's ``parse_policy``): one whose weights the
policy cannot use is logged and treated as none, so it is neither adopted nor a fence.

* at start, a learner reads the control topic's last policy announcement. Its own (or none):
  it carries on. Another learner's, and this one has no state yet (a fresh replacement for a
  lost one): it adopts the announced weights and version, so workers are not rolled back to
  the start weights. Another learner's while this one has state of its own: another learner
  took over since this one last ran, and starting would roll the workers back; refused.
* while running, a learner that sees an announcement from a learner that started before it
  stops (the older one keeps the group). The same host's second learner on one data dir is
  refused earlier still, by the data dir's lock (stream/data_dir.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings
from streamrec.stream.control import PolicyAnnouncement, control_reader, parse_policy

Start = Literal["carry_on", "adopt"]
# A rival learner announces after this one started (it re-announces every reannounce_s), give
# or take the hosts' clock skew; an older announcement seen while running was copied back.
CLOCK_SLACK_MS = 60_000


@dataclass(frozen=True)
class LearnerIdentity:
    """Who announces: the learner's lasting id and this process's start (epoch ms)."""

    learner_id: str
    started: int


def new_learner_id() -> str:
    """A fresh learner's id; short, since its versions carry it (``pl-<id>-<n>``)."""
    return uuid.uuid4().hex[:8]


def is_own(announcement: PolicyAnnouncement, me: LearnerIdentity, held_version: str) -> bool:
    """Announced by this learner, or naming the version it holds (one it adopted). Version
    names carry the learner's id (its start version too), so they never cross lineages."""
    return announcement.learner_id == me.learner_id or announcement.policy_version == held_version


def on_start(
    last: PolicyAnnouncement | None,
    me: LearnerIdentity,
    held_version: str | None,
    legacy: bool = False,
) -> Start:
    """What a starting learner does given the last announcement; ``held_version`` is None for
    a learner without saved state, ``legacy`` marks state saved before learners had ids (its
    own announcements then carry none). ConfigError when starting would roll workers back."""
    if last is None or is_own(last, me, held_version or ""):
        return "carry_on"
    if legacy and not last.learner_id:
        return "carry_on"  # its own, announced before ids existed (or one an upgrade re-sends)
    if held_version is None:
        return "adopt"
    raise ConfigError(
        f"learner {last.learner_id or '?'} announced policy {last.policy_version} for this "
        f"group after this learner's {held_version}: another learner holds the group. Stop it "
        "before starting this one, or delete this learner's learner.safetensors to continue "
        "from the announced policy"
    )


def displaces(announcement: PolicyAnnouncement, me: LearnerIdentity) -> bool:
    """A running learner gives way to another process that started before it: another
    learner, or a copy of this one (a data dir restored on a second host, which its lock
    cannot see). Start times are wall clocks: keep the hosts' clocks in sync."""
    if not announcement.learner_id:
        return False  # announced by a learner from before ids: nobody to give way to
    if announcement.announced_at < me.started - CLOCK_SLACK_MS:
        return False  # announced before this learner started: a replayed record, not a rival
    return (announcement.learner_started, announcement.learner_id) < (me.started, me.learner_id)


class ControlWatch:
    """Follows the control topic from ``offset``; ``displaced_by`` is set when an older
    learner announces for the group."""

    def __init__(self, kafka: KafkaSettings, me: LearnerIdentity, offset: int) -> None:
        self.kafka = kafka
        self.me = me
        self.offset = offset
        self.displaced_by: PolicyAnnouncement | None = None

    def see(self, raw: bytes) -> None:
        """Note a control record: a policy announcement that displaces this learner."""
        announcement = parse_policy(raw)
        if announcement is not None and displaces(announcement, self.me):
            self.displaced_by = announcement

    async def run(self) -> None:
        async with control_reader(self.kafka) as (consumer, tp):
            consumer.seek(tp, self.offset)
            while self.displaced_by is None:
                for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    self.see(record.value or b"")


@dataclass
class Heartbeat:
    """Announces the held version again after ``every_s`` without an announcement: a learner
    that learns nothing would otherwise never tell a second learner of the group that it runs,
    and both would run until one of them updated."""

    every_s: float
    send: Callable[[str, list[float], Any, bool], Awaitable[None]]
    held: Callable[[], tuple[str, list[float]]]  # the learner's version and weights
    clock: Callable[[], float] = time.monotonic
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.last = self.clock()

    async def announce(
        self, version: str, weights: list[float], estimate: Any, rolled_back: bool
    ) -> None:
        await self.send(version, weights, estimate, rolled_back)
        self.last = self.clock()

    async def beat(self) -> None:
        if self.clock() - self.last >= self.every_s:
            await self.announce(*self.held(), None, False)
