"""The offline replay (stream/tools/offline.py) on hand-computed tiny streams."""

from __future__ import annotations

from pathlib import Path

import pytest
from event_streams import stream

from streamrec.errors import ConfigError, DataError
from streamrec.settings import Settings
from streamrec.stream.tools import quality
from streamrec.stream.tools.offline import heuristic_factory, replay, run_offline
from streamrec.stream.tools.quality_bench import QualityOptions

EVENTS = stream("u1 a", "u1 b", "u2 a", "u2 b", "u1 c")


def test_every_event_answered_by_the_heuristic_from_what_came_before() -> None:
    settings = Settings()
    slates = replay(EVENTS, settings, heuristic_factory(settings), lag=1)
    by_trigger = {s.trigger_event_ids: s.items for s in slates}
    # After e2 (u2 a) the only co-visit of a is b (u1 a -> b); a is seen, so trending adds b
    # alone: the slate is [b].
    assert by_trigger[("e2",)] == ("b",)
    # After e0 nothing co-visits a yet and a is seen: an empty slate.
    assert by_trigger[("e0",)] == ()
    assert len(slates) == len(EVENTS)


def test_scored_like_the_live_bench() -> None:
    settings = Settings()
    slates = replay(EVENTS, settings, heuristic_factory(settings), lag=1)
    scoreable = quality.scoreable_events(EVENTS, first_scored=3)
    by_trigger = quality.slates_by_trigger(slates, quality.positions(EVENTS))
    ranks = quality.system_ranks(EVENTS, scoreable, by_trigger, k=10)
    # e3 (u2 b) is scored on the slate for e2, [b]: rank 1. e4 (u1 c) on the slate for e1,
    # which co-visitation and trending could only fill with a (seen): a miss.
    assert list(scoreable.events) == [3, 4]
    assert list(ranks.ranks) == [1, 0]
    assert ranks.covered.all()


def test_lag_coalesces_a_users_events_as_the_worker_does() -> None:
    settings = Settings()
    slates = replay(EVENTS, settings, heuristic_factory(settings), lag=2)
    triggers = sorted(s.trigger_event_ids for s in slates)
    # Answered after e1, e3 and at the end: u2's e2 and e3 share one slate, so e3 has no
    # slate for its previous event and is not covered.
    assert triggers == [("e0", "e1"), ("e2", "e3"), ("e4",)]
    scoreable = quality.scoreable_events(EVENTS, first_scored=3)
    by_trigger = quality.slates_by_trigger(slates, quality.positions(EVENTS))
    assert list(quality.system_ranks(EVENTS, scoreable, by_trigger, k=10).covered) == [
        False,
        True,
    ]


def test_lag_below_one_is_refused() -> None:
    settings = Settings()
    with pytest.raises(ConfigError):
        replay(EVENTS, settings, heuristic_factory(settings), lag=0)


def test_a_stream_too_short_to_score_anything_is_refused(tmp_path: Path) -> None:
    """Five events, split at half, answered 20 events late: nothing would be scored (it
    printed a table of zeros and exited 0)."""
    inter = tmp_path / "tiny.inter"
    rows = [f"u{n % 2}\ti{n}\t4\t{1_000_000_000 + n}" for n in range(5)]
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     + "\n".join(rows) + "\n")  # fmt: skip
    options = QualityOptions(mode="heuristic", rate=1000.0, split=0.5, out=tmp_path / "run",
                             plot=tmp_path / "p.png", dataset=inter)  # fmt: skip
    with pytest.raises(DataError, match="nothing would be scored"):
        run_offline(Settings(), options)


def test_no_progress_writes_nothing_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings()
    replay(EVENTS, settings, heuristic_factory(settings), lag=1, progress=False)
    assert capsys.readouterr().err == ""
    replay(EVENTS, settings, heuristic_factory(settings), lag=1)
    assert "offline replay" in capsys.readouterr().err  # the bar a log would be filled with
