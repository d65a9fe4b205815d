"""The control listener with a stand-in model server: which announcements load, and what a
failed load leaves serving."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from stream_doubles import metrics, value_of

from streamrec.errors import ModelError
from streamrec.settings import Settings
from streamrec.stream.contract import Item, ModelAnnouncement, encode
from streamrec.stream.control import ControlListener, policy_record


class FakeServer:
    """Serves whatever it is told to load; a checkpoint named 'broken' fails to load."""

    def __init__(self) -> None:
        self.model_version: str | None = None
        self.loads: list[tuple[Path, list[str]]] = []
        self.index_size: int | None = None
        self.cold: list[str] = []

    def add_items(self, items: list[Item]) -> int:
        fresh = [item.item_id for item in items if item.item_id not in self.cold]
        self.cold += fresh
        self.index_size = 10 + len(self.cold)
        return len(fresh)

    def load(self, checkpoint: Path, catalog: dict[str, Item]) -> str:
        if checkpoint.name == "broken":
            raise ModelError("not a checkpoint")
        if checkpoint.name == "damaged":  # what safetensors raises on a truncated file
            raise RuntimeError("incomplete metadata, file not fully covered")
        self.loads.append((checkpoint, sorted(catalog)))
        self.model_version = checkpoint.name
        self.index_size = 10 + len(self.cold)
        return checkpoint.name


def _listener(initial: Path | None = None) -> tuple[ControlListener, FakeServer, dict[str, Item]]:
    server, catalog = FakeServer(), {"i1": Item(item_id="i1", title="One")}
    # FakeServer has the parts of ModelService the listener uses
    listener = ControlListener(Settings().kafka, server, initial, catalog, metrics())  # type: ignore[arg-type]
    return listener, server, catalog


def _announce(listener: ControlListener, version: str) -> None:
    record = ModelAnnouncement(model_version=version, checkpoint=f"/m/{version}", announced_at=1)
    asyncio.run(listener.on_record(encode(record)))


def test_an_announced_model_is_loaded_with_the_live_catalog_and_reported() -> None:
    listener, server, catalog = _listener()
    catalog["i2"] = Item(item_id="i2", title="Two")  # arrived after the listener was built
    _announce(listener, "v1")
    assert server.loads == [(Path("/m/v1"), ["i1", "i2"])]
    assert listener.swaps == 1 and value_of(listener.metrics.model_version, "v1") == 1
    assert value_of(listener.metrics.index_items) == 10  # before any cold start, too


def test_the_version_already_served_is_not_loaded_again() -> None:
    listener, server, _ = _listener()
    _announce(listener, "v1")
    _announce(listener, "v1")
    assert len(server.loads) == 1


def test_a_checkpoint_that_fails_to_load_keeps_the_served_model() -> None:
    listener, server, _ = _listener()
    _announce(listener, "v1")
    _announce(listener, "broken")
    _announce(listener, "damaged")  # any error of a damaged file, not only ours
    assert server.model_version == "v1" and listener.swaps == 1


def test_each_failed_swap_is_counted_and_logged_under_its_own_checkpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener, _, _ = _listener()
    with caplog.at_level(logging.ERROR):
        _announce(listener, "broken")
        _announce(listener, "damaged")
    assert value_of(listener.metrics.model_swap_failures) == 2
    # the log limiter keys on the template: two checkpoints must make two templates
    templates = {str(r.msg) for r in caplog.records if "cannot serve checkpoint" in str(r.msg)}
    assert len(templates) == 2 and any("/m/damaged" in t for t in templates)


def test_a_malformed_control_record_is_ignored() -> None:
    listener, server, _ = _listener()
    asyncio.run(listener.on_record(b"{not an announcement"))
    assert server.loads == [] and listener.swaps == 0


def test_catalog_items_are_cold_started_only_once_a_model_serves() -> None:
    listener, server, _ = _listener()
    items = [Item(item_id="i9", title="Nine")]
    asyncio.run(listener.on_items(items, record_ts_ms=0))
    assert server.cold == [] and listener.cold_items == 0  # no model yet: nothing to add to
    _announce(listener, "v1")
    asyncio.run(listener.on_items(items, record_ts_ms=0))
    asyncio.run(listener.on_items(items, record_ts_ms=0))  # already indexed: not counted again
    assert server.cold == ["i9"] and listener.cold_items == 1
    assert value_of(listener.metrics.index_items) == 11


def test_a_model_reading_context_the_states_do_not_keep_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, catalog = FakeServer(), {"i1": Item(item_id="i1", title="One")}
    config = {"encoder": {"inputs": {"context_fields": ["device", "page"]}}}
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "config.json").write_text(json.dumps(config))
    keeping = ControlListener(
        Settings().kafka,
        server,  # type: ignore[arg-type]
        None,
        catalog,
        metrics(),
        kept_context=("device",),
    )
    with caplog.at_level(logging.WARNING, "streamrec.stream.model_checks"):
        asyncio.run(keeping._load(tmp_path / "v1"))
    assert "['page']" in caplog.text and "STREAMREC_STATE__CONTEXT_FIELDS" in caplog.text
    caplog.clear()
    keeping.kept_context = ("device", "page")
    with caplog.at_level(logging.WARNING, "streamrec.stream.model_checks"):
        asyncio.run(keeping._load(tmp_path / "v2"))
    assert caplog.text == "" and server.model_version == "v2"


def test_a_model_trained_on_few_of_the_catalogs_items_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener, _, catalog = _listener()
    catalog.clear()
    catalog.update({f"SKU-{n}": Item(item_id=f"SKU-{n}", title=f"Lamp {n}") for n in range(4)})
    for version, items in (("movies", ["1", "2", "SKU-0"]), ("shop", ["SKU-0", "SKU-1", "x"])):
        (tmp_path / version).mkdir()
        (tmp_path / version / "item_ids.json").write_text(json.dumps(items))
    with caplog.at_level(logging.WARNING, "streamrec.stream.model_checks"):
        asyncio.run(listener._load(tmp_path / "movies"))
    assert "trained on 1 of the 4 catalog items" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "streamrec.stream.model_checks"):
        asyncio.run(listener._load(tmp_path / "shop"))  # half the catalog: not warned about
    assert caplog.text == ""


class _Backlog:
    """A control partition: ``backlog`` records before the end offset, then ``live`` ones,
    one record per fetch; raises _Done when both are read (ends ``follow``)."""

    def __init__(self, backlog: list[bytes], live: list[bytes]) -> None:
        self.records = [*backlog, *live]
        self.next = 0

    async def position(self, tp: object) -> int:
        return self.next

    async def getmany(self, timeout_ms: int) -> dict[object, list[SimpleNamespace]]:
        if self.next == len(self.records):
            raise _Done
        record = SimpleNamespace(offset=self.next, value=self.records[self.next])
        self.next += 1
        return {TP: [record]}


class _Done(Exception):
    pass


TP = TopicPartition("control", 0)


def _model(version: str) -> bytes:
    return encode(
        ModelAnnouncement(model_version=version, checkpoint=f"/m/{version}", announced_at=1)
    )


def test_a_starting_worker_loads_only_the_newest_model_of_the_backlog() -> None:
    served: list[str] = []
    server, catalog = FakeServer(), {"i1": Item(item_id="i1", title="One")}
    listener = ControlListener(
        Settings().kafka, server, None, catalog, metrics(),  # type: ignore[arg-type]
        lambda weights, version, at, back: served.append(version),
    )  # fmt: skip
    policy = policy_record("pl-a-1", [0.5, 0.1, 0.0, 1.0, 0.2], None)
    backlog = [_model("pruned"), policy, _model("v2"), b"{not json"]
    consumer = _Backlog(backlog, [_model("v3")])
    with pytest.raises(_Done):
        asyncio.run(listener.follow(consumer, TP, end=len(backlog)))
    assert [p.name for p, _ in server.loads] == ["v2", "v3"]  # never the pruned v1
    assert served == ["pl-a-1"] and value_of(listener.metrics.model_swap_failures) == 0


def test_when_the_newest_backlog_model_cannot_load_the_one_before_it_is_served() -> None:
    listener, server, _ = _listener()
    backlog = [_model("v1"), _model("v2"), _model("broken")]  # v3's folder was deleted
    with pytest.raises(_Done):
        asyncio.run(listener.follow(_Backlog(backlog, []), TP, end=len(backlog)))
    assert server.model_version == "v2" and [p.name for p, _ in server.loads] == ["v2"]
    assert listener.load_failure is None  # the last load succeeded
    _announce(listener, "damaged")
    assert listener.load_failure is not None and "/m/damaged" in listener.load_failure


def test_the_configured_checkpoint_is_loaded_only_when_no_announced_model_loads() -> None:
    # A restarted worker loaded encoder.checkpoint (seconds) and then swapped at once to the
    # newest announced model.
    for backlog, loaded in (
        ([_model("v1"), _model("v2")], ["v2"]),
        ([_model("broken")], ["configured"]),
        ([], ["configured"]),
    ):
        listener, server, _ = _listener(Path("/m/configured"))
        with pytest.raises(_Done):
            asyncio.run(listener.follow(_Backlog(backlog, []), TP, end=len(backlog)))
        assert [p.name for p, _ in server.loads] == loaded


def test_a_deeply_nested_control_record_is_ignored_not_a_crash() -> None:
    """Anyone who can write to control could otherwise crash every worker, at each restart
    too while the compacted topic keeps the record."""
    listener, server, _ = _listener()
    asyncio.run(listener.on_record(b"[" * 200_000))
    asyncio.run(listener.on_record(b'{"type": "policy", "weights": ' + b"[" * 200_000))
    assert server.loads == [] and listener.swaps == 0


def _anyones_policy(version: str, weights: object, learner: tuple[str, int] = ("", 0)) -> bytes:
    """A policy announcement as anyone can write it to control, past policy_record's checks."""
    return json.dumps(
        {"type": "policy", "policy_version": version, "weights": weights, "announced_at": 1,
         "learner_id": learner[0], "learner_started": learner[1]}
    ).encode()  # fmt: skip


