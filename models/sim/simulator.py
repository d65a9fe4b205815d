"""User simulator: latent preferences, position bias and satiation, seeded and repeatable.

API for the streaming side (it reads the recommendations topic and publishes what this returns)::

    sim = Simulator.synthetic(SimulatorConfig(seed=7))      # or Simulator.from_dataset(ds, cfg)
    events = sim.respond(user_id, rec_id, slate_item_ids, now)   # list of event dicts

Each event dict has ``event_id, user_id, item_id, type, ts, rec_id, position`` and, for
``dwell``, ``dwell_ms``. Types: ``click``, then possibly ``dwell``, ``add_to_cart``, ``purchase``.

Response model (all documented knobs are in :class:`SimulatorConfig`):

- affinity ``a_ui = p_u · v_i``, standardised over the catalog so the scale is the same for
  synthetic and fitted preferences, plus an item quality ``q_i`` (standardised) that every user
  values (RecSim's interest-evolution model has the same split). Popularity is generated from
  quality (synthetic: ``log pop = 1.5 (0.7 q + 0.7 noise)``) or counted (fitted: ML-100K counts,
  quality = shrunk mean rating), so it is a noisy public signal of quality;
- position bias: the item at position ``k`` (0-based) is examined with probability
  ``1 / (1 + k) ** position_decay`` (position-based model);
- satiation across time: each clicked item stays in the user's history and lowers the appeal of
  similar items by ``satiation * exp(-age / half_life) * max(0, cos)^2`` summed over history;
- satiation within a slate: the user reads top-down, so an item similar to one above it loses
  ``slate_satiation * max_j max(0, cos(i, j))^2``;
- an examined item is clicked with probability ``sigmoid(affinity_scale * a +
  quality_scale * q + click_bias - penalties)``; a click yields a dwell, and add-to-cart /
  purchase with probabilities that grow with the same utility.

Freshness is generated but the simulated users ignore it, so a learner should learn to ignore it
too; nothing in the model knows about any policy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamrec.errors import ContractError, DataError
from streamrec.models.policy.slate import FloatArray, unit_rows


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulated users. Times in seconds."""

    n_users: int = 200
    n_items: int = 1000
    dims: int = 16
    topics: int = 20  # synthetic catalog: items cluster around this many topic centres
    topic_spread: float = 0.6  # item noise around its topic centre (relative to unit centre)
    user_topics: int = 3  # synthetic users like a mix of this many topics
    position_decay: float = 0.7
    affinity_scale: float = 3.0
    quality_scale: float = 0.5
    click_bias: float = -3.0
    satiation: float = 1.0
    satiation_half_life_s: float = 3_600.0
    slate_satiation: float = 0.8
    history_len: int = 30
    cart_prob: float = 0.4
    purchase_prob: float = 0.3
    seed: int = 0  # response randomness (and freshness draws)
    world_seed: int | None = None  # catalog and users of the synthetic world; None: use seed


@dataclass
class _User:
    prefs: FloatArray  # [D]
    history: deque[tuple[int, float]] = field(default_factory=deque)  # (item index, click time)


class InteractionLike(Protocol):
    user_id: str
    item_id: str
    rating: float


class DatasetLike(Protocol):
    """What :meth:`Simulator.from_dataset` reads (``streamrec.datasets.Dataset`` fits)."""

    @property
    def interactions(self) -> Sequence[Any]: ...


def _sigmoid(x: FloatArray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x)))


