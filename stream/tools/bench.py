"""``streamrec bench pipeline``: the worker against a passthrough Faust agent, in one run.

Two phases per system, each on fresh topics so neither sees the other's records:

    throughput  N events are published first, then the system starts and drains them; the rate
                is N / (last output - first output), from the output records' broker timestamps.
                A model-mode worker answers with the heuristic until its model is loaded, so it
                is started (and its model loaded) before the N events are published
    latency     the system starts and answers ``WARMUP_EVENTS`` events at once (a cold start's
                group join and table recovery are not latency under load); then one stream at a
                fixed rate: ``RAMP_S`` seconds of it not counted (the step from idle to load),
                then the M measured events. Each event's latency is its answer's timestamp
                minus the event's own record timestamp (for the worker: the slate listing the
                event in trigger_event_ids)

Both timestamps are Kafka CreateTime stamped on this machine's one clock, so no clock skew enters.
The figures are printed with the ratio pipeline / passthrough; nothing here asserts a timing.
The throughput phase also reports the system's processes' CPU time, their children's (the model
process) included, from its first answer to its last (Linux ``/proc``, user + system): on a
machine other jobs load, events per CPU-second says what a process can do with one core where
events/s says what it got. (The latency phase reads its answers only after the paced publishing
ends, too late to time CPU by them.) Both phases report how that CPU splits between the worker's
threads and its children (``cpu_share``: the event loop, faust's consumer thread, the model
process; stream/threads.py), the latency phase from the start of the paced stream.

Workloads: MovieLens-100K replayed in time order (943 users: every user's state stays in the
worker's write-behind cache), or a synthetic shop (stream/tools/synthetic.py: many users,
most of them not recently active, Zipf-popular items, mixed event types) with its catalog.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.broker import free_port
from streamrec.console import err_console
from streamrec.datasets import load_dataset
from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings, Settings, TopicSettings
from streamrec.stream.contract import Event, Item
from streamrec.stream.producer import dataset_events, dataset_items, publish
from streamrec.stream.testing import WorkerProcess, wait_until, worker_env
from streamrec.stream.tools.bench_topics import collect_answers, input_times
from streamrec.stream.tools.cpu import CpuSample, cpu_seconds, cpu_shares
from streamrec.stream.tools.synthetic import Workload, synthetic_events, synthetic_items
from streamrec.stream.topics import create_topics

WARMUP_EVENTS = 500
RAMP_S = 3.0
# A phase waits 15 minutes for its last answer, or as long as a drain at 250 events/s takes.
COLLECT_MIN_S = 900.0
COLLECT_FLOOR_RATE = 250.0


@dataclass
class PhaseResult:
    events: int
    answered: int
    seconds: float
    latencies_ms: list[float]
    stages_ms: dict[str, list[float]]  # per refresh stage, one value per answering slate
    cpu_s: float = 0.0  # the system's CPU seconds from its first answer to its last
    cpu_share: dict[str, float] = field(default_factory=dict)  # by thread role (cpu.py)

    def figures(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        figures: dict[str, Any] = {
            "events": self.events,
            "answered": self.answered,
            "events_per_s": round(self.answered / self.seconds, 1) if self.seconds > 0 else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
        }
        if self.cpu_s > 0:
            figures["cpu_s"] = round(self.cpu_s, 1)
            figures["events_per_cpu_s"] = round(self.answered / self.cpu_s, 1)
        if self.cpu_share:
            figures["cpu_share"] = self.cpu_share
        if self.stages_ms:
            figures["stages_ms"] = {
                stage: {
                    "p50": round(float(np.percentile(values, 50)), 2),
                    "p99": round(float(np.percentile(values, 99)), 2),
                }
                for stage, values in sorted(self.stages_ms.items())
            }
        return figures

    def shortfall(self) -> str | None:
        """Said when the bench stopped waiting before every event was answered."""
        if self.answered >= self.events:
            return None
        return (
            f"{self.events - self.answered} of {self.events} events were not answered when the "
            "bench stopped waiting; its rates and latencies are over the answered ones"
        )


def _kafka(settings: Settings, bootstrap: str, label: str) -> KafkaSettings:
    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}."
    topics = TopicSettings(**{**settings.kafka.topics.model_dump(), "prefix": prefix})
    return KafkaSettings(
        **{**settings.kafka.model_dump(), "bootstrap_servers": bootstrap, "topics": topics}
    )


class _System:
    """A system under test: ``processes`` streamrec workers or passthrough agents in one group."""

    def __init__(
        self,
        kind: str,
        kafka: KafkaSettings,
        workdir: Path,
        extra_env: dict[str, str],
        processes: int,
        model_mode: bool = False,
    ) -> None:
        self.kind = kind
        self.kafka = kafka
        self.model_mode = model_mode and kind == "pipeline"
        self.output = kafka.topics.name("recommendations")
        self.procs: list[WorkerProcess] = []
        for _ in range(processes):
            port = free_port()
            if kind == "pipeline":
                folder = workdir / f"{kind}-{uuid.uuid4().hex[:6]}"
                self.procs.append(WorkerProcess(kafka, folder, port, extra_env))
            else:
                self.procs.append(_PassthroughProcess(kafka, port, workdir))

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        for proc in self.procs:
            wait_until(lambda p=proc: p.stats() is not None, 300, f"the {self.kind} process")
            if self.model_mode:  # until then the worker answers with the heuristic
                wait_until(lambda p=proc: _model_version(p), 300, "the worker to load its model")

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) its processes have used so far."""
        return sum(cpu_seconds(pid) for pid in self._pids())

    def cpu_sample(self) -> CpuSample:
        """Its processes' CPU seconds so far, per thread, and their children's."""
        return CpuSample.of(self._pids())

    def thread_roles(self) -> dict[int, str]:
        """Thread id -> role of its workers' threads, as their /stats say (stream/threads.py);
        empty for the passthrough, which has no /stats (so no shares are given for it)."""
        roles: dict[int, str] = {}
        for proc in self.procs:
            named = (proc.stats() or {}).get("threads", {})
            roles.update({int(tid): role for tid, role in named.items()})
        return roles

    def _pids(self) -> list[int]:
        return [proc.proc.pid for proc in self.procs if proc.proc is not None]


