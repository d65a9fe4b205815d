"""The model path with a small saved encoder: slates from it, seen items kept out, one
version per batch, and the learner's policy kept across a model loaded later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_doubles import refresh_input, small_checkpoint

from streamrec.errors import ConfigError
from streamrec.index.candidates import covisitation_candidates, fuse
from streamrec.models.policy.slate import Candidate, UserContext
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.settings import Settings
from streamrec.stream.serving import ModelServer


def _server(policy: str = "relevance", ranker: str = "learned") -> ModelServer:
    s = Settings(
        policy={"reranker": policy},  # type: ignore[arg-type]
        serving={"ranker": {"method": ranker}},  # type: ignore[arg-type]
    )
    return ModelServer(s.serving, s.policy, s.index, "cpu", lambda: {})


def test_model_slates_never_hold_seen_items_and_carry_the_model_version(tmp_path: Path) -> None:
    server = _server()
    version = server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None and server.model_version == version
    seen = ["i1", "i3", "i5", "i7"]
    batch = [refresh_input("u1", seen), refresh_input("u2", ["i2"])]
    built = server.builder.build(batch, slate_size=5)
    assert built.model_version == version and len(built.slates) == 2
    first = [item.item_id for item in built.slates[0]]
    assert len(first) == 5 and not set(first) & set(seen)
    assert built.sources is not None and set(built.sources[0]) == {
        "embedding", "covisitation", "trending"
    }  # fmt: skip
    assert {"encode_ms", "search_ms", "rerank_ms"} <= set(built.timing_ms)


def test_the_learners_policy_reaches_a_model_loaded_after_it(tmp_path: Path) -> None:
    server = _server("stochastic")
    weights = np.array([1.0, 0.5, 0.0, 0.0, 0.0])
    server.set_policy(weights, "pl-7")  # the learner's state, loaded before any model
    server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None
    reranker = server.builder.reranker
    assert isinstance(reranker, StochasticReranker) and reranker.version == "pl-7"
    assert reranker.weights.tolist() == weights.tolist()
    built = server.builder.build([refresh_input("u1", ["i1", "i2"])], slate_size=3)
    assert built.policy_version == "pl-7"


def test_a_policy_the_reranker_cannot_use_is_refused_and_never_kept_for_a_load(
    tmp_path: Path,
) -> None:
    """Before, it was kept and handed to every later load, which failed on it: no model."""
    server = _server("stochastic")
    server.set_policy(np.array([1.0, 0.5, 0.0, 0.0, 0.0]), "pl-7")
    for bad in (np.array([1.0, 2.0, 3.0]), np.array([np.nan, 0.0, 0.0, 0.0, 0.0])):
        with pytest.raises(ConfigError):
            server.set_policy(bad, "evil")
    server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None and server.builder.reranker.version == "pl-7"


def test_batched_slates_equal_the_per_slate_path_they_replaced(tmp_path: Path) -> None:
    """The builder fuses, gathers and reranks a batch with arrays; the slates must be those
    of the path before it: ``fuse`` into ``Candidate`` objects and ``rerank`` one user at a
    time with the same random stream (reciprocal rank fusion, which that path had)."""
    server = _server("stochastic", ranker="rrf")
    server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None and server.holder is not None
    server.builder.reranker = StochasticReranker(np.array([1.0, 0.6, 0.3, -0.2, 0.1]), seed=4)
    batch = [
        refresh_input("u1", ["i1", "i3", "i5", "i7"]),
        refresh_input("u2", ["i2"]),
        refresh_input("u3", [f"i{n}" for n in range(2, 27)]),  # fewer candidates than the others
    ]
    built = server.builder.build(batch, slate_size=5)
    model = server.holder.current().encoder
    users = model.encoder.encode_states([entry.state for entry in batch])
    reference = StochasticReranker(np.array([1.0, 0.6, 0.3, -0.2, 0.1]), seed=4)
    for entry, user, slate in zip(batch, users, built.slates, strict=True):
        history = entry.state.history()
        found = server.holder.current().index.search(user[None, :], 100, [set(history)])[0]
        sources = {
            "embedding": found,
            "covisitation": covisitation_candidates(
                entry.covisits, history, 100, exclude=entry.state.seen
            ),
            "trending": entry.trending,
        }
        fused = fuse(sources, 100, weights={}, exclude=entry.state.seen)
        popularity = dict(entry.trending)
        cands = [
            Candidate(c.item_id, c.score, model.vectors[c.item_id], popularity.get(c.item_id, 0.0))
            for c in fused
        ]
        known = np.stack([model.vectors[h] for h in history[-10:]])
        expected = reference.rerank(UserContext(entry.pending.user_id, known), cands, 5)
        assert [i.item_id for i in slate] == expected.item_ids
        assert [i.propensity for i in slate] == pytest.approx(expected.propensities, rel=1e-9)


def test_the_learned_ranker_learns_from_the_next_event_of_a_slate_it_built(
    tmp_path: Path,
) -> None:
    server = _server()  # learned ranker, the default
    server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None and server.builder.ranker is not None
    ranker = server.builder.ranker
    built = server.builder.build([refresh_input("u1", ["i1", "i3"])], slate_size=5)
    assert "u1" in ranker.pending and all(i.item_id not in {"i1", "i3"} for i in built.slates[0])
    server.builder.observe("u1", built.slates[0][0].item_id)
    assert ranker.updates == 1 and "u1" not in ranker.pending


def test_the_critic_sees_the_ages_of_recent_items_and_the_time_since_the_last_event(
    tmp_path: Path,
) -> None:
    """The logged state features use each recent item's age and the gap since the user's
    previous event, from the state's timestamps (relative to its newest event)."""
    server = _server("stochastic")
    server.load(small_checkpoint(tmp_path), {})
    assert server.builder is not None and server.holder is not None
    entry = refresh_input("u1", ["i1", "i3", "i5"])
    minute = 60_000
    entry.state.recent = [(item, n * 30 * minute, kind) for n, (item, _, kind) in
                          enumerate(entry.state.recent)]  # fmt: skip
    built = server.builder.build([entry], slate_size=5)
    assert built.policy_slates is not None
    state = built.policy_slates[0].state
    assert state is not None
    assert state[4] == pytest.approx(np.log1p(30.0))  # since_last_visit: 30 minutes
    half_life = Settings().policy.state_half_life_s
    # activity: the recent items' decayed count, 1 h, 30 min and 0 s old
    assert state[3] == pytest.approx(sum(2.0 ** (-a / half_life) for a in (3600, 1800, 0)))
