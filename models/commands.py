"""CLI commands of streamrec.models, registered on the root app by `streamrec.cli`."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this package's commands to the root app and its `bench` group."""
