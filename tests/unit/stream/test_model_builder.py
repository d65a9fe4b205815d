"""The model path with a small saved encoder: slates from it, seen items kept out, one
version per batch, and the learner's policy kept across a model loaded later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamrec.models.encoder.checkpoint import save_checkpoint
from streamrec.models.encoder.network import EncoderConfig, SequenceEncoder
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.settings import Settings
from streamrec.stream.contract import Event
from streamrec.stream.refresh import Pending, RefreshInput
from streamrec.stream.serving import ModelServer
from streamrec.stream.state import UserState, apply_event

IDS = [f"i{n}" for n in range(1, 31)]


def _checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = SequenceEncoder(
        EncoderConfig(n_items=len(IDS), hidden_size=16, heads=2, inner_size=32, max_len=8)
    ).eval()
    return save_checkpoint(
        tmp_path / "ck", model, IDS, torch.zeros(16), {}, {}, None, root=tmp_path
    )


def _input(user: str, items: list[str]) -> RefreshInput:
    state = UserState()
    for n, item in enumerate(items):
        event = Event(event_id=f"{user}-{n}", user_id=user, item_id=item, type="view",
                      ts=1_700_000_000_000 + n)  # fmt: skip
        apply_event(state, event, Settings().state)
    pending = Pending(user, 0, state)
    return RefreshInput(pending, state, {"i1": [("i2", 5.0)]}, [("i3", 9.0), ("i4", 8.0)])


def _server(policy: str = "relevance") -> ModelServer:
    s = Settings(policy={"reranker": policy})  # type: ignore[arg-type]
    return ModelServer(s.serving, s.policy, s.index, "cpu", lambda: {})


def test_model_slates_never_hold_seen_items_and_carry_the_model_version(tmp_path: Path) -> None:
    server = _server()
    version = server.load(_checkpoint(tmp_path), {})
    assert server.builder is not None and server.model_version == version
    seen = ["i1", "i3", "i5", "i7"]
    built = server.builder.build([_input("u1", seen), _input("u2", ["i2"])], slate_size=5)
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
    server.load(_checkpoint(tmp_path), {})
    assert server.builder is not None
    reranker = server.builder.reranker
    assert isinstance(reranker, StochasticReranker) and reranker.version == "pl-7"
    assert reranker.weights.tolist() == weights.tolist()
    built = server.builder.build([_input("u1", ["i1", "i2"])], slate_size=3)
    assert built.policy_version == "pl-7"
