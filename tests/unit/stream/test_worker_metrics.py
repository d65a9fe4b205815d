"""The worker's Prometheus metrics (stream/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streamrec.stream.metrics import WorkerMetrics


def test_slates_minutes_late_still_land_in_a_finite_latency_bucket() -> None:
    """A worker far behind its partitions answers 41 s late: quantiles must see it, not stop
    at the last finite bucket (a new-user pass read 10 s there while /stats said 41 s)."""
    registry = CollectorRegistry()
    WorkerMetrics(registry).event_to_rec_seconds.observe(41.0)
    name = "streamrec_event_to_recommendation_seconds_bucket"
    below = registry.get_sample_value(name, {"le": "30.0"})
    within = registry.get_sample_value(name, {"le": "60.0"})
    assert (below, within) == (0.0, 1.0)
