"""CLI commands of the streaming stage, registered on the root app by `streamrec.cli`."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrec.console import JsonOption, get_settings, report


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add the streaming commands (worker, demo) to the root app."""
    app.command()(worker)
    app.command()(demo)
    app.command("publish-model")(publish_model)
    app.command()(trainer)
    app.command()(simulate)
    bench.command("pipeline")(bench_pipeline)
    bench.command("quality")(bench_quality)
    bench.command("soak")(bench_soak)


def simulate(
    ctx: typer.Context,
    seed: int = typer.Option(7, "--seed", help="Simulator seed (responses are repeatable)."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds to run."),
    max_slates: int = typer.Option(0, "--max-slates", help="Stop after N slates (0: no limit)."),
    as_json: bool = JsonOption,
) -> None:
    """Simulated users answer published slates with clicks, dwell, carts and purchases."""
    import asyncio

    from streamrec.stream.tools.simulate import simulate as run

    settings = get_settings(ctx)
    result = asyncio.run(run(settings, settings.kafka, seed, duration, max_slates or None))
    report("simulate", result.figures(), as_json)


def publish_model(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder every worker can read."),
    as_json: bool = JsonOption,
) -> None:
    """Announce a checkpoint on the control topic; every model-mode worker hot-swaps to it."""
    import asyncio

    from streamrec.models.encoder.checkpoint import verify_checkpoint
    from streamrec.stream.control import announce_model

    version = verify_checkpoint(checkpoint)  # the workers would refuse what does not load here
    record = asyncio.run(announce_model(get_settings(ctx).kafka, checkpoint, version))
    report("publish-model", record.model_dump(), as_json)


def bench_pipeline(
    ctx: typer.Context,
    events: int = typer.Option(20_000, "--events", help="Backlog drained in the throughput phase."),
    latency_events: int = typer.Option(
        20_000, "--latency-events", help="Events in the paced phase."
    ),
    rate: float = typer.Option(1000.0, "--rate", help="Events per second in the latency phase."),
    mode: str = typer.Option("", "--mode", help="Serving mode for the worker (default: settings)."),
    processes: int = typer.Option(
        1, "--processes", min=1, help="Processes per system, one consumer group (scale-out)."
    ),
    users: int = typer.Option(
        0, "--users", min=0, help="Synthetic workload of N users, drawn uniformly (0: ML-100K)."
    ),
    items: int = typer.Option(
        0, "--items", min=0, help="Items of the synthetic workload (needed with --users)."
    ),
    zipf: float = typer.Option(
        1.1, "--zipf", min=0.0, help="Zipf exponent of synthetic item popularity."
    ),
    seed: int = typer.Option(13, "--seed", help="Seed of the synthetic workload."),
    as_json: bool = JsonOption,
) -> None:
    """Worker vs a passthrough Faust agent on one private broker: events/s, p50/p99 latency,
    on MovieLens-100K or a synthetic workload (--users N --items M)."""
    import shutil
    import tempfile

    from streamrec.broker import EmbeddedKafka
    from streamrec.errors import ConfigError
    from streamrec.stream.tools.bench import check_mode, run_pipeline_bench
    from streamrec.stream.tools.synthetic import Workload

    settings = get_settings(ctx)
    if bool(users) != bool(items):
        raise ConfigError("bench pipeline: give --users and --items together (or neither)")
    synthetic = Workload(users, items, events + latency_events, zipf, seed) if users else None
    check_mode(synthetic, mode or settings.serving.mode)  # before a broker starts
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    broker = EmbeddedKafka(
        settings.broker.version, settings.data.cache_dir, workdir / "broker", port=0
    )
    info = broker.start()
    env = {"STREAMREC_SERVING__MODE": mode} if mode else {}
    try:
        figures = run_pipeline_bench(
            settings,
            info.bootstrap_servers,
            events,
            latency_events,
            rate,
            workdir,
            env,
            processes,
            synthetic,
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    header = {"kafka": broker.version, "processes_per_system": processes}
    report("bench pipeline", {**header, **figures}, as_json)


def bench_quality(
    ctx: typer.Context,
    mode: str = typer.Option(
        "heuristic", "--mode", help="heuristic, model or both (one after the other)."
    ),
    rate: float = typer.Option(1000.0, "--rate", help="Replay rate in events per second."),
    split: float = typer.Option(
        0.5, "--split", help="Share of the events by time the model trains on; the rest is scored."
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Dataset folder or file (default MovieLens-100K)."
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N events (0 = all)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Serve this encoder instead of training one before the split."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Most training epochs (default: training settings)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder (default <cache>/bench-quality/<time>)."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="PNG of NDCG@10 over stream time (default <run folder>/ndcg.png)."
    ),
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Replay in this process through the worker's own state, statistics and slate "
        "builders, no broker (seconds to minutes instead of minutes per system).",
    ),
    lag: int = typer.Option(
        0, "--lag", min=0, help="Offline: events a slate trails its trigger by (0 = default)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Bars on stderr."),
    as_json: bool = JsonOption,
) -> None:
    """Replay a dataset through a worker; score its slates on each user's next event against
    popularity and last-item co-visitation (prequential, seen items excluded)."""
    import time
    from typing import cast

    from streamrec.stream.tools.quality_bench import Mode, QualityOptions, run_quality_bench
    from streamrec.stream.tools.quality_report import report_quality

    settings = get_settings(ctx)
    run = out or settings.data.cache_dir / "bench-quality" / time.strftime("%Y%m%d-%H%M%S")
    options = QualityOptions(
        mode=cast(Mode, mode),  # QualityOptions checks it against MODES
        rate=rate,
        split=split,
        out=run,
        plot=plot or run / "ndcg.png",
        dataset=dataset,
        limit=limit or None,
        checkpoint=checkpoint,
        epochs=epochs,
        lag=lag or None,
        progress=progress,
    )
    if offline:
        from streamrec.stream.tools.offline import run_offline

        report_quality(run_offline(settings, options), as_json)
    else:
        report_quality(run_quality_bench(settings, options), as_json)


def bench_soak(
    ctx: typer.Context,
    events: int = typer.Option(1_000_000, "--events", min=1, help="Synthetic events to publish."),
    users: int = typer.Option(200_000, "--users", min=1, help="Users, drawn uniformly."),
    items: int = typer.Option(50_000, "--items", min=1, help="Items, drawn by Zipf popularity."),
    zipf: float = typer.Option(1.1, "--zipf", min=0.0, help="Zipf exponent of item popularity."),
    sample_s: float = typer.Option(5.0, "--sample-s", help="Seconds between RSS samples."),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder (default <cache>/bench-soak/<time>): rss.csv, rss.png."
    ),
    as_json: bool = JsonOption,
) -> None:
    """One heuristic worker on a private broker under many synthetic users: its RSS over
    events (PNG), to show that memory levels off under the configured bounds."""
    import shutil
    import tempfile
    import time

    from streamrec.broker import EmbeddedKafka
    from streamrec.stream.soak import SoakOptions, run_soak

    settings = get_settings(ctx)
    run = out or settings.data.cache_dir / "bench-soak" / time.strftime("%Y%m%d-%H%M%S")
    options = SoakOptions(events, users, items, zipf, sample_s=sample_s, out=run)
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-soak-"))
    broker = EmbeddedKafka(
        settings.broker.version, settings.data.cache_dir, workdir / "broker", port=0
    )
    info = broker.start()
    try:
        figures = run_soak(settings, info.bootstrap_servers, options)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report("bench soak", figures, as_json)


