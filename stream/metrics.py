"""Every Prometheus metric of the worker, built against an injectable registry.

Names follow Prometheus conventions: ``streamrec_`` prefix, base units in the name (``_seconds``,
``_records``), ``_total`` on counters. Latency buckets span 0.5 ms to 10 s: the per-event work
is sub-millisecond, the DESIGN target for event-to-recommendation is p99 < 50 ms, and the long
tail up to 10 s shows rebalances and recovery stalls instead of lumping them in +Inf.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from streamrec.errors import ConfigError

# Up to minutes: a worker far behind its partitions answers that late, and with 10 s the last
# finite bucket a new-user pass saw 2,794 of 3,037 slates past it and quantiles stop at 10 s
# while /stats read 41 s.
LATENCY_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    *(30.0, 60.0, 120.0, 300.0),
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class WorkerMetrics:
    """The worker's metrics; one instance per app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, namespace: str = "streamrec") -> None:
        ns = namespace
        self.registry = registry
        self.events_consumed = Counter(
            f"{ns}_events_consumed", "Records read from the events topic.", registry=registry
        )
        self.events_accepted = Counter(
            f"{ns}_events_accepted",
            "Events that passed validation and changed state.",
            registry=registry,
        )
        self.events_rejected = Counter(
            f"{ns}_events_rejected",
            "Records rejected by the contract, by error code.",
            ["code"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            f"{ns}_events_dead_lettered",
            "Event records written to the dead-letter topic.",
            registry=registry,
        )
        self.items_rejected = Counter(
            f"{ns}_items_rejected",
            "Catalog records (items topic) rejected and dead-lettered, by error code.",
            ["code"],
            registry=registry,
        )
        self.events_forwarded = Counter(
            f"{ns}_events_forwarded",
            "Events that arrived on another partition than their key's (a producer with a "
            "partitioner other than Kafka's default) and were sent on to it.",
            registry=registry,
        )
        self.duplicates = Counter(
            f"{ns}_events_duplicate",
            "Events dropped as already applied (same event_id).",
            registry=registry,
        )
        self.items_consumed = Counter(
            f"{ns}_items_consumed",
            "Catalog records read, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.table_entries = Gauge(
            f"{ns}_table_entries",
            "Entries in each worker table (local partitions).",
            ["table"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            f"{ns}_event_processing_seconds",
            "Validation and state update time per event.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_to_rec_seconds = Histogram(
            f"{ns}_event_to_recommendation_seconds",
            "From the event's broker timestamp to its slate being handed to the producer.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{ns}_consumer_lag_records",
            "Records behind the high watermark per events partition.",
            ["partition"],
            registry=registry,
        )
        self.revoked_skipped = Counter(
            f"{ns}_events_revoked_skipped",
            "Records of a partition no longer owned, left for its new owner.",
            registry=registry,
        )
        self.partition_resumes = Counter(
            f"{ns}_partition_resumes",
            "Stalled events partitions the worker resumed (faust flow control) or sought again.",
            registry=registry,
        )
        self.table_flush_seconds = Histogram(
            f"{ns}_table_flush_seconds",
            "Writing buffered table values back to the store and changelog, per flush.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.table_writes_pending = Gauge(
            f"{ns}_table_writes_pending",
            "Changed table values waiting for the next write-behind flush.",
            ["table"],
            registry=registry,
        )
        self.table_writes_flushed = Counter(
            f"{ns}_table_writes_flushed",
            "Table values written back by flushes (one per key and flush, however often set).",
            registry=registry,
        )
        self.recovery_seconds = Gauge(
            f"{ns}_table_recovery_seconds",
            "Last partition assignment to tables recovered.",
            registry=registry,
        )
        self.recommendations = Counter(
            f"{ns}_recommendations_published", "Slates published.", registry=registry
        )
        self.batch_size = Histogram(
            f"{ns}_refresh_batch_users",
            "Users refreshed together in one batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_wait_seconds = Histogram(
            f"{ns}_refresh_batch_wait_seconds",
            "How long the oldest user in a batch waited.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            f"{ns}_refresh_stage_seconds",
            "Time per refresh stage (encode, search, rerank, ...).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rewards = Counter(
            f"{ns}_reward",
            "Reward value joined to slates, by response type (a sum of learner.reward_weights, "
            "not a count: responses_joined counts them).",
            ["type"],
            registry=registry,
        )
        self.penalties = Counter(
            f"{ns}_reward_penalty",
            "Reward taken from slates by skipped items, by response type (learner.skip_penalty "
            "each; kept apart from reward, which only rises).",
            ["type"],
            registry=registry,
        )
        self.responses_joined = Counter(
            f"{ns}_responses_joined",
            "Responses joined to a slate they answer, by response type.",
            ["type"],
            registry=registry,
        )
        self.rewards_dropped = Counter(
            f"{ns}_responses_dropped",
            "Responses that earned no reward, by reason.",
            ["reason"],
            registry=registry,
        )
        self.impressions_closed = Counter(
            f"{ns}_impressions_closed",
            "Impressions whose attribution window closed.",
            registry=registry,
        )
        self.policy_updates = Counter(
            f"{ns}_policy_updates",
            "Online policy updates (rollbacks included); in shared learner mode, announced "
            "versions this worker took up.",
            registry=registry,
        )
        self.policy_rollbacks = Counter(
            f"{ns}_policy_rollbacks", "Updates that rolled the policy back.", registry=registry
        )
        self.index_items = Gauge(
            f"{ns}_index_items", "Items searchable in the index.", registry=registry
        )
        self.agent_crashes = Counter(
            f"{ns}_agent_crashes",
            "faust agents that raised an exception (faust restarts the agent about 5 s later; "
            "the record it held is neither applied nor dead-lettered). Should stay 0.",
            ["agent"],
            registry=registry,
        )
        self.broker_up = Gauge(
            f"{ns}_broker_up",
            "1 when the last broker probe (a metadata request every few seconds) answered.",
            registry=registry,
        )
        self.broker_unreachable_seconds = Gauge(
            f"{ns}_broker_unreachable_seconds",
            "Length of the current broker outage (0 when reachable); the worker exits when it "
            "passes kafka.outage_limit_s.",
            registry=registry,
        )
        self.broker_outage_limit_seconds = Gauge(
            f"{ns}_broker_outage_limit_seconds",
            "kafka.outage_limit_s: the outage length at which the worker exits.",
            registry=registry,
        )
        self.model_swap_failures = Counter(
            f"{ns}_model_swap_failures",
            "Announced checkpoints this worker could not load (it kept serving its model; the "
            "log names the checkpoint and the error).",
            registry=registry,
        )
        self.policy_announcements_rejected = Counter(
            f"{ns}_policy_announcements_rejected",
            "Policy announcements on control this worker did not serve (malformed, or weights "
            "the policy cannot use; it kept serving its policy, the log says why).",
            registry=registry,
        )
        self.cold_start_failures = Counter(
            f"{ns}_cold_start_failures",
            "Catalog batches the serving model could not add to its index (the items stay out "
            "of slates until a model that can; the log says why).",
            registry=registry,
        )
        self.model_version = Gauge(
            f"{ns}_model_info",
            "1 for the model version being served.",
            ["version"],
            registry=registry,
        )
        self._policy_shown: str | None = None
        self.policy_version = Gauge(
            f"{ns}_policy_info",
            "1 for the reranking policy version being served (the shared learner's announced "
            "one in shared mode).",
            ["version"],
            registry=registry,
        )
        self.fusion_weight = Gauge(
            f"{ns}_fusion_weight",
            "Weight of each candidate source in reciprocal rank fusion, learned on next events "
            "(none before the learner's warmup: every source then weighs 1).",
            ["source"],
            registry=registry,
        )
        self.fusion_sharpness = Gauge(
            f"{ns}_fusion_sharpness",
            "The power on the sources' relative gains the fusion learner serves (0: plain "
            "reciprocal rank fusion).",
            registry=registry,
        )

    def show_fusion(self, weights: Mapping[str, float], power: float) -> None:
        """Set the fusion gauges to the learner's current weights and power."""
        for source, weight in weights.items():
            self.fusion_weight.labels(source).set(weight)
        self.fusion_sharpness.set(power)

    def show_policy(self, version: str) -> None:
        """Set the policy gauge to ``version`` alone (a no-op while it is served already)."""
        if self._policy_shown != version:
            self.policy_version.clear()
            self.policy_version.labels(version).set(1)
            self._policy_shown = version


def serve_collector(collector: Collector, port: int, process: str) -> None:
    """Serve ``collector``'s metrics on ``port`` (a daemon thread, for the process's lifetime):
    how the learner and the trainer, which have no web server, are scraped. ConfigError when
    the port cannot be bound."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise ConfigError(f"{process} metrics port {port}: {exc.strerror or exc}") from exc