class _PassthroughProcess(WorkerProcess):
    def __init__(self, kafka: KafkaSettings, port: int, workdir: Path) -> None:
        super().__init__(kafka, workdir / f"passthrough-{uuid.uuid4().hex[:6]}", port)

    def start(self) -> WorkerProcess:
        k = self.kafka
        cmd = [
            sys.executable,
            "-m",
            "streamrec.stream.tools.passthrough",
            k.bootstrap_servers,
            k.topics.name("events"),
            k.topics.name("recommendations"),
            f"{k.topics.prefix}passthrough",
            str(self.web_port),
            str(k.topics.partitions),
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=worker_env(k), stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        return self

    def stats(self) -> dict[str, Any] | None:
        # faust's own web root answers once the worker runs; the passthrough has no /stats.
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/", timeout=2):
                return {}
        except OSError:
            return None


def _model_version(worker: WorkerProcess) -> str | None:
    version: str | None = (worker.stats() or {}).get("model_version")
    return version


async def _prepare(kafka: KafkaSettings, catalog: list[Item]) -> None:
    await create_topics(kafka)
    await publish(kafka, catalog, kafka.topics.name("items"), progress=False)


def _phase(
    kind: str,
    kafka: KafkaSettings,
    settings: Settings,
    catalog: list[Item],
    events: list[Event],
    rate: float | None,
    workdir: Path,
    extra_env: dict[str, str],
    processes: int,
    warmup: list[Event],
) -> PhaseResult:
    asyncio.run(_prepare(kafka, catalog))
    # The replay's own full collections (80 ms with the dataset in memory) would hold back the
    # paced publisher and release its events as a burst; what is alive now lives all run long.
    gc.collect()
    gc.freeze()
    model_mode = extra_env.get("STREAMREC_SERVING__MODE", settings.serving.mode) == "model"
    system = _System(kind, kafka, workdir, extra_env, processes, model_mode)
    topic = kafka.topics.name("events")
    wanted = {e.event_id for e in events}
    paced_from: CpuSample | None = None
    try:
        if rate is None and model_mode:  # model loaded first, then the backlog to drain
            system.start()
            asyncio.run(publish(kafka, events, topic, progress=False))
        elif rate is None:  # throughput: backlog first, then drain
            asyncio.run(publish(kafka, events, topic, progress=False))
            system.start()
        else:  # latency: a running, warmed-up system, then paced input
            system.start()
            # A process answers its web port before it owns partitions; the first seconds of
            # a cold start (group join, table recovery) are not the latency under load.
            cold, ramp = warmup[:WARMUP_EVENTS], warmup[WARMUP_EVENTS:]
            asyncio.run(publish(kafka, cold, topic, progress=False))
            cold_ids = {e.event_id for e in cold}
            asyncio.run(collect_answers(kafka, system.output, cold_ids, kind, 300))
            paced_from = system.cpu_sample()
            asyncio.run(publish(kafka, ramp + events, topic, rate=rate, progress=False))
        first_cpu: list[float] = []
        first_sample: list[CpuSample] = []

        def on_first() -> None:
            if rate is None:  # read while the system drains (see the module docstring)
                first_cpu.append(system.cpu_s())
                first_sample.append(system.cpu_sample())

        patience = max(COLLECT_MIN_S, len(events) / COLLECT_FLOOR_RATE)
        answers = collect_answers(kafka, system.output, wanted, kind, patience, on_first)
        outputs = asyncio.run(answers)
        cpu = system.cpu_s() - first_cpu[0] if first_cpu else 0.0
        since = first_sample[0] if first_sample else paced_from
        roles = system.thread_roles()  # none for the passthrough, which has no /stats
        shares = cpu_shares(since, system.cpu_sample(), roles) if since and roles else {}
    finally:
        system.stop()
    published = len(events) + (len(warmup) if rate is not None else 0)
    sent = asyncio.run(input_times(kafka, published))
    stamps = [t for t, _, _ in outputs]
    seconds = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
    latencies = [t - sent[i] for t, ids, _ in outputs for i in ids if i in sent]
    answered = sum(len(ids) for _, ids, _ in outputs)
    stages: dict[str, list[float]] = {}
    for _, _, timing in outputs:
        for stage, ms in timing.items():
            stages.setdefault(stage.removesuffix("_ms"), []).append(float(ms))
    lat = [float(x) for x in latencies]
    return PhaseResult(len(events), answered, seconds, lat, stages, cpu, shares)


def _workload(
    settings: Settings, synthetic: Workload | None, n: int
) -> tuple[dict[str, Any], list[Item], list[Event]]:
    """(what the report says about it, the catalog, the first ``n`` events) of the workload."""
    if synthetic is not None:
        events = list(itertools.islice(synthetic_events(synthetic), n))
        return synthetic.describe(), list(synthetic_items(synthetic)), events
    dataset = load_dataset(None, settings.data.cache_dir)
    events = list(itertools.islice(dataset_events(dataset), n))
    described = {
        "workload": dataset.name,
        "users": len({e.user_id for e in events}),
        "items": len(dataset.items),
        "events": len(events),
    }
    return described, list(dataset_items(dataset)), events


def check_mode(synthetic: Workload | None, mode: str) -> None:
    """ConfigError when a synthetic workload would meet the model path, which cannot serve it."""
    if synthetic is not None and mode == "model":
        raise ConfigError(
            "bench pipeline --users/--items: a synthetic workload runs in heuristic mode only; "
            "its ids (u1, i1) are unknown to every encoder, so the model path would answer "
            "with cold-start fallbacks, not model work. Drop --mode model, or drop --users and "
            "--items to replay MovieLens-100K"
        )


def run_pipeline_bench(
    settings: Settings,
    bootstrap: str,
    n_events: int,
    latency_events: int,
    rate: float,
    workdir: Path,
    extra_env: dict[str, str],
    processes: int = 1,
    synthetic: Workload | None = None,
) -> dict[str, Any]:
    """Both systems, both phases, each as ``processes`` processes of one consumer group, on
    MovieLens-100K or, given ``synthetic``, on that workload's first events."""
    mode = extra_env.get("STREAMREC_SERVING__MODE", settings.serving.mode)
    check_mode(synthetic, mode)
    workload, catalog, pool = _workload(settings, synthetic, n_events + latency_events)
    backlog, paced = pool[:n_events], pool[n_events : n_events + latency_events]
    # The events just before the paced ones, in time: a cold burst, then the ramp at the rate.
    warmup = backlog[-(WARMUP_EVENTS + int(rate * RAMP_S)) :]
    figures: dict[str, Any] = {"workload": {**workload, "events": len(pool)}}
    for kind in ("passthrough", "pipeline"):
        err_console.print(f"[bold]{kind}[/]: throughput on {len(backlog)} events")
        kafka = _kafka(settings, bootstrap, kind)
        tput = _phase(
            kind, kafka, settings, catalog, backlog, None, workdir, extra_env, processes, []
        )
        err_console.print(f"[bold]{kind}[/]: latency at {rate:.0f} events/s on {len(paced)} events")
        kafka = _kafka(settings, bootstrap, kind)
        lat = _phase(
            kind, kafka, settings, catalog, paced, rate, workdir, extra_env, processes, warmup
        )
        figures[kind] = {"throughput": tput.figures(), "latency": lat.figures()}
        for phase, result in (("throughput", tput), ("latency", lat)):
            if (shortfall := result.shortfall()) is not None:
                err_console.print(f"[yellow]{kind} {phase}: {shortfall}[/]")
    # Other jobs on the machine take CPU from both systems (see events_per_cpu_s).
    figures["load_average_1_5_15"] = [round(v, 1) for v in os.getloadavg()]
    p, r = figures["pipeline"], figures["passthrough"]
    figures["ratio_pipeline_to_passthrough_throughput"] = (
        round(p["throughput"]["events_per_s"] / r["throughput"]["events_per_s"], 3)
        if p["throughput"]["events_per_s"] and r["throughput"]["events_per_s"]
        else None
    )
    return figures
