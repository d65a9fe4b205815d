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
fails it and the checkpoint serves again (a rollback); otherwise it passes, its rewards join the
reference and the next update opens a new trial. A rollback undoes what was learned since the
last passed trial; the failed trial's impressions still closing afterwards are ignored, so they
never lower the reference the next trial is judged against.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping

import numpy as np

from streamrec.models.config import LearnerSettings
from streamrec.models.policy.slate import FloatArray

Policy = tuple[FloatArray, str]  # weights and the version name they serve under


class RollbackGuard:
    """The trial since a checkpoint and the reference it is judged against (module docstring)."""

    def __init__(self, settings: LearnerSettings) -> None:
        self.settings = settings
        self.checkpoint: Policy | None = None
        self.trial: set[str] = set()
        self.discarded: set[str] = set()  # the last failed trial's versions
        self.current: list[float] = []  # rewards of the trial's impressions
        self.reference: deque[float] = deque(maxlen=settings.rollback_window)

    def count(self, version: str, reward: float) -> None:
        """One closed impression's reward, logged under ``version``."""
        if version in self.trial:
            self.current.append(reward)
        elif version not in self.discarded:
            self.reference.append(reward)

    def issued(self, served: Policy, version: str) -> None:
        """An update replaced ``served`` by ``version``; ``served`` is the checkpoint of a new
        trial when none is open."""
        if self.checkpoint is None:
            self.checkpoint = (served[0].copy(), served[1])
        self.trial.add(version)

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
        restore = self.checkpoint if failed else None
        if failed:
            self.discarded = self.trial
        else:
            self.reference.extend(self.current)
        self.close()
        return restore

    def close(self) -> None:
        """No trial open: the next update opens one at the weights it replaces."""
        self.checkpoint, self.trial, self.current = None, set(), []

    def tensors(self) -> dict[str, FloatArray]:
        """The arrays a learner's state file keeps of the guard."""
        tensors = {
            "current": np.asarray(self.current, dtype=np.float64),
            "reference": np.asarray(self.reference, dtype=np.float64),
        }
        if self.checkpoint is not None:
            tensors["previous_weights"] = self.checkpoint[0]
        return tensors

    def meta(self) -> dict[str, str]:
        """The strings a learner's state file keeps of the guard (version names as JSON)."""
        return {
            "previous_version": "" if self.checkpoint is None else self.checkpoint[1],
            "trial": json.dumps(sorted(self.trial)),
            "discarded": json.dumps(sorted(self.discarded)),
        }

    def restore(self, tensors: Mapping[str, FloatArray], meta: Mapping[str, str]) -> None:
        """Inverse of ``tensors`` and ``meta``. A file from before trials holds the version
        before its last update as ``previous_*``: that becomes the checkpoint."""
        if "previous_weights" in tensors:
            self.checkpoint = (tensors["previous_weights"], meta.get("previous_version", ""))
        self.trial = set(json.loads(meta.get("trial", "[]")))
        self.discarded = set(json.loads(meta.get("discarded", "[]")))
        self.current = [float(v) for v in tensors.get("current", [])]
        self.reference.extend(float(v) for v in tensors.get("reference", []))
