"""``streamrec demo``: the whole pipeline on the embedded broker, from a fresh start.

Steps: train the demo encoder on MovieLens-100K (or reuse the newest checkpoint in the cache),
start a private Kafka broker on a free loopback port (its own data folder, wiped first so every
run starts alike), create the topics, start a model-mode worker, replay MovieLens-100K through
the broker while simulated users answer the slates (closed loop with online policy learning),
wait until the worker has committed every event, and print a summary with latency figures and
example slates with reasons. Worker and broker are stopped at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.console import err_console
from streamrec.datasets import load_dataset
from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.replay import replay_dataset
from streamrec.stream.simulate import simulate
from streamrec.stream.testing import WorkerProcess, group_caught_up, wait_until
from streamrec.stream.topics import create_topics

EXAMPLE_SLATES = 3


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
    err_console.print(f"[bold]2/5[/] Apache Kafka {broker.version} on {broker.bootstrap_servers}")
    info = broker.start()
    worker: WorkerProcess | None = None
    try:
        kafka = KafkaSettings(
            **{**settings.kafka.model_dump(), "bootstrap_servers": info.bootstrap_servers}
        )
        demo_settings = settings.model_copy(update={"kafka": kafka})
        asyncio.run(create_topics(kafka))
        err_console.print(f"[bold]3/5[/] starting a model-mode worker on {checkpoint.name}")
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
            "[bold]4/5[/] replaying MovieLens-100K; simulated users answer the slates"
        )
        figures, simulation = asyncio.run(
            _replay_and_simulate(demo_settings, kafka, limit, rate, simulate_s)
        )
        err_console.print("[bold]5/5[/] waiting for the worker to apply every event")
        topic, group = kafka.topics.name("events"), f"{kafka.topics.prefix}worker"
        wait_until(
            lambda: _ready(worker) and asyncio.run(group_caught_up(kafka, group, topic)),
            3600,
            "the worker to catch up",
            interval_s=2.0,
        )
        titles = {
            i.item_id: i.title for i in load_dataset(None, settings.data.cache_dir).items.values()
        }
        summary = _summary(worker, titles)
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    return {
        "kafka": f"{broker.version} at {info.bootstrap_servers}",
        "model": {"checkpoint": str(checkpoint), "trained_now": trained},
        **figures,
        "simulation": simulation,
        "worker": summary,
        "policy_report": _policy_report(settings, workdir / "report", report_steps),
    }


def _policy_report(settings: Settings, out: Path, steps: int) -> dict[str, Any] | str:
    """A short offline closed-loop comparison of the policies, written as table + plots."""
    if steps <= 0:
        return "skipped (--report-steps 0)"
    from streamrec.models.closed_loop import LoopConfig
    from streamrec.models.report import ReportConfig, run_policies, write_report
    from streamrec.models.simulator import Simulator

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
        err_console.print(f"[bold]1/5[/] reusing the trained encoder {existing[-1].parent.name}")
        return existing[-1].parent, False
    err_console.print("[bold]1/5[/] training the demo encoder on MovieLens-100K (a few minutes)")
    from streamrec.models.pipeline import run_training

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


def _summary(worker: WorkerProcess, titles: dict[str, str]) -> dict[str, Any]:
    stats = worker.stats() or {}
    summary = {
        key: stats.get(key)
        for key in (
            "users_in_state",
            "items_in_catalog",
            "events_accepted",
            "dead_lettered",
            "duplicates_dropped",
            "recommendations_published",
            "model_version",
        )
    }
    summary["feedback"] = stats.get("feedback")
    latency = stats.get("latency") or {}
    summary["event_to_recommendation_p50_ms"] = latency.get("p50_ms")
    summary["event_to_recommendation_p99_ms"] = latency.get("p99_ms")
    summary["example_slates"] = _examples(worker, titles)
    return summary


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
