"""The demo summary's arithmetic and wording: histogram quantiles, durations, plain figures."""

from __future__ import annotations

import math

import pytest

from streamrec.stream.tools.demo import bucket_quantile, duration, headline, plain

# Cumulative counts of 100 observations: 50 up to 10 ms, 40 in (10, 25] ms, 9 in (25, 50] ms,
# one beyond the last finite bound.
BUCKETS = [(0.005, 20.0), (0.01, 50.0), (0.025, 90.0), (0.05, 99.0), (math.inf, 100.0)]


def test_bucket_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    assert bucket_quantile(0.5, BUCKETS) == pytest.approx(0.01)
    # rank 70 lies 20 of 40 observations into (10, 25] ms: halfway.
    assert bucket_quantile(0.7, BUCKETS) == pytest.approx(0.0175)
    assert bucket_quantile(0.1, BUCKETS) == pytest.approx(0.0025)


def test_bucket_quantile_in_the_overflow_bucket_is_the_largest_finite_bound() -> None:
    assert bucket_quantile(0.999, BUCKETS) == pytest.approx(0.05)


def test_bucket_quantile_of_no_observations_is_nan() -> None:
    assert math.isnan(bucket_quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]))


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0.84, "0.8 ms"), (12.4, "12 ms"), (1234.0, "1,234 ms"), (18_890.0, "18.9 s"), (None, "n/a")],
)
def test_durations_read_without_exponents(ms: float | None, text: str) -> None:
    assert duration(ms) == text


def test_plain_turns_large_floats_into_whole_numbers() -> None:
    assert plain({"a": [18_890.4, 0.123456], "b": 3}) == {"a": [18_890, 0.123], "b": 3}
    assert "e+" not in str(plain(26_360.0))


def test_headline_names_the_paced_and_the_backlog_latency_for_what_they_are() -> None:
    lines = headline(
        replay={"events": {"accepted": 100_000}},
        simulation={"responses_published": 5_000, "ctr": 0.125},
        stats={
            "events_accepted": 105_990,
            "dead_lettered": 10,
            "recommendations_published": 60_000,
            "model_version": "m1",
            "feedback": {
                "rewards_joined": 4_000,
                "reward_value": 1234.5,
                "policy_version": "pl-3",
                "policy_updates": 3,
                "policy_rollbacks": 1,
            },
        },
        paced={"events": 1_000, "rate_per_s": 100.0, "p50_ms": 12.4, "p99_ms": 47.0},
        backlog={"p50_ms": 18_890.0, "p99_ms": 26_360.0},
        rate=None,
    )
    assert lines["latency at 100 events/s"].startswith("p50 12 ms, p99 47 ms")
    assert "18.9 s" in lines["latency during the replay"]
    assert "as fast as possible" in lines["latency during the replay"]
    assert "backlog" in lines["latency during the replay"]
    assert lines["events in"].startswith("100,000 replayed, 5,000 simulated responses, 1,000 paced")
    assert "click-through 12.5%" in lines["rewards"]
    assert lines["policy"] == "version pl-3 after 3 online updates (1 rolled back)"
    assert not any("e+" in line for line in lines.values())
