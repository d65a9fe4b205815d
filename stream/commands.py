"""CLI commands of the streaming stage, registered on the root app by `streamrec.cli`."""

from __future__ import annotations

import typer

from streamrec.console import JsonOption, get_settings, report


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add the streaming commands (demo) to the root app."""
    app.command()(demo)


def demo(
    ctx: typer.Context,
    limit: int = typer.Option(0, "--limit", help="Replay only the first N events (0 = all)."),
    rate: float = typer.Option(0.0, "--rate", help="Events per second; 0 = as fast as possible."),
    as_json: bool = JsonOption,
) -> None:
    """Run the pipeline end to end on an embedded Kafka broker and print a summary."""
    from streamrec.stream.demo import run_demo

    figures = run_demo(get_settings(ctx), limit or None, rate or None)
    report("streamrec demo", figures, as_json)
