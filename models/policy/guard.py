"""The rollback guard: what the learner learned since a checkpoint, judged as its rewards close.

A reward reaches the learner only when its impression's attribution window closes (30 minutes
by default), long after the learner has moved on: it updates every ``batch_size`` closed
impressions, so under real traffic a version serves for seconds or less. Judging each version
on its own impressions, as the guard did before, never gathered ``rollback_min_impressions`` of
one version before the next update replaced it, and it never fired.

So the guard judges a trial, not a version. At an update with no trial open, the weights and
version served until then become the checkpoint, and every version issued from then on belongs
to the trial. A closed impression's reward goes to the trial when it was logged under one of
the trial's versions; the rest (the checkpoint's and earlier versions') form the reference, the
newest ``rollback_window`` of them. Once the trial holds ``rollback_min_impressions`` rewards it
is judged: a mean below ``reference * (1 - rollback_drop)`` by more than two standard errors
fails it and the checkpoint serves again (a rollback); the failed trial's impressions still
closing afterwards are ignored, so they never lower the reference the next trial is judged
against.

After a rollback the guard *holds* (``holding``, the restored version): the reference is emptied
and the learner issues nothing until ``rollback_min_impressions`` rewards of the restored
version have closed and refilled it (other versions' rewards closing meanwhile, the failed
trial's or older ones from a lagging partition, are not counted). Without it the next trial
opened one update later and was judged against rewards from before the failed one: under a
falling reward level (satiation, a quieter hour) each new trial failed against that stale
reference, and an ops run saw twelve rollbacks in three and a half minutes, each paging.

A pass approves only what the rewards judged. Rewards close in the order their slates were
shown, so the first ones of a trial are of its earliest versions, while the learner has issued
many more since. The checkpoint moves to the newest judged version the guard kept the weights
of (``snapshots``: a bounded list, thinned by halving, so recent versions are dense), and the
trial goes on with the versions after it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import astuple, dataclass

import numpy as np

from streamrec.models.config import LearnerSettings
from streamrec.models.policy.slate import FloatArray

Policy = tuple[FloatArray, str]  # weights and the version name they serve under
SNAPSHOTS = 64  # trial versions whose weights are kept; halved (every other one) beyond it
DISCARDED = 4  # failed trials whose late rewards are still ignored


@dataclass(frozen=True)
class Span:
    """Versions ``<stem>-<first>`` to ``<stem>-<last>``, as ``OnlineLearner.version_name``
    numbers them: a range, not a set, because under real traffic a trial issues thousands."""

    stem: str
    first: int
    last: int

    def holds(self, version: str) -> bool:
        parts = _parts(version)
        return parts is not None and parts[0] == self.stem and self.first <= parts[1] <= self.last

    def to(self, version: str) -> Span:
        """This span grown to ``version`` (a new one from it when of another stem)."""
        stem, count = _parts(version) or (version, 0)
        return Span(stem, self.first, count) if stem == self.stem else Span(stem, count, count)

    @classmethod
    def of(cls, version: str) -> Span:
        stem, count = _parts(version) or (version, 0)
        return cls(stem, count, count)


def _parts(version: str) -> tuple[str, int] | None:
    stem, _, count = version.rpartition("-")
    return (stem, int(count)) if stem and count.isdigit() else None


def _number(version: str) -> int:
    parts = _parts(version)
    return parts[1] if parts is not None else -1


class RollbackGuard:
    """The trial since a checkpoint and the reference it is judged against (module docstring)."""

    def __init__(self, settings: LearnerSettings) -> None:
        self.settings = settings
        self.checkpoint: Policy | None = None
        self.trial: Span | None = None  # the versions issued since the checkpoint
        self.snapshots: list[tuple[int, Policy]] = []  # (version number, policy) of the trial's
        self.judged = -1  # the newest version number a reward of the trial came from
        # failed trials' versions, the last few: a lagging partition can deliver a trial's
        # rewards after the next one failed too
        self.discarded: deque[Span] = deque(maxlen=DISCARDED)
        # the newest rewards of the trial's impressions (bounded: a trial waiting for a
        # reference could otherwise grow without end) and of earlier versions'
        self.current: deque[float] = deque(maxlen=self._kept())
        self.reference: deque[float] = deque(maxlen=settings.rollback_window)
        self.holding: str | None = None  # the restored version, until its rewards refill

    def _refilled(self) -> int:
        """Rewards that end a hold: a judgeable reference, or as many as its window keeps."""
        return min(self.settings.rollback_window, self.settings.rollback_min_impressions)

    def _kept(self) -> int:
        return max(self.settings.rollback_window, self.settings.rollback_min_impressions)

    def count(self, version: str, reward: float) -> None:
        """One closed impression's reward, logged under ``version``."""
        if self.holding is not None:
            if version == self.holding:
                self.reference.append(reward)
                if len(self.reference) >= self._refilled():
                    self.holding = None
            return
        if self.trial is not None and self.trial.holds(version):
            self.current.append(reward)
            self.judged = max(self.judged, _number(version))
        elif not any(span.holds(version) for span in self.discarded):
            self.reference.append(reward)

    def issued(self, served: Policy, new: Policy) -> None:
        """An update replaced ``served`` by ``new``; ``served`` is the checkpoint of a new
        trial when none is open."""
        if self.checkpoint is None:
            self.checkpoint = (served[0].copy(), served[1])
        version = new[1]
        self.trial = Span.of(version) if self.trial is None else self.trial.to(version)
        self.snapshots.append((_number(version), (new[0].copy(), version)))
        if len(self.snapshots) > SNAPSHOTS:
            self.snapshots = self.snapshots[::2]

    def forget(self, version: str) -> None:
        """``version`` was withdrawn before it served: its weights must never become a
        checkpoint (the trial itself stays open)."""
        self.snapshots = [(n, policy) for n, policy in self.snapshots if policy[1] != version]

    def verdict(self) -> Policy | None:
        """The checkpoint to serve again when the trial has failed, else None. A judged trial
        (passed or failed) is closed; an open one waits for enough rewards on both sides."""
        s = self.settings
        if self.checkpoint is None or len(self.current) < s.rollback_min_impressions:
            return None
        if len(self.reference) < s.rollback_min_impressions:
            return None
        cur, ref = np.asarray(self.current), np.asarray(self.reference)
        drop = float(ref.mean() - cur.mean())
        se = float(np.sqrt(cur.var() / len(cur) + ref.var() / len(ref)))
        failed = drop > s.rollback_drop * abs(float(ref.mean())) and drop > 2.0 * se
        if failed:
            restore = self.checkpoint
            if self.trial is not None:
                self.discarded.append(self.trial)
            self.close()
            self.reference.clear()
            self.holding = restore[1]
            return restore
        self.reference.extend(self.current)
        self._advance()
        return None

    def _advance(self) -> None:
        """After a pass: the checkpoint moves to the newest judged version with kept weights,
        and the trial goes on with the versions after it (closed when none are left)."""
        kept = [(n, policy) for n, policy in self.snapshots if n <= self.judged]
        if self.trial is None or not kept or kept[-1][0] >= self.trial.last:
            self.close()
            return
        number, self.checkpoint = kept[-1]
        self.trial = Span(self.trial.stem, number + 1, self.trial.last)
        self.snapshots = [(n, policy) for n, policy in self.snapshots if n > number]
        self.current.clear()
        self.judged = -1

    def close(self) -> None:
        """No trial open: the next update opens one at the weights it replaces."""
        self.checkpoint, self.trial, self.snapshots, self.judged = None, None, [], -1
        self.current.clear()

    def tensors(self) -> dict[str, FloatArray]:
        """The arrays a learner's state file keeps of the guard."""
        tensors = {
            "current": np.asarray(self.current, dtype=np.float64),
            "reference": np.asarray(self.reference, dtype=np.float64),
        }
        if self.checkpoint is not None:
            tensors["previous_weights"] = self.checkpoint[0]
        if self.snapshots:
            tensors["snapshot_weights"] = np.stack([policy[0] for _, policy in self.snapshots])
        return tensors

    def meta(self) -> dict[str, str]:
        """The strings a learner's state file keeps of the guard (version names as JSON)."""
        return {
            "previous_version": "" if self.checkpoint is None else self.checkpoint[1],
            "trial": json.dumps(None if self.trial is None else astuple(self.trial)),
            "discarded": json.dumps([astuple(span) for span in self.discarded]),
            "snapshots": json.dumps([[n, policy[1]] for n, policy in self.snapshots]),
            "judged": str(self.judged),
            "holding": self.holding or "",
        }

    def restore(self, tensors: Mapping[str, FloatArray], meta: Mapping[str, str]) -> None:
        """Inverse of ``tensors`` and ``meta``. A file from before trials holds the version
        before its last update as ``previous_*``: that becomes the checkpoint, and the version
        served then (``version``) the trial."""
        if "previous_weights" in tensors:
            self.checkpoint = (tensors["previous_weights"], meta.get("previous_version", ""))
        trial = json.loads(meta.get("trial", "null"))
        self.trial = None if trial is None else _span(trial)
        self.discarded.extend(_span(fields) for fields in json.loads(meta.get("discarded", "[]")))
        if self.checkpoint is not None and "trial" not in meta:
            self.trial = Span.of(meta.get("version", ""))
        weights = tensors.get("snapshot_weights", np.zeros((0, 0)))
        listed = json.loads(meta.get("snapshots", "[]"))
        self.snapshots = [(int(n), (w, str(v))) for (n, v), w in zip(listed, weights, strict=True)]
        self.judged = int(meta.get("judged", "-1"))
        self.holding = meta.get("holding") or None
        self.current.extend(float(v) for v in tensors.get("current", []))
        self.reference.extend(float(v) for v in tensors.get("reference", []))


def _span(fields: list[object]) -> Span:
    stem, first, last = fields
    return Span(str(stem), int(str(first)), int(str(last)))
