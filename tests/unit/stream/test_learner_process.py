"""The learner process without Kafka: experience records in, versions out, exact restarts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamrec.errors import ContractError
from streamrec.models.config import LearnerSettings
from streamrec.models.policy.rewards import Impression, Reward
from streamrec.models.policy.slate import Candidate, UserContext
from streamrec.models.policy.stochastic import StochasticReranker
from streamrec.settings import Settings
from streamrec.stream.control import ControlListener, PolicyAnnouncement, policy_record
from streamrec.stream.experience import decode_experience, encode_experience
from streamrec.stream.learner_fence import Heartbeat
from streamrec.stream.learner_process import LearnerService, _loop, open_service
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.rewind import resume
from streamrec.stream.serving import ModelServer


def _records(n: int, seed: int = 0) -> list[bytes]:
    """Closed impressions of 6 users; a click on the most popular item of each slate."""
    rng = np.random.default_rng(seed)
    policy = StochasticReranker(seed=seed)
    out = []
    for t in range(n):
        cands = [
            Candidate(f"i{i}", float(rng.normal()), rng.normal(size=4), float(rng.integers(1, 99)))
            for i in range(12)
        ]
        user = f"u{t % 6}"
        slate = policy.rerank(UserContext(user, rng.normal(size=(2, 4))), cands, 4)
        imp = Impression.from_slate(f"r{t}", user, slate, float(t * 60))
        pops = {c.item_id: c.popularity for c in cands}
        best = max(range(4), key=lambda k: pops[imp.items[k]])
        rewards = (
            [Reward(imp.rec_id, imp.items[best], best, "click", 1.0)] if rng.random() < 0.7 else []
        )
        out.append(encode_experience(imp, rewards))
    return out


def _settings(algorithm: str) -> Settings:
    learner = LearnerSettings(algorithm=algorithm, batch_size=16, horizon=2)  # type: ignore[arg-type]
    return Settings(learner=learner)


def test_experience_round_trips_and_rejects_bad_records() -> None:
    raw = _records(1)[0]
    imp, rewards = decode_experience(raw)
    assert decode_experience(encode_experience(imp, rewards))[0].to_dict() == imp.to_dict()
    with pytest.raises(ContractError) as bad_impression:
        decode_experience(b'{"v": 1, "impression": {}, "rewards": []}')
    assert bad_impression.value.code == "bad_impression"
    for raw_bad in (b'{"v": 2}', b"[1]", raw.replace(b'"position": ', b'"position": 9')):
        with pytest.raises(ContractError) as bad:
            decode_experience(raw_bad)
        assert bad.value.code == "bad_experience"


@pytest.mark.parametrize("algorithm", ["reinforce", "actor_critic"])
def test_a_restart_at_a_save_learns_exactly_what_an_uninterrupted_learner_does(
    tmp_path: Path, algorithm: str
) -> None:
    records = _records(200)
    whole = open_service(_settings(algorithm), tmp_path / "whole")
    for offset, raw in enumerate(records):
        whole.handle(0, offset, raw)

    first = open_service(_settings(algorithm), tmp_path / "split")
    for offset, raw in enumerate(records[:90]):
        first.handle(0, offset, raw)
    first.save()  # the learner process saves after each batch that made an update
    second = open_service(_settings(algorithm), tmp_path / "split")
    start = second.positions[0]
    assert start == 90
    for offset, raw in enumerate(records[start:], start=start):
        second.handle(0, offset, raw)
    assert second.learner.n_updates == whole.learner.n_updates > 3
    np.testing.assert_allclose(second.learner.weights, whole.learner.weights, rtol=1e-9)
    # the same learner (its id came back from the file) at the same version as the whole run
    assert second.learner.lineage == first.learner.lineage
    assert second.learner.version.replace(first.learner.lineage, "") == (
        whole.learner.version.replace(whole.learner.lineage, "")
    )


@pytest.mark.parametrize("algorithm", ["reinforce", "actor_critic"])
def test_a_restarted_learner_estimates_on_the_window_an_uninterrupted_one_has(
    tmp_path: Path, algorithm: str
) -> None:
    records, window, stop = _records(199), 64, 170
    records.insert(150, records[140])  # a worker re-published it: a dup, never in the window
    base = _settings(algorithm)
    settings = base.model_copy(
        update={"learner": base.learner.model_copy(update={"ope_window": window})}
    )
    whole = open_service(settings, tmp_path / "whole")
    for offset, raw in enumerate(records):
        whole.handle(0, offset, raw)
    first = open_service(settings, tmp_path / "split")
    for offset, raw in enumerate(records[:stop]):
        first.handle(0, offset, raw)
    first.save()
    second = open_service(settings, tmp_path / "split")
    # what rewind.resume hands it: the window's records before the saved position, then on
    for offset, raw in enumerate(records[stop - window :], start=stop - window):
        second.handle(0, offset, raw)
    assert second.counts == {"observed": 200 - stop, "bad": 0, "dup": 0, "refilled": window - 1}
    assert second.positions == {0: 200} and second.learner.n_updates == whole.learner.n_updates
    ours, theirs = second.estimate(), whole.estimate()
    assert ours is not None and theirs is not None
    assert ours["slates"] == theirs["slates"] == window
    assert ours == theirs


class _Log:
    """A consumer over an experience partition per key of ``records``: the raw records, the
    group's commits, what was sought; ``getmany`` hands out every record from the position."""

    def __init__(self, records: dict[int, list[bytes]], commits: dict[int, int]) -> None:
        self.records, self.commits = records, commits
        self.tps = [TopicPartition("experience", p) for p in records]
        self.position: dict[TopicPartition, int] = {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records[tp.partition]) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp.partition)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.position[tp] = 0

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        out = {}
        for tp in tps:
            held = self.records[tp.partition][self.position[tp] :]
            if held:
                out[tp] = [SimpleNamespace(offset=self.position[tp] + n, value=raw)
                           for n, raw in enumerate(held)]  # fmt: skip
                self.position[tp] += len(held)
        return out


