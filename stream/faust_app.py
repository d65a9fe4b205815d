"""The faust app the worker runs on, configured, and what faust's defaults lack.

faust reads records of aborted transactions unless it runs exactly-once itself: a producer
that publishes events, catalog records or responses in a transaction and aborts it would have
them applied, credited as rewards and listed (seen with a transactional confluent-kafka
producer). Every consumer of producers' topics reads committed records only.

aiokafka never asks its bootstrap servers again once it has a cluster view; every client of
the worker falls back to them when no broker of its view answers (``rebootstrap_on_outage``).
"""

from __future__ import annotations

import faust

from streamrec.settings import Settings
from streamrec.stream.compat import fetch_round_robin, read_committed_only
from streamrec.stream.connection import faust_broker_url, faust_credentials
from streamrec.stream.rebootstrap import rebootstrap_on_outage
from streamrec.stream.topics import worker_app_id


def faust_app(s: Settings) -> faust.App:
    """The worker's faust app: at-least-once, bounded polls, a 5 ms linger, no standbys;
    its consumer reads committed records only (``read_committed_only``) and polls its
    partitions in turn (``fetch_round_robin``), and every aiokafka client of the process
    re-bootstraps when its known brokers are gone (``rebootstrap_on_outage``)."""
    read_committed_only()
    fetch_round_robin()
    rebootstrap_on_outage()
    return faust.App(
        worker_app_id(s.kafka),
        broker=faust_broker_url(s.kafka),
        broker_credentials=faust_credentials(s.kafka),
        store=s.state.store_url,
        datadir=str(s.state.data_dir),
        topic_partitions=s.kafka.topics.partitions,
        topic_replication_factor=s.kafka.topics.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # Bounded polls keep each handler loop short so heartbeats are never starved
        # (rebalance storms: robinhood/faust #259, #402).
        broker_max_poll_records=500,
        broker_session_timeout=s.kafka.session_timeout_s,
        # Each event writes 3-5 changelog records; without a linger every one of them is its
        # own produce request and socket writes dominate the profile (23% of CPU measured).
        producer_linger_ms=5,
        # Standby replicas double table traffic; a restarted worker replays its changelog.
        table_standby_replicas=0,
        web_enabled=True,
        web_port=s.serving.web_port,
        web_bind=s.serving.web_bind,
        web_in_thread=False,
    )
