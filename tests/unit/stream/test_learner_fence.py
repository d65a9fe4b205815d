"""One learner per group: what a starting learner does with the last announcement, who gives
way at run time, and version names that never cross lineages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka import TopicPartition

from streamrec.errors import ConfigError, ModelError
from streamrec.models.config import LearnerSettings
from streamrec.settings import Settings
from streamrec.stream import control
from streamrec.stream.control import PolicyAnnouncement, policy_record
from streamrec.stream.data_dir import lock_data_dir
from streamrec.stream.learner_fence import ControlWatch, LearnerIdentity, displaces, on_start
from streamrec.stream.learner_process import open_service
from tests.unit.stream.test_control import TP, _anyones_policy, _Backlog
from tests.unit.stream.test_learner_process import _records

ME = LearnerIdentity("aaaa1111", started=2_000)


def _announced(version: str, learner_id: str = "", started: int = 0) -> PolicyAnnouncement:
    raw = policy_record(version, [0.5, 0.1, 0.0, 1.0, 0.2], None, (learner_id, started))
    return PolicyAnnouncement.model_validate_json(raw)


def test_a_learner_carries_on_after_its_own_announcement_or_none() -> None:
    assert on_start(None, ME, None) == "carry_on"
    assert on_start(None, ME, "pl-aaaa1111-4") == "carry_on"
    assert on_start(_announced("pl-aaaa1111-4", "aaaa1111", 1_000), ME, "pl-aaaa1111-4") == (
        "carry_on"
    )
    # written before announcements named their learner, or adopted: the version we hold
    assert on_start(_announced("pl-7"), ME, "pl-7") == "carry_on"
    assert on_start(_announced("pl-bbbb2222-9", "bbbb2222", 1_000), ME, "pl-bbbb2222-9") == (
        "carry_on"
    )


def test_a_fresh_learner_adopts_another_learners_policy_instead_of_rolling_back() -> None:
    assert on_start(_announced("pl-bbbb2222-9", "bbbb2222", 1_000), ME, None) == "adopt"
    assert on_start(_announced("pl-9"), ME, None) == "adopt"


def test_state_from_before_ids_carries_on_after_its_own_id_less_announcement() -> None:
    # saved at pl-8, crashed before announcing it: the last announcement is its pl-7
    assert on_start(_announced("pl-7"), ME, "pl-8", legacy=True) == "carry_on"
    with pytest.raises(ConfigError):  # an id-bearing learner took over meanwhile
        on_start(_announced("pl-bbbb2222-1", "bbbb2222", 1_000), ME, "pl-8", legacy=True)


def test_a_learner_with_state_is_refused_when_another_took_the_group_since() -> None:
    with pytest.raises(ConfigError, match="learner bbbb2222 announced policy pl-bbbb2222-9"):
        on_start(_announced("pl-bbbb2222-9", "bbbb2222", 1_000), ME, "pl-aaaa1111-4")
    with pytest.raises(ConfigError, match="another learner holds the group"):
        on_start(_announced("pl-9"), ME, "pl-aaaa1111-4")


def test_only_an_older_learner_displaces_a_running_one() -> None:
    assert displaces(_announced("pl-b-1", "bbbb2222", started=1_000), ME)
    assert not displaces(_announced("pl-b-1", "bbbb2222", started=3_000), ME)
    assert not displaces(_announced("pl-a-1", ME.learner_id, started=ME.started), ME)
    assert not displaces(_announced("pl-1"), ME)  # no id: nobody to give way to
    # a copy of this learner (its data dir restored on another host) started earlier
    assert displaces(_announced("pl-a-1", ME.learner_id, started=ME.started - 1), ME)
    # a tie on the start time is broken by the id, so exactly one of the two gives way
    twin = LearnerIdentity("0000ffff", ME.started)
    assert displaces(_announced("pl-t-1", twin.learner_id, twin.started), ME)
    assert not displaces(_announced("pl-a-1", ME.learner_id, ME.started), twin)


def test_an_old_announcement_copied_back_onto_control_displaces_nobody() -> None:
    # A replayed record of a learner that "started" long ago stopped the running learner,
    # and its restart was then refused.
    now = int(time.time() * 1000)
    me = LearnerIdentity("aaaa1111", started=now)
    old = _announced("pl-d-9", "deadbeef", started=1)
    assert not displaces(old.model_copy(update={"announced_at": now - 3_600_000}), me)
    assert displaces(old.model_copy(update={"announced_at": now + 5_000}), me), "a live rival"


def test_the_watch_keeps_the_announcement_that_displaced_it() -> None:
    watch = ControlWatch(Settings().kafka, ME, offset=0)
    watch.see(b'{"type": "model", "model_version": "m1"}')
    watch.see(b"not json")
    watch.see(policy_record("pl-b-1", [0.0] * 5, None, ("bbbb2222", 3_000)))
    assert watch.displaced_by is None
    watch.see(policy_record("pl-c-1", [0.0] * 5, None, ("cccc3333", 1_000)))
    assert watch.displaced_by is not None and watch.displaced_by.learner_id == "cccc3333"


class _Control(_Backlog):
    """The control partition as ``last_announcements`` reads it."""

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.next = offset

    async def getmany(  # type: ignore[override]  # the learner names its partition
        self, tp: TopicPartition, timeout_ms: int
    ) -> dict[object, list[SimpleNamespace]]:
        return await super().getmany(timeout_ms)


def test_an_announcement_of_unusable_weights_is_neither_adopted_nor_a_fence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a learner with state was refused ("another learner holds the group"), a fresh
    one failed to adopt the 3 weights, and a running one gave way to it."""
    mine = policy_record("pl-aaaa1111-3", [0.5, 0.1, 0.0, 1.0, 0.2], None, (ME.learner_id, 1))
    evil = _anyones_policy("evil-dims3", [1, 2, 3], ("bbbb2222", 1_000))

    @asynccontextmanager
    async def reader(kafka: object) -> AsyncIterator[tuple[_Control, TopicPartition]]:
        yield _Control([mine, evil], []), TP

    monkeypatch.setattr(control, "control_reader", reader)
    last = asyncio.run(control.last_announcements(Settings().kafka)).policy
    assert last is not None and last.policy_version == "pl-aaaa1111-3"
    assert on_start(last, ME, "pl-aaaa1111-3") == "carry_on"
    assert on_start(last, LearnerIdentity("cccc3333", 3_000), None) == "adopt"  # valid weights
    watch = ControlWatch(Settings().kafka, ME, offset=0)
    watch.see(evil)  # from a learner that started before this one
    assert watch.displaced_by is None


