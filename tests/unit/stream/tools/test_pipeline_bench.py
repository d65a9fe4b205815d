"""bench pipeline's figures: latency quantiles and the per-stage breakdown of the slates."""

from __future__ import annotations

from streamrec.stream.tools.bench import PhaseResult


def test_stage_times_are_summarised_per_stage_and_absent_for_the_passthrough() -> None:
    stages = {"encode": [float(n) for n in range(1, 101)], "queue": [5.0] * 100}
    figures = PhaseResult(100, 100, 2.0, [10.0] * 100, stages).figures()
    assert figures["events_per_s"] == 50.0
    assert figures["stages_ms"]["encode"] == {"p50": 50.5, "p99": 99.01}
    assert figures["stages_ms"]["queue"] == {"p50": 5.0, "p99": 5.0}
    assert "stages_ms" not in PhaseResult(10, 10, 1.0, [1.0], {}).figures()
