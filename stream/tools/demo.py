"""``streamrec demo``: the whole pipeline on the embedded broker, from a fresh start.

Steps: train the demo encoder on MovieLens-100K (or reuse the newest checkpoint in the cache),
start a private Kafka broker on a free loopback port (its own data folder, wiped first so every
run starts alike), create the topics, start a model-mode worker, replay MovieLens-100K through
the broker while simulated users answer the slates (closed loop with online policy learning),
wait until the worker has committed every event, then publish a short paced phase and print a
summary with example slates and reasons. Worker and broker are stopped at the end, also on errors.

Latency is reported twice, because the two figures mean different things: the paced phase (a
running worker fed ``PACED_EVENTS`` at ``PACED_RATE`` events/s) is what a user of a live system
sees; during the replay of a whole dataset as fast as possible, an event waits behind the
backlog published before it, so its event-to-slate time is mostly queueing (and grows with the
backlog), which the summary says in so many words.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.console import err_console
from streamrec.datasets import Dataset, load_dataset
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.contract import Event
from streamrec.stream.producer import dataset_events, publish
from streamrec.stream.testing import WorkerProcess, group_caught_up, wait_until
from streamrec.stream.tools.replay import replay_dataset
from streamrec.stream.tools.simulate import simulate
from streamrec.stream.topics import create_topics

EXAMPLE_SLATES = 3
# The paced phase: 10 s at a rate far below what a worker drains in either mode, so the figure
# is serving latency, not queueing; 1,000 samples put 10 events above the p99.
PACED_EVENTS = 1_000
PACED_RATE = 100.0
LATENCY_HISTOGRAM = "streamrec_event_to_recommendation_seconds"


def run_demo(
    settings: Settings, limit: int | None, rate: float | None, simulate_s: float, report_steps: int
) -> dict[str, Any]:
    """Run the demo; returns the summary figures."""
    checkpoint, trained = _checkpoint(settings)
    workdir = settings.data.cache_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    broker = EmbeddedKafka(
        settings.broker.version,
        settings.data.cache_dir,
        workdir / "broker",
        port=0,
        start_timeout_s=settings.broker.start_timeout_s,
    )
    err_console.print(f"[bold]2/6[/] Apache Kafka {broker.version} on {broker.bootstrap_servers}")
    info = broker.start()
    worker: WorkerProcess | None = None
    try:
        kafka = KafkaSettings(
            **{**settings.kafka.model_dump(), "bootstrap_servers": info.bootstrap_servers}
        )
        demo_settings = settings.model_copy(update={"kafka": kafka})
        asyncio.run(create_topics(kafka))
        err_console.print(f"[bold]3/6[/] starting a model-mode worker on {checkpoint.name}")
        env = {
            "STREAMREC_SERVING__MODE": "model",
            "STREAMREC_ENCODER__CHECKPOINT": str(checkpoint),
            "STREAMREC_LEARNER__ATTRIBUTION_WINDOW_S": "10",
        }
        worker = WorkerProcess(kafka, workdir / "worker", free_port(), env).start()
        wait_until(
            lambda: _ready(worker) and (worker.stats() or {}).get("model_version"),
            300,
            "the worker to load the model",
        )
        err_console.print(
            "[bold]4/6[/] replaying MovieLens-100K; simulated users answer the slates"
        )
        figures, simulation = asyncio.run(
            _replay_and_simulate(demo_settings, kafka, limit, rate, simulate_s)
        )
        err_console.print("[bold]5/6[/] waiting for the worker to apply every event")
        topic, group = kafka.topics.name("events"), f"{kafka.topics.prefix}worker"
        wait_until(
            lambda: _ready(worker) and asyncio.run(group_caught_up(kafka, group, topic)),
            3600,
            "the worker to catch up",
            interval_s=2.0,
        )
        backlog = _backlog_latency(worker.stats() or {})
        dataset = load_dataset(None, settings.data.cache_dir)
        err_console.print(f"[bold]6/6[/] latency: {PACED_EVENTS:,} events at {PACED_RATE:g}/s")
        paced = _paced_latency(worker, kafka, dataset)
        stats = worker.stats() or {}
        examples = _examples(worker, {i.item_id: i.title for i in dataset.items.values()})
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    details = {
        "kafka": f"{broker.version} at {info.bootstrap_servers}",
        "model": {"checkpoint": str(checkpoint), "trained_now": trained},
        **figures,
        "simulation": simulation,
        "worker": {key: stats.get(key) for key in WORKER_FIGURES},
        "paced_latency": paced,
        "replay_latency": backlog,
        "policy_report": _policy_report(settings, workdir / "report", report_steps),
    }
    return {
        "summary": headline(figures, simulation, stats, paced, backlog, rate),
        "example_slates": examples,
        "details": plain(details),
    }


def _policy_report(settings: Settings, out: Path, steps: int) -> dict[str, Any] | str:
    """A short offline closed-loop comparison of the policies, written as table + plots."""
    if steps <= 0:
        return "skipped (--report-steps 0)"
    from streamrec.models.sim.closed_loop import LoopConfig
    from streamrec.models.sim.report import ReportConfig, run_policies, write_report
    from streamrec.models.sim.simulator import Simulator

    err_console.print(f"writing the policy report ({steps} simulated requests per policy and seed)")
    config = ReportConfig(seeds=2, loop=LoopConfig(steps=steps, bucket=max(steps // 20, 1)))
    results = run_policies(config, settings.policy, settings.learner, Simulator.synthetic)
    write_report(results, config, out)
    return {"table": str(out / "summary.md"), "plots": str(out / "metrics.png")}


def _checkpoint(settings: Settings) -> tuple[Path, bool]:
    """The newest demo checkpoint in the cache, or a freshly trained one."""
    root = settings.data.cache_dir / "models"
    existing = (
        sorted(root.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if root.exists() else []
    )
    if existing:
        err_console.print(f"[bold]1/6[/] reusing the trained encoder {existing[-1].parent.name}")
        return existing[-1].parent, False
    err_console.print("[bold]1/6[/] training the demo encoder on MovieLens-100K (a few minutes)")
    from streamrec.models.encoder.pipeline import run_training

    figures = run_training(settings, preset="demo")
    return Path(figures["checkpoint"]), True


async def _replay_and_simulate(
    settings: Settings,
    kafka: KafkaSettings,
    limit: int | None,
    rate: float | None,
    simulate_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    ready = asyncio.Event()
    sim = asyncio.create_task(
        simulate(settings, kafka, seed=7, duration_s=simulate_s, max_slates=None, ready=ready)
    )
    await _first(ready.wait(), sim)  # every slate of the replay is answered
    figures = await replay_dataset(settings, None, rate, limit, with_items=True)
    return figures, (await sim).figures()


async def _first(waiting: Any, task: asyncio.Task[Any]) -> None:
    """Await ``waiting`` unless ``task`` ends first (then its error surfaces here)."""
    waiter = asyncio.ensure_future(waiting)
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()


def _ready(worker: WorkerProcess) -> bool:
    if not worker.alive():
        raise RuntimeError(f"the demo worker exited; its log ends with:\n{worker.log_tail()}")
    return worker.stats() is not None


WORKER_FIGURES = (
    "users_in_state",
    "items_in_catalog",
    "events_accepted",
    "dead_lettered",
    "duplicates_dropped",
    "recommendations_published",
    "model_version",
    "feedback",
)


def _backlog_latency(stats: dict[str, Any]) -> dict[str, Any]:
    """The worker's event-to-slate figures at the end of the replay (its recent events)."""
    latency = stats.get("latency") or {}
    return {k: latency.get(k) for k in ("p50_ms", "p99_ms", "samples")}


