"""CLI commands of the policy stage (ope, report), registered by `streamrec.cli`."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add the policy commands to the root app."""
