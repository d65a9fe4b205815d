"""Impressions stored at publish time, in the slate's partition, and the reward join."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from streamrec.models.policy.rewards import DropReason, Impression
from streamrec.settings import Settings
from streamrec.stream.compat import event_context
from streamrec.stream.contract import ERROR_CODES, Event, SlateItem
from streamrec.stream.deadletter import DeadLetters
from streamrec.stream.feedback import Feedback, impression_of
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.write_behind import WriteBehind


class RoutedTable(dict[str, Any]):
    """A dict standing in for the impressions table; notes the partition of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: dict[str, int] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        event = faust.current_event()
        assert event is not None, "a table write outside an event context"
        self.partitions[key] = event.message.partition
        super().__setitem__(key, value)


class FakeEvent:  # faust keeps a weak reference to the current event
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def _feedback(
    tmp_path: Path,
    owned: tuple[int, ...] = (0, 1),
    policies: list[str] | None = None,
    settings: Settings | None = None,
) -> Feedback:
    settings = settings or Settings()
    write_behind = WriteBehind([], 0.5, lambda: 0)
    for partition in owned:
        write_behind.remember(FakeEvent(partition))  # type: ignore[arg-type]
    return Feedback(
        RoutedTable(),
        write_behind.context_of,
        settings.learner,
        settings.policy,
        tmp_path / "learner.safetensors",
        lambda weights, version: (policies if policies is not None else []).append(version),
        WorkerMetrics(CollectorRegistry()),
    )


def _impression(rec_id: str, age_s: float = 0.0) -> Impression:
    """A heuristic slate's impression, as the refresher stores it, published ``age_s`` ago."""
    items = [SlateItem(item_id=i, score=1.0, propensity=1.0, reason="") for i in ("a", "b")]
    published_ms = int((time.time() - age_s) * 1000)
    return impression_of(rec_id, "u1", items, "heuristic-1", published_ms)


def _click(rec_id: str, item: str) -> Event:
    now = int(time.time() * 1000) + 1
    return Event(event_id=f"c-{item}", user_id="u1", item_id=item, type="click", ts=now,
                 rec_id=rec_id, position=0)  # fmt: skip


def test_a_stored_slate_is_written_to_its_users_partition_and_joins_responses(
    tmp_path: Path,
) -> None:
    feedback = _feedback(tmp_path)
    assert feedback.store(_impression("r1"), 1)
    assert feedback.impressions.table.partitions == {"r1": 1}
    with event_context(FakeEvent(1)):  # type: ignore[arg-type]  # as ingest calls it
        assert feedback.on_response(_click("r1", "a"), 1) is None
        assert feedback.on_response(_click("r1", "a"), 1) is DropReason.DUPLICATE
    assert [r["item_id"] for r in feedback.impressions.table["r1"]["rewards"]] == ["a"]
    assert feedback.stats()["open_impressions"] == 1
    # One click joined: counted once, its value (learner.reward_weights) summed apart.
    assert feedback.metrics.responses_joined.labels("click")._value.get() == 1
    clicked = Settings().learner.reward_weights["click"]
    assert feedback.metrics.rewards.labels("click")._value.get() == clicked


def test_a_skipped_slate_item_costs_the_slate_its_penalty(tmp_path: Path) -> None:
    """A music service: a track skipped after seconds is negative feedback for the policy."""
    penalised = Settings.model_validate(
        {"learner": {"skip_penalty": 0.5}, "state": {"min_dwell_ms": 10_000}}
    )
    feedback = _feedback(tmp_path, settings=penalised)
    text = generate_latest(feedback.metrics.registry).decode()  # series from the start: 0s
    assert 'streamrec_reward_penalty_total{type="skip"} 0.0' in text
    assert 'streamrec_reward_total{type="skip"}' not in text
    assert feedback.store(_impression("r6"), 0)
    with event_context(FakeEvent(0)):  # type: ignore[arg-type]
        assert feedback.on_skip(_click("r6", "b"), 0) is None
        assert feedback.on_skip(_click("r6", "b"), 0) is DropReason.DUPLICATE
        assert feedback.on_response(_click("r6", "a"), 0) is None
    rewards = feedback.impressions.table["r6"]["rewards"]
    assert [(r["item_id"], r["position"], r["value"]) for r in rewards] == [
        ("b", 1, -0.5),
        ("a", 0, Settings().learner.reward_weights["click"]),
    ]
    assert feedback.metrics.penalties.labels("skip")._value.get() == 0.5
    assert feedback.metrics.responses_joined.labels("skip")._value.get() == 1
    assert feedback.stats()["reward_value"] == Settings().learner.reward_weights["click"] - 0.5
    text = generate_latest(feedback.metrics.registry).decode()
    assert 'streamrec_reward_penalty_total{type="skip"} 0.5' in text


