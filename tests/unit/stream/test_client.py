"""The client helpers without a broker: answering a slate."""

from __future__ import annotations

import pytest

from streamrec.errors import ContractError
from streamrec.stream.client import response
from streamrec.stream.contract import Recommendation, SlateItem


def _slate() -> Recommendation:
    items = [
        SlateItem(item_id=f"i{n}", score=1.0, propensity=0.5, reason="covisit") for n in (1, 2)
    ]
    return Recommendation(
        rec_id="r1", user_id="u1", items=items, model_version="heuristic", policy_version="pl-0",
        trigger_event_ids=["e1"], created_at=1_700_000_000_000, timing_ms={},
    )  # fmt: skip


def test_a_response_names_the_slate_item_and_its_position() -> None:
    event = response(_slate(), 1, "click", dwell_ms=300)
    assert (event.user_id, event.item_id, event.rec_id, event.position) == ("u1", "i2", "r1", 1)
    assert event.dwell_ms == 300


@pytest.mark.parametrize("position", [2, 10, -1])
def test_a_position_outside_the_slate_is_a_contract_error(position: int) -> None:
    with pytest.raises(ContractError, match=f"position {position} is not in the slate of 2"):
        response(_slate(), position, "click")
