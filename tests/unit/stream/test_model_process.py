"""The model path in a child process: the same slates as in the worker's own process, the
learner's policy and failed loads carried across the pipe, and a new child after one dies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from model_doubles import IDS, refresh_input, small_checkpoint

from streamrec.errors import StreamrecError
from streamrec.settings import Settings
from streamrec.stream.catalog import Unservable
from streamrec.stream.contract import Item
from streamrec.stream.model_process import ModelProcess, ModelProcessError
from streamrec.stream.ranker import FEATURES, START
from streamrec.stream.refresh import BuiltBatch, RemoteBuilder
from streamrec.stream.serving import ModelServer

WEIGHTS = {"embedding": 1.0, "covisitation": 0.5, "trending": 0.2}


BATCH = [
    refresh_input("u1", ["i1", "i3", "i5", "i7"]),
    refresh_input("u2", ["i2"]),
    refresh_input("u3", [f"i{n}" for n in range(2, 27)]),
]


def _server(kind: type[ModelProcess] | type[ModelServer], reranker: str) -> ModelServer:
    s = Settings(policy={"reranker": reranker})  # type: ignore[arg-type]
    return kind(s.serving, s.policy, s.index, "cpu", lambda: WEIGHTS)  # type: ignore[return-value]


def _picked(built: BuiltBatch) -> list[list[tuple[str, float, str]]]:
    return [[(i.item_id, i.propensity, i.reason) for i in slate] for slate in built.slates]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("model"), text=True)


@contextlib.contextmanager
def _child(reranker: str) -> Iterator[ModelProcess]:
    process = _server(ModelProcess, reranker)
    assert isinstance(process, ModelProcess)
    try:
        yield process
    finally:
        process.close()


def test_the_child_publishes_the_in_process_slates_and_is_replaced_when_it_dies(
    checkpoint: Path,
) -> None:
    here = _server(ModelServer, "relevance")
    here.load(checkpoint, {})
    assert here.builder is not None
    expected = here.builder.build(BATCH, 5)
    with _child("relevance") as child:
        assert child.load(checkpoint, {}) == here.model_version
        built = child.build(BATCH, 5)
        assert _picked(built) == _picked(expected) and built.sources == expected.sources
        assert built.model_version == expected.model_version
        # The refresher awaits it on the event loop (no worker thread): the same slates.
        assert isinstance(child, RemoteBuilder)
        awaited = asyncio.run(child.build_async(BATCH, 5))
        assert _picked(awaited) == _picked(expected) and "ipc_ms" in awaited.timing_ms
        assert child._child is not None
        child._child.kill()
        child._child.wait()
        with contextlib.suppress(ModelProcessError):  # a call racing the death may fail
            child.build(BATCH, 5)
        again = child.build(BATCH, 5)  # a new child, with the model the dead one served
        assert _picked(again) == _picked(expected)
        # On the event loop too: the new child is started (and sent the catalog) off the loop.
        child._child.kill()
        child._child.wait()
        deadline = time.monotonic() + 30
        while child._conn is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # until the reader has seen the death
        assert child._conn is None
        restarted = asyncio.run(child.build_async(BATCH, 5))
        assert _picked(restarted) == _picked(expected)


def test_next_events_reach_the_childs_ranker_with_the_next_batch(checkpoint: Path) -> None:
    with _child("relevance") as child:  # the learned ranker is the model path's default
        child.load(checkpoint, {})
        first = child.build(BATCH[:1], 5)
        child.observe("u1", first.slates[0][0].item_id)  # u1's next event, on the loop
        assert child.ranker_figures() == {**(child.ranker_figures() or {}), "updates": 0}
        child.build(BATCH[1:2], 5)  # carries the event; the child learns before it builds
        assert (child.ranker_figures() or {}).get("updates") == 1


def test_policy_cold_start_and_a_failed_load_cross_the_pipe(
    checkpoint: Path, tmp_path: Path
) -> None:
    with _child("stochastic") as child:
        child.set_policy(np.array([1.0, 0.6, 0.3, -0.2, 0.1]), "pl-3")  # kept for the model
        version = child.load(checkpoint, {"new": Item(item_id="new", title="A new film")})
        assert child.index_size == len(IDS) + 1  # the catalog item got a text vector
        built = child.build(BATCH, 5)
        assert built.policy_version == "pl-3" and built.policy_slates is not None
        assert all(0 < i.propensity <= 1 for slate in built.slates for i in slate)
        (tmp_path / "broken").mkdir()
        with pytest.raises(StreamrecError):
            child.load(tmp_path / "broken", {})
        assert child.model_version == version and child.build(BATCH, 5).model_version == version
        assert child.add_items([Item(item_id="newer", title="Another")]) == 1
        assert child.add_items([Item(item_id="new", title="A new film")]) == 0
        assert child.index_size == len(IDS) + 2


def test_saved_ranker_weights_reach_the_child_and_outlive_it(checkpoint: Path) -> None:
    saved = {name: 0.1 * n for n, name in enumerate(FEATURES)}
    with _child("relevance") as child:
        child.set_ranker(saved, 7)  # a restart's saved weights, before the model loads
        assert child.ranker_figures() == {"weights": saved, "updates": 7}  # what a save keeps
        child.load(checkpoint, {})
        child.build(BATCH[:1], 5)
        assert child.ranker_figures() == {"weights": pytest.approx(saved), "updates": 7}
        first = child.build(BATCH[:1], 5)
        child.observe("u1", first.slates[0][0].item_id)
        learned = child.build(BATCH[1:2], 5)  # one step from the saved weights
        figures = child.ranker_figures()
        assert figures is not None and figures["updates"] == 8 and learned.slates
        assert child._child is not None
        child._child.kill()
        child._child.wait()
        with contextlib.suppress(ModelProcessError):  # a call racing the death may fail
            child.build(BATCH, 5)
        child.build(BATCH, 5)  # a new child continues from what the dead one had learned
        assert child.ranker_figures() == figures


def test_unusable_ranker_weights_leave_the_start_weights(checkpoint: Path) -> None:
    here = _server(ModelServer, "relevance")
    here.set_ranker({"dot": 1.0}, 3)  # another feature set: logged, not served
    here.load(checkpoint, {})
    start = dict(zip(FEATURES, START.tolist(), strict=True))
    assert here.ranker_figures() == {"weights": start, "updates": 0}


@pytest.mark.parametrize("kind", [ModelServer, ModelProcess])
@pytest.mark.parametrize("rule", ["deactivated", "catalog_only"])
def test_what_the_catalog_lets_no_slate_show_leaves_the_model_paths_slates(
    checkpoint: Path, kind: type[ModelProcess] | type[ModelServer], rule: str
) -> None:
    server = _server(kind, "relevance")
    try:
        server.load(checkpoint, {})
        assert server.builder is not None
        shown = sorted({i.item_id for s in server.builder.build(BATCH, 5).slates for i in s})
        if rule == "deactivated":  # the catalog deactivated every item shown
            unservable, allowed = Unservable(frozenset(shown), None), set(IDS) - set(shown)
        else:  # catalog_only: half of them listed
            unservable = Unservable(frozenset(), frozenset(shown[::2]))
            allowed = set(shown[::2])
        server.set_unservable(unservable)
        after = {i.item_id for slate in server.builder.build(BATCH, 5).slates for i in slate}
        assert after and after <= allowed
    finally:
        if isinstance(server, ModelProcess):
            server.close()


@pytest.mark.parametrize("kind", [ModelServer, ModelProcess])
def test_a_model_that_cannot_cold_start_the_catalog_is_refused_before_it_serves(
    checkpoint: Path, tmp_path: Path, kind: type[ModelProcess] | type[ModelServer]
) -> None:
    # It used to be swapped in and then fail its cold start: the child served it while the
    # worker reported the old model, and re-announcing the old one was skipped as served.
    plain = small_checkpoint(tmp_path / "plain")  # no text projection
    catalog = {"new-1": Item(item_id="new-1", title="A lamp the models never saw")}
    server = _server(kind, "relevance")
    try:
        with pytest.raises(StreamrecError, match="no text projection"):
            server.load(plain, catalog)  # the first load, too
        assert server.model_version is None
        first = server.load(checkpoint, catalog)
        assert server.index_size == len(IDS) + 1  # new-1 cold-started
        with pytest.raises(StreamrecError, match="no text projection"):
            server.load(plain, catalog)
        assert server.builder is not None and server.model_version == first
        assert server.index_size == len(IDS) + 1  # still the first model's index
        server.load(plain, {})  # nothing to cold start: it may serve
        assert server.index_size == len(IDS)
    finally:
        if isinstance(server, ModelProcess):
            server.close()