def test_versions_carry_the_learners_id_and_it_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(learner=LearnerSettings(batch_size=16))
    service = open_service(settings, tmp_path)
    assert service.fresh and len(service.learner.lineage) == 8
    assert service.learner.version == f"pl-{service.learner.lineage}-0"  # not every one's pl-0
    with pytest.raises(ModelError, match="has 3 weights, this learner 5"):
        service.learner.adopt(np.ones(3), "pl-x-1")
    service.adopt(_announced("pl-bbbb2222-9", "bbbb2222", 1_000))
    assert service.learner.version == "pl-bbbb2222-9"
    assert np.allclose(service.learner.weights, [0.5, 0.1, 0.0, 1.0, 0.2])
    for offset, raw in enumerate(_records(60)):
        service.handle(0, offset, raw)
    assert service.announcements, "60 impressions at batch size 16 update the policy"
    assert service.learner.version.startswith(f"pl-{service.learner.lineage}-")
    service.save()
    again = open_service(settings, tmp_path)
    assert not again.fresh and again.learner.lineage == service.learner.lineage
    assert again.learner.version == service.learner.version


def test_a_data_dir_that_is_a_file_or_held_by_another_learner_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is not a writable folder"):
        lock_data_dir(afile, "learner")
    with lock_data_dir(tmp_path / "d", "learner"):
        with pytest.raises(ConfigError, match="in use by another learner"):
            lock_data_dir(tmp_path / "d", "learner")
        lock_data_dir(tmp_path / "d", "worker").close()  # a worker's lock is its own