def test_a_restart_reads_the_window_again_only_where_this_learner_had_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(60)
    first = open_service(_settings("reinforce"), tmp_path)
    for offset, raw in enumerate(records[:40]):
        first.handle(0, offset, raw)
    first.positions[3] = 99  # the topic was re-created since: partition 3 ends before it
    first.save()
    service = open_service(_settings("reinforce"), tmp_path)
    log = _Log({0: records[:40], 1: records[40:50], 2: records[50:], 3: records[:5]}, {1: 4})
    asyncio.run(
        resume(cast(Any, log), log.tps, service.positions, service.ope_window, service.handle)
    )
    # 0: saved, read again up to 40; 1: its group commit; 2: nothing saved or committed; 3:
    # saved past its end, so read anew from its beginning, not taken for learned records
    assert [log.position[tp] for tp in log.tps] == [40, 4, 0, 0]
    assert service.counts["refilled"] == 40 and service.counts["observed"] == 0
    assert service.positions == {0: 40} and "before the saved offset 99" in caplog.text


def test_repeated_records_are_learned_once(tmp_path: Path) -> None:
    service: LearnerService = open_service(_settings("reinforce"), tmp_path)
    raw = _records(1)[0]
    service.handle(0, 0, raw)
    service.handle(0, 1, raw)
    service.handle(0, 2, b"not json")
    assert service.counts == {"observed": 1, "bad": 1, "dup": 1, "refilled": 0}
    assert service.positions == {0: 3}


