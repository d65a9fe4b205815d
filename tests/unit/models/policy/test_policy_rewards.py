"""Reward join: attribution window, dedupe, unknown and malformed responses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamrec.errors import ContractError
from streamrec.models.policy.rewards import (
    DropReason,
    Impression,
    MemoryImpressionStore,
    Response,
    Reward,
    RewardJoiner,
    position_rewards,
)

WEIGHTS = {"click": 1.0, "add_to_cart": 2.0, "purchase": 5.0, "dwell": 0.5}


def _impression(created_at: float = 100.0) -> Impression:
    return Impression(
        rec_id="r1",
        user_id="u1",
        items=["a", "b", "c"],
        propensities=[0.5, 0.4, 1.0],
        policy_version="pl-3",
        created_at=created_at,
        features=np.zeros((3, 5)),
        expected_features=np.zeros((3, 5)),
        params=np.ones(5),
        temperature=0.25,
    )


def _joiner() -> RewardJoiner:
    joiner = RewardJoiner(MemoryImpressionStore(), window_s=60.0, weights=WEIGHTS)
    joiner.record(_impression())
    return joiner


def _resp(
    item: str = "b", kind: str = "click", ts: float = 110.0, rec: str = "r1", user: str = "u1"
) -> Response:
    return Response(rec_id=rec, user_id=user, item_id=item, type=kind, ts=ts)


def test_response_inside_window_earns_weighted_reward_at_its_position() -> None:
    out = _joiner().join(_resp(kind="purchase"))
    assert out == Reward("r1", "b", 1, "purchase", 5.0)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (_resp(ts=161.0), DropReason.LATE),
        (_resp(ts=99.0), DropReason.BEFORE_IMPRESSION),
        (_resp(rec="nope"), DropReason.UNKNOWN_REC),
        (_resp(user="u2", kind="purchase"), DropReason.WRONG_USER),  # someone else's rec_id
        (_resp(item="z"), DropReason.UNKNOWN_ITEM),
        (_resp(kind="view"), DropReason.UNWEIGHTED_TYPE),
    ],
)
def test_bad_responses_are_dropped_with_their_reason(
    response: Response, reason: DropReason
) -> None:
    joiner = _joiner()
    assert joiner.join(response) is reason
    assert joiner.counts[reason.value] == 1 and joiner.counts["joined"] == 0


def test_a_response_from_a_clock_behind_counts_when_its_record_came_after_the_slate() -> None:
    """Impression at 100 s; a click stamped 98 s by a producer whose clock runs 3 s behind."""
    skewed = replace(_resp(ts=98.0), received=101.0)
    assert _joiner().join(skewed) == Reward("r1", "b", 1, "click", 1.0)
    # Its record reached Kafka before the slate was published: no user saw that slate yet.
    assert _joiner().join(replace(_resp(ts=110.0), received=99.0)) is DropReason.BEFORE_IMPRESSION
    # Lateness stays on the user's own time: a click made in the window, synced much later.
    assert _joiner().join(replace(_resp(ts=150.0), received=5_000.0)) == Reward(
        "r1", "b", 1, "click", 1.0
    )
    assert _joiner().join(replace(_resp(ts=161.0), received=162.0)) is DropReason.LATE


def test_another_users_response_leaves_the_owners_own_to_be_credited() -> None:
    joiner = _joiner()
    assert joiner.join(_resp(user="u2")) is DropReason.WRONG_USER
    assert joiner.join(_resp()) == Reward("r1", "b", 1, "click", 1.0)


def test_duplicates_are_dropped_but_other_types_of_same_item_count() -> None:
    joiner = _joiner()
    assert isinstance(joiner.join(_resp()), Reward)
    assert joiner.join(_resp(ts=120.0)) is DropReason.DUPLICATE
    assert isinstance(joiner.join(_resp(kind="dwell")), Reward)
    assert joiner.counts["joined"] == 2 and joiner.counts["duplicate"] == 1


def test_malformed_event_is_counted_not_raised() -> None:
    joiner = _joiner()
    out = joiner.join_event({"event_id": "e1", "rec_id": "r1", "type": "click"})
    assert isinstance(out, ContractError) and out.code == "bad_response"
    assert joiner.counts["malformed"] == 1


def test_impression_round_trips_through_dict_and_rejects_garbage() -> None:
    imp = _impression()
    back = Impression.from_dict(imp.to_dict())
    assert back.items == imp.items and back.stochastic
    assert np.array_equal(back.params, imp.params)  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        Impression.from_dict({"rec_id": "x", "items": ["a"], "propensities": []})


def test_expire_returns_old_impressions_and_forgets_their_keys() -> None:
    store = MemoryImpressionStore()
    joiner = RewardJoiner(store, window_s=60.0, weights=WEIGHTS)
    joiner.record(_impression())
    joiner.join(_resp())
    ((imp, rewards),) = store.expire(now=200.0, window_s=60.0)
    assert imp.rec_id == "r1" and [r.type for r in rewards] == ["click"]
    assert store.get("r1") is None and not store.keys


def test_position_rewards_sum_per_position() -> None:
    rewards = [
        Reward("r1", "a", 0, "click", 1.0),
        Reward("r1", "a", 0, "dwell", 0.5),
        Reward("r1", "c", 2, "purchase", 5.0),
    ]
    assert position_rewards(_impression(), rewards).tolist() == [1.5, 0.0, 5.0]