def _paced_latency(worker: WorkerProcess, kafka: KafkaSettings, dataset: Dataset) -> dict[str, Any]:
    """Publish ``PACED_EVENTS`` at ``PACED_RATE`` to the caught-up worker; event-to-slate p50/p99.

    The figures come from the worker's latency histogram (the difference of two scrapes), so
    they are what the dashboard's panel shows for the same minute: interpolated in its buckets.
    """
    now_ms = int(time.time() * 1000)
    interactions = list(dataset_events(dataset))[-PACED_EVENTS:]
    # New ids (the replayed ones would be dropped as duplicates) and the current time.
    events = [
        e.model_copy(update={"event_id": f"paced-{now_ms}-{n}", "ts": now_ms})
        for n, e in enumerate(interactions)
    ]
    before = _latency_buckets(worker)
    asyncio.run(_publish_paced(kafka, events))
    wait_until(
        lambda: _ready(worker) and _count(_latency_buckets(worker)) - _count(before) >= len(events),
        300,
        "slates answering the paced events",
    )
    after = _latency_buckets(worker)
    delta = [(le, n - before.get(le, 0.0)) for le, n in sorted(after.items())]
    return {
        "events": len(events),
        "rate_per_s": PACED_RATE,
        "p50_ms": bucket_quantile(0.5, delta) * 1e3,
        "p99_ms": bucket_quantile(0.99, delta) * 1e3,
    }