class Simulator:
    """Simulated users answering slates. Deterministic given the config seed and call order."""

    def __init__(
        self,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        user_prefs: FloatArray,
        item_vectors: FloatArray,
        popularity: FloatArray,
        quality: FloatArray,
        config: SimulatorConfig,
    ) -> None:
        """``user_prefs`` ``[U, D]``, ``item_vectors`` ``[I, D]``, ``popularity`` ``[I]`` >= 0,
        ``quality`` ``[I]`` (standardised here)."""
        if user_prefs.shape[1] != item_vectors.shape[1]:
            raise DataError("user and item latent vectors must have the same width")
        self.config = config
        self.user_ids = list(user_ids)
        self.item_ids = list(item_ids)
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_vectors = np.asarray(item_vectors, dtype=np.float64)
        self._unit = unit_rows(self.item_vectors)
        raw = np.asarray(user_prefs, dtype=np.float64) @ self.item_vectors.T  # [U, I]
        self.affinity = (raw - raw.mean()) / max(float(raw.std()), 1e-12)  # standardised
        self.popularity = np.asarray(popularity, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
        self.quality = (q - q.mean()) / max(float(q.std()), 1e-12)
        self._rng = np.random.default_rng(config.seed)
        self.freshness = self._rng.uniform(0.0, 1.0, len(self.item_ids))
        self._users = {u: _User(user_prefs[i]) for i, u in enumerate(self.user_ids)}
        self._row = {u: i for i, u in enumerate(self.user_ids)}
        self._events = 0

    # ---------------------------------------------------------------- construction

    @classmethod
    def synthetic(cls, config: SimulatorConfig) -> Simulator:
        """Topic-clustered catalog with Zipf-like popularity; users mix a few topics."""
        world = config.seed if config.world_seed is None else config.world_seed
        rng = np.random.default_rng(world + 1_000_003)
        centres = unit_rows(rng.normal(size=(config.topics, config.dims)))
        topic = rng.integers(0, config.topics, config.n_items)
        noise = rng.normal(size=(config.n_items, config.dims)) / np.sqrt(config.dims)
        items = unit_rows(centres[topic] + config.topic_spread * noise)
        prefs = np.zeros((config.n_users, config.dims))
        for u in range(config.n_users):
            liked = rng.choice(config.topics, size=config.user_topics, replace=False)
            prefs[u] = rng.dirichlet(np.ones(config.user_topics)) @ centres[liked]
        quality = rng.normal(size=config.n_items)
        noise_q = rng.normal(size=config.n_items)
        popularity = np.round(np.exp(1.5 * (0.7 * quality + 0.7 * noise_q)) * 10.0)
        return cls(
            [f"u{u}" for u in range(config.n_users)],
            [f"i{i}" for i in range(config.n_items)],
            prefs,
            items,
            popularity,
            quality,
            config,
        )

    @classmethod
    def from_interactions(
        cls,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        ratings: Sequence[float],
        config: SimulatorConfig,
    ) -> Simulator:
        """Fit preferences by truncated SVD of the user-mean-centred rating matrix.

        ``user_ids[n], item_ids[n], ratings[n]`` are one interaction each. The first
        ``config.dims`` singular directions give users ``U·sqrt(S)`` and items ``V·sqrt(S)``;
        popularity is the interaction count and quality the item's mean rating shrunk towards
        the global mean by 10 pseudo-ratings. ``config.n_users`` / ``n_items`` are ignored.
        """
        if not user_ids:
            raise DataError("cannot fit a simulator on zero interactions")
        users = sorted(set(user_ids))
        items = sorted(set(item_ids))
        urow = {u: i for i, u in enumerate(users)}
        icol = {it: i for i, it in enumerate(items)}
        mat = np.zeros((len(users), len(items)))
        seen = np.zeros_like(mat, dtype=bool)
        for u, it, r in zip(user_ids, item_ids, ratings, strict=True):
            mat[urow[u], icol[it]] = r
            seen[urow[u], icol[it]] = True
        means = mat.sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
        centred = np.where(seen, mat - means[:, None], 0.0)
        u_, s, vt = np.linalg.svd(centred, full_matrices=False)
        d = min(config.dims, len(s))
        root = np.sqrt(s[:d])
        counts = seen.sum(axis=0)
        overall = mat[seen].mean()
        quality = (mat.sum(axis=0) + 10.0 * overall) / (counts + 10.0)
        return cls(users, items, u_[:, :d] * root, vt[:d].T * root, counts, quality, config)

    @classmethod
    def from_dataset(cls, dataset: DatasetLike, config: SimulatorConfig) -> Simulator:
        """Fit on a ``streamrec.datasets.Dataset`` (e.g. MovieLens-100K)."""
        inter = dataset.interactions
        return cls.from_interactions(
            [str(x.user_id) for x in inter],
            [str(x.item_id) for x in inter],
            [float(x.rating) for x in inter],
            config,
        )

    # ---------------------------------------------------------------- observable state

    def item_index(self, item_id: str) -> int | None:
        """Catalog row of ``item_id``, or ``None`` when unknown."""
        return self._item_index.get(item_id)

    def user_row(self, user_id: str) -> int:
        """Row of ``user_id`` in :attr:`affinity`; raises ``ContractError`` when unknown."""
        row = self._row.get(user_id)
        if row is None:
            raise ContractError("unknown_user", f"simulator has no user {user_id!r}")
        return row

    def click_times(self, user_id: str) -> list[float]:
        """Times (seconds) of the user's clicks, in the order of :meth:`clicked`."""
        self.user_row(user_id)
        return [t for _, t in self._users[user_id].history]

    def clicked(self, user_id: str) -> list[int]:
        """Catalog rows the user clicked, most recent last (what user_state would hold)."""
        self.user_row(user_id)
        return [i for i, _ in self._users[user_id].history]

    # ---------------------------------------------------------------- responses

    def _satiation(self, user: _User, rows: npt.NDArray[np.int64], now: float) -> FloatArray:
        if not user.history:
            return np.zeros(len(rows))
        idx = np.array([i for i, _ in user.history])
        age = now - np.array([t for _, t in user.history])
        decay = np.exp(-np.maximum(age, 0.0) * np.log(2.0) / self.config.satiation_half_life_s)
        sims = np.maximum(self._unit[rows] @ self._unit[idx].T, 0.0) ** 2  # [S, H]
        return np.asarray(self.config.satiation * sims @ decay, dtype=np.float64)

    def utilities(self, user_id: str, item_rows: Sequence[int], now: float) -> FloatArray:
        """Click logits ``[S]`` of a slate's items in display order (before position bias)."""
        cfg = self.config
        user = self._users[user_id]
        rows = np.asarray(item_rows, dtype=np.int64)
        base = (
            cfg.affinity_scale * self.affinity[self.user_row(user_id), rows]
            + cfg.quality_scale * self.quality[rows]
            + cfg.click_bias
        )
        sims = np.maximum(self._unit[rows] @ self._unit[rows].T, 0.0) ** 2  # [S, S]
        above = np.tril(sims, k=-1)  # only items displayed above count
        within = cfg.slate_satiation * above.max(axis=1, initial=0.0)
        return np.asarray(base - self._satiation(user, rows, now) - within, dtype=np.float64)

    def click_probabilities(self, user_id: str, item_rows: Sequence[int], now: float) -> FloatArray:
        """P(click) ``[S]`` per slate position, position bias included."""
        exam = 1.0 / (1.0 + np.arange(len(item_rows))) ** self.config.position_decay
        return np.asarray(exam * _sigmoid(self.utilities(user_id, item_rows, now)))

    def respond(
        self, user_id: str, rec_id: str, slate_item_ids: Sequence[str], now: float
    ) -> list[dict[str, Any]]:
        """Events the user produces for a slate shown at ``now`` (seconds).

        Items unknown to the simulator are skipped (never clicked). Raises ``ContractError``
        for an unknown user. Clicks enter the user's history and satiate later responses.
        """
        self.user_row(user_id)
        known = [(pos, self._item_index.get(it)) for pos, it in enumerate(slate_item_ids)]
        shown = [(pos, row) for pos, row in known if row is not None]
        if not shown:
            return []
        rows = [row for _, row in shown]
        util = self.utilities(user_id, rows, now)
        positions = np.array([pos for pos, _ in shown])
        exam = 1.0 / (1.0 + positions) ** self.config.position_decay
        draws = self._rng.uniform(size=(len(rows), 4))
        events: list[dict[str, Any]] = []
        user = self._users[user_id]
        for j, (pos, row) in enumerate(shown):
            p = float(_sigmoid(util[j]))
            if draws[j, 0] >= exam[j] * p:
                continue
            item = self.item_ids[row]
            events.append(self._event(user_id, item, "click", now, rec_id, pos))
            dwell = self._event(user_id, item, "dwell", now + 1.0, rec_id, pos)
            dwell["dwell_ms"] = float(5_000 + 115_000 * p * draws[j, 1])
            events.append(dwell)
            if draws[j, 2] < self.config.cart_prob * p:
                events.append(self._event(user_id, item, "add_to_cart", now + 2.0, rec_id, pos))
                if draws[j, 3] < self.config.purchase_prob * p:
                    events.append(self._event(user_id, item, "purchase", now + 3.0, rec_id, pos))
            user.history.append((row, now))
            if len(user.history) > self.config.history_len:
                user.history.popleft()
        return events

    def _event(
        self, user_id: str, item_id: str, kind: str, ts: float, rec_id: str, position: int
    ) -> dict[str, Any]:
        self._events += 1
        return {
            "event_id": f"sim-{self.config.seed}-{self._events}",
            "user_id": user_id,
            "item_id": item_id,
            "type": kind,
            "ts": ts,
            "rec_id": rec_id,
            "position": position,
        }
