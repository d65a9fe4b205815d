"""Fusion weights learned on the stream, from what each user did next.

Each slate fuses candidate sources (embedding, co-visitation, trending) by weighted reciprocal
rank (index/candidates.py). Which source deserves how much weight depends on the data, so the
weights are fitted prequentially instead of fixed: when a slate is built, the top
``fusion.depth`` eligible items of each source are remembered for the user; when the user's
next event arrives, each source is credited the discounted gain ``1 / log2(1 + rank)`` of that
item in its list (0 when absent), the quantity NDCG@10 rewards. A source's weight is its mean
gain over the last ``fusion.half_life`` observations (exponentially decayed counts), relative to
the best source's, and never below ``fusion.floor`` (a source that is useless now can become
useful, and a zero weight could never show it). Before ``fusion.warmup`` observations the
weights are equal, as plain reciprocal rank fusion would have them.

Read from the model thread, written on the event loop: ``weights`` is one immutable mapping
replaced in one assignment, so a slate is fused with one consistent set.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from types import MappingProxyType

from streamrec.stream.config import FusionSettings

SourceLists = Mapping[str, Sequence[str]]  # source -> its top items for a user, best first
Weights = Mapping[str, float]


def source_lists(
    sources: Mapping[str, Sequence[tuple[str, float]]], exclude: Container[str], depth: int
) -> dict[str, list[str]]:
    """Each source's best ``depth`` items the user may be shown, best first (sources come
    ranked, as fusion takes them)."""
    lists: dict[str, list[str]] = {}
    for name, hits in sources.items():
        eligible: list[str] = []
        for item, _ in hits:
            if item not in exclude:
                eligible.append(item)
                if len(eligible) == depth:
                    break
        lists[name] = eligible
    return lists


class FusionLearner:
    """Learns the fusion weights (see module docstring)."""

    def __init__(self, settings: FusionSettings) -> None:
        self.settings = settings
        # user -> source -> its top items, best first. Tuples, not {item: rank} maps: a user's
        # two lists of 50 took 3.5 KB as maps (350 MB for the 100,000 users kept) and take
        # about 1 KB as tuples; the rank is then one scan of 50 ids per next event.
        self.pending: OrderedDict[str, dict[str, tuple[str, ...]]] = OrderedDict()
        self.gain: dict[str, float] = {}  # decayed sum of gains per source
        self.seen = 0.0  # decayed count of observations
        self.observations = 0
        self.weights: Mapping[str, float] = MappingProxyType({})
        self._decay = 0.5 ** (1.0 / settings.half_life)

    def remember(self, user_id: str, sources: SourceLists) -> None:
        """The sources' lists behind the slate just built for ``user_id``."""
        depth = self.settings.depth
        self.pending[user_id] = {name: tuple(items[:depth]) for name, items in sources.items()}
        self.pending.move_to_end(user_id)
        while len(self.pending) > self.settings.users:
            self.pending.popitem(last=False)

    def observe(self, user_id: str, item_id: str) -> None:
        """The user's next event: credit each source of their last slate."""
        lists = self.pending.pop(user_id, None)
        if lists is None or not self.settings.learned:
            return
        self.seen = self.seen * self._decay + 1.0
        for name in self.gain.keys() | lists.keys():
            ranked = lists.get(name, ())
            hit = 1.0 / math.log2(2 + ranked.index(item_id)) if item_id in ranked else 0.0
            self.gain[name] = self.gain.get(name, 0.0) * self._decay + hit
        self.observations += 1
        if self.observations >= self.settings.warmup:
            self._refit()

    def _refit(self) -> None:
        means = {name: g / self.seen for name, g in self.gain.items()}
        best = max(means.values(), default=0.0)
        if best <= 0:
            return
        floor = self.settings.floor
        self.weights = MappingProxyType({n: max(m / best, floor) for n, m in means.items()})

    def figures(self) -> dict[str, object]:
        """For /stats: the weights in use and how many next events fitted them."""
        return {"weights": dict(self.weights), "observations": self.observations}