async def _publish_paced(kafka: KafkaSettings, events: list[Event]) -> None:
    await publish(kafka, events, kafka.topics.name("events"), rate=PACED_RATE, progress=False)


def _latency_buckets(worker: WorkerProcess) -> dict[float, float]:
    """Upper bound (s) -> cumulative count of the worker's event-to-slate histogram."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{LATENCY_HISTOGRAM}_bucket"
    }


def _count(buckets: dict[float, float]) -> float:
    return buckets.get(math.inf, 0.0)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Quantile ``q`` of a cumulative histogram [(upper bound, count)] sorted by bound.

    Linear within the bucket that holds it, as Prometheus' ``histogram_quantile``; a quantile in
    the +Inf bucket is the largest finite bound (the histogram knows no more). NaN when empty.
    """
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > 0:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * (rank - below) / inside
        lower, below = upper, cumulative
    return lower


def duration(ms: float | None) -> str:
    """A duration for people: ``0.8 ms``, ``12 ms``, ``1,234 ms``, ``18.9 s``; no exponents."""
    if ms is None or math.isnan(ms):
        return "n/a"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:,.0f} ms"
    return f"{ms / 1000:,.1f} s"


def headline(
    replay: dict[str, Any],
    simulation: dict[str, Any],
    stats: dict[str, Any],
    paced: dict[str, Any],
    backlog: dict[str, Any],
    rate: float | None,
) -> dict[str, str]:
    """The few lines a user reads first, as sentences with units; the figures are in details.

    ``replay``: replay_dataset's figures; ``simulation``: the simulator's; ``stats``: the
    worker's /stats at the end; ``paced``/``backlog``: event-to-slate p50_ms/p99_ms of the paced
    phase and of the replay; ``rate``: the replay's events/s (None: as fast as possible).
    """
    replayed = (replay.get("events") or {}).get("accepted", 0)
    feedback = stats.get("feedback") or {}
    how = f"at {rate:,.0f} events/s" if rate else "as fast as possible"
    ctr = simulation.get("ctr")
    return {
        "events in": f"{replayed:,} replayed, {simulation.get('responses_published', 0):,} "
        f"simulated responses, {paced['events']:,} paced; the worker applied "
        f"{stats.get('events_accepted', 0):,} and dead-lettered {stats.get('dead_lettered', 0):,}",
        "slates out": f"{stats.get('recommendations_published', 0):,} published",
        f"latency at {paced['rate_per_s']:,.0f} events/s": f"p50 {duration(paced['p50_ms'])}, "
        f"p99 {duration(paced['p99_ms'])} from event to slate, {paced['events']:,} events "
        "sent to the caught-up worker",
        "latency during the replay": f"p50 {duration(backlog['p50_ms'])}, "
        f"p99 {duration(backlog['p99_ms'])}: {replayed:,} events published {how}, so an event "
        "mostly waits behind those published before it (a backlog, not serving time)",
        "rewards": f"{feedback.get('rewards_joined', 0):,} responses joined to their slates, "
        f"reward {feedback.get('reward_value', 0):,.1f}"
        + (f", click-through {ctr:.1%}" if ctr is not None else ""),
        "policy": f"version {feedback.get('policy_version')} after "
        f"{feedback.get('policy_updates', 0):,} online updates "
        f"({feedback.get('policy_rollbacks', 0):,} rolled back)",
        "model": str(stats.get("model_version")),
    }


def plain(value: Any) -> Any:
    """Figures that print without exponents: floats of 100 and more become whole numbers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return round(value) if abs(value) >= 100 else round(value, 3)
    return value


def _examples(worker: WorkerProcess, titles: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for user in ("1", "2", "3")[:EXAMPLE_SLATES]:
        status, body = worker.get(f"/recommendations/{user}")
        if status != 200:
            continue
        for rank, item in enumerate(body["items"][:4], start=1):
            reason = item["reason"]
            if reason.startswith("item:"):
                reason = f"like {titles.get(reason[5:], reason[5:])}"
            rows.append(
                {
                    "user": user,
                    "rank": rank,
                    "title": titles.get(item["item_id"], item["item_id"]),
                    "score": round(item["score"], 4),
                    "reason": reason,
                    "model": body["model_version"],
                }
            )
    return rows
