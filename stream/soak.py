"""``streamrec bench soak``: many synthetic users through one worker, its memory sampled.

What it shows: whether a worker's resident memory levels off under its configured bounds
(the write-behind cache, the latest slates kept for pull requests, the fusion learner's
remembered source lists, RocksDB's memtables and block caches, the open impressions of one
attribution window) or keeps growing with users and events.

How: a private embedded broker and one heuristic-mode worker process (no model, so every byte
is the streaming path's); ``events`` synthetic events of ``users`` users drawn uniformly (each
user appears about events/users times, as in a shop with many light visitors) on ``items``
items drawn with Zipf popularity (exponent ``zipf``: a few items get most of the traffic, the
long tail gets some), published in time order before the worker starts. Every
``sample_s`` seconds the worker's RSS (Linux ``/proc/<pid>/status``) and its /stats figures are
recorded; the run ends when the worker has consumed every event and committed it. Output: a
CSV of the samples, a PNG of RSS over events consumed, and a summary (peak and final RSS, the
growth over the last fifth of the events, throughput, the machine's load average).
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamrec.errors import StreamrecError
from streamrec.settings import KafkaSettings, Settings, TopicSettings
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.contract import Event, encode
from streamrec.stream.delivery import OrderedPublisher, Record
from streamrec.stream.testing import WorkerProcess, group_caught_up, wait_until
from streamrec.stream.tools.synthetic import Workload
from streamrec.stream.tools.synthetic import synthetic_events as shop_events
from streamrec.stream.topics import create_topics, worker_app_id


@dataclass(frozen=True)
class SoakOptions:
    """One soak run: the synthetic stream and where its results go."""

    events: int = 1_000_000
    users: int = 200_000
    items: int = 50_000
    zipf: float = 1.1
    seed: int = 13
    sample_s: float = 5.0
    out: Path = Path("soak")
    env: dict[str, str] = field(default_factory=dict)  # extra worker settings


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the worker started
    events: int  # events consumed by the worker so far
    users: int
    rss_mib: float


def synthetic_events(options: SoakOptions, chunk: int = 10_000) -> Iterator[Event]:
    """The soak's events: the synthetic shop of stream/tools/synthetic.py, in time order."""
    workload = Workload(options.users, options.items, options.events, options.zipf, options.seed)
    return shop_events(workload, chunk)


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise StreamrecError(f"no VmRSS for pid {pid}; the soak samples memory through Linux /proc")


def publish(kafka: KafkaSettings, options: SoakOptions) -> None:
    """Publish the soak's events (all of them, before the worker starts: a publisher running
    beside it on a 2-core machine would take the CPU the worker is measured with)."""

    def producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **aiokafka_kwargs(kafka), enable_idempotence=True, acks="all", linger_ms=20,
            max_batch_size=256 * 1024,
        )  # fmt: skip

    records = (
        Record(n, e.user_id.encode(), encode(e)) for n, e in enumerate(synthetic_events(options))
    )
    publisher = OrderedPublisher(producer, kafka.topics.name("events"), max_outage_s=120)
    asyncio.run(publisher.publish(records))


def run_soak(settings: Settings, bootstrap: str, options: SoakOptions) -> dict[str, Any]:
    """Run the soak against the broker at ``bootstrap``; returns the summary (see module doc)."""
    from streamrec.broker import free_port

    options.out.mkdir(parents=True, exist_ok=True)
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap, topics=TopicSettings(prefix="soak.", partitions=4)
    )
    asyncio.run(create_topics(kafka))
    publish(kafka, options)
    env = {"STREAMREC_SERVING__MODE": "heuristic", **options.env}
    worker = WorkerProcess(kafka, options.out / "worker", free_port(), env).start()
    samples: list[Sample] = []
    started = time.monotonic()
    table = (options.out / "rss.csv").open("w", newline="")  # written as it goes: a long run
    writer = csv.DictWriter(table, fieldnames=list(Sample.__dataclass_fields__))  # leaves data
    writer.writeheader()
    try:
        # First sample as soon as the web server answers: before the first event is applied
        # (that waits for the partition assignment and table recovery).
        wait_until(lambda: worker.stats() is not None, 180, "the worker to start")
        assert worker.proc is not None
        pid = worker.proc.pid

        def sample() -> Sample:
            stats = worker.stats() or {}
            figures = Sample(
                round(time.monotonic() - started, 1),
                int(stats.get("events_consumed", samples[-1].events if samples else 0)),
                int(stats.get("users_in_state", samples[-1].users if samples else 0)),
                round(rss_mib(pid), 1),
            )
            samples.append(figures)
            writer.writerow(asdict(figures))
            table.flush()
            return figures

        sample()  # before any event
        consume_started = time.monotonic()
        while True:
            time.sleep(options.sample_s)
            if sample().events >= options.events:
                break
            if not worker.alive():
                raise StreamrecError(f"the soak worker died:\n{worker.log_tail()}")
        seconds = time.monotonic() - consume_started
        group, topic = worker_app_id(kafka), kafka.topics.name("events")
        wait_until(lambda: asyncio.run(group_caught_up(kafka, group, topic)), 300, "commits")
        final_stats = worker.stats() or {}
        sample()
    finally:
        worker.stop()
        table.close()
    plot(samples, options.out / "rss.png", options)
    return _summary(samples, options, seconds, final_stats)


def _summary(
    samples: list[Sample], options: SoakOptions, seconds: float, stats: dict[str, Any]
) -> dict[str, Any]:
    rss = [s.rss_mib for s in samples]
    tail_from = next(s for s in samples if s.events >= 0.8 * options.events)
    return {
        "events": samples[-1].events,
        "users": samples[-1].users,
        "items": options.items,
        "rss_start_mib": rss[0],
        "rss_peak_mib": max(rss),
        "rss_final_mib": rss[-1],
        "rss_last_fifth_growth_mib": round(rss[-1] - tail_from.rss_mib, 1),
        "events_per_s": round(options.events / seconds),
        "minutes": round(seconds / 60, 1),
        "load_average_1_5_15": [round(v, 1) for v in os.getloadavg()],
        "worker_held": stats.get("held", {}),
        "png": str(options.out / "rss.png"),
    }


def plot(samples: list[Sample], path: Path, options: SoakOptions) -> None:
    """RSS (MiB) over events consumed, users in state on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    events = [s.events / 1e6 for s in samples]
    ax.plot(events, [s.rss_mib for s in samples], color="tab:blue", label="worker RSS")
    ax.set_xlabel("events consumed (millions)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    users = ax.twinx()
    users.plot(events, [s.users / 1e3 for s in samples], color="tab:gray", ls="--", label="users")
    users.set_ylabel("users in state (thousands)")
    users.set_ylim(bottom=0)
    ax.set_title(
        f"streamrec bench soak: {options.events:,} events, {options.users:,} users, "
        f"{options.items:,} items (Zipf {options.zipf})",
        fontsize=10,
    )
    lines = ax.get_legend_handles_labels()[0] + users.get_legend_handles_labels()[0]
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