def trainer(ctx: typer.Context) -> None:
    """Keep the encoder learning from the events topic; announce a candidate only when it does
    not regress on the newest held-out events (settings: trainer.*)."""
    import asyncio
    import logging

    from streamrec.stream.trainer_process import run_trainer

    # A long-running process: each cycle's line (what was trained, scored, announced) is the
    # trainer's log, so it is shown without --verbose.
    logging.getLogger("streamrec.stream.trainer").setLevel(logging.INFO)
    asyncio.run(run_trainer(get_settings(ctx)))


def worker(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(None, "--data-dir", help="State folder (one per worker)."),
    web_port: int | None = typer.Option(None, "--web-port", help="Port of /metrics, /stats, pull."),
    loglevel: str = typer.Option("info", "--loglevel", help="faust/worker log level."),
) -> None:
    """Run a streaming worker: ingest events into state, dead-letter bad input, publish slates."""
    from streamrec.stream.worker import run_worker

    settings = get_settings(ctx)
    state = settings.state.model_copy(update={"data_dir": data_dir}) if data_dir else settings.state
    serving = (
        settings.serving.model_copy(update={"web_port": web_port}) if web_port else settings.serving
    )
    run_worker(settings.model_copy(update={"state": state, "serving": serving}), loglevel)


def demo(
    ctx: typer.Context,
    limit: int = typer.Option(0, "--limit", help="Replay only the first N events (0 = all)."),
    rate: float = typer.Option(0.0, "--rate", help="Events per second; 0 = as fast as possible."),
    simulate_s: float = typer.Option(120.0, "--simulate", help="Seconds of simulated users."),
    report_steps: int = typer.Option(
        2000, "--report-steps", help="Requests per policy in the closing policy report (0: skip)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Train (or reuse) the encoder, run the closed loop on an embedded broker, print a summary."""
    from streamrec.stream.tools.demo import run_demo

    figures = run_demo(get_settings(ctx), limit or None, rate or None, simulate_s, report_steps)
    report("streamrec demo", figures, as_json)