def test_a_policy_announcement_the_policy_cannot_serve_is_skipped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the 3 weights reached the reranker: the model process died on them, and every
    later model load failed, while the compacted topic kept the announcement."""
    served: list[tuple[str, list[float]]] = []
    server, catalog = FakeServer(), {"i1": Item(item_id="i1", title="One")}
    listener = ControlListener(
        Settings().kafka, server, None, catalog, metrics(),  # type: ignore[arg-type]
        lambda weights, version, at, back: served.append((version, list(weights))),
    )  # fmt: skip
    good = [0.5, 0.1, 0.0, 1.0, 0.2]
    asyncio.run(listener.on_record(policy_record("pl-a-1", good, None)))
    for version, weights in (("evil-dims3", [1, 2, 3]), ("evil-nan", [float("nan")] + [0] * 4)):
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            asyncio.run(listener.on_record(_anyones_policy(version, weights)))
        assert len(caplog.records) == 1 and version in caplog.text
    assert "5 entries" in caplog.text or "finite" in caplog.text
    assert served == [("pl-a-1", good)] and listener.policy_version == "pl-a-1"
    assert value_of(listener.metrics.policy_announcements_rejected) == 2
    _announce(listener, "v1")  # model loads never depend on a policy announcement
    assert server.model_version == "v1"


class _Stuck:
    """A control partition whose backlog never arrives."""

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 5 for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[object]]:
        await asyncio.sleep(3600)
        return {}


def test_a_control_topic_that_fails_or_stalls_still_gets_the_configured_model_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Since the configured checkpoint waits for the backlog, a control topic that cannot be
    # read must not leave the worker with no model (and /ready false for good).
    import contextlib

    from streamrec.stream import control

    @contextlib.asynccontextmanager
    async def failing(kafka: object) -> object:
        raise ConnectionError("no broker")
        yield

    @contextlib.asynccontextmanager
    async def stuck(kafka: object) -> object:
        yield _Stuck(), TP

    monkeypatch.setattr(control, "CATCH_UP_S", 0.05)
    for reader in (failing, stuck):
        monkeypatch.setattr(control, "control_reader", reader)
        listener, server, _ = _listener(Path("/m/configured"))

        async def started(listener: ControlListener = listener) -> None:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(listener.run(), timeout=1.0)

        asyncio.run(started())
        assert [p.name for p, _ in server.loads] == ["configured"], reader


def test_no_checkpoint_configured_and_none_announced_is_said_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A new user's model-mode worker waited, never ready, without a word.
    import contextlib

    from streamrec.stream import control

    @contextlib.asynccontextmanager
    async def stuck(kafka: object) -> object:
        yield _Stuck(), TP

    monkeypatch.setattr(control, "CATCH_UP_S", 0.05)
    monkeypatch.setattr(control, "control_reader", stuck)
    listener, server, _ = _listener(None)

    async def started() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.run(), timeout=0.5)

    with caplog.at_level(logging.WARNING, logger="streamrec.stream.model_checks"):
        asyncio.run(started())
    assert server.loads == []
    said = [r.getMessage() for r in caplog.records]
    assert (
        said and "no encoder.checkpoint" in said[0] and "STREAMREC_ENCODER__CHECKPOINT" in said[0]
    )
    asyncio.run(listener._serve_initial())  # the backlog's end and the fallback both come here
    assert len([r for r in caplog.records if "no encoder.checkpoint" in r.getMessage()]) == 1
    # Once a model serves, there is nothing to say.
    _announce(listener, "v1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.model_checks"):
        asyncio.run(listener._serve_initial())
    assert caplog.records == []


def test_the_first_load_waits_for_the_catalog_and_cold_starts_what_came_during_it() -> None:
    # The catalog is read at start beside the first load: a load with a partial catalog
    # cold-started none of the rest (on_items skips items while no model serves), so a
    # restarted shop worker served its model's own items only.
    listener, server, catalog = _listener()
    catalog.clear()
    reads = iter(range(3))

    def loaded() -> bool:  # the catalog task reads one more record at each look
        n = next(reads, None)
        if n is None:
            return True
        catalog[f"i{n}"] = Item(item_id=f"i{n}", title=f"Item {n}")
        return False

    listener.catalog_loaded = loaded
    original = server.load

    def load_while_a_record_arrives(checkpoint: Path, given: dict[str, Item]) -> str:
        catalog["late"] = Item(item_id="late", title="Published during the load")
        return original(checkpoint, given)

    server.load = load_while_a_record_arrives  # type: ignore[method-assign]  # a slow load
    with pytest.raises(_Done):
        asyncio.run(listener.follow(_Backlog([_model("v1")], []), TP, end=1))
    assert server.loads == [(Path("/m/v1"), ["i0", "i1", "i2"])]
    assert server.cold == ["late"]


def test_catalog_items_the_model_cannot_index_are_logged_and_counted_not_a_crash() -> None:
    # A model without a text projection that knew the whole catalog at load raised from
    # add_items on the first new item, which ended the catalog task and the worker.
    listener, server, _ = _listener()
    _announce(listener, "v1")

    def no_projection(items: list[Item]) -> int:
        raise ModelError("checkpoint v1 has no text projection")

    server.add_items = no_projection  # type: ignore[method-assign]  # a model without text
    asyncio.run(listener.on_items([Item(item_id="new", title="New")], record_ts_ms=0))
    assert value_of(listener.metrics.cold_start_failures) == 1
    assert listener.cold_items == 0