def _edited(raw: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    data = json.loads(raw)
    edit(data)
    return json.dumps(data).encode()  # NaN written as Python's json writes (and reads) it


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["impression"].__setitem__(key, value)


UNLEARNABLE = {
    "features with 3 columns": _set("features", [[0.1, 0.2, 0.3]] * 4),
    "params of the wrong length": _set("params", [1.0, 0.0]),
    "feature rows not matching the items": _set("expected_features", [[0.0] * 5] * 3),
    "a state of the wrong length": _set("state", [1.0]),
    "temperature 0": _set("temperature", 0),
    "temperature NaN": _set("temperature", float("nan")),
    "a NaN feature": lambda d: d["impression"]["features"][0].__setitem__(2, float("nan")),
    "a NaN reward": lambda d: d.__setitem__("rewards", [{**d["rewards"][0], "value": "NaN"}]),
    "an infinite reward position": lambda d: d["rewards"][0].__setitem__("position", 1e400),
}


@pytest.mark.parametrize("name", UNLEARNABLE)
@pytest.mark.parametrize("algorithm", ["reinforce", "actor_critic"])
def test_an_unlearnable_record_is_skipped_and_the_learner_learns_on(
    tmp_path: Path, algorithm: str, name: str
) -> None:
    """Before, it reached an update (a matmul error, or NaN weights saved and committed), and
    the learner crashed on it at every restart, its saved offsets being before it."""
    records = _records(40)
    clicked = next(r for r in records if json.loads(r)["rewards"])
    bad = _edited(clicked, UNLEARNABLE[name])
    with pytest.raises(ContractError) as rejected:
        decode_experience(bad)
    assert rejected.value.code == "bad_experience"
    service = open_service(_settings(algorithm), tmp_path)
    for offset, raw in enumerate([records[0], bad, *records[1:]]):
        service.handle(0, offset, raw)
    assert service.counts["bad"] == 1 and service.learner.n_updates >= 1
    assert np.isfinite(service.learner.weights).all()


def test_a_deeply_nested_experience_record_is_a_bad_record_not_a_crash(tmp_path: Path) -> None:
    service = open_service(_settings("reinforce"), tmp_path)
    service.handle(0, 0, b'{"v": 1, "impression": ' + b"[" * 200_000)
    assert service.counts["bad"] == 1 and service.positions == {0: 1}


def test_each_update_is_announced_with_its_doubly_robust_estimate(tmp_path: Path) -> None:
    service = open_service(_settings("actor_critic"), tmp_path)
    for offset, raw in enumerate(_records(120)):
        service.handle(0, offset, raw)
    assert service.announcements
    estimate = service.announcements[-1]["estimate"]
    assert estimate is not None and estimate["dr"]["low"] <= estimate["dr"]["value"]
    record = policy_record(service.learner.version, service.learner.weights.tolist(), estimate)
    parsed = PolicyAnnouncement.model_validate_json(record)
    assert parsed.policy_version == service.learner.version and len(parsed.weights) == 5


def test_workers_serve_announced_policies_once_and_skip_bad_ones() -> None:
    settings = Settings()
    server = cast(ModelServer, object())  # the policy path never touches the model server
    served: list[str] = []
    listener = ControlListener(
        settings.kafka, server, None, {}, WorkerMetrics(CollectorRegistry(), "t"),
        lambda weights, version, announced_at, rolled_back: served.append(version),
    )  # fmt: skip
    good = policy_record("ac-3", [1.0, 0.5, 0.0, 1.0, 0.0], None)
    for raw in (good, good, b'{"type": "policy", "weights": "x"}', b"{"):
        asyncio.run(listener.on_record(raw))
    assert served == ["ac-3"] and listener.policy_version == "ac-3"


def test_a_rollback_is_announced_as_one_and_workers_take_it_as_one(tmp_path: Path) -> None:
    service = open_service(_settings("reinforce"), tmp_path)
    service.learner.guard.verdict = lambda: (np.zeros(5), "pl-0")  # type: ignore[method-assign]
    for offset, raw in enumerate(_records(16)):
        service.handle(0, offset, raw)
    (announced,) = service.announcements
    assert announced["rolled_back"] and announced["version"] == "pl-0"
    taken: list[bool] = []
    listener = ControlListener(
        Settings().kafka, cast(ModelServer, object()), None, {},
        WorkerMetrics(CollectorRegistry(), "t"),
        lambda weights, version, announced_at, rolled_back: taken.append(rolled_back),
    )  # fmt: skip
    record = policy_record("pl-0", announced["weights"], None, ("", 0), announced["rolled_back"])
    asyncio.run(listener.on_record(record))
    assert taken == [True]


def test_a_restarted_worker_logs_one_line_for_the_policy_backlog_not_one_per_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A worker restart logged "serving policy ..." for each of 492 versions read back.
    listener = ControlListener(
        Settings().kafka, cast(ModelServer, object()), None, {},
        WorkerMetrics(CollectorRegistry(), "t"), lambda weights, version, at, back: None,
    )  # fmt: skip
    backlog = [policy_record(f"pl-a-{n}", [1.0, 0.5, 0.0, 1.0, 0.0], None) for n in range(5)]
    with caplog.at_level(logging.INFO, logger="streamrec.stream.control"):
        for raw in backlog:
            asyncio.run(listener.on_record(_announced_before(raw, listener)))
        asyncio.run(listener.on_record(policy_record("pl-a-5", [1.0, 0.5, 0.0, 1.0, 0.0], None)))
    served = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert served == ["serving policy pl-a-0", "serving policy pl-a-5"]
    assert listener.policy_version == "pl-a-5"


def _announced_before(raw: bytes, listener: ControlListener) -> bytes:
    """``raw`` announced a minute before ``listener`` started (read back from the topic)."""
    record = json.loads(raw)
    record["announced_at"] = listener._started_ms - 60_000
    return json.dumps(record).encode()


class _Consumer:
    """Hands out queued batches of one partition, then nothing; records commits."""

    def __init__(self, batches: list[list[bytes]], behind: int = 0) -> None:
        self.tp = TopicPartition("experience", 0)
        self.batches, self.offset = batches, 0
        self.high = sum(map(len, batches)) + behind  # the partition's high watermark
        self.commits: list[int] = []

    def highwater(self, tp: TopicPartition) -> int:
        return self.high

    async def position(self, tp: TopicPartition) -> int:
        return self.offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self.batches:
            return {}
        records = []
        for raw in self.batches.pop(0):
            records.append(SimpleNamespace(offset=self.offset, value=raw))
            self.offset += 1
        return {self.tp: records}

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[self.tp])


