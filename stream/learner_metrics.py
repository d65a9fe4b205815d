"""The learner process's Prometheus metrics, read from its ``LearnerService`` at each scrape.

The learner has no web server of its own; ops had nothing to alert on but its log (a review:
no experience counts, no version, no updates, no lag). A collector reads the service's own counters
when scraped, so nothing is counted twice and the learning loop pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamrec.stream.metrics import serve_collector

if TYPE_CHECKING:  # learner_process starts the server
    from streamrec.stream.learner_process import LearnerService


class LearnerCollector(Collector):
    """Exports what ``service`` counted and the policy version its learner holds."""

    def __init__(self, service: LearnerService, namespace: str = "streamrec") -> None:
        self.service = service
        self.ns = namespace

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            f"{self.ns}_learner_experience_records",
            "Experience records read since the learner started, by outcome (observed, bad: "
            "skipped as malformed, dup: re-published after a worker crash, refilled: learned "
            "before a restart, read again for the estimates' window).",
            labels=["outcome"],
        )
        for outcome, n in sorted(self.service.counts.items()):
            records.add_metric([outcome], n)
        yield records
        learner = self.service.learner
        yield CounterMetricFamily(
            f"{self.ns}_learner_updates", "Policy updates (saved state included).",
            value=learner.n_updates,
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{self.ns}_learner_rollbacks", "Policy rollbacks (saved state included).",
            value=learner.n_rollbacks,
        )  # fmt: skip
        version = GaugeMetricFamily(
            f"{self.ns}_learner_policy_info", "1 for the policy version the learner holds.",
            labels=["version"],
        )  # fmt: skip
        version.add_metric([learner.version], 1)
        yield version
        yield GaugeMetricFamily(
            f"{self.ns}_learner_holding",
            "1 after a rollback until the restored policy's own rewards have closed (at least "
            "the attribution window): no update is made meanwhile (models/policy/guard.py).",
            value=int(learner.guard.holding is not None),
        )
        lag = GaugeMetricFamily(
            f"{self.ns}_learner_lag_records",
            "Experience records behind the high watermark per partition, as of the last poll.",
            labels=["partition"],
        )
        for partition, behind in sorted(self.service.lag.items()):
            lag.add_metric([str(partition)], behind)
        yield lag
        yield GaugeMetricFamily(
            f"{self.ns}_learner_poll_age_seconds",
            "Seconds since the read loop last polled (it polls every 0.5 s when idle): a hung "
            "learner shows here, whatever its lag read then.",
            value=time.monotonic() - self.service.polled_at,
        )


def serve_metrics(service: LearnerService, port: int) -> None:
    """Serve ``service``'s metrics on ``port``; ConfigError when it cannot be bound."""
    serve_collector(LearnerCollector(service), port, "learner")


async def consumer_lag(consumer: AIOKafkaConsumer) -> dict[int, int]:
    """Records behind each partition's high watermark as of the last fetch (partitions no
    fetch has answered yet are left out): what ops alert on when the learner falls behind."""
    lag = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is not None:
            lag[tp.partition] = max(high - await consumer.position(tp), 0)
    return lag
