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

A source's mean gain says how good its list is alone, not how much it should count in the
fused slate: reciprocal ranks are flat (``1 / (60 + rank)``), so a weaker source weighed by its
gain still lifts the items it shares with the stronger one above the stronger one's best (on
ML-100K trending got 0.32 of co-visitation's weight and cost the heuristic's slates 7-9% NDCG@10
against co-visitation alone). So the served weights are the relative gains raised to a power
``p`` chosen on the stream as well: at each next event, for every ``p`` in ``fusion.sharpness``
the remembered lists are fused with those weights and ``p`` is credited the item's discounted
gain in that fused slate (0 beyond the slate's ``cutoff`` positions). The ``p`` with the best
decayed mean is served (``p = 0`` is plain reciprocal rank fusion, large ``p`` the best source
alone). Each source's list is remembered to ``fusion.depth`` items, so an item that ranks
deeper in one source counts nothing from it here: an estimate, exact for the slate's top
whenever the lists are deeper than the slate.

Read from the model thread, written on the event loop: ``weights`` is one immutable mapping
replaced in one assignment, so a slate is fused with one consistent set.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.index.candidates import RRF_K
from streamrec.stream.config import FusionSettings

SourceLists = Mapping[str, Sequence[str]]  # source -> its top items for a user, best first
Weights = Mapping[str, float]

log = logging.getLogger(__name__)


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


def fused_gains(
    lists: Mapping[str, Sequence[str]],
    item_id: str,
    weights: npt.NDArray[np.float64],
    cutoff: int,
) -> npt.NDArray[np.float64]:
    """The discounted gain ``1 / log2(1 + rank)`` of ``item_id`` in the slate of ``cutoff``
    items that reciprocal rank fusion of ``lists`` makes with each column of ``weights``
    ([sources in ``lists`` order, settings]); 0 where it ranks below the cutoff. Ties with other
    items count half (fusion breaks them by item id, which says nothing about quality)."""
    columns = weights.shape[1]
    if not any(item_id in items for items in lists.values()):
        return np.zeros(columns)
    union = {item: n for n, item in enumerate(dict.fromkeys(itertools.chain(*lists.values())))}
    reciprocal = np.zeros((len(union), len(lists)))
    for source, items in enumerate(lists.values()):
        unique = list(dict.fromkeys(items))
        reciprocal[[union[i] for i in unique], source] = 1.0 / (
            RRF_K + np.arange(1, len(unique) + 1)
        )
    scores = reciprocal @ weights  # [items, settings]
    target = scores[union[item_id]]
    rank = 1.0 + (scores > target).sum(axis=0) + 0.5 * ((scores == target).sum(axis=0) - 1)
    gains: npt.NDArray[np.float64] = np.where(rank <= cutoff, 1.0 / np.log2(1.0 + rank), 0.0)
    return gains


class FusionLearner:
    """Learns the fusion weights (see module docstring)."""

    def __init__(self, settings: FusionSettings, cutoff: int) -> None:
        self.settings = settings
        self.cutoff = cutoff  # the slate's size: only its positions count for the sharpness
        self.sharpness = np.asarray(settings.sharpness, dtype=np.float64)
        self.sharpness_gain = np.zeros(len(settings.sharpness))  # decayed, per power
        self.power = 1.0  # served until the sharpness has been credited past warmup
        self.base: dict[str, float] = {}  # relative gains, floored, before the power
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
        self._credit_sharpness(lists, item_id)
        self.observations += 1
        if self.observations >= self.settings.warmup:
            self._refit()

    def _credit_sharpness(self, lists: Mapping[str, Sequence[str]], item_id: str) -> None:
        """Credit each power with the gain its weights would have given the next item."""
        self.sharpness_gain *= self._decay
        if not any(item_id in items for items in lists.values()):
            return  # no list held it: every power gains 0 (most events at high cardinality)
        relative = np.array([self.base.get(name, 1.0) for name in lists])
        weights = relative[:, None] ** self.sharpness[None, :]
        self.sharpness_gain += fused_gains(lists, item_id, weights, self.cutoff)

    def _refit(self) -> None:
        means = {name: g / self.seen for name, g in self.gain.items()}
        best = max(means.values(), default=0.0)
        if best <= 0:
            return
        floor = self.settings.floor
        self.base = {n: max(m / best, floor) for n, m in means.items()}
        if self.sharpness_gain.max() > 0:
            self.power = float(self.sharpness[int(np.argmax(self.sharpness_gain))])
        self.weights = MappingProxyType({n: w**self.power for n, w in self.base.items()})

    def figures(self) -> dict[str, object]:
        """For /stats: the weights in use, how many next events fitted them, and the mean
        gain each power's fused slates would have had."""
        means = self.sharpness_gain / max(self.seen, 1e-9)
        return {
            "weights": dict(self.weights),
            "observations": self.observations,
            "power": self.power,
            "sharpness": dict(zip(map(str, self.sharpness), map(float, means), strict=True)),
        }

    def snapshot(self) -> dict[str, object]:
        """What has been learned, as JSON: the decayed gains behind the weights and the power.
        The users' remembered lists are left out: a restarted worker has built no slate yet."""
        return {
            "gain": dict(self.gain),
            "seen": self.seen,
            "observations": self.observations,
            "sharpness": self.sharpness.tolist(),
            "sharpness_gain": self.sharpness_gain.tolist(),
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from a ``snapshot()``; ValueError (or KeyError, TypeError) when it is not one.

        Credit saved for other powers than the settings' is dropped: those powers start again.
        """
        gain = {str(name): float(value) for name, value in saved["gain"].items()}
        seen, observations = float(saved["seen"]), int(saved["observations"])
        credited = np.asarray(saved["sharpness_gain"], dtype=np.float64)
        numbers = [*gain.values(), seen, *credited.ravel().tolist()]
        if observations < 0 or not all(math.isfinite(v) and v >= 0 for v in numbers):
            raise ValueError("fusion snapshot holds negative or non-finite figures")
        self.gain, self.seen, self.observations = gain, seen, observations
        same = [float(p) for p in saved["sharpness"]] == self.sharpness.tolist()
        if same and credited.shape == self.sharpness_gain.shape:
            self.sharpness_gain = credited
        else:
            log.info(
                "fusion: saved powers %s are not the settings'; their credit starts again",
                saved["sharpness"],
            )
        if self.settings.learned and self.observations >= self.settings.warmup:
            self._refit()