def test_without_a_skip_penalty_a_skip_is_not_joined(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    assert feedback.store(_impression("r7"), 0)
    with event_context(FakeEvent(0)):  # type: ignore[arg-type]
        assert feedback.on_skip(_click("r7", "b"), 0) is None
    assert feedback.impressions.table["r7"]["rewards"] == []
    assert feedback.metrics.responses_joined.labels("skip")._value.get() == 0


def test_a_slate_of_a_partition_no_longer_owned_is_not_stored(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path, owned=(0,))
    assert not feedback.store(_impression("r2"), 3)
    assert "r2" not in feedback.impressions.table and feedback.stats()["open_impressions"] == 0
    assert feedback.on_response(_click("r2", "a"), 3) is DropReason.UNKNOWN_REC


def test_an_expired_impression_goes_to_the_learner_with_its_rewards(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    assert feedback.store(_impression("r3"), 0)
    with event_context(FakeEvent(0)):  # type: ignore[arg-type]
        assert feedback.on_response(_click("r3", "b"), 0) is None
    later = time.time() + feedback.window_s + 1
    feedback._close_expired(0, later)
    assert "r3" not in feedback.impressions.table and feedback.stats()["open_impressions"] == 0
    assert feedback.metrics.impressions_closed._value.get() == 1


def test_impressions_left_open_by_a_restart_are_closed_by_the_next_worker(tmp_path: Path) -> None:
    before = _feedback(tmp_path)
    assert before.store(_impression("r4"), 1)
    assert before.store(_impression("r5"), 0)
    after = _feedback(tmp_path)  # a new worker on the same table, its queues empty
    after.impressions.table = before.impressions.table
    after.reopen({1})
    assert after.stats()["open_impressions"] == 1  # partition 0 is another worker's now
    after._close_expired(1, time.time() + after.window_s + 1)
    assert set(after.impressions.table) == {"r5"}
    assert after.metrics.impressions_closed._value.get() == 1


def test_the_learners_policy_is_handed_to_serving_at_start(tmp_path: Path) -> None:
    versions: list[str] = []
    feedback = _feedback(tmp_path, policies=versions)
    assert versions == [feedback.learner.version]


def test_an_announced_policy_is_served_and_shown_as_the_workers_policy(tmp_path: Path) -> None:
    versions: list[str] = []
    feedback = _feedback(tmp_path, policies=versions)
    weights = np.array([0.5, 0.1, 0.0, 1.0, 0.2])
    feedback.serve_announced(weights, "pl-abc-2", feedback.started_ms - 60_000)  # read at start
    feedback.serve_announced(weights, "pl-abc-3", feedback.started_ms + 1)
    assert versions[-2:] == ["pl-abc-2", "pl-abc-3"]
    stats = feedback.stats()
    assert stats["policy_version"] == "pl-abc-3" and stats["policy_updates"] == 1
    assert feedback.learner.weights.tolist() == weights.tolist()
    assert feedback.metrics.policy_updates._value.get() == 1  # the old one is not an update


def test_an_announced_rollback_is_counted_as_one_once_live(tmp_path: Path) -> None:
    """Before, a learner's rollback reached shared-mode workers as a plain update, so their
    ``streamrec_policy_rollbacks_total`` stayed 0 whatever the learner did."""
    feedback = _feedback(tmp_path)
    weights = np.array([0.5, 0.1, 0.0, 1.0, 0.2])
    feedback.serve_announced(weights, "pl-abc-1", feedback.started_ms - 60_000, True)  # backlog
    feedback.serve_announced(weights, "pl-abc-4", feedback.started_ms + 1, False)
    feedback.serve_announced(weights, "pl-abc-1", feedback.started_ms + 2, True)
    assert feedback.metrics.policy_rollbacks._value.get() == 1
    assert feedback.stats()["policy_rollbacks"] == 1 and feedback.stats()["policy_updates"] == 2


def test_every_drop_reason_and_error_code_is_exported_before_its_first_sample(
    tmp_path: Path,
) -> None:
    feedback = _feedback(tmp_path)
    exported = generate_latest(feedback.metrics.registry).decode()
    for reason in DropReason:
        assert f'streamrec_responses_dropped_total{{reason="{reason.value}"}} 0.0' in exported
    metrics = WorkerMetrics(CollectorRegistry())
    DeadLetters(lambda key, value: asyncio.sleep(0), metrics, "items")
    exported = generate_latest(metrics.registry).decode()
    for code in ERROR_CODES:
        assert f'streamrec_events_rejected_total{{code="{code}"}} 0.0' in exported


def test_every_reward_type_is_exported_at_zero_from_the_start(
    tmp_path: Path,
) -> None:
    # A dashboard's rate() and an alert's increase() see the first reward only when the series
    # was there before it.
    feedback = _feedback(tmp_path)
    for counter in (feedback.metrics.rewards, feedback.metrics.responses_joined):
        samples = counter.collect()[0].samples
        rewards = [s for s in samples if s.name.endswith("_total")]
        assert {s.labels["type"] for s in rewards} == set(Settings().learner.reward_weights)
        assert {s.value for s in rewards} == {0.0}


def test_the_served_policy_version_is_one_gauge_series() -> None:
    # Ops had the served version in /stats only (behind the web token), not in /metrics.
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.show_policy("pl-0")
    metrics.show_policy("pl-abc-3")
    metrics.show_policy("pl-abc-3")
    series = next(s for s in registry.collect() if s.name == "streamrec_policy_info").samples
    assert [(s.labels["version"], s.value) for s in series] == [("pl-abc-3", 1.0)]


def test_a_lagging_worker_keeps_an_impression_open_until_its_partition_passes_the_window(
    tmp_path: Path,
) -> None:
    feedback = _feedback(tmp_path)
    impression = _impression("r6", age_s=feedback.window_s + 5)  # the clock is past its window
    assert feedback.store(impression, 0)
    within = impression.created_at + feedback.window_s / 2  # appended within the window
    click = _click("r6", "a").model_copy(update={"ts": int(within * 1000)})
    with event_context(FakeEvent(0)):  # type: ignore[arg-type]
        feedback.tick(0, within)  # a record read by a worker far behind
        assert "r6" in feedback.impressions.table
        assert feedback.on_response(click, 0, within) is None
        feedback.tick(0, impression.created_at + feedback.window_s + 1)
    assert "r6" not in feedback.impressions.table
    assert feedback.metrics.impressions_closed._value.get() == 1


def test_a_record_stamped_ahead_of_the_clock_closes_nothing_early(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    assert feedback.store(_impression("r7"), 0)
    with event_context(FakeEvent(0)):  # type: ignore[arg-type]
        feedback.tick(0, time.time() + 3600)
    assert "r7" in feedback.impressions.table
