"""The continual trainer's Prometheus metrics, read from its ``ContinualTrainer`` at each scrape.

Ops had only the trainer's log: a dead trainer, one whose read loop hung, or one whose every
candidate regressed looked the same from outside (workers keep serving an ageing model either
way). As for the learner (stream/learner_metrics.py), a collector reads the trainer's own
counters when scraped, so the training loop pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamrec.stream.metrics import serve_collector
from streamrec.stream.trainer import ContinualTrainer


class TrainerCollector(Collector):
    """Exports what ``trainer`` counted and its last cycle's figures."""

    def __init__(self, trainer: ContinualTrainer, namespace: str = "streamrec") -> None:
        self.trainer = trainer
        self.ns = namespace
        self.started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        trainer = self.trainer
        cycles = CounterMetricFamily(
            f"{self.ns}_trainer_cycles",
            "Training cycles since the trainer started, by outcome (announced, no_candidate, "
            "nothing_ranked, regressed, failed).",
            labels=["outcome"],
        )
        for outcome, n in sorted(trainer.outcomes.items()):
            cycles.add_metric([outcome], n)
        yield cycles
        yield CounterMetricFamily(
            f"{self.ns}_trainer_events_read", "Events read from the events topic.",
            value=trainer.events_read,
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{self.ns}_trainer_poll_age_seconds",
            "Seconds since the read loop last polled Kafka (a cycle's training holds it for up "
            "to trainer.time_budget_s): a hung trainer shows here.",
            value=time.monotonic() - trainer.polled_at,
        )
        ended = trainer.history[-1].ended if trainer.history else self.started
        yield GaugeMetricFamily(
            f"{self.ns}_trainer_last_cycle_age_seconds",
            "Seconds since the last cycle ended (since the start before the first).",
            value=time.monotonic() - ended,
        )
        ndcg = GaugeMetricFamily(
            f"{self.ns}_trainer_heldout_ndcg",
            "The last cycle's held-out NDCG@10 of its candidate and of the served model.",
            labels=["model"],
        )
        if trainer.history:
            last = trainer.history[-1]
            for model, value in (("candidate", last.candidate_ndcg), ("served", last.served_ndcg)):
                if value is not None:
                    ndcg.add_metric([model], value)
        yield ndcg


def serve_trainer_metrics(trainer: ContinualTrainer, port: int) -> None:
    """Serve ``trainer``'s metrics on ``port``; ConfigError when it cannot be bound."""
    serve_collector(TrainerCollector(trainer), port, "trainer")