def test_an_idle_learner_commits_what_it_read_after_its_last_update(tmp_path: Path) -> None:
    """16 records (one update), then 4 more: once idle, those 4 are kept and committed too
    (before, the group's lag stayed at 4 until the next update or a stop)."""
    service = open_service(_settings("reinforce"), tmp_path)
    records = _records(20)
    consumer = _Consumer([records[:16], records[16:]])
    polls = iter(range(4))

    async def announce(version: str, weights: list[float], estimate: Any, back: bool) -> None:
        return None

    asyncio.run(_loop(cast(Any, consumer), service, announce, lambda: next(polls, None) is None))
    # the update, the idle keep (once, not at every idle poll), the graceful stop
    assert consumer.commits == [16, 20, 20]


def test_the_learners_lag_is_what_each_poll_leaves_unread(tmp_path: Path) -> None:
    service = open_service(_settings("reinforce"), tmp_path)
    records = _records(20)
    consumer = _Consumer([records[:12], records[12:]], behind=7)
    lags: list[dict[int, int]] = []

    def stop() -> bool:
        lags.append(dict(service.lag))
        return len(lags) > 3

    async def announce(version: str, weights: list[float], estimate: Any, back: bool) -> None:
        return None

    service.polled_at = 0.0
    asyncio.run(_loop(cast(Any, consumer), service, announce, stop))
    # before the first poll nothing is known; then 27 - 12, 27 - 20, and no record arrives
    assert lags == [{}, {0: 15}, {0: 7}, {0: 7}]
    assert service.polled_at > 0.0  # each poll stamps it, for the poll-age gauge


def test_a_learner_displaced_while_reading_neither_commits_nor_announces(tmp_path: Path) -> None:
    """The first batch makes an update; the fence closes while the second (another update) is
    read: that one is neither saved, committed nor announced, and no final checkpoint runs."""
    service = open_service(_settings("reinforce"), tmp_path)
    records = _records(40)
    consumer = _Consumer([records[:16], records[16:40]])
    announced: list[str] = []

    async def announce(version: str, weights: list[float], estimate: Any, back: bool) -> None:
        announced.append(version)

    reads = iter(range(10))
    fenced = lambda: consumer.offset > 16  # noqa: E731 - displaced during the second read
    asyncio.run(
        _loop(cast(Any, consumer), service, announce, lambda: next(reads, None) is None, fenced)
    )
    assert consumer.commits == [16] and len(announced) == 1
    assert open_service(_settings("reinforce"), tmp_path).positions == {0: 16}


def test_an_idle_learner_announces_its_version_again_so_a_second_learner_learns_of_it(
    tmp_path: Path,
) -> None:
    service = open_service(_settings("reinforce"), tmp_path)
    sent: list[str] = []

    async def send(version: str, weights: list[float], estimate: Any, back: bool) -> None:
        sent.append(version)

    ticks = iter(range(0, 1000, 25))  # each read of the clock is 25 s later

    def held() -> tuple[str, list[float]]:
        return service.learner.version, service.learner.weights.tolist()

    heartbeat = Heartbeat(60.0, send, held, clock=lambda: float(next(ticks)))
    polls = iter(range(6))
    consumer = _Consumer([])
    asyncio.run(
        _loop(cast(Any, consumer), service, heartbeat.announce,
              lambda: next(polls, None) is None, idle=heartbeat.beat)
    )  # fmt: skip
    # clock reads: 0 (start), then 25, 50, 75 (beat: 75 >= 60, resets at 100), 125, 150, 175
    assert sent == [service.learner.version] * 2
